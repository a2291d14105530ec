"""timm-registered DCLS variants of ConvNeXt and ResNet; ``import models`` registers them all."""

from models import convnext, resnet
from models.convnext import iso_parameter_kernel_count

__all__ = ["convnext", "iso_parameter_kernel_count", "resnet"]
