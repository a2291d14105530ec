"""The Triton depthwise convolution against ``F.conv{1,2,3}d`` and its autograd.

Without CUDA the kernels run in Triton's CPU interpreter: ``triton_interpreter`` (conftest.py)
turns it on (``TRITON_INTERPRET=1``) for this module only. The kernels are wrapped on first use,
so it does not matter whether ``dcls`` was imported before. Shapes are tiny: the interpreter runs
each program in Python.
"""

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dcls.algorithms import triton as dw_triton
from dcls.algorithms.triton import INTERPRETER_BLOCKS, triton_available, triton_depthwise_conv

CUDA = torch.cuda.is_available()
TF32_RTOL = 5e-3  # 10-bit mantissas (relative rounding 2^-11) summed over a 17x17 kernel
CONVS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}
pytestmark = [
    pytest.mark.skipif(dw_triton.triton is None, reason="triton is not installed"),
    # F.conv's own warning, from the reference computations.
    pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths"),
    pytest.mark.usefixtures("triton_interpreter"),
]


def _make(shape, n, channels_last, dtype, device, requires_grad=True):
    t = torch.randn(shape, dtype=torch.float64).to(device=device, dtype=dtype)
    if channels_last:
        t = t.contiguous(memory_format=FORMATS[n + 2])
    return t.requires_grad_(requires_grad)


def _run(fn, x, w, b, gen_grad=None):
    """Output and gradients (input, kernel, bias) of ``fn(x, w, b)`` for a fixed output gradient."""
    out = fn(x, w, b)
    grad = gen_grad if gen_grad is not None else torch.cos(torch.arange(out.numel()) * 0.7)
    grad = grad.to(out).view_as(out)
    inputs = [t for t in (x, w, b) if t is not None]
    return out, torch.autograd.grad(out, inputs, grad), grad


def _reference(x, w, b, padding, grad):
    """F.conv in float64 on the same (rounded) operands."""
    xd = x.detach().double().requires_grad_()
    wd = w.detach().double().requires_grad_()
    bd = b.detach().double().requires_grad_() if b is not None else None
    n = w.dim() - 2
    out = CONVS[n](xd, wd, bd, 1, padding, 1, x.shape[-n - 1])
    inputs = [t for t in (xd, wd, bd) if t is not None]
    return out, torch.autograd.grad(out, inputs, grad.double())


def _assert_close(actual, expected, rtol):
    """Max error relative to the reference's largest magnitude."""
    assert actual.shape == expected.shape
    scale = expected.abs().max().clamp_min(1e-12)
    err = ((actual.double() - expected).abs().max() / scale).item()
    assert err <= rtol, f"relative error {err:.2e} > {rtol:.0e}"


# (n, channels, multiplier, kernel size, padding, input shape after (B,) C, channels-last, bias)
CASES = [
    (2, 3, 1, (1, 1), 0, (9, 9), False, True),
    (2, 3, 1, (3, 3), 1, (9, 9), False, True),
    (2, 3, 1, (3, 3), 1, (9, 9), True, False),
    (2, 3, 1, (4, 4), "same", (9, 9), False, True),  # even: the extra zero after
    (2, 3, 1, (4, 4), "same", (9, 8), True, True),
    (2, 3, 1, (4, 4), "valid", (9, 9), False, False),
    (2, 3, 1, (7, 7), 5, (8, 9), True, True),  # padding above half the kernel
    (2, 3, 1, (3, 5), (2, 0), (7, 9), False, True),  # per-axis ints, non-square
    (2, 3, 1, (7, 7), "same", (9, 9), True, True),
    (2, 3, 1, (17, 17), "same", (9, 9), True, True),
    (2, 3, 2, (3, 3), 1, (8, 9), False, True),  # channel multiplier
    (2, 3, 2, (4, 3), "same", (8, 7), True, False),
    (1, 3, 1, (1,), 0, (12,), False, True),
    (1, 3, 1, (4,), "same", (12,), False, True),
    (1, 3, 1, (5,), 7, (12,), False, False),  # padding above the kernel size
    (1, 3, 1, (31,), "same", (40,), False, True),
    (1, 2, 1, (41,), "same", (50,), False, True),  # a long row: its taps loop, 4 unrolled
    (1, 2, 3, (6,), "valid", (12,), False, True),
    (3, 2, 1, (3, 3, 3), 1, (5, 6, 5), True, True),
    (3, 2, 1, (2, 3, 4), "same", (5, 6, 7), False, True),
]


def _case_id(case) -> str:
    n, _, m, k, padding, _, channels_last, bias = case
    ks = "x".join(map(str, k))
    layout = "-cl" if channels_last else ""
    return f"{n}d-k{ks}-m{m}-pad{padding}{layout}{'-bias' if bias else ''}".replace(" ", "")


def _batches(case) -> list[int | None]:
    """Batch 2 for every case; batch 1 and unbatched for the small kernels (unbatched inputs have
    no channels-last format: those run contiguous)."""
    return [2] if max(case[3]) > 7 else [2, 1, None]


# The tensor-core (Toeplitz) path under the interpreter, with blocks small enough for ragged
# tiles, several channel blocks, and kernel rows cut into windows of BLOCK_K - BLOCK_W + 1 = 9 taps
# (a 17-tap row takes 2 windows, a 31-tap one 4, the last part empty); the kernel gradient takes
# BLOCK_KH = 2 kernel rows per program (odd kernel heights leave the last block half empty).
DOT_BLOCKS = {
    "conv": {"BLOCK_H": 8, "BLOCK_W": 8, "BLOCK_C": 2, "BLOCK_K": 16, "DOT": True},
    "kernel_grad": {
        "BLOCK_T": 1, "BLOCK_P": 8, "BLOCK_C": 2, "BLOCK_W": 8, "BLOCK_K": 16, "BLOCK_KH": 2,
        "DOT": True,
    },
}  # fmt: skip


@pytest.fixture
def tensor_cores(monkeypatch):
    """The interpreter runs the tensor-core path (on CUDA the autotuner chooses among both)."""
    for name, blocks in DOT_BLOCKS.items():
        monkeypatch.setitem(INTERPRETER_BLOCKS, name, blocks)


@pytest.mark.parametrize(
    ("case", "batch", "path"),
    [(case, batch, "fma") for case in CASES for batch in _batches(case)]
    + [(case, 2, "tensor_cores") for case in CASES],
    ids=lambda v: _case_id(v) if isinstance(v, tuple)
    else v.replace("_", "-") if isinstance(v, str)
    else f"batch{v}" if v else "unbatched",
)  # fmt: skip
def test_matches_conv_and_its_gradients(case, batch, path, request, device):
    if path == "tensor_cores":
        request.getfixturevalue("tensor_cores")
    n, c, m, k, padding, sizes, channels_last, with_bias = case
    shape = ((batch,) if batch else ()) + (c, *sizes)
    channels_last = channels_last and batch is not None
    x = _make(shape, n, channels_last, torch.float32, device)
    w = _make((c * m, 1, *k), n, False, torch.float32, device)
    b = _make((c * m,), n, False, torch.float32, device) if with_bias else None
    out, grads, grad = _run(lambda x, w, b: triton_depthwise_conv(x, w, b, padding), x, w, b)
    ref, ref_grads = _reference(x, w, b, padding, grad)
    _assert_close(out, ref, 1e-5)
    for g, r in zip(grads, ref_grads, strict=True):
        _assert_close(g, r, 1e-5)
    assert out.dtype == torch.float32
    if channels_last:
        assert out.is_contiguous(memory_format=FORMATS[n + 2])
        assert grads[0].is_contiguous(memory_format=FORMATS[n + 2])
    else:
        assert out.is_contiguous()


def test_tensor_core_path_takes_whole_rows_in_one_window(monkeypatch, device):
    # The CUDA tables' shape: BLOCK_K - BLOCK_W + 1 = 17 taps, a 17x17 row in one window.
    blocks = {"BLOCK_H": 16, "BLOCK_W": 16, "BLOCK_C": 4, "BLOCK_K": 32, "DOT": True}
    monkeypatch.setitem(INTERPRETER_BLOCKS, "conv", blocks)
    monkeypatch.setitem(INTERPRETER_BLOCKS, "kernel_grad", {**blocks, "BLOCK_T": 1, "BLOCK_P": 16})
    x = _make((2, 5, 18, 20), 2, True, torch.float32, device)
    w = _make((5, 1, 17, 17), 2, False, torch.float32, device)
    out, grads, grad = _run(lambda x, w, b: triton_depthwise_conv(x, w, b, "same"), x, w, None)
    ref, ref_grads = _reference(x, w, None, "same", grad)
    for actual, expected in zip((out, *grads), (ref, *ref_grads), strict=True):
        _assert_close(actual, expected, 1e-5)


def test_tensor_cores_are_autotune_candidates_except_for_float64_and_tap_tables():
    for name in ("conv", "kernel_grad"):
        for channels_last in (True, False):
            dense = dw_triton._config_table(name, channels_last, False, dot=True)
            assert any(meta["DOT"] for meta, *_ in dense)
            assert not any(meta["DOT"] for meta, *_ in dw_triton._config_table(
                name, channels_last, False, dot=False))  # fmt: skip
            assert not any(meta["DOT"] for meta, *_ in dw_triton._config_table(
                name, channels_last, True, dot=True))  # fmt: skip
            for meta, *_ in dense:  # tl.dot needs every dimension >= 16, BLOCK_K >= BLOCK_W
                if meta["DOT"]:
                    rows = meta["BLOCK_H"] if name == "conv" else meta["BLOCK_P"]
                    assert min(rows, meta["BLOCK_W"], meta["BLOCK_K"]) >= 16
                    assert meta["BLOCK_K"] >= meta["BLOCK_W"]


def test_a_strided_bias_is_read_with_its_stride(device):
    x = _make((2, 3, 6, 7), 2, False, torch.float32, device, requires_grad=False)
    w = _make((3, 1, 3, 3), 2, False, torch.float32, device, requires_grad=False)
    bias = torch.randn(6, dtype=torch.float32, device=device)[::2]  # stride 2
    assert not bias.is_contiguous()
    expected = F.conv2d(x, w, bias, 1, 1, 1, 3)
    _assert_close(triton_depthwise_conv(x, w, bias, 1), expected, 1e-5)


def test_float64_runs_the_fma_path_even_where_tensor_cores_are_asked(tensor_cores, device):
    # float64 (gradcheck) has no tensor-core dot on the GPU: the launcher turns DOT off.
    for dtype, dot in ((torch.float64, False), (torch.float32, True)):
        kernel, blocks, _, _ = dw_triton._kernel_for("conv", False, False, dtype, device)
        if CUDA:  # the autotuner without the tensor-core configs
            assert kernel is dw_triton._kernels(False)["conv", False, False, dot, False]
        else:
            assert blocks["DOT"] is dot
    x = _make((1, 2, 6, 5), 2, False, torch.float64, device)
    w = _make((2, 1, 3, 3), 2, False, torch.float64, device)
    out, grads, grad = _run(lambda x, w, b: triton_depthwise_conv(x, w, b, 1), x, w, None)
    ref, ref_grads = _reference(x, w, None, 1, grad)
    for actual, expected in zip((out, *grads), (ref, *ref_grads), strict=True):
        _assert_close(actual, expected, 1e-12)  # float64 accumulation


@pytest.mark.parametrize(
    ("conv", "cudnn", "overall", "precision"),
    [
        ("tf32", "none", "none", "tf32"),  # torch's default
        ("ieee", "none", "none", "ieee"),  # (reading cudnn.allow_tf32 raises here)
        ("none", "tf32", "none", "tf32"),  # inherited from the cuDNN-wide setting
        ("none", "none", "tf32", "tf32"),  # ... and from the global one
        ("none", "none", "none", "ieee"),
    ],
)
def test_float32_dots_follow_cudnns_conv_precision(conv, cudnn, overall, precision):
    backends = torch.backends  # (torch >= 2.9; older ones have only cudnn.allow_tf32)
    owners = (backends, backends.cudnn, backends.cudnn.conv)  # parents first: setting one
    saved = [owner.fp32_precision for owner in owners]  # may set its children (torch 2.11)
    try:
        for owner, value in zip(owners, (overall, cudnn, conv), strict=True):
            owner.fp32_precision = value
        assert dw_triton._dot_precision(torch.float32, interpret=False) == precision
        assert dw_triton._dot_precision(torch.bfloat16, interpret=False) == "ieee"
        assert dw_triton._dot_precision(torch.float32, interpret=True) == "ieee"
    finally:
        for owner, value in zip(owners, saved, strict=True):
            owner.fp32_precision = value


def test_no_autotune_key_holds_the_batch():
    # A last batch of another size must not re-tune (the kernel gradient's key held N_POS,
    # the output positions of the whole batch: a dozen configs timed again per layer shape).
    kernels = dw_triton._kernels(False)  # the CUDA autotuners (built, not compiled, on a CPU)
    assert len(kernels) == 32
    for (name, *_), kernel in kernels.items():
        assert {"C_OUT", "D_OUT", "H_OUT", "W_OUT", "KD", "KH", "KW"} <= set(kernel.keys)
        assert not {"N_POS", "CHUNK", "N_ROWS", "ROW_CHUNK"} & set(kernel.keys), name


@pytest.mark.parametrize("name", ["conv", "kernel_grad"])
def test_deterministic_mode_launches_one_fixed_config_on_cuda(name, monkeypatch):
    # The autotuner's configs sum in different orders (the kernel gradient's BLOCK_P, the
    # tensor cores): a timed choice could change the bits between a run and its resume.
    monkeypatch.setattr(dw_triton, "_interpreting", lambda: False)  # as on a GPU machine
    cuda = torch.device("cuda")
    for channels_last, tap_list in itertools.product((True, False), repeat=2):
        autotuned = dw_triton._kernels(False)[name, channels_last, tap_list, True, False]
        kernel, launch, _, _ = dw_triton._kernel_for(
            name, channels_last, tap_list, torch.bfloat16, cuda
        )
        assert (kernel, launch) == (autotuned, None)
        torch.use_deterministic_algorithms(True)
        try:
            kernel, launch, _, _ = dw_triton._kernel_for(
                name, channels_last, tap_list, torch.bfloat16, cuda
            )
        finally:
            torch.use_deterministic_algorithms(False)
        meta, warps, stages = dw_triton._config_table(name, channels_last, tap_list, False)[0]
        assert kernel is autotuned.fn and not launch["DOT"]
        assert launch == {**meta, "num_warps": warps, "num_stages": stages}


def _assert_rounded_once(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype):
    """``actual`` is ``expected`` rounded once to ``dtype`` (up to float32 accumulation error):
    what a float32 accumulator gives, and several roundings per element of a half one do not."""
    assert actual.dtype == dtype
    half_ulp = torch.finfo(dtype).eps / 2 * expected.abs()
    slack = 1e-5 * expected.abs().max()
    excess = (actual.double() - expected).abs() - half_ulp * 1.001 - slack
    assert excess.max() <= 0, f"worse than one rounding to {dtype} by {excess.max().item():.2e}"


@pytest.mark.parametrize("path", ["fma", "tensor_cores"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_half_precision_rounds_once_from_a_float32_accumulator(
    path, dtype, channels_last, request, device
):
    if path == "tensor_cores":
        request.getfixturevalue("tensor_cores")
    x = _make((2, 3, 9, 9), 2, channels_last, dtype, device)
    w = _make((3, 1, 11, 11), 2, False, dtype, device)
    b = _make((3,), 2, False, dtype, device)
    out, grads, grad = _run(lambda x, w, b: triton_depthwise_conv(x, w, b, "same"), x, w, b)
    ref, ref_grads = _reference(x, w, b, "same", grad.to(dtype))
    _assert_rounded_once(out, ref, dtype)
    for g, r in zip(grads, ref_grads, strict=True):
        _assert_rounded_once(g, r, dtype)


def test_kernel_31_in_2d(device):
    x = _make((1, 2, 6, 7), 2, True, torch.float32, device)
    w = _make((2, 1, 31, 31), 2, False, torch.float32, device)
    out, grads, grad = _run(lambda x, w, b: triton_depthwise_conv(x, w, b, "same"), x, w, None)
    ref, ref_grads = _reference(x, w, None, "same", grad)
    _assert_close(out, ref, 1e-5)
    for g, r in zip(grads, ref_grads, strict=True):
        _assert_close(g, r, 1e-5)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_tile_channel_tap_and_chunk_edges(channels_last, monkeypatch, device):
    # Small interpreter blocks (CUDA autotunes its own): ragged spatial tiles (10x6 outputs in
    # 4x4), channel blocks (6 in 4) and tap blocks (12 in 8), two reduction chunks, and a
    # channel multiplier on top.
    monkeypatch.setitem(INTERPRETER_BLOCKS, "conv", {"BLOCK_H": 4, "BLOCK_W": 4, "BLOCK_C": 4})
    monkeypatch.setitem(
        INTERPRETER_BLOCKS, "kernel_grad", {"BLOCK_T": 8, "BLOCK_P": 16, "BLOCK_C": 4}
    )
    x = _make((2, 3, 7, 6), 2, channels_last, torch.float32, device)
    w = _make((6, 1, 4, 3), 2, False, torch.float32, device)
    b = _make((6,), 2, False, torch.float32, device)
    out, grads, grad = _run(lambda x, w, b: triton_depthwise_conv(x, w, b, (3, 1)), x, w, b)
    ref, ref_grads = _reference(x, w, b, (3, 1), grad)
    _assert_close(out, ref, 1e-5)
    for g, r in zip(grads, ref_grads, strict=True):
        _assert_close(g, r, 1e-5)


@pytest.mark.parametrize(
    ("n", "k", "m", "padding"),
    [(2, (3, 4), 2, "same"), (1, (5,), 1, 6), (3, (2, 3, 2), 1, 1)],
    ids=["2d-m2", "1d", "3d"],
)
def test_gradcheck_float64(n, k, m, padding, device):
    sizes = {1: (7,), 2: (5, 6), 3: (3, 4, 4)}[n]
    x = _make((2, 2, *sizes), n, False, torch.float64, device)
    w = _make((2 * m, 1, *k), n, False, torch.float64, device)
    b = _make((2 * m,), n, False, torch.float64, device)
    assert torch.autograd.gradcheck(
        lambda x, w, b: triton_depthwise_conv(x, w, b, padding), (x, w, b), fast_mode=True
    )


def _sparse_kernel(shape, device):
    """A kernel whose channels use a few taps each; channel 1 uses none."""
    w = torch.randn(shape, dtype=torch.float64)
    w = w * (torch.rand(shape, dtype=torch.float64) < 0.25)
    w[1] = 0
    return w.float().to(device).requires_grad_()


@pytest.mark.parametrize("block_c", [1, 4], ids=["per-channel", "block4"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_skip_zero_taps_and_kernel_grad_mask(block_c, channels_last, monkeypatch, device):
    if not CUDA:
        monkeypatch.setitem(
            INTERPRETER_BLOCKS, "conv", {**INTERPRETER_BLOCKS["conv"], "BLOCK_C": block_c}
        )
        monkeypatch.setitem(
            INTERPRETER_BLOCKS,
            "kernel_grad",
            {**INTERPRETER_BLOCKS["kernel_grad"], "BLOCK_C": block_c},
        )
    x = _make((2, 3, 9, 8), 2, channels_last, torch.float32, device)
    w = _sparse_kernel((6, 1, 7, 5), device)
    mask = torch.rand(w.shape, device=device) < 0.4
    b = _make((6,), 2, False, torch.float32, device)

    def fn(x, w, b):
        return triton_depthwise_conv(x, w, b, (2, 3), skip_zero_taps=True, kernel_grad_mask=mask)

    out, (gx, gw, gb), grad = _run(fn, x, w, b)
    ref, (rx, rw, rb) = _reference(x, w, b, (2, 3), grad)
    _assert_close(out, ref, 1e-5)
    _assert_close(gx, rx, 1e-5)
    _assert_close(gb, rb, 1e-5)
    _assert_close(gw, rw * mask, 1e-5)
    assert (gw[~mask] == 0).all()


def test_tap_table_lists_the_used_taps_of_each_block():
    mask = torch.tensor(
        [[0, 1, 0, 0, 1], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
        dtype=torch.bool,
    )
    table, counts = dw_triton._tap_table(mask, 2)
    assert counts.tolist() == [3, 1, 0]
    assert table[0, :3].tolist() == [1, 3, 4] and table[1, :1].tolist() == [0]


def test_custom_ops_pass_opcheck(device):
    x = _make((2, 3, 6, 5), 2, True, torch.float32, device, requires_grad=False)
    w = _make((6, 1, 3, 4), 2, False, torch.float32, device, requires_grad=False)
    b = _make((6,), 2, False, torch.float32, device, requires_grad=False)
    g = _make((2, 6, 6, 5), 2, True, torch.float32, device, requires_grad=False)
    pads = [1, 1, 1, 2]
    ops = torch.ops.dcls
    samples = [
        (
            ops.triton_dw_conv.default,
            (x.requires_grad_(), w.requires_grad_(), b, pads, False, None),
        ),
        (ops.triton_dw_conv_input_grad.default, (g, w.detach(), [2, 3, 6, 5], pads, True, False)),
        (ops.triton_dw_conv_kernel_grad.default, (x.detach(), g, [3, 4], pads, None)),
    ]
    for op, args in samples:
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_meta_tensors_give_shapes_and_formats_without_running(channels_last):
    x = torch.empty(2, 3, 9, 8, device="meta")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.empty(6, 1, 4, 3, device="meta", requires_grad=True)
    out = triton_depthwise_conv(x.requires_grad_(), w, None, "same")
    assert out.shape == (2, 6, 9, 8) and out.device.type == "meta"
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt)
    gx, gw = torch.autograd.grad(out, (x, w), torch.empty_like(out))
    assert gx.shape == x.shape and gx.is_contiguous(memory_format=fmt)
    assert gw.shape == w.shape


def test_compile_fullgraph_traces_forward_and_backward(device):
    x = _make((2, 3, 8, 7), 2, True, torch.float32, device)
    w = _make((3, 1, 5, 5), 2, False, torch.float32, device)
    b = _make((3,), 2, False, torch.float32, device)

    def fn(x, w, b):
        return torch.relu(triton_depthwise_conv(x, w, b, "same")) * 2

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    out, grads, _ = _run(compiled, x, w, b)
    ref, ref_grads, _ = _run(fn, x, w, b)
    torch.testing.assert_close(out, ref)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r)


def test_autocast_casts_like_conv2d(device):
    x = _make((2, 3, 8, 7), 2, True, torch.float32, device)
    w = _make((3, 1, 5, 5), 2, False, torch.float32, device)
    b = _make((3,), 2, False, torch.float32, device)
    dtype = torch.bfloat16
    with torch.autocast(device.type, dtype=dtype):
        out = triton_depthwise_conv(x, w, b, 2)
        expected = F.conv2d(x, w, b, 1, 2, 1, 3)
    assert out.dtype == expected.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    grads = torch.autograd.grad(out.float().sum(), (x, w, b))
    assert [g.dtype for g in grads] == [torch.float32] * 3
    # The reference: the same computation on the operands rounded to bfloat16, in float64.
    ref, _ = _reference(x.to(dtype), w.to(dtype), b.to(dtype), 2, torch.ones_like(out))
    _assert_close(out, ref, 1e-2)


def test_double_backward_raises(device):
    x = _make((1, 2, 5, 5), 2, False, torch.float32, device)
    w = _make((2, 1, 3, 3), 2, False, torch.float32, device)
    out = triton_depthwise_conv(x, w, None, 1)
    (gx,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="not twice differentiable"):
        gx.sum().backward()


def test_interpreter_set_before_triton_is_imported(tmp_path):
    # The other import order than this module's (triton is imported before the fixture sets the
    # variable): Triton's own library functions are then interpreted ones.
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            os.environ["TRITON_INTERPRET"] = "1"
            import torch, torch.nn.functional as F
            from dcls.algorithms.triton import triton_depthwise_conv
            x = torch.randn(2, 3, 6, 5, requires_grad=True)
            w = torch.randn(3, 1, 3, 4, requires_grad=True)
            ours = triton_depthwise_conv(x, w, None, "same")
            for out in (ours, F.conv2d(x, w, None, 1, "same", 1, 3)):
                grad = torch.autograd.grad(out.square().sum(), w)[0]
                print(out.sum().item(), *grad.flatten()[:3].tolist())
            """
        )
    )
    root = Path(dw_triton.__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    ours, expected = (list(map(float, line.split())) for line in result.stdout.splitlines())
    assert ours == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_triton_available_follows_the_interpreter(monkeypatch):
    assert not triton_available("meta")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_available("cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not triton_available("cpu")
    assert triton_available("cuda") == CUDA


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernel": torch.randn(3, 2, 3, 3)}, "depthwise"),
        ({"kernel": torch.randn(4, 1, 3, 3)}, "depthwise"),
        ({"kernel": torch.randn(3, 3, 3)}, "spatial axes"),
        ({"kernel": torch.randn(3, 1, 1, 3, 3, 3)}, "1 to 3 spatial axes"),
        ({"stride": 2}, "stride 1"),
        ({"stride": (1, 2)}, "stride 1"),
        ({"padding": "full"}, "padding"),
        ({"padding": -1}, "padding"),
        ({"padding": (1, 1, 1)}, "padding"),
        ({"padding": 1.5}, "padding"),
        ({"padding": "valid", "kernel": torch.randn(3, 1, 9, 3)}, "no output"),
        ({"bias": torch.randn(4)}, "bias"),
        ({"kernel": torch.randn(3, 1, 3, 3, dtype=torch.float64)}, "dtype"),
        (
            {
                "input": torch.randint(0, 3, (2, 3, 7, 7)),
                "kernel": torch.ones(3, 1, 3, 3, dtype=torch.long),
            },
            "dtype",
        ),
        ({"kernel_grad_mask": torch.ones(3, 1, 3, 3)}, "kernel_grad_mask"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # CPU tensors are valid, on a GPU machine too
    args = {
        "input": torch.randn(2, 3, 7, 7),
        "kernel": torch.randn(3, 1, 3, 3),
        "bias": None,
        "padding": 1,
    } | kwargs
    with pytest.raises(ValueError, match=match):
        triton_depthwise_conv(**args)


def test_autotune_summary_names_the_choice_and_the_fastest_of_each_path(monkeypatch):
    # No GPU here: a real autotuner left as Triton's leaves it after tuning one key (the chosen
    # config added to `cache`, that tuning's timings in `configs_timings`, [median, p20, p80]
    # per config in Triton 3.8, a float in 3.6), recorded after the launch.
    triton = dw_triton.triton
    fma = triton.Config({"BLOCK_H": 8, "BLOCK_W": 8, "BLOCK_C": 32, "BLOCK_K": 32, "DOT": False},
                        num_warps=4, num_stages=1)  # fmt: skip
    dot = triton.Config({"BLOCK_H": 16, "BLOCK_W": 16, "BLOCK_C": 16, "BLOCK_K": 32, "DOT": True},
                        num_warps=4, num_stages=1)  # fmt: skip
    tuner = dw_triton._autotuned(dw_triton._conv_kernel, [], key=["C_OUT"])
    taps = dw_triton._autotuned(dw_triton._conv_kernel, [], key=["C_OUT"])  # same name and keys
    kernels = {("conv", True, False, True, False): tuner, ("conv", True, True, False, False): taps}
    monkeypatch.setattr(dw_triton, "_COMPILED_KERNELS", kernels)
    monkeypatch.setattr(dw_triton, "_AUTOTUNE_TIMINGS", {})
    key = (96, 1, 56, 56, 1, "torch.bfloat16")
    tuner.cache[key] = dot
    tuner.configs_timings = {fma: [0.9, 0.8, 1.0], dot: [0.3, 0.2, 0.4]}
    dw_triton._record_autotuning(tuner)
    other = (192, 1, 28, 28, 1, "torch.bfloat16")
    tuner.cache[other] = fma
    tuner.configs_timings = {fma: 0.1, dot: 0.2}
    dw_triton._record_autotuning(tuner)
    tuner.cache[key] = dot  # a launch with a tuned key leaves the last tuning's timings
    dw_triton._record_autotuning(tuner)
    taps.cache[key] = fma  # the tap-list kernel tuned on the same shape keeps its own timings
    taps.configs_timings = {fma: 0.5}
    dw_triton._record_autotuning(taps)

    first, second, third = dw_triton.autotune_summary()
    assert first.startswith("conv/input grad NHWC key (96, 1, 56, 56, 1, 'torch.bfloat16'): DOT")
    assert "best FMA 0.900 ms (FMA 8x8x32 w4 s1)" in first
    assert "best DOT 0.300 ms (DOT 16x16x16 k32 w4 s1)" in first
    assert second.startswith("conv/input grad NHWC key (192, 1, 28, 28, 1, 'torch.bfloat16'): FMA")
    assert "best FMA 0.100 ms" in second and "best DOT 0.200 ms" in second
    assert third.startswith("conv/input grad NHWC taps key (96, 1, 56, 56, 1, 'torch.bfloat16')")
    assert third.split(": ", 1)[1].startswith("FMA")
    assert "best FMA 0.500 ms" in third and "DOT" not in third.split(": ", 1)[1]


def test_a_device_without_triton_raises_value_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        triton_depthwise_conv(torch.randn(1, 2, 5, 5), torch.randn(2, 1, 3, 3), None, 1)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize(("channels", "size"), [(96, 56), (192, 28), (384, 14), (768, 7)])
def test_convnext_t_stage_shapes_on_gpu_in_bfloat16(channels, size):
    assert "TRITON_INTERPRET" not in os.environ or os.environ["TRITON_INTERPRET"] in ("", "0")
    device = torch.device("cuda")
    x = _make((8, channels, size, size), 2, True, torch.bfloat16, device)
    w = _make((channels, 1, 17, 17), 2, False, torch.bfloat16, device)
    b = _make((channels,), 2, False, torch.bfloat16, device)
    out, grads, grad = _run(lambda x, w, b: triton_depthwise_conv(x, w, b, "same"), x, w, b)
    dense, dense_grads, _ = _run(
        lambda x, w, b: F.conv2d(x, w, b, 1, "same", 1, channels), x, w, b, grad
    )
    ref, ref_grads = _reference(x, w, b, "same", grad)
    assert out.is_contiguous(memory_format=torch.channels_last)
    # As close to the float64 reference as cuDNN's own bfloat16 convolution, or within 1e-2.
    for actual, cudnn, r in zip(
        (out, *grads), (dense, *dense_grads), (ref, *ref_grads), strict=True
    ):
        cudnn_err = ((cudnn.double() - r).abs().max() / r.abs().max()).item()
        _assert_close(actual, r, max(1e-2, 2 * cudnn_err))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_float32_with_tf32_on_gpu_every_tensor_core_config(monkeypatch):
    """float32 takes TF32 tensor-core dots where cuDNN may use TF32 (the default): the autotuned
    op, then each tensor-core config (compiled by the autotuning), at ConvNeXt-T's stage 2."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    device, c = torch.device("cuda"), 384
    x = _make((8, c, 14, 14), 2, True, torch.float32, device)
    w = _make((c, 1, 17, 17), 2, False, torch.float32, device)
    out, grads, grad = _run(lambda x, w, b: triton_depthwise_conv(x, w, b, "same"), x, w, None)
    ref, ref_grads = _reference(x, w, None, "same", grad)
    for actual, expected in zip((out, *grads), (ref, *ref_grads), strict=True):
        _assert_close(actual, expected, TF32_RTOL)
    x3, dy3 = x.detach().unsqueeze(2), grad.view_as(out).unsqueeze(2)
    pads, ks = [0, 8, 8], [1, 17, 17]
    for config in _tensor_core_configs("conv"):
        y = torch.empty_like(dy3)
        dw_triton._launch_conv(
            x3, w.detach().reshape(c, -1), None, y, pads, ks, 1, 1, False, True, config
        )
        _assert_close(y.squeeze(2), ref, TF32_RTOL)
    for config in _tensor_core_configs("kernel_grad"):
        g = dw_triton._launch_kernel_grad(x3, dy3, pads, ks, 1, None, True, config)
        _assert_close(g.reshape(c, 1, 17, 17), ref_grads[1], TF32_RTOL)


def _tensor_core_configs(name: str) -> list[tuple]:
    """The channels-last tensor-core configs of one kernel's autotune table."""
    return [c for c in dw_triton._config_table(name, True, False, dot=True) if c[0]["DOT"]]


def _configs_to_check(name: str, channels_last: bool) -> list[tuple]:
    """Every dense autotune config on CUDA; under the interpreter the tensor-core ones (the FMA
    path is checked with other blocks above, and runs too slowly interpreted at CUDA sizes)."""
    table = dw_triton._config_table(name, channels_last, False, dot=True)
    return table if CUDA else [c for c in table if c[0]["DOT"]]


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("channels_last", [True, False], ids=["nhwc", "nchw"])
def test_every_autotune_config_is_right(channels_last, device):
    # The autotuner runs whichever config is fastest for a shape: each one must be right (on
    # CUDA, compiled; here, the same block sizes under the interpreter). One ragged shape (C and
    # sizes not multiples of the blocks; on CUDA 32 channels, 16-divisible as ConvNeXt's, so the
    # benchmarks after it find these specialisations compiled), a 17x17 kernel, bf16.
    c = 32 if CUDA else 18
    x = _make((1, c, 19, 17), 2, channels_last, torch.bfloat16, device, requires_grad=False)
    w = _make((c, 1, 17, 17), 2, False, torch.bfloat16, device, requires_grad=False)
    dy = _make((1, c, 19, 17), 2, channels_last, torch.bfloat16, device, requires_grad=False)
    ref, (_, ref_grad_w) = _reference(x, w, None, "same", dy)
    pads, ks = [0, 8, 8], [1, 17, 17]
    x3, dy3 = x.unsqueeze(2), dy.unsqueeze(2)
    scale = (ref.abs().max().item(), ref_grad_w.abs().max().item())
    for config in _configs_to_check("conv", channels_last):
        out = torch.empty_like(dy3)
        dw_triton._launch_conv(
            x3, w.reshape(c, -1), None, out, pads, ks, 1, 1, False, channels_last, config
        )
        err = (out.squeeze(2).double() - ref).abs().max().item() / scale[0]
        assert err < 1e-2, (config, err)
    for config in _configs_to_check("kernel_grad", channels_last):
        grad = dw_triton._launch_kernel_grad(x3, dy3, pads, ks, 1, None, channels_last, config)
        err = (grad.reshape(c, 1, 17, 17).double() - ref_grad_w).abs().max().item() / scale[1]
        assert err < 1e-2, (config, err)


def _triton_sass():
    """``scripts/triton_sass.py``: compilation for sm_90 with Triton's bundled ptxas (no GPU)
    and ``cuobjdump``'s resource usage and SASS."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    try:
        import triton_sass
    finally:
        sys.path.pop(0)
    return triton_sass


def _compile_for_hopper(fn, constexprs: dict, dtype: str, num_warps: int, num_stages: int):
    return _triton_sass().compile_for_hopper(fn, constexprs, dtype, num_warps, num_stages)


def _spills(cubin: bytes) -> int:
    """Per-thread local memory (register spills), in bytes."""
    return _triton_sass().resource_usage(cubin)["local_bytes"]


def _hopper_configs() -> list:
    """Every autotune config of both kernels, both layouts, dense and tap tables, and the
    forward's 1-row tables (the kernel gradient's are a subset of its others)."""
    if dw_triton.triton is None:
        return []
    return [
        pytest.param(
            name,
            channels_last,
            tap_list,
            meta,
            warps,
            stages,
            id=f"{name}-{'nhwc' if channels_last else 'nchw'}-{'taps' if tap_list else 'dense'}-"
            f"{'row-' if single_row else ''}{'dot' if meta['DOT'] else 'fma'}{i}",
        )
        for name in ("conv", "kernel_grad")
        for channels_last in (True, False)
        for tap_list in (False, True)
        for single_row in ((False, True) if name == "conv" else (False,))
        for i, (meta, warps, stages) in enumerate(
            dw_triton._config_table(name, channels_last, tap_list, True, single_row)
        )
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "channels_last", "tap_list", "meta", "warps", "stages"),
                         _hopper_configs())  # fmt: skip
def test_every_autotune_config_compiles_for_hopper_without_spills(
    name, channels_last, tap_list, meta, warps, stages
):
    # The interpreter runs the kernels as Python: this catches what only the compiler rejects
    # (an autotune config that fails to compile would stop the autotuner on the GPU), and
    # register spills, for a 17x17 kernel in bfloat16.
    dw_triton._kernels(False)  # (makes the reduction's combiner compilable if need be)
    tl = dw_triton.tl
    unit = {"sxc": 1, "syc": 1} if channels_last else {"sxw": 1, "syw": 1}
    constexprs = {"KD": 1, "KH": 17, "KW": 17, "M": 1, "TAP_LIST": tap_list, **unit}
    constexprs |= {"CHANNELS_LAST": channels_last, "ACC": tl.float32, "DOT_F32": False}
    constexprs |= {"PRECISION": "tf32", **meta}
    if name == "conv":
        fn = dw_triton._conv_kernel
        constexprs |= {"R": 1, "HAS_BIAS": True, "UNROLL_KW": 17}
    else:
        fn = dw_triton._kernel_grad_kernel
    kernel = _compile_for_hopper(fn, constexprs, "bf16", warps, stages)
    assert _spills(kernel.asm["cubin"]) == 0
    # The tensor-core configs issue mma instructions, the FMA ones none.
    assert ("mma" in kernel.asm["ptx"]) == meta["DOT"]


def test_tensor_core_path_compiles_for_float32_as_tf32():
    dw_triton._kernels(False)
    meta, warps, stages = dw_triton._config_table("conv", True, False, dot=True)[-1]
    assert meta["DOT"]
    constexprs = {"KD": 1, "KH": 17, "KW": 17, "M": 1, "R": 1, "TAP_LIST": False, "sxc": 1}
    constexprs |= {"syc": 1, "HAS_BIAS": True, "CHANNELS_LAST": True, "ACC": dw_triton.tl.float32}
    constexprs |= {"DOT_F32": False, "PRECISION": "tf32", "UNROLL_KW": 17, **meta}
    kernel = _compile_for_hopper(dw_triton._conv_kernel, constexprs, "fp32", warps, stages)
    assert ".tf32" in kernel.asm["ptx"]


def _fma_count(kernel_width: int) -> int:
    """FMAs in the PTX of the 1-row NCHW forward (its first config) for one kernel width."""
    import re

    dw_triton._kernels(False)
    meta, warps, stages = dw_triton._config_table("conv", False, False, True, True)[0]
    constexprs = {"KD": 1, "KH": 1, "KW": kernel_width, "M": 1, "R": 1, "TAP_LIST": False}
    constexprs |= {"sxw": 1, "syw": 1, "HAS_BIAS": False, "CHANNELS_LAST": False}
    constexprs |= {"ACC": dw_triton.tl.float32, "DOT_F32": False, "PRECISION": "tf32"}
    constexprs |= {"UNROLL_KW": dw_triton._kw_unroll(kernel_width), **meta}
    kernel = _compile_for_hopper(dw_triton._conv_kernel, constexprs, "bf16", warps, stages)
    assert _spills(kernel.asm["cubin"]) == 0
    return len(re.findall(r"\bfma\.rn\.f32\b", kernel.asm["ptx"]))


def test_short_kernel_rows_unroll_fully_and_long_ones_loop():
    # ConvNeXt-dcls's 17-tap rows: one body per tap, as with Triton's static_range. A 1-D DCLS
    # kernel of 101 taps unrolled fully compiled in 11 s per config (251 taps: 100 s): long rows
    # loop, 4 taps per iteration.
    per_tap = _fma_count(1)
    assert per_tap > 0
    assert _fma_count(17) == 17 * per_tap
    assert dw_triton._kw_unroll(dw_triton._MAX_UNROLLED_KW) == dw_triton._MAX_UNROLLED_KW
    long_row = _fma_count(101)
    assert long_row <= 2 * dw_triton._LONG_ROW_UNROLL * per_tap  # the loop and its remainder


def test_single_output_rows_take_one_row_tiles_without_tensor_cores():
    # A 1-D convolution has one output row: the 2-D tables' 2 to 16 rows per tile would be masked.
    for channels_last, tap_list in itertools.product((True, False), repeat=2):
        rows = dw_triton._config_table("conv", channels_last, tap_list, True, single_row=True)
        assert rows and all(meta["BLOCK_H"] == 1 and not meta["DOT"] for meta, *_ in rows)
        tiles = dw_triton._config_table("conv", channels_last, tap_list, True)
        assert all(meta["BLOCK_H"] > 1 for meta, *_ in tiles)
        if tap_list:  # the tap tables fix the channel block
            block_c = dw_triton._TAP_BLOCK_C[channels_last]
            assert all(meta["BLOCK_C"] == block_c for meta, *_ in rows)
        # Kernel rows of one tap: no tensor-core config stacking several kernel rows.
        grads = dw_triton._config_table("kernel_grad", channels_last, tap_list, True, True)
        assert all(meta["BLOCK_KH"] == 1 for meta, *_ in grads)
        assert any(meta["DOT"] for meta, *_ in grads) is not tap_list


@pytest.mark.parametrize("n", [1, 2])
def test_launchers_ask_for_one_row_tables_where_there_is_one_row(n, monkeypatch, device):
    calls = []
    kernel_for = dw_triton._kernel_for

    def spy(name, *args, single_row=False, **kwargs):
        calls.append((name, single_row))
        return kernel_for(name, *args, single_row=single_row, **kwargs)

    monkeypatch.setattr(dw_triton, "_kernel_for", spy)
    x = _make((2, 3, *(9,) * n), n, False, torch.float32, device)
    w = _make((3, 1, *(5,) * n), n, False, torch.float32, device)
    _run(lambda x, w, b: triton_depthwise_conv(x, w, b, "same"), x, w, None)
    one_row = n == 1
    assert sorted(calls) == [("conv", one_row), ("conv", one_row), ("kernel_grad", one_row)]


def test_deterministic_mode_takes_the_one_row_table_for_one_row(monkeypatch):
    monkeypatch.setattr(dw_triton, "_interpreting", lambda: False)  # as on a GPU machine
    cuda = torch.device("cuda")
    torch.use_deterministic_algorithms(True)
    try:
        _, launch, _, _ = dw_triton._kernel_for(
            "conv", False, False, torch.bfloat16, cuda, single_row=True
        )
    finally:
        torch.use_deterministic_algorithms(False)
    assert launch["BLOCK_H"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("channels_last", [True, False], ids=["nhwc", "nchw"])
def test_every_one_row_config_is_right(channels_last, device):
    # Each 1-row config, as the autotuner may run it, on a 2-D input of one output row (the
    # layouts 1-D tensors lack) with a 41-tap row: ragged along W and C. Tap tables on a kernel
    # with zero taps. On CUDA, compiled.
    c = 10  # ragged for every channel block (4 to 128); 150 positions for every tile width
    x = _make((2, c, 3, 150), 2, channels_last, torch.float32, device, requires_grad=False)
    w = _make((c, 1, 3, 41), 2, False, torch.float32, device, requires_grad=False)
    x3 = x.unsqueeze(2)
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    for tap_list in (False, True):
        kernel = w.clone()
        if tap_list:
            kernel[:, :, :, ::3] = 0
        expected = F.conv2d(x.double(), kernel.double(), None, 1, (0, 20), 1, c)
        for config in dw_triton._config_table("conv", channels_last, tap_list, True, True):
            out = torch.empty((2, c, 1, 1, 150), device=device).contiguous(memory_format=fmt)
            dw_triton._launch_conv(
                x3, kernel.reshape(c, -1), None, out, [0, 0, 20], [1, 3, 41], 1, 1, tap_list,
                channels_last, config,
            )  # fmt: skip
            _assert_close(out.squeeze(2), expected, 1e-5)
