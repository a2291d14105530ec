"""Equivalence with the authors' package (`pip install dcls`, import name `DCLS`), our oracle."""

import logging

import DCLS.construct.modules as authors  # the dev extra's oracle: missing must fail, not skip
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dcls
from dcls._utils import position_limits

logging.getLogger().setLevel(logging.ERROR)  # their Dcls2d logs a warning per instance on CPU

OURS = {1: dcls.Dcls1d, 2: dcls.Dcls2d, 3: dcls.Dcls3d}
THEIRS = {1: authors.Dcls1d, 2: authors.Dcls2d, 3: authors.Dcls3d}
AUTHOR_VERSIONS = ("v0", "v1", "gauss", "max")


def _randomize_(module: torch.nn.Module, size: int) -> None:
    """Spread positions uniformly over the whole kernel (as far as a clamp lets them go, never on
    an integer) and widths around their init, so every code path is exercised."""
    low, high = position_limits(size)
    with torch.no_grad():
        module.P.uniform_(low, high)
        if module.SIG is not None:
            module.SIG.uniform_(-0.8, 0.8)


def _pair(n: int, size: int, version: str, **kwargs):
    theirs = THEIRS[n](dilated_kernel_size=size, version=version, **kwargs)
    _randomize_(theirs, size)
    ours = OURS[n](dilated_kernel_size=size, version=version, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def _grads(module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    module.zero_grad()
    x = x.clone().requires_grad_()
    out = module(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    return out.detach(), {**grads, "input": x.grad}


def _assert_close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> None:
    """Max error relative to the reference's largest entry (floored: some grads are exactly 0)."""
    scale = b.abs().max().clamp_min(0.1)
    assert ((a - b).abs().max() / scale).item() <= rtol


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    n=st.sampled_from([1, 2, 3]),
    version=st.sampled_from(AUTHOR_VERSIONS),
    size=st.integers(2, 7),
    count=st.integers(1, 4),
    groups=st.sampled_from([1, 2]),
    stride=st.integers(1, 2),
    padding=st.integers(0, 3),
    padding_mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
    bias=st.booleans(),
)
def test_outputs_and_gradients_match_authors(
    n, version, size, count, groups, stride, padding, padding_mode, bias
):
    torch.manual_seed(size * 31 + count)
    if n == 3:
        size = min(size, 5)
    theirs, ours = _pair(
        n,
        size,
        version,
        in_channels=2 * groups,
        out_channels=2 * groups,
        kernel_count=count,
        groups=groups,
        stride=stride,
        padding=padding,
        padding_mode=padding_mode,
        bias=bias,
    )
    spatial = (9, 8, 7)[:n] if n < 3 else (6, 7, 5)
    x = torch.randn(2, 2 * groups, *spatial)
    # float32: same outputs within 1e-5 of the largest output.
    out_t, _ = _grads(theirs, x)
    out_o, _ = _grads(ours, x)
    _assert_close(out_o, out_t)
    # float64: same outputs and gradients to 1e-9 (in float32 the gradients of P and SIG sum
    # terms that cancel, so both implementations carry rounding noise of ~1e-6 there).
    out_t, grads_t = _grads(theirs.double(), x.double())
    out_o, grads_o = _grads(ours.double(), x.double())
    _assert_close(out_o, out_t, rtol=1e-9)
    order = dcls.conv._AUTHORS_AXIS_ORDER.get((n, ours.version), tuple(range(n)))
    for name, grad in grads_t.items():
        if name in ("P", "SIG"):
            grad = grad[list(order)]  # their axis order -> ours
        _assert_close(grads_o[name], grad, rtol=1e-9)


@pytest.mark.parametrize("version", ["v0", "v1"])
def test_an_element_on_the_authors_outer_limit_is_zero_with_zero_gradient(version):
    """Their clamp lets a position reach ``+size // 2`` on an even-sized kernel: one cell past the
    grid. There the element is 0 and so is its gradient, as theirs (the side pointing in gave
    about ``1 / eps`` for the normalised kernel)."""
    torch.manual_seed(0)
    theirs, ours = _pair(2, 6, version, in_channels=2, out_channels=2, kernel_count=3, groups=2)
    with torch.no_grad():
        theirs.P[0, :, :, 0] = 3.0  # row 3 + 3 = 6: past the last row
        theirs.P[1, :, :, 1] = 3.0  # the same along the columns
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 2, 9, 8, dtype=torch.float64)
    out_t, grads_t = _grads(theirs.double(), x)
    out_o, grads_o = _grads(ours.double(), x)
    _assert_close(out_o, out_t, rtol=1e-9)
    order = dcls.conv._AUTHORS_AXIS_ORDER.get((2, ours.version), (0, 1))
    _assert_close(grads_o["P"], grads_t["P"][list(order)], rtol=1e-9)
    assert grads_o["P"][order.index(0), :, :, 0].abs().max() == 0
    assert grads_o["P"][order.index(1), :, :, 1].abs().max() == 0
    assert grads_o["P"].abs().max() > 0  # the other positions learn


@pytest.mark.parametrize("version", ["bilinear", "gauss", "triangle", "bilinear_unnormalized"])
def test_non_square_kernel_puts_each_element_where_its_position_says(version):
    # One element at P = (row -2, column +3) in a 5x9 kernel: peak at (5//2 - 2, 9//2 + 3).
    layer = dcls.Dcls2d(1, 1, 1, dilated_kernel_size=(5, 9), version=version, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.P.copy_(torch.tensor([-2.0, 3.0]).view(2, 1, 1, 1))
        if layer.SIG is not None:
            layer.SIG.fill_(0.0)
    kernel = layer.construct_kernel()[0, 0]
    assert kernel.shape == (5, 9)
    assert (kernel == kernel.max()).nonzero().tolist() == [[0, 7]]
    # The authors' v1 reads the axes in reverse: with P = 0 their peak is at (4, 2), not (2, 4).
    theirs = authors.Dcls2d(1, 1, 1, dilated_kernel_size=(5, 9), version="v1", bias=False)
    with torch.no_grad():
        theirs.P.zero_()
    their_kernel = theirs.DCK(theirs.weight, theirs.P, theirs.SIG)[0, 0]
    assert (their_kernel.abs() == their_kernel.abs().max()).nonzero().tolist() == [[4, 2]]


def test_3d_non_cubic_kernel_is_not_empty():
    # A 3-D v1 kernel of size (3, 5, 7) comes out all zero with the authors' package.
    layer = dcls.Dcls3d(1, 1, 2, dilated_kernel_size=(3, 5, 7), version="v1")
    assert layer.construct_kernel().abs().sum() > 0
    with torch.no_grad():
        layer.P.zero_()
        layer.weight.fill_(1.0)
    kernel = layer.construct_kernel()[0, 0]
    assert kernel[1, 2, 3].item() == pytest.approx(2.0, rel=1e-6)


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("version", AUTHOR_VERSIONS)
def test_state_dict_round_trip(n, version):
    theirs, ours = _pair(
        n, 5, version, in_channels=3, out_channels=6, kernel_count=3, groups=3, padding=2
    )
    x = torch.randn(2, 3, *(8,) * n)
    # ours -> ours: our own state dict (version 2) is loaded as is.
    again = OURS[n](3, 6, 3, dilated_kernel_size=5, version=version, groups=3, padding=2)
    again.load_state_dict(ours.state_dict())
    _assert_close(again(x), theirs(x))
    # Metadata stripped (as a filter function would): taken as ours, not reordered.
    stripped = OURS[n](3, 6, 3, dilated_kernel_size=5, version=version, groups=3, padding=2)
    stripped.load_state_dict(dict(ours.state_dict()))
    _assert_close(stripped(x), theirs(x))


def test_released_convnext_layout_v0_loads_unchanged():
    # The released ConvNeXt-dcls checkpoints: depthwise v0, 17x17, K=34, P of shape (2, C, 1, K).
    theirs = authors.Dcls2d(8, 8, 34, dilated_kernel_size=17, padding=8, groups=8, version="v0")
    _randomize_(theirs, 17)
    ours = dcls.Dcls2d(8, 8, 34, dilated_kernel_size=17, padding=8, groups=8, version="v0")
    ours.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(ours.P, theirs.P)
    x = torch.randn(1, 8, 20, 20)
    _assert_close(ours(x), theirs(x))


@pytest.mark.parametrize("flat_dim", [0, 1])
@pytest.mark.parametrize("version", AUTHOR_VERSIONS)
def test_dcls2dk1d_state_dict_loads_into_one_learnable_axis(flat_dim, version):
    torch.manual_seed(0)
    theirs = authors.Dcls2dK1d(
        4,
        4,
        3,
        dilated_kernel_size=11,
        padding=(5, 0) if flat_dim == 0 else (0, 5),
        groups=2,
        version=version,
        flat_dim=flat_dim,
    )
    _randomize_(theirs, 11)
    sizes, dims = ((11, 1), (0,)) if flat_dim == 0 else ((1, 11), (1,))
    ours = dcls.Dcls2d(
        4,
        4,
        3,
        dilated_kernel_size=sizes,
        padding=tuple(s // 2 for s in sizes),
        groups=2,
        version=version,
        learnable_dims=dims,
    )
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 4, 13, 12)
    _assert_close(ours(x), theirs(x))


def test_dcls2dk1d_state_dict_into_a_wider_dense_axis_is_refused():
    theirs = authors.Dcls2dK1d(4, 4, 3, dilated_kernel_size=11, version="v1")
    ours = dcls.Dcls2d(4, 4, 3, dilated_kernel_size=(11, 3), version="v1", learnable_dims=(0,))
    with pytest.raises(ValueError, match=r"the authors' Dcls2dK1d .* not dense sizes \(3,\)"):
        ours.load_state_dict(theirs.state_dict())


def test_dcls3_1d_state_dict_is_refused_naming_its_layout():
    theirs = authors.Dcls3_1d(4, 4, 5, dense_kernel_size=3, dilated_kernel_size=9, version="gauss")
    assert theirs.P.shape == (1, 4, 4, 3, 3, 5)  # a position per dense tap
    ours = dcls.Dcls3d(4, 4, 5, dilated_kernel_size=(3, 3, 9), learnable_dims=(2,))
    with pytest.raises(ValueError, match=r"P has shape \(1, 4, 4, 3, 3, 5\).*authors' Dcls3_1d"):
        ours.load_state_dict(theirs.state_dict())


@pytest.mark.parametrize(
    ("n", "sizes"), [(2, (7, 5)), (2, (5, 9)), (3, (7, 5, 3)), (3, (5, 5, 7))], ids=str
)
@pytest.mark.parametrize("version", AUTHOR_VERSIONS)
def test_non_square_state_dicts_load_exactly(n, sizes, version):
    # Their position along one axis is centred on another axis's middle where their axis order
    # differs from ours: the load shifts it (authors_to_ours), so their kernel is ours.
    torch.manual_seed(0)
    theirs = THEIRS[n](2, 2, 3, dilated_kernel_size=sizes, groups=2, version=version, padding=1)
    with torch.no_grad():
        theirs.P.uniform_(-1.4, 1.4)  # inside every axis of either convention
        if theirs.SIG is not None:
            theirs.SIG.uniform_(0.1, 0.8)
    ours = OURS[n](2, 2, 3, dilated_kernel_size=sizes, groups=2, version=version, padding=1)
    ours.double().load_state_dict(theirs.double().state_dict())  # shifted in float64
    x = torch.randn(2, 2, *(9,) * n, dtype=torch.float64)
    out_t, grads_t = _grads(theirs, x)
    out_o, grads_o = _grads(ours, x)
    _assert_close(out_o, out_t, rtol=1e-9)
    order = dcls.conv.authors_axis_order(ours) or list(range(n))
    _assert_close(grads_o["P"], grads_t["P"][order], rtol=1e-9)
    _assert_close(grads_o["weight"], grads_t["weight"], rtol=1e-9)


@pytest.mark.parametrize("version", ["v1", "gauss"])
def test_a_state_dict_without_metadata_loads_through_load_authors_state_dict(version):
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(
        authors.Dcls2d(2, 2, 3, dilated_kernel_size=(7, 5), groups=2, version=version, padding=2)
    )
    _randomize_(theirs[0], 5)
    ours = torch.nn.Sequential(
        dcls.Dcls2d(2, 2, 3, dilated_kernel_size=(7, 5), groups=2, version=version, padding=2)
    )
    rebuilt = {key: value for key, value in theirs.state_dict().items()}  # metadata lost
    x = torch.randn(1, 2, 9, 9)
    ours.load_state_dict(rebuilt)  # taken as ours: the axes stay swapped
    assert (ours(x) - theirs(x)).abs().max() > 1e-2
    result = dcls.load_authors_state_dict(ours, rebuilt)
    assert not result.missing_keys and not result.unexpected_keys
    _assert_close(ours(x), theirs(x))
    torch.testing.assert_close(rebuilt["0.P"], theirs[0].P)  # the caller's dict is unchanged


@pytest.mark.parametrize("version", ["v1", "gauss"])
def test_a_kink_of_theirs_still_learns_here(version):
    # v1: a position on a grid point (after rounding), where their relu(1 - |x|) has its kinks.
    # gauss: SIG = 0, what set_sigma_ sets for the minimum width (0.27), where their |SIG| has
    # its kink. Their gradient is 0 there (a rounded position would never move again); ours is
    # the one-sided one. Same outputs.
    torch.manual_seed(0)
    theirs, ours = _pair(2, 7, version, in_channels=2, out_channels=2, kernel_count=3, groups=2)
    name = "P" if version == "v1" else "SIG"
    with torch.no_grad():
        if name == "P":
            theirs.P.copy_(torch.randint(-2, 3, theirs.P.shape).float())
        else:
            theirs.SIG.zero_()
    ours.load_state_dict(theirs.state_dict())
    if name == "SIG":
        assert dcls.set_sigma_(ours, 0.27) == 1 and ours.SIG.abs().max() == 0
    x = torch.randn(1, 2, 9, 9, dtype=torch.float64)
    out_t, grads_t = _grads(theirs.double(), x)
    out_o, grads_o = _grads(ours.double(), x)
    _assert_close(out_o, out_t, rtol=1e-9)
    assert grads_t[name].abs().max() == 0
    assert (grads_o[name] != 0).float().mean() > 0.5
