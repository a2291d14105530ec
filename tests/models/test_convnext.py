"""ConvNeXt-dcls and the dilated control, tested the way timm tests its own models."""

import pytest
import timm
import torch

import dcls
import models
from models.convnext import SIZES

DCLS_NAMES = [f"convnext_{s}_dcls" for s in SIZES] + ["test_convnext_dcls"]


def test_every_variant_is_registered():
    assert set(DCLS_NAMES) <= set(timm.list_models("*_dcls"))
    assert {"convnext_tiny_dc", "convnext_small_dc", "convnext_base_dc"} <= set(
        timm.list_models("*_dc")
    )


@pytest.mark.parametrize("name", ["test_convnext_dcls", "convnext_atto_dcls", "convnext_tiny_dc"])
def test_forward_backward_and_default_cfg(name):
    model = timm.create_model(name, num_classes=10)
    cfg = model.pretrained_cfg
    state = model.state_dict()
    assert f"{cfg['first_conv']}.weight" in state and f"{cfg['classifier']}.weight" in state
    size = cfg["input_size"][-1] // 2
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    features = model.forward_features(torch.randn(1, *cfg["input_size"]))
    assert tuple(features.shape[-2:]) == tuple(cfg["pool_size"])


@pytest.mark.parametrize(("size", "count"), [("tiny", 34), ("small", 40), ("base", 40)])
def test_iso_parameter_kernel_count_and_parameter_count(size, count):
    assert models.iso_parameter_kernel_count(SIZES[size]["depths"], SIZES[size]["dims"]) == count
    with torch.device("meta"):
        baseline = timm.create_model(f"convnext_{size}")
        variant = timm.create_model(f"convnext_{size}_dcls")
    n_base = sum(p.numel() for p in baseline.parameters())
    n_dcls = sum(p.numel() for p in variant.parameters())
    assert abs(n_dcls - n_base) / n_base < 0.005
    layers = [m for m in variant.modules() if isinstance(m, dcls.Dcls2d)]
    assert {m.kernel_count for m in layers} == {count}


def test_tiny_depthwise_parameters_match_the_paper():
    with torch.device("meta"):
        base = timm.create_model("convnext_tiny")
        variant = timm.create_model("convnext_tiny_dcls")
    dense = sum(p.numel() for n, p in base.named_parameters() if "conv_dw.weight" in n)
    ours = sum(
        p.numel()
        for n, p in variant.named_parameters()
        if "conv_dw.weight" in n or n.endswith("dcls_positions.P")
    )
    assert (dense, ours) == (324_576, 323_136)


def test_positions_are_shared_per_stage():
    model = timm.create_model("test_convnext_dcls")
    position_keys = [k for k in model.state_dict() if k.endswith(".P")]
    assert position_keys == [f"stages.{i}.dcls_positions.P" for i in range(4)]
    stage = model.stages[2]
    assert all(b.conv_dw.positions[0] is stage.dcls_positions.P for b in stage.blocks)
    kernels = [b.conv_dw.construct_kernel().detach().clone() for b in stage.blocks]
    for block in stage.blocks:
        block.conv_dw.weight.requires_grad_(False)
    optimizer = torch.optim.SGD(dcls.param_groups(model, weight_decay=0.0), lr=1.0)
    model(torch.randn(2, 3, 64, 64)).square().sum().backward()
    optimizer.step()
    assert all(
        not torch.equal(a, b.conv_dw.construct_kernel())
        for a, b in zip(kernels, stage.blocks, strict=True)
    )
    held = [p for g in optimizer.param_groups for p in g["params"]]
    assert sum(p is stage.dcls_positions.P for p in held) == 1


def test_dcls_keyword_arguments():
    model = timm.create_model(
        "test_convnext_dcls",
        kernel_count=5,
        dilated_kernel_size=9,
        version="gauss",
        share_positions=False,
    )
    layers = [m for m in model.modules() if isinstance(m, dcls.Dcls2d)]
    assert {(m.kernel_count, m.dilated_kernel_size, m.version) for m in layers} == {
        (5, (9, 9), "gauss")
    }
    assert all(m.P is not None for m in layers)
