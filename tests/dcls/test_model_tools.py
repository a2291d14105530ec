"""convert / freeze / clamp_ on whole models, and create_conv."""

import logging
import math
import re

import pytest
import torch
from torch import nn

import dcls


class TinyConvNeXt(nn.Module):
    """Two stages of depthwise 7x7 blocks, named like timm's ConvNeXt."""

    def __init__(self, dims=(8, 16)):
        super().__init__()
        self.stem = nn.Conv2d(3, dims[0], 4, stride=4)
        self.stages = nn.ModuleList()
        for i, dim in enumerate(dims):
            stage = nn.Module()
            stage.downsample = nn.Conv2d(dims[i - 1], dim, 2, stride=2) if i else nn.Identity()
            stage.blocks = nn.Sequential(
                *[nn.Conv2d(dim, dim, 7, padding=3, groups=dim) for _ in range(2)]
            )
            self.stages.append(stage)

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages:
            x = stage.blocks(stage.downsample(x))
        return x


def test_convert_replaces_depthwise_convs_and_keeps_shapes():
    model = TinyConvNeXt()
    x = torch.randn(2, 3, 32, 32)
    shape = model(x).shape
    dcls.convert(model, kernel_count=5, dilated_kernel_size=9, version="bilinear")
    layers = [m for m in model.modules() if isinstance(m, dcls.Dcls2d)]
    assert len(layers) == 4
    assert all(layer.padding == (4, 4) and layer.groups == layer.in_channels for layer in layers)
    assert isinstance(model.stem, nn.Conv2d) and isinstance(model.stages[1].downsample, nn.Conv2d)
    assert model(x).shape == shape


def test_convert_shares_positions_per_stage():
    model = dcls.convert(
        TinyConvNeXt(),
        kernel_count=5,
        dilated_kernel_size=9,
        share_key=lambda name: name.split(".blocks.")[0],
    )
    owners = [n for n, m in model.named_modules() if isinstance(m, dcls.DclsPositions)]
    assert owners == ["stages.0.dcls_positions", "stages.1.dcls_positions"]
    assert model.stages[0].blocks[1].positions[0] is model.stages[0].dcls_positions.P
    p_keys = [k for k in model.state_dict() if k.endswith(".P")]
    assert p_keys == ["stages.0.dcls_positions.P", "stages.1.dcls_positions.P"]
    # One optimizer step moves every block's kernel of the stage.
    kernels = [b.construct_kernel().detach().clone() for b in model.stages[0].blocks]
    optimizer = torch.optim.SGD(dcls.param_groups(model, weight_decay=0.0), lr=1.0)
    model.stages[0].blocks[1].weight.requires_grad_(False)
    model.stages[0].blocks[1].weight.grad = None
    model(torch.randn(1, 3, 32, 32)).square().sum().backward()
    optimizer.step()
    after = [b.construct_kernel().detach() for b in model.stages[0].blocks]
    assert all(not torch.equal(a, b) for a, b in zip(kernels, after, strict=True))


def test_convert_names_the_depthwise_conv_subclasses_it_leaves(caplog):
    class Conv2dSame(nn.Conv2d):  # as timm's: TF-style padding a DCLS layer does not have
        pass

    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), Conv2dSame(4, 4, 3, groups=4))
    caplog.set_level(logging.WARNING)  # (another test module leaves the root logger at ERROR)
    dcls.convert(model, kernel_count=2, dilated_kernel_size=5)
    assert isinstance(model[0], dcls.Dcls2d) and type(model[1]) is Conv2dSame
    left = r"1 depthwise convolutions .* stay as they are .*: 1 \(Conv2dSame\)"
    assert re.search(left, caplog.text)


def test_convert_keeps_device_dtype_and_stride():
    conv = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, bias=False).double()
    layer = dcls.convert(conv, kernel_count=3, dilated_kernel_size=7)
    assert isinstance(layer, dcls.Dcls2d) and layer.weight.dtype == torch.float64
    assert layer.stride == (2, 2) and layer.bias is None and layer.padding == (3, 3)


def test_convert_errors():
    with pytest.raises(ValueError, match="matched no"):
        dcls.convert(nn.Linear(2, 2), kernel_count=3, dilated_kernel_size=7)
    off_centre = nn.Sequential(nn.Conv2d(4, 4, 3, padding=0, groups=4))
    with pytest.raises(ValueError, match=r"convert: 0: its padding \(0, 0\) is not centred"):
        dcls.convert(off_centre, kernel_count=3, dilated_kernel_size=7)
    strided = nn.Sequential(nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4))
    with pytest.raises(ValueError, match=r"convert: 0: dilated_kernel_size .* even entry"):
        dcls.convert(strided, kernel_count=3, dilated_kernel_size=8)


def test_convert_refuses_valid_padding_as_it_refuses_padding_0():
    """``padding="valid"`` was kept: the output shrank by the dilated kernel (14x14 -> 10x10
    here) although convert keeps every output's size; ``padding=0`` was refused."""
    valid = nn.Sequential(nn.Conv2d(4, 4, 3, padding="valid", groups=4))
    with pytest.raises(ValueError, match=r"convert: 0: its padding 'valid' is not centred"):
        dcls.convert(valid, kernel_count=3, dilated_kernel_size=7)
    pointwise = nn.Sequential(nn.Conv2d(4, 4, 1, padding="valid", groups=4))  # centred: kept
    x = torch.randn(1, 4, 16, 16)
    every_conv = lambda name, module: isinstance(module, nn.Conv2d)  # noqa: E731
    converted = dcls.convert(pointwise, kernel_count=3, dilated_kernel_size=7, filter_fn=every_conv)
    assert converted(x).shape == pointwise(x).shape == (1, 4, 16, 16)


def test_convert_names_the_layer_it_cannot_convert_and_leaves_the_model_unchanged():
    """The second conv is strided, which "fft" refuses: the first one was already a DCLS layer
    and the message named no layer."""

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Conv2d(4, 4, 3, padding=1, groups=4)
            self.second = nn.Conv2d(4, 4, 3, padding=1, groups=4, stride=2)

    model = Two()
    share = lambda name: ""  # noqa: E731  (one set for the whole model, owned by the root)
    with pytest.raises(ValueError, match=r"^convert: second: .*stride.*; the model is unchanged$"):
        dcls.convert(
            model, kernel_count=3, dilated_kernel_size=7, conv_algorithm="fft", share_key=share
        )
    assert [type(m) for m in model.children()] == [nn.Conv2d, nn.Conv2d]
    assert not any(isinstance(m, dcls.DclsPositions) for m in model.modules())


@pytest.mark.parametrize("version", ["bilinear", "gauss", "triangle", "v0"])
def test_freeze_gives_plain_convs_with_the_same_outputs(version):
    model = dcls.convert(
        TinyConvNeXt(),
        kernel_count=5,
        dilated_kernel_size=9,
        version=version,
        share_key=lambda name: name.split(".blocks.")[0],
    )
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, dcls.DclsPositions) and module.SIG is not None:
                module.SIG.uniform_(0.1, 0.5)
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    frozen = dcls.freeze(model)
    assert not any(isinstance(m, (dcls.Dcls2d, dcls.DclsPositions)) for m in frozen.modules())
    torch.testing.assert_close(frozen(x), expected, rtol=1e-5, atol=1e-5)
    exported = torch.export.export(frozen.eval(), (x,))
    torch.testing.assert_close(exported.module()(x), expected, rtol=1e-5, atol=1e-5)


def test_clamp_reaches_layers_and_shared_positions():
    model = dcls.convert(
        TinyConvNeXt(),
        kernel_count=5,
        dilated_kernel_size=9,
        share_key=lambda name: "stages.0" if name.startswith("stages.0") else None,
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(100.0)
    dcls.clamp_(model)
    positions = [
        m.P
        for m in model.modules()
        if isinstance(m, (dcls.Dcls2d, dcls.DclsPositions))
        if m.P is not None
    ]
    assert len(positions) == 3  # one shared set (stage 0) and the two stage-1 layers
    assert all(p.max().item() == 4 for p in positions)


def test_create_conv():
    assert type(dcls.create_conv("conv", 4, 4, 7, groups=4)) is nn.Conv2d
    dilated = dcls.create_conv("dilated", 4, 4, 5, groups=4, dilation=4)
    assert dilated.dilation == (4, 4) and dilated.padding == (8, 8)
    layer = dcls.create_conv("dcls", 4, 4, 17, groups=4, kernel_count=34, version="bilinear")
    assert isinstance(layer, dcls.Dcls2d) and layer.padding == (8, 8)
    x = torch.randn(1, 4, 20, 20)
    assert dilated(x).shape == layer(x).shape == x.shape
    with pytest.raises(ValueError, match=r"kind must be one of \('conv', 'dilated', 'dcls'\)"):
        dcls.create_conv("deform", 4, 4, 3)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        dcls.create_conv("conv", 4, 4, 4)


def test_repulsive_loss_is_zero_when_apart_and_pushes_close_elements_apart():
    layer = dcls.Dcls2d(1, 1, 3, dilated_kernel_size=9, version="bilinear")
    with torch.no_grad():
        layer.P.copy_(torch.tensor([[0.0, 3.0, -3.0], [0.0, 0.0, 0.0]]).view(2, 1, 1, 3))
    assert dcls.repulsive_loss(layer).item() == 0.0
    assert dcls.repulsive_loss(layer, formula="pairs").item() == 0.0
    with torch.no_grad():
        layer.P[0, 0, 0, 1] = 0.4  # element 1 now 0.4 cells from element 0
    for formula, expected in [
        ("pairs", (1 - 0.4) ** 2 / 3),  # one close pair out of three, squared hinge
        ("authors", ((1 - 0.4) / 3) ** 2),  # the mean hinge, squared
    ]:
        layer.P.grad = None
        loss = dcls.repulsive_loss(layer, formula=formula)
        assert loss.item() == pytest.approx(expected)
        loss.backward()
        assert layer.P.grad[0, 0, 0, 1] < 0 < layer.P.grad[0, 0, 0, 0]  # descent: apart


def _two_layer_model() -> nn.Module:
    """Two depthwise layers with their own positions: 2 channels x 3 elements each."""
    layers = nn.Sequential(
        dcls.Dcls2d(2, 2, 3, dilated_kernel_size=9, padding=4, groups=2, version="bilinear"),
        dcls.Dcls2d(2, 2, 3, dilated_kernel_size=9, padding=4, groups=2, version="bilinear"),
    )
    apart = torch.tensor([[0.0, 0.0, 3.0], [0.0, 3.0, 0.0]])  # (row, column) of 3 elements
    close = torch.tensor([[0.0, 0.0, 4.0], [0.0, 0.5, 0.0]])  # elements 0 and 1: 0.5 apart
    with torch.no_grad():
        layers[0].P.copy_(torch.stack([close, apart], 1).unsqueeze(2))  # (2, 2, 1, 3)
        layers[1].P.copy_(torch.stack([apart, apart], 1).unsqueeze(2))
    return layers


def test_repulsive_loss_by_hand_the_authors_formula():
    """ConvNeXt-dcls utils.get_dcls_loss_rep, then ``loss_rep ** 2`` (engine.py L67)."""
    model = _two_layer_model()
    # Set 0: one pair at distance 0.5 -> relu(1 - 0.5) = 0.5; the other 2 pairs of that kernel
    # (distances 4 and sqrt(4^2 + 0.5^2)) and the 3 pairs of channel 1 (3, 3, sqrt(18)) give 0.
    set_0 = 0.5 / (2 * 3)  # mean over 2 channels x 3 pairs
    set_1 = 0.0
    expected = ((set_0 + set_1) / 2) ** 2  # mean over the 2 sets, squared: 1 / 576
    assert expected == pytest.approx(1 / 576)
    assert dcls.repulsive_loss(model).item() == pytest.approx(expected, rel=1e-6)
    assert dcls.repulsive_loss(model, formula="authors").item() == pytest.approx(1 / 576)
    # min_distance 5 reaches every pair: (sum of 5 - d over each set's pairs / 6, averaged)^2
    d_apart = [3.0, 3.0, math.sqrt(18)]
    d_close = [0.5, 4.0, math.sqrt(16.25)]
    set_0 = (sum(5 - d for d in d_close) + sum(5 - d for d in d_apart)) / 6
    set_1 = 2 * sum(5 - d for d in d_apart) / 6
    assert dcls.repulsive_loss(model, min_distance=5.0).item() == pytest.approx(
        ((set_0 + set_1) / 2) ** 2, rel=1e-5
    )


def test_repulsive_loss_by_hand_the_pairs_formula():
    model = _two_layer_model()
    expected = 0.5**2 / 12  # one squared hinge over all 12 pairs
    assert dcls.repulsive_loss(model, formula="pairs").item() == pytest.approx(expected, rel=1e-6)


def test_repulsive_loss_counts_a_shared_set_once_and_skips_single_elements():
    """As the authors' ``named_parameters()`` loop: a shared ``P`` is one set, not one per layer."""
    model = dcls.convert(  # stage 0: one set shared by its 2 blocks; stage 1: one set per block
        TinyConvNeXt(dims=(2, 2)),
        2,
        9,
        share_key=lambda n: "stages.0" if n.startswith("stages.0.") else None,
    )
    sets = list(dcls.position_sets(model))
    assert [len(s.layers) for s in sets] == [2, 1, 1]
    with torch.no_grad():
        for i, entry in enumerate(sets):
            P = entry.P  # (2, 2 channels, 1, 2 elements), rows then columns
            P.zero_()
            P[0, 0, 0, 1] = 0.5 if i == 0 else 3.0  # channel 0: 0.5 apart only in the shared set
            P[0, 1, 0, 1] = 3.0
    # 3 sets of 2 channels x 1 pair: ((0.5 / 2 + 0 + 0) / 3) ** 2; per layer it would be
    # ((0.25 + 0.25 + 0 + 0) / 4) ** 2
    assert dcls.repulsive_loss(model).item() == pytest.approx((0.25 / 3) ** 2, rel=1e-6)
    single = dcls.Dcls2d(2, 2, 1, dilated_kernel_size=5, padding=2, groups=2)
    assert dcls.repulsive_loss(nn.Sequential(single)).item() == 0.0


def test_repulsive_loss_refuses_an_unknown_formula():
    with pytest.raises(
        ValueError, match=r"formula must be one of \('authors', 'pairs'\), got 'l2'"
    ):
        dcls.repulsive_loss(nn.Sequential(), formula="l2")


def test_set_sigma_and_sigma_parameters():
    model = dcls.convert(
        TinyConvNeXt(),
        kernel_count=3,
        dilated_kernel_size=9,
        version="gauss",
        share_key=lambda name: name.split(".blocks.")[0],
    )
    assert len(dcls.sigma_parameters(model)) == 2  # one shared set per stage
    assert dcls.set_sigma_(model, 2.0) == 2
    assert all(torch.allclose(s, torch.tensor(2.0 - 0.27)) for s in dcls.sigma_parameters(model))
    with pytest.raises(ValueError, match=r"sigma must be >= 0.27 for 'gauss', got 0.1"):
        dcls.set_sigma_(model, 0.1)


def test_set_sigma_checks_every_width_before_setting_any():
    # 0.5 suits a Gaussian (>= 0.27), not a triangle (>= 1): nothing is set.
    model = torch.nn.Sequential(
        dcls.Dcls2d(2, 2, 3, dilated_kernel_size=7, groups=2, version="gauss"),
        dcls.Dcls2d(2, 2, 3, dilated_kernel_size=7, groups=2, version="triangle"),
    )
    before = [s.clone() for s in dcls.sigma_parameters(model)]
    with pytest.raises(ValueError, match=r"sigma must be >= 1.0 for 'triangle', got 0.5"):
        dcls.set_sigma_(model, 0.5)
    for old, new in zip(before, dcls.sigma_parameters(model), strict=True):
        assert torch.equal(old, new)


def test_position_sets_yield_each_set_once_with_its_layers():
    model = dcls.convert(
        TinyConvNeXt(),
        kernel_count=3,
        dilated_kernel_size=(9, 7),
        version="gauss",
        share_key=lambda name: "stages.0" if name.startswith("stages.0") else None,
    )
    sets = list(dcls.position_sets(model))
    assert [(s.name, s.layers) for s in sets] == [
        ("stages.0.dcls_positions", ("stages.0.blocks.0", "stages.0.blocks.1")),
        ("stages.1.blocks.0", ("stages.1.blocks.0",)),
        ("stages.1.blocks.1", ("stages.1.blocks.1",)),
    ]
    shared = model.stages[0].dcls_positions
    assert sets[0].P is shared.P and sets[0].SIG is shared.SIG and sets[0].owner is shared
    assert sets[1].P is model.stages[1].blocks[0].P
    assert {(s.sizes, s.version) for s in sets} == {((9, 7), "gauss")}
    assert list(dcls.position_sets(TinyConvNeXt())) == []


def test_replace_modules_replaces_in_place_and_skips_the_replaced_children():
    model = TinyConvNeXt()
    seen = []

    def replace(name, module):
        seen.append(name)
        if name == "stages.1.blocks":
            return nn.Identity()
        return nn.Identity() if isinstance(module, nn.Conv2d) and name == "stem" else None

    assert dcls.replace_modules(model, replace) is model
    assert isinstance(model.stem, nn.Identity) and isinstance(model.stages[1].blocks, nn.Identity)
    assert "stages.1.blocks.0" not in seen and "stages.0.blocks.0" in seen
    root = dcls.replace_modules(nn.Conv2d(2, 2, 3), lambda name, m: nn.ReLU())
    assert isinstance(root, nn.ReLU)


def test_convert_refuses_a_container_owner():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4))
    with pytest.raises(ValueError, match=r"share_key returned '', a Sequential"):
        dcls.convert(model, kernel_count=3, dilated_kernel_size=7, share_key=lambda name: "")


def test_freeze_a_shared_set_reachable_only_through_its_layers():
    positions = dcls.DclsPositions((7, 7), out_channels=4, in_channels_per_group=1, kernel_count=3)
    model = nn.Sequential(
        dcls.Dcls2d(4, 4, 3, dilated_kernel_size=7, groups=4, padding=3, positions=positions),
        dcls.Dcls2d(4, 4, 3, dilated_kernel_size=7, groups=4, padding=3, positions=positions),
    )
    x = torch.randn(1, 4, 10, 10)
    expected = model(x)
    frozen = dcls.freeze(model)
    assert [type(m) for m in frozen] == [nn.Conv2d, nn.Conv2d]
    torch.testing.assert_close(frozen(x), expected)
