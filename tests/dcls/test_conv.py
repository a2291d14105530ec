"""The modules: shapes, argument checks, repr, sharing, devices, compile."""

import copy
import math

import numpy as np
import pytest
import torch

import dcls

LAYERS = {1: dcls.Dcls1d, 2: dcls.Dcls2d, 3: dcls.Dcls3d}


def _out_size(size_in, padding, kernel, stride):
    return math.floor((size_in + 2 * padding - kernel) / stride + 1)


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize(("stride", "padding", "size"), [(1, 0, 5), (2, 3, 7), (3, 1, 4)])
def test_output_shape_follows_the_docstring_formula(n, stride, padding, size):
    layer = LAYERS[n](4, 6, 3, stride=stride, padding=padding, dilated_kernel_size=size, groups=2)
    spatial = (11, 10, 9)[:n]
    out = layer(torch.randn(2, 4, *spatial))
    expected = tuple(_out_size(s, padding, size, stride) for s in spatial)
    assert out.shape == (2, 6, *expected)
    assert layer(torch.randn(4, *spatial)).shape == (6, *expected)  # unbatched


@pytest.mark.parametrize("size", [(4, 6), (5, 4)])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "circular", "replicate"])
def test_same_padding_is_nn_conv2ds(size, padding_mode):
    """Even kernels pad one more on the right/bottom, as ``nn.Conv2d(padding="same")``: the
    output equals it with the constructed kernel, in every padding mode."""
    layer = dcls.Dcls2d(
        3, 3, 2, padding="same", dilated_kernel_size=size, padding_mode=padding_mode
    )
    x = torch.randn(1, 3, 9, 8)
    dense = torch.nn.Conv2d(3, 3, size, padding="same", padding_mode=padding_mode)
    with torch.no_grad():
        dense.weight.copy_(layer.construct_kernel())
        dense.bias.copy_(layer.bias)
    out = layer(x)
    assert out.shape == (1, 3, 9, 8)
    torch.testing.assert_close(out, dense(x), rtol=1e-5, atol=1e-6)


def test_parameter_shapes_and_initialisation():
    layer = dcls.Dcls2d(8, 16, 5, dilated_kernel_size=(7, 9), groups=2, version="gauss")
    assert layer.weight.shape == (16, 4, 5)
    assert layer.P.shape == layer.SIG.shape == (2, 16, 4, 5)
    assert layer.bias.shape == (16,)
    assert layer.P[0].abs().max() <= 3 and layer.P[1].abs().max() <= 4
    assert torch.all(layer.SIG == 0.23)
    bound = 1 / math.sqrt(4 * 5)  # kaiming-uniform a=sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert layer.weight.abs().max() <= bound
    assert dcls.Dcls2d(2, 2, 3, version="triangle").SIG.abs().max() == 0
    assert dcls.Dcls2d(2, 2, 3, version="bilinear").SIG is None
    custom = dcls.Dcls2d(2, 2, 3, dilated_kernel_size=9, position_init_std=2.0, sigma_init=0.5)
    assert custom.P.std() > 1.0 and torch.all(custom.SIG == 0.5)


def test_learnable_dims_dense_along_the_others():
    layer = dcls.Dcls3d(
        2,
        4,
        5,
        dilated_kernel_size=(9, 3, 3),
        padding=(4, 1, 1),
        learnable_dims=(0,),
        version="bilinear",
    )
    assert layer.weight.shape == (4, 2, 5, 3, 3) and layer.P.shape == (1, 4, 2, 5)
    with torch.no_grad():
        layer.P.zero_()
        layer.P[0, 0, 0, 0] = 2.0
    kernel = layer.construct_kernel()
    assert kernel.shape == (4, 2, 9, 3, 3)
    # Element 0 of channel pair (0, 0) sits at depth 4 + 2 with its 3x3 dense taps.
    others = layer.weight[0, 0, 1:].sum(0)
    torch.testing.assert_close(kernel[0, 0, 6], layer.weight[0, 0, 0])
    torch.testing.assert_close(kernel[0, 0, 4], others)
    assert layer(torch.randn(1, 2, 10, 6, 6)).shape == (1, 4, 10, 6, 6)
    assert "learnable_dims=(0,)" in repr(layer)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernel_count": 0}, r"kernel_count must be an int >= 1, got 0"),
        ({"dilated_kernel_size": 0}, r"dilated_kernel_size entry must be an int >= 1, got 0"),
        ({"dilated_kernel_size": (3, 3, 3)}, r"dilated_kernel_size must be .* 2 ints"),
        ({"groups": 4}, r"in_channels \(6\) must be divisible by groups \(4\)"),
        ({"in_channels": 4, "groups": 4}, r"out_channels \(6\) must be divisible by groups \(4\)"),
        ({"version": "cubic"}, r"version must be one of .* got 'cubic'"),
        ({"padding_mode": "mirror"}, r"padding_mode must be one of .* got 'mirror'"),
        ({"padding": "full"}, r"padding must be one of \('valid', 'same'\)"),
        ({"padding": "same", "stride": 2}, r"padding='same' needs stride 1"),
        ({"padding": -1}, r"padding entries must be >= 0"),
        ({"stride": 0}, r"stride entry must be an int >= 1"),
        ({"learnable_dims": (2,)}, r"learnable_dims must be .* in \[-2, 1\], got \(2,\)"),
        ({"learnable_dims": (0, -2)}, r"learnable_dims must not repeat"),
        ({"bias": "yes"}, r"bias must be True or False, got 'yes'"),
        ({"position_init_std": -1}, r"position_init_std must be a finite number >= 0, got -1"),
        ({"sigma_init": "a"}, r"sigma_init must be None or a finite number >= 0, got 'a'"),
        ({"stride": 1.5}, r"stride must be an int or a tuple of 2 ints"),
        # (a bare TypeError "'int' object is not iterable"; NaN outputs; torch's RuntimeError)
        ({"learnable_dims": 0}, r"learnable_dims must be a non-empty tuple .* got 0"),
        ({"version": "gauss", "sigma_init": math.nan}, r"sigma_init must be None or a finite"),
        ({"position_init_std": math.inf}, r"position_init_std must be a finite number"),
        # ("clamp is not supported for complex types"; "normal_kernel_cpu" not implemented)
        ({"dtype": torch.complex64}, r"dtype must be None or a real floating-point dtype, got"),
        ({"dtype": torch.int64}, r"dtype must be None or a real floating-point dtype, got"),
        ({"learnable_dims": "0"}, r"learnable_dims must be a non-empty tuple .* got '0'"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, message):
    arguments = {"in_channels": 6, "out_channels": 6, "kernel_count": 3, "dilated_kernel_size": 5}
    with pytest.raises(ValueError, match=message):
        dcls.Dcls2d(**{**arguments, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"position_init_std": -1}, r"position_init_std must be a finite number >= 0, got -1"),
        ({"sigma_init": -0.5}, r"sigma_init must be None or a finite number >= 0, got -0\.5"),
    ],
)
def test_shared_positions_check_their_init_values_as_layers_do(kwargs, message):
    # (a shared set passed -1 on to torch: "normal expects std >= 0.0", a traceback in train.py)
    with pytest.raises(ValueError, match=message):
        dcls.DclsPositions((9, 9), 8, 1, 4, version="gauss", **kwargs)


@pytest.mark.parametrize("sizes", [9, [], "9"])
def test_shared_positions_refuse_sizes_that_are_not_a_sequence_of_ints(sizes):
    # (9: a bare TypeError "'int' object is not iterable"; []: positions along no axis)
    with pytest.raises(ValueError, match=r"sizes must be a sequence of ints >= 1, one per lear"):
        dcls.DclsPositions(sizes, 4, 1, 3)
    with pytest.raises(ValueError, match=r"dtype must be None or a real floating-point dtype"):
        dcls.DclsPositions((9, 9), 4, 1, 3, dtype=torch.complex64)
    assert dcls.DclsPositions(np.array([9, 7]), 4, 1, 3).sizes == (9, 7)  # as the layers take


def test_construct_kernel_takes_one_int_for_every_axis_as_the_layers_do():
    weight, P, SIG = torch.randn(2, 1, 3), torch.randn(2, 2, 1, 3), torch.zeros(2, 2, 1, 3)
    kernel = dcls.construct_kernel(weight, P, SIG, 5)
    torch.testing.assert_close(kernel, dcls.construct_kernel(weight, P, SIG, (5, 5)))
    rows = dcls.construct_kernel(torch.randn(2, 1, 3, 7), P[:1], SIG[:1], 7, learnable_dims=(0,))
    assert kernel.shape == (2, 1, 5, 5) and rows.shape == (2, 1, 7, 7)


def test_numpy_integers_are_accepted_as_for_nn_conv2d():
    layer = dcls.Dcls2d(
        np.int64(6), 6, np.int64(3), dilated_kernel_size=np.int64(5), padding=np.int64(2),
        stride=(np.int32(1), 1), groups=np.int64(6),
    )  # fmt: skip
    assert (layer.in_channels, layer.dilated_kernel_size, layer.padding) == (6, (5, 5), (2, 2))
    assert type(layer.in_channels) is int
    rows = dcls.Dcls2d(6, 6, 3, dilated_kernel_size=5, learnable_dims=(np.int64(0),))  # (refused)
    assert rows.learnable_dims == (0,) and type(rows.learnable_dims[0]) is int
    columns = dcls.Dcls2d(6, 6, 3, dilated_kernel_size=5, learnable_dims=np.array([1]))  # (too)
    assert columns.learnable_dims == (1,) and type(columns.learnable_dims[0]) is int
    assert layer(torch.randn(1, 6, 8, 8)).shape == (1, 6, 8, 8)


def test_integer_checks_ask_operator_index_only_of_types_that_have_index(monkeypatch):
    """Dynamo 2.11 (the GPU image's torch) fails a compiled layer whose padding check lets
    ``operator.index`` raise on a list: the check must not rely on catching that TypeError."""
    from dcls import _utils

    class IndexOnlyWithIndex:
        @staticmethod
        def index(value):
            assert hasattr(value, "__index__"), f"operator.index called on {value!r}"
            return value.__index__()

    monkeypatch.setattr(_utils, "operator", IndexOnlyWithIndex)
    assert [_utils._as_int(v) for v in ([1, 2], (3,), "4", 5.0, None)] == [None] * 5
    assert [_utils._as_int(v) for v in (5, np.int64(6), torch.tensor(7))] == [5, 6, 7]
    assert _utils._as_int(torch.tensor(7.5)) is None and _utils._as_int(True) is None
    assert _utils.as_tuple([2, np.int32(3)], 2, "padding") == (2, 3)


def test_bad_input_raises_value_errors():
    layer = dcls.Dcls2d(3, 4, 2, dilated_kernel_size=3)
    with pytest.raises(ValueError, match=r"expects 3 input channels, got 5"):
        layer(torch.randn(1, 5, 8, 8))
    with pytest.raises(ValueError, match=r"expects a 4-D \(batched\) or 3-D \(unbatched\) input"):
        layer(torch.randn(8, 8))
    # An integer input would cast the kernel to integers (all zero here): refused, as by F.conv.
    for dtype in (torch.int64, torch.uint8, torch.bool):
        with pytest.raises(ValueError, match=rf"floating-point input .* got {dtype}"):
            layer(torch.ones(1, 3, 8, 8, dtype=dtype))


@pytest.mark.parametrize("name", ["P", "SIG"])
def test_replaced_positions_of_another_shape_are_named_in_forward(name):
    layer = dcls.Dcls2d(4, 4, 3, dilated_kernel_size=5, groups=2)
    setattr(layer, name, torch.nn.Parameter(torch.zeros(2, 4, 2, 5)))  # kernel_count 5, not 3
    message = rf"{name} must have shape \[2, 4, 2, 3\] .* got \[2, 4, 2, 5\]"
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(1, 4, 8, 8))


def test_extra_repr_shows_only_non_defaults():
    assert repr(dcls.Dcls2d(4, 4, 3, dilated_kernel_size=7)) == (
        "Dcls2d(4, 4, kernel_count=3, dilated_kernel_size=(7, 7), version=gauss)"
    )
    layer = dcls.Dcls1d(
        4,
        8,
        3,
        stride=2,
        padding=1,
        dilated_kernel_size=5,
        groups=4,
        bias=False,
        padding_mode="reflect",
        version="max",
    )
    assert repr(layer) == (
        "Dcls1d(4, 8, kernel_count=3, dilated_kernel_size=(5,), version=triangle, stride=(2,), "
        "padding=(1,), groups=4, bias=False, padding_mode=reflect)"
    )


def test_shared_positions_appear_once():
    model = torch.nn.Module()
    model.positions = dcls.DclsPositions((9, 9), 8, 1, 4, version="gauss")
    model.layers = torch.nn.Sequential(
        *[
            dcls.Dcls2d(
                8, 8, 4, padding=4, dilated_kernel_size=9, groups=8, positions=model.positions
            )
            for _ in range(3)
        ]
    )
    keys = list(model.state_dict())
    assert [k for k in keys if k.endswith((".P", ".SIG"))] == ["positions.P", "positions.SIG"]
    assert sum(p is model.positions.P for p in model.parameters()) == 1
    model.layers(torch.randn(1, 8, 12, 12)).sum().backward()
    assert model.positions.P.grad.abs().sum() > 0
    assert "positions=shared" in repr(model.layers[0])
    # deepcopy keeps the sharing inside the copy
    clone = copy.deepcopy(model)
    assert clone.layers[1].positions[0] is clone.positions.P
    assert clone.positions.P is not model.positions.P


def _layer_sharing_positions() -> torch.nn.Module:
    """A module owning a shared position set (``positions``) and one layer using it (``layer``)."""
    net = torch.nn.Module()
    net.positions = dcls.DclsPositions((9, 9), 8, 1, 4, version="bilinear")
    net.layer = dcls.Dcls2d(
        8, 8, 4, padding=4, dilated_kernel_size=9, groups=8, version="bilinear",
        positions=net.positions,
    )  # fmt: skip
    return net


def test_a_layer_saved_without_the_owner_of_its_positions_keeps_them():
    """The state dict of one block (or layer) holds the shared positions it uses, so that a
    strict load elsewhere restores them instead of keeping the target's own."""
    torch.manual_seed(0)
    source, target = _layer_sharing_positions(), _layer_sharing_positions()
    block = source.layer.state_dict()
    assert {"shared_positions.P", "weight", "bias"} <= set(block)
    target.layer.load_state_dict(block)  # strict
    x = torch.randn(1, 8, 12, 12)
    torch.testing.assert_close(target.layer(x), source.layer(x))
    assert [k for k in source.state_dict() if k.endswith(".P")] == ["positions.P"]  # once


def test_on_the_meta_device_a_layer_saved_without_the_owner_keeps_its_positions():
    """Every meta tensor's data_ptr is 0: the layer's own copy was dropped as if the owner's were
    in the state dict (found with a model built under ``torch.device("meta")``)."""
    with torch.device("meta"):
        net = _layer_sharing_positions()
    assert {"shared_positions.P", "weight", "bias"} <= set(net.layer.state_dict())
    assert [k for k in net.state_dict() if k.endswith(".P")] == ["positions.P"]  # once


def test_shared_positions_must_fit():
    shared = dcls.DclsPositions((9, 9), 8, 1, 4, version="bilinear")
    with pytest.raises(ValueError, match=r"shared positions must have P of shape \(2, 8, 1, 5\)"):
        dcls.Dcls2d(8, 8, 5, dilated_kernel_size=9, groups=8, version="bilinear", positions=shared)
    with pytest.raises(ValueError, match="made for version 'bilinear'"):
        dcls.Dcls2d(8, 8, 4, dilated_kernel_size=9, groups=8, version="gauss", positions=shared)


def test_to_dtype_and_no_cached_index_grid():
    layer = dcls.Dcls2d(2, 2, 3, dilated_kernel_size=5, padding=2)
    x = torch.randn(1, 2, 6, 6)
    reference = layer(x)  # a first forward must not pin anything to this dtype or device
    layer = layer.to(torch.float64)
    assert layer(x.double()).dtype == torch.float64
    torch.testing.assert_close(layer(x.double()).float(), reference)
    assert not list(layer.buffers())


def test_factory_kwargs():
    layer = dcls.Dcls2d(2, 2, 3, dilated_kernel_size=5, device="cpu", dtype=torch.float64)
    assert {p.dtype for p in layer.parameters()} == {torch.float64}


def test_channels_last_input_gives_the_same_output():
    layer = dcls.Dcls2d(8, 8, 4, dilated_kernel_size=7, padding=3, groups=8)
    x = torch.randn(2, 8, 10, 10)
    torch.testing.assert_close(layer(x.to(memory_format=torch.channels_last)), layer(x))


@pytest.mark.parametrize("version", ["bilinear", "gauss", "triangle", "v0"])
def test_compiles_without_graph_breaks(version):
    layer = dcls.Dcls2d(4, 4, 3, dilated_kernel_size=7, padding=3, groups=4, version=version)
    x = torch.randn(1, 4, 9, 9)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), layer(x))


def test_clamp_parameters_uses_the_even_size_limits():
    layer = dcls.Dcls2d(1, 1, 2, dilated_kernel_size=(4, 5), version="bilinear")
    with torch.no_grad():
        layer.P.fill_(10.0)
    layer.clamp_parameters()
    assert layer.P[0].max() == 1 and layer.P[1].max() == 2
