"""Every registered variant builds and trains a step on CPU, the way timm tests its own models."""

import pytest
import timm
import torch

import models  # noqa: F401  (registers the models)

OUR_MODELS = sorted(set(timm.list_models("*_dcls")) | set(timm.list_models("*_dc")))


def test_every_variant_is_listed():
    assert len(OUR_MODELS) == 17  # 9 ConvNeXt-dcls, 3 ConvNeXt-dc, 4 ResNet-dcls, 1 ResNet-dc


@pytest.mark.parametrize("name", OUR_MODELS)
def test_forward_backward_on_a_small_input(name):
    model = timm.create_model(name, num_classes=4)
    out = model(torch.randn(2, 3, 32, 32))  # 2: ResNet's BatchNorm at 1x1 needs a batch
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
