"""The Triton bilinear kernel construction against the torch one, values and gradients.

Without CUDA the kernels run in Triton's interpreter (``triton_interpreter`` in conftest.py sets
``TRITON_INTERPRET=1`` for this module only).
"""

import types

import pytest
import torch

import dcls
from dcls import functional as DF
from dcls import triton_construct
from dcls.triton_construct import bilinear_kernel

CUDA = torch.cuda.is_available()
pytestmark = [
    pytest.mark.skipif(triton_construct.triton is None, reason="triton is not installed"),
    pytest.mark.gpu,  # all of it runs in gpu_check.sh's first step, on CUDA
    pytest.mark.usefixtures("triton_interpreter"),
]


def _positions(sizes, rows, count, dtype, device):
    """Random positions over the grid and a little beyond, with the special cases of the torch
    construction's one-sided derivative: integer coordinates on each side of the centre, the
    border, half outside and wholly outside."""
    spread = torch.tensor([s / 2 for s in sizes], dtype=torch.float64).view(-1, 1, 1)
    P = (torch.rand(len(sizes), rows, count, dtype=torch.float64) * 2.4 - 1.2) * spread
    for a, size in enumerate(sizes):
        P[a, :, 0] = size // 3  # integer, right of the centre
        P[a, :, 1] = -(size // 2)  # integer, the first cell
        P[a, :, 2] = size - 1 - size // 2 + 0.5  # half past the last cell
        P[a, :, 3] = -1.0 if size > 2 else 0.0  # integer, left of the centre
        if count > 4:  # wholly outside along one axis only (row r: axis r % L, side r // L % 2)
            outside = torch.arange(rows) % len(sizes) == a
            past = (torch.arange(rows) // len(sizes)) % 2 == 0
            P[a, outside & past, 4] = size - size // 2  # one cell past the last
            P[a, outside & ~past, 4] = -(size // 2) - 1  # one cell before the first
    return P.to(device=device, dtype=dtype).requires_grad_()


SIZES = [[17, 17], [7], [5, 6, 4], [1, 9], [31]]


@pytest.mark.parametrize("normalize", [True, False], ids=["bilinear", "unnormalized"])
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_values_and_gradients_equal_the_torch_construction(sizes, normalize, device):
    rows, count = 6, 5
    weight = torch.randn(rows, count, dtype=torch.float64, device=device, requires_grad=True)
    P = _positions(sizes, rows, count, torch.float64, device)
    expected = DF._construct_bilinear_sparse(weight, P, sizes, normalize)
    actual = bilinear_kernel(weight, P, sizes, normalize, DF.NORMALIZATION_EPS)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-12)
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, (weight, P), grad)
    actual_grads = torch.autograd.grad(actual, (weight, P), grad)
    for a, e in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-12)


def test_float32_matches_and_stays_float32(device):
    weight = torch.randn(40, 34, device=device, requires_grad=True)
    P = _positions([17, 17], 40, 34, torch.float32, device)
    actual = bilinear_kernel(weight, P, [17, 17], True, DF.NORMALIZATION_EPS)
    expected = DF._construct_bilinear_sparse(weight, P, [17, 17], True)
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)
    grads = torch.autograd.grad(actual.square().sum(), (weight, P))
    expected_grads = torch.autograd.grad(expected.square().sum(), (weight, P))
    for a, e in zip(grads, expected_grads, strict=True):  # (float32 sums in another order)
        torch.testing.assert_close(a, e, rtol=0, atol=1e-5 * e.abs().max().item())


def test_gradcheck(device):
    weight = torch.randn(3, 4, dtype=torch.float64, device=device, requires_grad=True)
    # Away from integer coordinates, where the tent has a kink.
    P = (torch.rand(2, 3, 4, dtype=torch.float64) * 4 - 2).round() + 0.37
    P = P.to(device).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda w, p: bilinear_kernel(w, p, [5, 6], True, DF.NORMALIZATION_EPS), (weight, P)
    )


def test_custom_ops_pass_opcheck(device):
    weight = torch.randn(3, 4, device=device, requires_grad=True)
    P = _positions([5, 5], 3, 4, torch.float32, device).detach().requires_grad_()
    torch.library.opcheck(
        triton_construct._forward_op, (weight, P, [5, 5], True, DF.NORMALIZATION_EPS)
    )
    grad = torch.randn(3, 25, device=device)
    torch.library.opcheck(
        triton_construct._backward_op,
        (grad, weight.detach(), P.detach(), [5, 5], True, DF.NORMALIZATION_EPS),
    )


def test_double_backward_raises(device):
    weight = torch.randn(3, 4, device=device, requires_grad=True)
    P = _positions([5, 5], 3, 4, torch.float32, device)
    kernel = bilinear_kernel(weight, P, [5, 5], True, DF.NORMALIZATION_EPS)
    (grad_weight,) = torch.autograd.grad(kernel.square().sum(), weight, create_graph=True)
    with pytest.raises(RuntimeError, match="not twice differentiable"):
        grad_weight.sum().backward()


def test_layers_use_it_where_enabled_with_the_same_results(monkeypatch, device):
    # On CUDA the layers build bilinear kernels with it; here the device check is lifted so the
    # interpreter runs it inside a DCLS layer, forward and backward.
    torch.manual_seed(0)
    layer = dcls.Dcls2d(6, 6, 5, dilated_kernel_size=9, padding=4, groups=6, version="bilinear")
    layer = layer.to(device)
    x = torch.randn(2, 6, 8, 8, device=device)
    monkeypatch.setattr(triton_construct, "ENABLED", False)
    expected = layer(x)
    expected.square().sum().backward()
    expected_grads = [p.grad.clone() for p in (layer.weight, layer.P)]
    layer.zero_grad()
    calls = []
    original = triton_construct.bilinear_kernel
    monkeypatch.setattr(triton_construct, "ENABLED", True)
    monkeypatch.setattr(
        triton_construct, "bilinear_kernel", lambda *a: calls.append(1) or original(*a)
    )
    if not CUDA:
        monkeypatch.setattr(DF, "_use_triton_construction", lambda *a: triton_construct.ENABLED)
    actual = layer(x)
    actual.square().sum().backward()
    assert calls, "the layer did not build its kernel with the Triton construction"
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    for p, e in zip((layer.weight, layer.P), expected_grads, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("version", "sizes", "learnable", "device_type", "enabled", "expected"),
    [
        ("bilinear", [17, 17], [0, 1], "cuda", True, True),
        ("bilinear_unnormalized", [7], [0], "cuda", True, True),
        ("gauss", [17, 17], [0, 1], "cuda", True, False),
        ("bilinear", [17, 17], [0], "cuda", True, False),  # a dense axis
        ("bilinear", [17, 17], [0, 1], "cpu", True, False),
        ("bilinear", [17, 17], [0, 1], "cuda", False, False),
    ],
)
def test_used_for_bilinear_kernels_with_every_axis_learnable_on_cuda_only(
    monkeypatch, version, sizes, learnable, device_type, enabled, expected
):
    monkeypatch.setattr(triton_construct, "ENABLED", enabled)
    monkeypatch.setattr(DF, "triton_available", lambda device: True)
    weight = types.SimpleNamespace(device=torch.device(device_type))  # what the check reads
    assert DF._use_triton_construction(weight, version, sizes, learnable) is expected


@pytest.mark.parametrize(
    ("weight_shape", "p_shape", "sizes", "dtype", "match"),
    [
        ((3, 4), (2, 3, 4), [5], torch.float32, "P \\(L, B, K\\) and L = 1 to 3 sizes"),
        ((3, 4), (4, 3, 4), [2, 2, 2, 2], torch.float32, "L = 1 to 3"),
        ((3, 4), (1, 3, 4), [5], torch.float16, "float32 or float64"),
    ],
)
def test_bad_arguments_raise_value_error(weight_shape, p_shape, sizes, dtype, match, device):
    weight = torch.zeros(weight_shape, dtype=dtype, device=device)
    P = torch.zeros(p_shape, dtype=dtype, device=device)
    with pytest.raises(ValueError, match=match):
        bilinear_kernel(weight, P, sizes, True, DF.NORMALIZATION_EPS)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["fp32", "fp64"])
def test_kernels_compile_for_hopper_without_a_gpu(dtype):
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    for fn, blocks in (
        (triton_construct._forward_kernel, triton_construct._FORWARD_BLOCKS),
        (triton_construct._backward_kernel, {"BLOCK": triton_construct._BACKWARD_BLOCK}),
    ):
        for count, sizes in ((1, (1, 1, 31)), (2, (1, 17, 17)), (3, (5, 6, 4))):
            constexprs = {"L": count, "S0": sizes[0], "S1": sizes[1], "S2": sizes[2]}
            constexprs |= {"NORMALIZE": True, **blocks}
            signature = {
                name: "constexpr" if name in constexprs
                else f"*{dtype}" if name.endswith("_ptr")
                else "fp32" if name == "EPS"
                else "i32"
                for name in inspect.signature(fn).parameters
            }  # fmt: skip
            source = ASTSource(JITFunction(fn), signature, constexprs)
            kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32))
            assert kernel.asm["cubin"]
