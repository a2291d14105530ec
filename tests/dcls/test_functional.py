"""The functional core: gradients, reference cases, the fixes over the authors' package."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dcls import functional as DF
from dcls._utils import position_limits

VERSIONS = DF.VERSIONS
ROOT = Path(__file__).resolve().parents[2]


def _params(version, n_learn, out=3, inp=2, count=4, dense=(), dtype=torch.float64):
    weight = torch.randn(out, inp, count, *dense, dtype=dtype, requires_grad=True)
    P = ((torch.rand(n_learn, out, inp, count, dtype=dtype) * 2 - 1) * 1.7).requires_grad_()
    SIG = None
    if DF.has_sigma(version):
        SIG = (torch.rand(n_learn, out, inp, count, dtype=dtype) * 0.6 + 0.05).requires_grad_()
    return weight, P, SIG


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("sizes", "learnable_dims"),
    [((5,), None), ((5, 7), None), ((4, 5, 3), None), ((5, 3), (0,)), ((3, 5, 4), (0, 2))],
)
def test_gradcheck(version, sizes, learnable_dims):
    n_learn = len(sizes) if learnable_dims is None else len(learnable_dims)
    dense = tuple(s for d, s in enumerate(sizes) if learnable_dims and d not in learnable_dims)
    weight, P, SIG = _params(version, n_learn, dense=dense)
    inputs = (weight, P) if SIG is None else (weight, P, SIG)

    def build(w, p, sig=None):
        return DF.construct_kernel(w, p, sig, sizes, version, learnable_dims)

    assert torch.autograd.gradcheck(build, inputs)


@pytest.mark.parametrize("version", VERSIONS)
def test_integer_positions_place_the_weights_exactly(version):
    # On integer positions (and, for gauss/triangle, the narrowest width) the kernel is the weights
    # placed at those cells, so the layer is an ordinary convolution with that dense kernel.
    out, inp, count, size = 4, 3, 3, 7
    weight = torch.randn(out, inp, count)
    cells = torch.stack([torch.randperm(size * size)[:count] for _ in range(out * inp)])
    cells = cells.view(out, inp, count)
    rows, cols = cells // size, cells % size
    P = torch.stack([rows, cols]).float() - size // 2
    SIG = torch.zeros_like(P) if DF.has_sigma(version) else None
    if version == "gauss":
        SIG = None
        return _gauss_narrow_case(weight, P, size)
    dense = torch.zeros(out, inp, size * size).scatter_(2, cells, weight).view(out, inp, size, size)
    x = torch.randn(2, inp, 12, 12)
    ours = DF.dcls2d(
        x, weight, P, SIG, dilated_kernel_size=size, padding=size // 2, version=version
    )
    torch.testing.assert_close(ours, F.conv2d(x, dense, padding=size // 2))


def _gauss_narrow_case(weight, P, size):
    # A Gaussian of std 0.27 on a grid point leaks exp(-0.5 / 0.27**2) ~ 1e-3 to its neighbours:
    # the kernel peaks at the positions with the weights' sign and ~99.6% of their value.
    kernel = DF.construct_kernel(weight, P, torch.zeros_like(P), (size, size), "gauss")
    rows, cols = (P + size // 2).long()
    peaks = kernel.flatten(0, 1)[
        torch.arange(weight.shape[0] * weight.shape[1]).repeat_interleave(weight.shape[2]),
        rows.flatten(),
        cols.flatten(),
    ]
    torch.testing.assert_close(peaks, weight.flatten(), rtol=1e-2, atol=1e-2)


def test_unknown_version_is_a_value_error_naming_the_choices():
    with pytest.raises(ValueError, match=r"version must be one of .*'bilinear'.*got 'cubic'"):
        DF.canonical_version("cubic")


def test_aliases_map_to_canonical_names():
    assert [DF.canonical_version(v) for v in ("v0", "v1", "max", "gauss")] == [
        "bilinear_unnormalized",
        "bilinear",
        "triangle",
        "gauss",
    ]


@pytest.mark.parametrize("size", [5, 6])
@pytest.mark.parametrize("border", ["low", "high"])
@pytest.mark.parametrize("version", ["bilinear", "bilinear_unnormalized"])
def test_bilinear_position_on_the_border_still_gets_a_gradient(size, border, version):
    # The authors' tent (relu of 1 - |x|) has exactly zero derivative at integer positions, so a
    # position clamped onto the border can never move back in.
    low, high = position_limits(size)
    P = torch.full((1, 1, 1, 1), float(low if border == "low" else high), requires_grad=True)
    weight = torch.ones(1, 1, 1)
    kernel = DF.construct_kernel(weight, P, None, (size,), version)
    # A loss that prefers the element one cell inward.
    target_cell = (low if border == "low" else high) + size // 2 + (1 if border == "low" else -1)
    (-kernel[0, 0, target_cell]).backward()
    inward = 1.0 if border == "low" else -1.0
    assert P.grad.item() * inward < 0  # gradient descent moves the position inward


@pytest.mark.parametrize("size", [5, 6])
@pytest.mark.parametrize("side", ["before", "past"])
@pytest.mark.parametrize("version", ["bilinear", "bilinear_unnormalized"])
def test_bilinear_element_wholly_outside_is_zero_with_zero_gradient(size, side, version):
    """One cell before the first or past the last (grid coordinate -1 or ``size``): nothing on
    the kernel and no gradient, as the authors' tent (not ~1/eps from the normalisation)."""
    coordinate = -1 if side == "before" else size
    P = torch.full((1, 1, 1, 1), float(coordinate - size // 2), requires_grad=True)
    weight = torch.ones(1, 1, 1, requires_grad=True)
    kernel = DF.construct_kernel(weight, P, None, (size,), version)
    assert kernel.abs().max() == 0
    (kernel * torch.arange(1.0, size + 1)).sum().backward()
    assert P.grad.item() == 0 and weight.grad.item() == 0


def test_triangle_width_learns_from_its_initial_value():
    # The triangle width is |SIG| + 1 with SIG initialised to 0, where torch.abs has zero gradient.
    weight = torch.ones(1, 1, 1)
    P = torch.full((1, 1, 1, 1), 0.3)
    SIG = torch.zeros(1, 1, 1, 1, requires_grad=True)
    kernel = DF.construct_kernel(weight, P, SIG, (7,), "triangle")
    kernel[0, 0, 3].backward()
    assert SIG.grad.abs().item() > 0


@pytest.mark.parametrize("size", [2, 4, 6, 8])
def test_even_size_clamp_keeps_every_element_on_the_kernel(size):
    P = torch.tensor([[-100.0, 100.0]]).view(1, 1, 1, 2)
    DF.clamp_positions_(P, (size,))
    kernel = DF.construct_kernel(torch.ones(1, 1, 2), P, None, (size,), "bilinear_unnormalized")
    # Each element keeps its whole mass: 1 + 1.
    assert kernel.sum().item() == pytest.approx(2.0)


def test_construction_memory_scales_with_sum_not_product_of_sizes():
    # ConvNeXt-B last stage: 1024 channels, K=40, 17x17. The authors' construction allocates
    # tensors of out*in*K*17*17 floats; ours nothing larger than the per-axis factors.
    weight = torch.randn(1024, 1, 40)
    P = torch.randn(2, 1024, 1, 40)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        DF.construct_kernel(weight, P, None, (17, 17), "bilinear")
    largest_allocation = max(e.self_cpu_memory_usage for e in prof.events())
    dense_grid_bytes = 1024 * 40 * 17 * 17 * 4
    assert 0 < largest_allocation < dense_grid_bytes / 10


def test_wrong_shapes_name_the_expected_shape():
    with pytest.raises(ValueError, match=r"P must have shape \(2, 3, 2, 4\)"):
        DF.construct_kernel(torch.randn(3, 2, 4), torch.randn(1, 3, 2, 4), None, (5, 5), "v1")
    with pytest.raises(ValueError, match="SIG must be given exactly for 'gauss' and 'triangle'"):
        DF.construct_kernel(torch.randn(3, 2, 4), torch.randn(2, 3, 2, 4), None, (5, 5), "gauss")


def test_autocast_builds_in_float32_and_convolves_in_bfloat16():
    weight, P, SIG = _params("gauss", 2, out=4, inp=1, dtype=torch.float32)
    x = torch.randn(2, 4, 10, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kernel = DF.construct_kernel(weight, P, SIG, (7, 7), "gauss")
        out = DF.dcls2d(x, weight, P, SIG, dilated_kernel_size=7, padding=3, groups=4)
    assert kernel.dtype == torch.float32
    assert out.dtype == torch.bfloat16
    reference = DF.dcls2d(x, weight, P, SIG, dilated_kernel_size=7, padding=3, groups=4)
    torch.testing.assert_close(out.float(), reference, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("version", ["bilinear", "gauss"])
def test_known_answer_positions_are_learned(version):
    """A Dcls2d fitted to a convolution with taps at known positions finds them within 0.1 px."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fit_positions.py"), "--version", version],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "max position error" in result.stderr


@pytest.mark.parametrize("sizes", [(6,), (5, 7), (3, 4, 5)])
@pytest.mark.parametrize("version", ["bilinear", "bilinear_unnormalized"])
def test_sparse_bilinear_path_equals_the_factor_product(sizes, version):
    # Positions spread beyond the grid too, where the two paths must drop the same mass.
    n, batch, count = len(sizes), 6, 5
    weight = torch.randn(batch, count, 1, dtype=torch.float64, requires_grad=True)
    P = (torch.rand(n, batch, count, dtype=torch.float64) * 2 - 1) * (max(sizes) / 2 + 1)
    P.requires_grad_()
    sparse = DF._construct_bilinear_sparse(weight.squeeze(-1), P, sizes, version == "bilinear")
    factors = DF._construct_by_factors(weight, P, None, sizes, version)
    torch.testing.assert_close(sparse, factors.reshape(batch, -1))
    g = torch.randn_like(sparse)
    grads_sparse = torch.autograd.grad(sparse, (weight, P), g)
    grads_factors = torch.autograd.grad(factors.reshape(batch, -1), (weight, P), g)
    for a, b in zip(grads_sparse, grads_factors, strict=True):
        torch.testing.assert_close(a, b)


def test_a_size_per_axis_missing_names_dilated_kernel_size():
    # A 2-D layer's tensors with a 1-D dilated_kernel_size: the bad value is the size's length.
    weight, P = torch.randn(3, 2, 4), torch.randn(2, 3, 2, 4)
    with pytest.raises(ValueError, match=r"dilated_kernel_size \(7,\) .* has 1 learnable axes"):
        DF.construct_kernel(weight, P, torch.zeros_like(P), (7,), "gauss")


@pytest.mark.parametrize("n", [1, 2, 3])
def test_dcls_nd_is_the_conv_of_the_constructed_kernel(n):
    # dcls1d/2d/3d: F.conv{n}d of construct_kernel's kernel, with stride, padding, groups, bias.
    sizes = (5, 3, 4)[:n]
    weight, P, SIG = _params("gauss", n, out=4, inp=1, count=3)
    bias = torch.randn(4, dtype=torch.float64)
    x = torch.randn(2, 2, *(9, 8, 7)[:n], dtype=torch.float64)
    functional = {1: DF.dcls1d, 2: DF.dcls2d, 3: DF.dcls3d}[n]
    out = functional(
        x, weight, P, SIG, bias, stride=2, padding=1, dilated_kernel_size=sizes, groups=2
    )
    kernel = DF.construct_kernel(weight, P, SIG, sizes, "gauss")
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    torch.testing.assert_close(out, conv(x, kernel, bias, stride=2, padding=1, groups=2))


def test_a_dilated_kernel_size_below_1_is_named():
    # (was "index -1 is out of bounds for dimension 1 with size 0" from the kernel's scatter)
    weight, P, _ = _params("bilinear", 2, out=2, inp=1, count=3, dtype=torch.float32)
    x = torch.randn(1, 2, 8, 8)
    with pytest.raises(ValueError, match=r"every dilated_kernel_size entry must be an int >= 1"):
        DF.dcls2d(x, weight, P, dilated_kernel_size=0, groups=2, version="bilinear")
    with pytest.raises(ValueError, match=r"dilated_kernel_size entry must be an int >= 1, got 0"):
        DF.construct_kernel(weight, P, None, (5, 0), "bilinear")
