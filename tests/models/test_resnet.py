"""ResNet-dcls and the dilated control."""

import pytest
import timm
import torch

import dcls
import models  # noqa: F401  (registers the models)


def test_registered():
    assert {"resnet26_dcls", "resnet50_dcls", "resnet101_dcls", "test_resnet_dcls"} <= set(
        timm.list_models("*_dcls")
    )
    assert "resnet50_dc" in timm.list_models("*_dc")


def test_only_bottleneck_conv2_is_replaced_and_strides_are_kept():
    model = timm.create_model("test_resnet_dcls", num_classes=5)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, dcls.Dcls2d)}
    assert sorted(layers) == [f"layer{i}.0.conv2" for i in range(1, 5)]
    assert [layers[f"layer{i}.0.conv2"].stride for i in range(1, 5)] == [(1, 1)] + [(2, 2)] * 3
    assert all(m.kernel_count == 3 and m.dilated_kernel_size == (7, 7) for m in layers.values())
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5)
    out.sum().backward()


def test_initial_positions_and_widths_are_builder_arguments():
    model = timm.create_model(
        "test_resnet_dcls", version="triangle", position_init_std=0.1, sigma_init=0.4
    )
    layers = [m for m in model.modules() if isinstance(m, dcls.Dcls2d)]
    assert layers and all(torch.all(m.SIG == 0.4) and m.P.std() < 0.2 for m in layers)


def test_resnet50_dcls_is_iso_parameter():
    with torch.device("meta"):
        baseline = timm.create_model("resnet50")
        variant = timm.create_model("resnet50_dcls")
        dc = timm.create_model("resnet50_dc")
    count = [sum(p.numel() for p in m.parameters()) for m in (baseline, variant, dc)]
    assert count[1] == count[0] == count[2]


def test_authors_fork_configuration_shares_positions_per_stage():
    model = timm.create_model("test_resnet_dcls", kernel_count=5, share_positions=True)
    keys = [k for k in model.state_dict() if k.endswith(".P")]
    assert keys == [f"layer{i}.0.dcls_positions.P" for i in range(1, 5)]
    out = model(torch.randn(2, 3, 32, 32))  # the stages (nn.Sequential) hold only their blocks
    out.sum().backward()
    assert model.layer1[0].dcls_positions.P.grad is not None


@pytest.mark.parametrize("name", ["resnet50_dc"])
def test_dilated_control_keeps_shapes(name):
    model = timm.create_model(name, num_classes=3)
    assert model.layer2[0].conv2.dilation == (3, 3)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    wider = timm.create_model(name, num_classes=3, dc_kernel_size=5, dilation=2)  # spans 9x9
    conv = wider.layer2[0].conv2
    assert (conv.kernel_size, conv.dilation, conv.padding, conv.stride) == (
        (5, 5),
        (2, 2),
        (4, 4),
        (2, 2),
    )
    assert wider(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_layer_decay_gives_shared_positions_their_stage_scale():
    from timm.optim import param_groups_layer_decay

    model = timm.create_model("test_resnet_dcls", kernel_count=5, share_positions=True)
    groups = param_groups_layer_decay(model, layer_decay=0.5)

    def scale_of(tensor):
        return next(g["lr_scale"] for g in groups if any(p is tensor for p in g["params"]))

    for i in range(1, 5):
        stage = getattr(model, f"layer{i}")
        assert scale_of(stage[0].dcls_positions.P) == scale_of(stage[0].conv1.weight) < 1.0


def test_resnet50_dcls_in_the_authors_fork_setting_trains():
    """model.kernel_count=5 model.share_positions=true: the fork's K=5 in 7x7, one set a stage."""
    model = timm.create_model(  # zero_init_last=False: the zeroed last BN would stop gradients
        "resnet50_dcls", kernel_count=5, share_positions=True, num_classes=4, zero_init_last=False
    )
    sets = list(dcls.position_sets(model))
    assert [s.name for s in sets] == [f"layer{i}.0.dcls_positions" for i in range(1, 5)]
    assert [len(s.layers) for s in sets] == [3, 4, 6, 3]
    assert all(s.P.shape[-1] == 5 and s.sizes == (7, 7) for s in sets)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(s.P.grad is not None and s.P.grad.abs().sum() > 0 for s in sets)


def test_dilated_control_keeps_timms_resnet_init():
    """The swapped-in dilated conv2 is initialised as timm initialises the conv2 it replaces
    (kaiming-normal, fan-out): std sqrt(2 / (out_channels * 9))."""
    torch.manual_seed(0)
    model = timm.create_model("resnet50_dc")
    for name in ("layer1.0.conv2", "layer4.2.conv2"):
        conv = model.get_submodule(name)
        assert conv.dilation == (3, 3)
        expected = (2 / (conv.out_channels * 9)) ** 0.5
        assert conv.weight.std().item() == pytest.approx(expected, rel=0.05)
