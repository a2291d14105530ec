"""timm-registered DCLS variants of ConvNeXt; ``import models`` registers them all."""

from models import convnext
from models.convnext import iso_parameter_kernel_count

__all__ = ["convnext", "iso_parameter_kernel_count"]
