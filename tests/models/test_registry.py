"""Every registered variant builds and trains a step on CPU, the way timm tests its own models."""

import pytest
import timm
import torch

import models  # noqa: F401  (registers the models)

OUR_MODELS = sorted(set(timm.list_models("*_dcls")) | set(timm.list_models("*_dc")))


def test_every_paper_row_is_registered_and_has_its_baseline():
    for model in ("convnext_tiny", "convnext_small", "convnext_base", "resnet50"):
        assert {f"{model}_dcls", f"{model}_dc"} <= set(OUR_MODELS)
    for name in OUR_MODELS:  # throughput and tables pair each variant with this baseline
        assert timm.is_model(name.removesuffix("_dcls").removesuffix("_dc")), name


SMALL = ("test_convnext_dcls", "test_resnet_dcls", "convnext_atto_dcls", "convnext_atto_dc")


@pytest.mark.parametrize(
    "name",
    [n if n in SMALL else pytest.param(n, marks=pytest.mark.slow) for n in OUR_MODELS],
)
def test_forward_backward_on_a_small_input(name):
    model = timm.create_model(name, num_classes=4)
    out = model(torch.randn(2, 3, 32, 32))  # 2: ResNet's BatchNorm at 1x1 needs a batch
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
