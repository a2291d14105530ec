"""Depthwise stride-1 convolution for large kernels in Triton: forward, input and kernel gradient.

:func:`triton_depthwise_conv` computes what ``F.conv{1,2,3}d(input, kernel, bias, 1, padding,
1, groups=C)`` computes for a depthwise kernel ``(C * m, 1, *k)``: zero padding (ints, ``"same"``
with the extra zero after for even kernels, ``"valid"``), any kernel size (sizes are
compile-time constants: each new size compiles new kernels), float32/bfloat16/float16 with
float32 accumulation (float64 accumulates in float64, for ``gradcheck``), NCHW or channels-last,
batched or unbatched, any channel multiplier ``m``, bias optional. The three kernels are
``torch.library`` custom ops (``dcls::triton_dw_conv``, ``dcls::triton_dw_conv_input_grad``,
``dcls::triton_dw_conv_kernel_grad``) with fake kernels and autograd, so
``torch.compile(fullgraph=True)`` traces them without a graph break.

Design (written for Hopper; untimed here, see ``docs/triton_plan.md`` for what to measure):

* Every problem is viewed as 3-D, ``(B, C, D, H, W)``, 1-D and 2-D ones through unit axes, with
  generic strides: NCHW and NHWC tensors (and expanded output gradients) are read in place.
* Forward (``_conv_kernel``): one program computes an output tile of ``BLOCK_H x BLOCK_W``
  positions (one depth slice) by ``BLOCK_C`` channels in a float32 accumulator. It loops over
  the taps, ``kd``/``kh`` as ``scf.for`` loops and ``kw`` unrolled (so a 31x31 kernel does not
  unroll 961 bodies; rows longer than 32 taps unroll 4 at a time, for compile time), and per
  tap does one masked load of the shifted input
  tile (the mask is the zero padding), one load of the tap's ``BLOCK_C`` weights (the kernel is
  passed transposed, ``(taps, C)``, so that load is contiguous) and one FMA. The halo is re-read
  from L1/L2 per tap: Triton has no register shifts, so the tile's inputs are not reused in
  registers. Tile orientation follows the layout: channels-last configs take wide ``BLOCK_C``
  (contiguous along C), NCHW configs take wide ``BLOCK_W`` (contiguous along W); Triton's
  coalescing pass orders each access by the contiguity it proves (strides equal to 1 are
  specialised). Programs on one channel block walk the spatial tiles of one image in order, so
  neighbouring tiles share their halo in L2. A single output row (1-D convolutions) takes its
  own tables of ``BLOCK_H = 1`` configs.
* Forward on tensor cores (``DOT``, autotune candidates beside the FMA configs, not for float64):
  per channel and kernel row ``kh``, a tile's outputs are ``y[h, j] += sum_k x[h + kh, w0 + k] *
  T[k, j]`` with ``T`` the banded (Toeplitz) ``BLOCK_K x BLOCK_W`` matrix ``T[k, j] = w[kh, k -
  j]`` for ``0 <= k - j < BLOCK_K - BLOCK_W + 1`` (the taps per window; longer rows take several
  windows). A ``[BLOCK_C]`` batch of ``[BLOCK_H, BLOCK_K] x [BLOCK_K, BLOCK_W]`` ``tl.dot`` per
  row: about ``BLOCK_K / taps`` times the FMA path's multiply-adds (32/17 for ConvNeXt-dcls), on
  tensor cores, with one load per operand element instead of one per multiply-add. Half
  precision operands multiply exactly and accumulate in float32; float32 ones go through TF32
  where ``torch.backends.cudnn.allow_tf32`` lets ``F.conv2d`` use it (the default), IEEE
  otherwise.
* Input gradient: the same kernel on the output gradient with the flipped kernel and the
  complementary padding ``(k - 1 - before, k - 1 - after)`` (negative entries crop). With a
  channel multiplier ``m`` the kernel sums, per input channel, its ``m`` output channels
  (constexpr ``R = m``; the forward has ``M = m``, input channel ``= weight channel // M``).
* Kernel gradient (``_kernel_grad_kernel``): ``dW[c, t] = sum_(b, d, h, w) x_pad[b, c, .. + t] *
  dy[b, c, d, h, w]``. Programs over ``(channel block, tap block, chunk of the flattened
  (b, d, h, w) reduction)``; each keeps a ``[BLOCK_T, BLOCK_P, BLOCK_C]`` accumulator (the output
  gradient tile is loaded once and reused by the ``BLOCK_T`` taps), reduces it over ``P`` once at
  the end and writes float32 partial sums to a ``[chunks, C, taps]`` buffer that torch sums
  afterwards: deterministic, no atomics. The chunk count aims at about four programs per SM.
  The bias gradient is ``dy.sum`` in torch. On tensor cores (``DOT``): per channel, kernel row
  ``kh`` and window, ``G[k, j] = sum over output rows (and column tiles) of x[row + kh, w0 + k] *
  dy[row, w0 + j]``, a ``[BLOCK_K, BLOCK_P] x [BLOCK_P, BLOCK_W]`` ``tl.dot`` per step of
  ``BLOCK_P`` rows, and at the end ``dW[kh, kw] = sum_j G[j + kw, j]`` (diagonal sums).
  ``BLOCK_KH`` kernel rows share a program, stacked along the dot's M axis, so each output
  gradient tile is read once for all of them. Its chunks are whole output rows, so every config
  writes the same ``[chunks, C, taps]`` buffer.
* Sparse taps: with ``skip_zero_taps=True`` the forward and input-gradient loops visit, per
  channel block, only the taps that are non-zero in at least one of its channels (a sorted tap
  table and its lengths, built by torch per call; the loop over them is dynamic).
  ``kernel_grad_mask`` restricts the kernel gradient to the taps a caller needs (for DCLS: the
  taps the interpolation reads) and returns zeros elsewhere; tap blocks then come from the same
  kind of per-channel-block tables. The tables fix ``BLOCK_C``: 32 for channels-last, 1 (one
  channel per program, per-channel tap lists) for NCHW. Measured on ConvNeXt-T-dcls kernels, a
  block of 16 or more channels covers almost every tap once positions spread out; only
  per-channel lists keep DCLS's sparsity (``docs/triton_plan.md``). Skipping zero taps also skips
  ``0 * inf``: a non-finite input under a zero tap gives a finite output where ``F.conv`` gives
  NaN.
* Block sizes and FMA or tensor-core path: ``triton.autotune`` on CUDA over the small per-layout
  tables below (keyed by shapes, kernel size, layout, dtype and dot precision); every config
  compiles for sm_90 without register spills (a test checks it with Triton's bundled ``ptxas``).
  In deterministic mode (``torch.use_deterministic_algorithms(True)``) one fixed FMA config per
  kernel instead: configs sum in different orders, and a timed choice may differ between runs.
  Under the interpreter one fixed config (:data:`INTERPRETER_BLOCKS`, the FMA path unless a test
  asks for ``DOT``; the interpreter's dot runs on float32 copies of the operands).

Interpreter: the kernels are plain functions wrapped on first use, for the mode in force at each
call (``triton.knobs.runtime.interpret``, i.e. ``TRITON_INTERPRET=1``): interpreted then (CPU
tensors), compiled otherwise (CUDA tensors). Importing this module, or triton, before or after
setting the variable makes no difference: the kernels call Triton builtins only. Under the
interpreter a bfloat16 result is written in float32 and rounded by torch, because the interpreter
truncates float32 to bfloat16 where the GPU rounds to nearest. Without Triton the module imports
and :func:`triton_available` is False.

The file is longer than 400 lines because the two kernels, their launchers, the three custom
ops and the public function belong together (it becomes ``dcls/algorithms/triton.py``).
"""

import contextlib
import functools
import logging
import math
import os
from collections.abc import Sequence

import torch
from torch import Tensor

from dcls.algorithms._common import (
    autocast_cast,
    autocast_enabled,
    channels_last_format,
    checked_pad_pairs,
)

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only torch builds (e.g. macOS) ship without triton
    triton = None
    tl = None

__all__ = [
    "INTERPRETER_BLOCKS",
    "autotune_summary",
    "triton_available",
    "triton_depthwise_conv",
]

_logger = logging.getLogger(__name__)

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# One config per kernel under the interpreter (big blocks: fewer interpreted programs and loop
# steps). Tests may patch these to exercise tile and block edges, and the tensor-core path
# ("DOT": True); keys left out take their value from _INTERPRETER_DEFAULTS.
INTERPRETER_BLOCKS: dict[str, dict[str, int]] = {
    "conv": {"BLOCK_H": 16, "BLOCK_W": 16, "BLOCK_C": 4},
    "kernel_grad": {"BLOCK_T": 64, "BLOCK_P": 64, "BLOCK_C": 4},
}
_INTERPRETER_DEFAULTS = {
    "conv": {"DOT": False, "BLOCK_K": 32},
    "kernel_grad": {"DOT": False, "BLOCK_W": 16, "BLOCK_K": 32, "BLOCK_KH": 1},
}

# CUDA autotune tables, per layout (True: channels-last, contiguous along C; False: NCHW,
# contiguous along W). The FMA path: (BLOCK_H, BLOCK_W, BLOCK_C, num_warps, num_stages).
_CONV_CONFIGS = {
    True: [
        (4, 8, 64, 4, 1),
        (8, 8, 32, 4, 1),
        (8, 8, 64, 8, 1),
        (4, 16, 32, 4, 2),
        (8, 16, 32, 8, 1),
        (2, 8, 128, 8, 1),
    ],
    False: [
        (4, 32, 8, 4, 1),
        (8, 32, 4, 4, 1),
        (2, 64, 8, 4, 1),
        (8, 16, 8, 4, 1),
        (4, 64, 8, 8, 2),
    ],
}
# The tensor-core (Toeplitz) path: (BLOCK_H, BLOCK_W, BLOCK_C, BLOCK_K, num_warps, num_stages);
# every dot dimension is at least 16, and BLOCK_K - BLOCK_W + 1 taps of a kernel row go per
# window (17 for BLOCK_K = 32, BLOCK_W = 16: ConvNeXt-dcls's rows in one window). Triton lays
# the warps of a batched (3-D) dot along its batch axis, BLOCK_C: where num_warps > BLOCK_C (the
# NCHW rows) the warps repeat each other's MMAs but share the loads; with num_warps = BLOCK_C
# those configs need 228-255 registers instead of 96-184 (sm_90, bf16, 17x17). Timed on a GPU,
# the autotuner decides (docs/triton_plan.md, knob 6).
_DOT_CONV_CONFIGS = {
    True: [
        (16, 16, 16, 32, 4, 1),
        (16, 16, 8, 32, 4, 1),
        (32, 16, 8, 32, 4, 1),
        (16, 32, 8, 64, 4, 1),
        (32, 16, 16, 32, 8, 1),
        (16, 16, 16, 32, 4, 2),
    ],
    False: [
        (16, 16, 8, 32, 4, 1),
        (32, 16, 8, 32, 4, 1),
        (16, 32, 8, 64, 4, 1),
        (32, 32, 2, 64, 4, 1),
        (64, 16, 1, 32, 4, 1),
    ],
}
# Single output rows (1-D convolutions, and 2-D ones with one output row): the FMA path with
# BLOCK_H = 1, as wide along W as the 2-D configs are in positions (the 2-D tables tile 2 to 8
# rows, mostly masked there). No tensor-core configs: their dots need 16 rows per tile.
_ROW_CONV_CONFIGS = {
    True: [(1, 32, 64, 4, 1), (1, 64, 32, 4, 1), (1, 32, 128, 8, 1), (1, 64, 64, 8, 1)],
    False: [(1, 128, 8, 4, 1), (1, 256, 4, 4, 1), (1, 64, 16, 4, 1), (1, 256, 8, 8, 1)],
}
_ROW_TAP_CONV_CONFIGS = {
    True: [(1, 32, 32, 4, 1), (1, 64, 32, 8, 1)],
    False: [(1, 256, 1, 4, 1), (1, 512, 1, 4, 1), (1, 1024, 1, 8, 1)],
}
# Kernel rows up to this length are unrolled in the forward's FMA loop (ConvNeXt-dcls: 17 taps);
# longer ones (1-D DCLS kernels of a hundred taps and more) run a loop unrolled this many times:
# full unrolling compiles in 11 s per config at 101 taps and 100 s at 251 (sm_90, bf16).
_MAX_UNROLLED_KW = 32
_LONG_ROW_UNROLL = 4
# Kernel gradient, FMA path: (BLOCK_T, BLOCK_P, BLOCK_C, num_warps, num_stages).
_KERNEL_GRAD_CONFIGS = {
    True: [
        (16, 16, 32, 4, 1),
        (32, 8, 32, 4, 1),
        (16, 32, 16, 4, 1),
        (16, 16, 64, 8, 1),
        (32, 16, 32, 8, 1),
    ],
    False: [
        (16, 64, 4, 4, 1),
        (8, 64, 8, 4, 1),
        (32, 32, 8, 8, 1),
        (16, 128, 4, 8, 1),
    ],
}
# Kernel gradient, tensor cores: (BLOCK_P output rows, BLOCK_W, BLOCK_C, BLOCK_K, BLOCK_KH
# kernel rows per program, num_warps, num_stages). More kernel rows per program read each output
# gradient tile fewer times (17 times per tile with one row per program).
_DOT_KERNEL_GRAD_CONFIGS = {
    True: [
        (16, 16, 16, 32, 1, 4, 1),
        (16, 16, 8, 32, 1, 4, 1),
        (32, 16, 8, 32, 1, 4, 1),
        (16, 32, 8, 64, 1, 4, 1),
        (16, 16, 8, 32, 4, 8, 1),
        (16, 16, 16, 32, 2, 8, 1),
        (32, 16, 8, 32, 2, 8, 1),
    ],
    False: [
        (16, 16, 8, 32, 1, 4, 1),
        (32, 32, 2, 64, 1, 4, 1),
        (64, 16, 1, 32, 1, 4, 1),
        (64, 32, 1, 64, 1, 4, 1),
        (32, 16, 2, 32, 4, 4, 1),
    ],
}
# Tap-table modes (skip_zero_taps, kernel_grad_mask): the tables fix BLOCK_C per layout, so only
# the other sizes are tuned. NCHW takes one channel per program: per-channel tap lists, the only
# granularity at which trained DCLS kernels stay sparse (docs/triton_plan.md).
_TAP_CONV_CONFIGS = {
    True: [(4, 8, 32, 4, 1), (8, 8, 32, 4, 1), (4, 16, 32, 4, 1), (8, 16, 32, 8, 1)],
    False: [(8, 32, 1, 4, 1), (4, 64, 1, 4, 1), (16, 32, 1, 4, 1), (8, 64, 1, 8, 1)],
}
_TAP_KERNEL_GRAD_CONFIGS = {
    True: [(16, 16, 32, 4, 1), (32, 8, 32, 4, 1), (32, 16, 32, 8, 1)],
    False: [(16, 128, 1, 4, 1), (32, 64, 1, 4, 1), (16, 256, 1, 8, 1), (32, 128, 1, 8, 1)],
}


def _config_table(
    name: str, channels_last: bool, tap_list: bool, dot: bool, single_row: bool = False
) -> list[tuple]:
    """``(meta-parameters, num_warps, num_stages)`` per autotune config of one kernel: the FMA
    configs, plus the tensor-core ones if ``dot`` (never with tap tables). ``single_row``: for
    the forward, one output row (the 1-row tables, FMA only); for the kernel gradient, kernel
    rows of one tap (the tensor-core configs that stack one kernel row per program)."""
    if name == "conv":
        fma_names, fma_fixed = ("BLOCK_H", "BLOCK_W", "BLOCK_C"), {"BLOCK_K": 32}
        dot_names, dot_fixed = ("BLOCK_H", "BLOCK_W", "BLOCK_C", "BLOCK_K"), {}
        if single_row:
            fma = (_ROW_TAP_CONV_CONFIGS if tap_list else _ROW_CONV_CONFIGS)[channels_last]
        else:
            fma = (_TAP_CONV_CONFIGS if tap_list else _CONV_CONFIGS)[channels_last]
        dots = [] if single_row else _DOT_CONV_CONFIGS[channels_last]
    else:
        fma_names = ("BLOCK_T", "BLOCK_P", "BLOCK_C")
        fma_fixed = {"BLOCK_W": 16, "BLOCK_K": 32, "BLOCK_KH": 1}
        dot_names = ("BLOCK_P", "BLOCK_W", "BLOCK_C", "BLOCK_K", "BLOCK_KH")
        dot_fixed = {"BLOCK_T": 1}
        fma = (_TAP_KERNEL_GRAD_CONFIGS if tap_list else _KERNEL_GRAD_CONFIGS)[channels_last]
        dots = _DOT_KERNEL_GRAD_CONFIGS[channels_last]
        if single_row:  # BLOCK_KH > 1 would stack masked kernel rows
            dots = [c for c in dots if c[4] == 1]
    table = [
        ({**dict(zip(fma_names, c[:3], strict=True)), **fma_fixed, "DOT": False}, *c[3:])
        for c in fma
    ]
    if dot and not tap_list:
        count = len(dot_names)
        table += [
            ({**dict(zip(dot_names, c[:count], strict=True)), **dot_fixed, "DOT": True}, *c[count:])
            for c in dots
        ]
    return table


_TAP_BLOCK_C = {True: 32, False: 1}
_CHUNK_NOMINAL = (32, 32)  # (BLOCK_C, BLOCK_T) assumed when sizing the reduction chunks
_MIN_CHUNK = 1024  # positions per kernel-gradient program, at least (CUDA)


def _interpreting() -> bool:
    """Whether Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1``)."""
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def triton_available(device: torch.device | str) -> bool:
    """Whether :func:`triton_depthwise_conv` can run on ``device``.

    True on a CUDA device when Triton imports, and on the CPU only while Triton's interpreter is
    on (``TRITON_INTERPRET=1``).
    """
    if triton is None:
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and _interpreting()


if triton is not None:
    # The kernels call only Triton builtins (no `tl.sum`, `tl.zeros`, `tl.cdiv`): Triton's
    # library functions are themselves `@triton.jit` functions, compiled or interpreted depending
    # on TRITON_INTERPRET when triton was imported, and the wrong kind fails in the other mode.
    # The kernel-gradient reduction uses Triton's own `a + b` combiner, which the interpreter
    # recognises (it sums with numpy); `_kernels(False)` makes it compilable if need be.
    _sum_combine = tl.standard._sum_combine

    def _conv_kernel(
        x_ptr, w_ptr, b_ptr, y_ptr, tap_ptr, count_ptr,
        C_OUT, D_IN, H_IN, W_IN, D_OUT, H_OUT, W_OUT, W_STRIDE,
        sxb, sxc, sxd, sxh, sxw,
        syb, syc, syd, syh, syw,
        PAD_D, PAD_H, PAD_W,
        KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
        M: tl.constexpr, R: tl.constexpr,
        HAS_BIAS: tl.constexpr, TAP_LIST: tl.constexpr, CHANNELS_LAST: tl.constexpr,
        ACC: tl.constexpr, DOT: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
        BLOCK_K: tl.constexpr, UNROLL_KW: tl.constexpr,
    ):  # fmt: skip
        """y[b, co, o] = sum over r < R and the taps of x[b, (co * R + r) // M, o - pad + tap] *
        w[tap, co * R + r] (+ bias[co]). ``w`` is ``(taps, W_STRIDE)``; CHANNELS_LAST only keys
        the autotuner. DOT: the tensor-core (Toeplitz) path, with ``BLOCK_K`` input columns per
        window; DOT_F32 casts its operands to float32 first (the interpreter's dot needs it)."""
        pid = tl.program_id(0)
        cb = tl.program_id(1)
        tiles_w = (W_OUT + BLOCK_W - 1) // BLOCK_W
        tiles_h = (H_OUT + BLOCK_H - 1) // BLOCK_H
        tw = pid % tiles_w
        rest = pid // tiles_w
        th = rest % tiles_h
        rest = rest // tiles_h
        od = rest % D_OUT
        b = (rest // D_OUT).to(tl.int64)
        co = cb * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = co < C_OUT
        x_b = x_ptr + b * sxb
        if DOT:
            # Per channel and kernel row, y[h, j] += sum_k x[h, window + k] * T[k, j]: a
            # [BLOCK_C] batch of [BLOCK_H, BLOCK_K] x [BLOCK_K, BLOCK_W] products on tensor cores,
            # T the banded (Toeplitz) matrix T[k, j] = w[kw0 + k - j] for 0 <= k - j < TAPS_K.
            # A row longer than TAPS_K = BLOCK_K - BLOCK_W + 1 taps takes several windows.
            TAPS_K: tl.constexpr = BLOCK_K - BLOCK_W + 1
            oh3 = th * BLOCK_H + tl.arange(0, BLOCK_H)
            ow3 = tw * BLOCK_W + tl.arange(0, BLOCK_W)
            k = tl.arange(0, BLOCK_K)
            band = k[:, None] - tl.arange(0, BLOCK_W)[None, :]  # k - j: [BLOCK_K, BLOCK_W]
            acc3 = tl.full([BLOCK_C, BLOCK_H, BLOCK_W], 0.0, dtype=ACC)
            for r in tl.static_range(R):
                wc = co * R + r
                x_c = x_b + ((wc // M) * sxc)[:, None, None]
                w_c = w_ptr + wc[:, None, None]
                for kw0 in tl.static_range(0, KW, TAPS_K):
                    iw = tw * BLOCK_W - PAD_W + kw0 + k
                    col_ok = c_ok[:, None, None] & ((iw >= 0) & (iw < W_IN))[None, None, :]
                    col = x_c + (iw * sxw)[None, None, :]
                    t_ok = (band >= 0) & (band < TAPS_K) & (band + kw0 < KW)
                    t_ok3 = c_ok[:, None, None] & t_ok[None, :, :]
                    for kd in range(KD):
                        i_d = od - PAD_D + kd
                        for kh in range(KH):
                            ih = oh3 - PAD_H + kh
                            row_ok = (ih >= 0) & (ih < H_IN) & (i_d >= 0) & (i_d < D_IN)
                            xv = tl.load(
                                col + (i_d * sxd + ih * sxh)[None, :, None],
                                mask=col_ok & row_ok[None, :, None],
                                other=0.0,
                            )
                            tap = (kd * KH + kh) * KW + kw0 + band
                            wv = tl.load(w_c + (tap * W_STRIDE)[None, :, :], mask=t_ok3, other=0.0)
                            if DOT_F32:
                                xv = xv.to(tl.float32)
                                wv = wv.to(tl.float32)
                            acc3 = tl.dot(xv, wv, acc3, input_precision=PRECISION)
            if HAS_BIAS:
                acc3 += tl.load(b_ptr + co, mask=c_ok, other=0.0).to(ACC)[:, None, None]
            out3_ok = c_ok[:, None, None] & ((oh3 < H_OUT)[:, None] & (ow3 < W_OUT)[None, :])[None]
            y3_off = b * syb + od * syd + (oh3 * syh)[:, None] + (ow3 * syw)[None, :]
            tl.store(
                y_ptr + (co * syc)[:, None, None] + y3_off[None, :, :],
                acc3.to(y_ptr.dtype.element_ty),
                mask=out3_ok,
            )
            return
        idx = tl.arange(0, BLOCK_H * BLOCK_W)
        oh = th * BLOCK_H + idx // BLOCK_W
        ow = tw * BLOCK_W + idx % BLOCK_W
        acc = tl.full([BLOCK_H * BLOCK_W, BLOCK_C], 0.0, dtype=ACC)
        if TAP_LIST:
            # Only this channel block's listed taps (sorted tap indices, `count` of them).
            count = tl.load(count_ptr + cb)
            for t in range(0, count):
                lin = tl.load(tap_ptr + cb * (KD * KH * KW) + t)
                kd = lin // (KH * KW)
                kh = (lin // KW) % KH
                kw = lin % KW
                i_d = od - PAD_D + kd
                ih = oh - PAD_H + kh
                iw = ow - PAD_W + kw
                ok = (i_d >= 0) & (i_d < D_IN) & (ih >= 0) & (ih < H_IN) & (iw >= 0) & (iw < W_IN)
                pos = i_d * sxd + ih * sxh + iw * sxw
                for r in tl.static_range(R):
                    wc = co * R + r
                    xv = tl.load(
                        x_b + pos[:, None] + ((wc // M) * sxc)[None, :],
                        mask=ok[:, None] & c_ok[None, :],
                        other=0.0,
                    )
                    wv = tl.load(w_ptr + lin * W_STRIDE + wc, mask=c_ok, other=0.0)
                    acc += xv.to(ACC) * wv.to(ACC)[None, :]
        else:
            # Per row of taps: the row's pointer and mask tiles; per tap a scalar shift of both.
            for r in tl.static_range(R):
                wc = co * R + r
                x_c = x_b + ((wc // M) * sxc)[None, :]
                for kd in range(KD):
                    i_d = od - PAD_D + kd
                    d_ok = (i_d >= 0) & (i_d < D_IN)
                    for kh in range(KH):
                        ih = oh - PAD_H + kh
                        row_ok = (d_ok & (ih >= 0) & (ih < H_IN))[:, None] & c_ok[None, :]
                        row = x_c + (i_d * sxd + ih * sxh + (ow - PAD_W) * sxw)[:, None]
                        w_row = w_ptr + (kd * KH + kh) * KW * W_STRIDE + wc
                        for kw in tl.range(KW, loop_unroll_factor=UNROLL_KW):
                            ok = row_ok & ((ow >= PAD_W - kw) & (ow < W_IN + PAD_W - kw))[:, None]
                            xv = tl.load(row + kw * sxw, mask=ok, other=0.0)
                            wv = tl.load(w_row + kw * W_STRIDE, mask=c_ok, other=0.0)
                            acc += xv.to(ACC) * wv.to(ACC)[None, :]
        if HAS_BIAS:
            acc += tl.load(b_ptr + co, mask=c_ok, other=0.0).to(ACC)[None, :]
        out_ok = (oh < H_OUT) & (ow < W_OUT)
        y_off = b * syb + od * syd + oh * syh + ow * syw
        tl.store(
            y_ptr + y_off[:, None] + (co * syc)[None, :],
            acc.to(y_ptr.dtype.element_ty),
            mask=out_ok[:, None] & c_ok[None, :],
        )

    def _kernel_grad_kernel(
        x_ptr, dy_ptr, part_ptr, tap_ptr, count_ptr,
        C_OUT, D_IN, H_IN, W_IN, D_OUT, H_OUT, W_OUT, N_POS, CHUNK, N_ROWS, ROW_CHUNK,
        sxb, sxc, sxd, sxh, sxw,
        syb, syc, syd, syh, syw,
        PAD_D, PAD_H, PAD_W,
        KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, M: tl.constexpr,
        TAP_LIST: tl.constexpr, CHANNELS_LAST: tl.constexpr, ACC: tl.constexpr,
        DOT: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
        BLOCK_W: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_KH: tl.constexpr,
    ):  # fmt: skip
        """part[chunk, co, t] = sum over this chunk's output positions p of
        x[b, co // M, p - pad + t] * dy[b, co, p]. DOT: the tensor-core path, whose chunks are
        ``ROW_CHUNK`` output rows (all their columns) instead of ``CHUNK`` positions."""
        cb = tl.program_id(0)
        tb = tl.program_id(1)
        chunk = tl.program_id(2)
        co = cb * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = co < C_OUT
        if DOT:
            # Per channel and kernel row kh, G[k, j] = sum over output rows of x[row + kh,
            # window + k] * dy[row, j], summed over the column tiles too; then dW[kh, kw0 + t] =
            # sum_j G[j + t, j], the diagonals of G (TAPS_K = BLOCK_K - BLOCK_W + 1 of them).
            # BLOCK_KH kernel rows are stacked along the dot's M axis (m = row_in_block *
            # BLOCK_K + k), so each output-gradient tile is loaded once for all of them: a
            # [BLOCK_C] batch of [BLOCK_KH * BLOCK_K, BLOCK_P] x [BLOCK_P, BLOCK_W] products.
            TAPS_K: tl.constexpr = BLOCK_K - BLOCK_W + 1
            KW_CHUNKS: tl.constexpr = (KW + TAPS_K - 1) // TAPS_K
            KH_BLOCKS: tl.constexpr = (KH + BLOCK_KH - 1) // BLOCK_KH
            kw0 = (tb % KW_CHUNKS) * TAPS_K
            kh0 = ((tb // KW_CHUNKS) % KH_BLOCKS) * BLOCK_KH
            kd = tb // (KW_CHUNKS * KH_BLOCKS)
            m = tl.arange(0, BLOCK_KH * BLOCK_K)
            kh_m = kh0 + m // BLOCK_K  # the kernel row of each M index
            k = m % BLOCK_K
            j = tl.arange(0, BLOCK_W)
            x_c = x_ptr + ((co // M) * sxc)[:, None, None]
            y_c = dy_ptr + (co * syc)[:, None, None]
            row_start = chunk * ROW_CHUNK
            row_end = tl.minimum(row_start + ROW_CHUNK, N_ROWS)
            acc3 = tl.full([BLOCK_C, BLOCK_KH * BLOCK_K, BLOCK_W], 0.0, dtype=ACC)
            for w0 in range(0, W_OUT, BLOCK_W):
                iw = w0 - PAD_W + kw0 + k
                col_ok = (iw >= 0) & (iw < W_IN) & (kh_m < KH)
                ow = w0 + j
                out_col_ok = c_ok[:, None, None] & (ow < W_OUT)[None, None, :]
                for r0 in range(row_start, row_end, BLOCK_P):
                    rows = r0 + tl.arange(0, BLOCK_P)
                    oh = rows % H_OUT
                    q = rows // H_OUT
                    od = q % D_OUT
                    b = (q // D_OUT).to(tl.int64)
                    i_d = od - PAD_D + kd
                    rows_ok = rows < row_end
                    ih = (oh - PAD_H)[None, :] + kh_m[:, None]  # [M, BLOCK_P]
                    in_ok = (rows_ok & (i_d >= 0) & (i_d < D_IN))[None, :] & col_ok[:, None]
                    in_ok = in_ok & (ih >= 0) & (ih < H_IN)
                    x_off = (iw * sxw)[:, None] + ih * sxh + (b * sxb + i_d * sxd)[None, :]
                    xv = tl.load(  # x transposed: [BLOCK_C, M, BLOCK_P]
                        x_c + x_off[None, :, :],
                        mask=c_ok[:, None, None] & in_ok[None, :, :],
                        other=0.0,
                    )
                    y_row = b * syb + od * syd + oh * syh
                    dy = tl.load(  # [BLOCK_C, BLOCK_P, BLOCK_W]
                        y_c + y_row[None, :, None] + (ow * syw)[None, None, :],
                        mask=out_col_ok & rows_ok[None, :, None],
                        other=0.0,
                    )
                    if DOT_F32:
                        xv = xv.to(tl.float32)
                        dy = dy.to(tl.float32)
                    acc3 = tl.dot(xv, dy, acc3, input_precision=PRECISION)
            acc4 = tl.reshape(acc3, [BLOCK_C, BLOCK_KH, BLOCK_K, BLOCK_W])
            band = tl.arange(0, BLOCK_K)[:, None] - j[None, :]
            rows_kh = kh0 + tl.arange(0, BLOCK_KH)
            out = (chunk * C_OUT + co)[:, None] * (KD * KH * KW)
            out += ((kd * KH + rows_kh) * KW)[None, :]
            out_ok = c_ok[:, None] & (rows_kh < KH)[None, :]
            for t in tl.static_range(TAPS_K):
                diagonal = tl.where((band == t)[None, None, :, :], acc4, 0.0)
                diagonal = tl.reduce(tl.reduce(diagonal, 3, _sum_combine), 2, _sum_combine)
                tl.store(part_ptr + out + kw0 + t, diagonal, mask=out_ok & (kw0 + t < KW))
            return
        t = tb * BLOCK_T + tl.arange(0, BLOCK_T)
        start = chunk * CHUNK
        end = tl.minimum(start + CHUNK, N_POS)
        if TAP_LIST:
            count = tl.load(count_ptr + cb)
            t_ok = t < count
            lin = tl.load(tap_ptr + cb * (KD * KH * KW) + t, mask=t_ok, other=0)
            end = tl.where(tb * BLOCK_T < count, end, start)  # an empty tap block: no work
        else:
            t_ok = t < KD * KH * KW
            lin = t
        kd = lin // (KH * KW)
        kh = (lin // KW) % KH
        kw = lin % KW
        x_c = (co // M) * sxc
        y_c = co * syc
        acc = tl.full([BLOCK_T, BLOCK_P, BLOCK_C], 0.0, dtype=ACC)
        for p0 in range(start, end, BLOCK_P):
            p = p0 + tl.arange(0, BLOCK_P)
            p_ok = p < end
            ow = p % W_OUT
            q = p // W_OUT
            oh = q % H_OUT
            q = q // H_OUT
            od = q % D_OUT
            b = (q // D_OUT).to(tl.int64)
            dy = tl.load(
                dy_ptr + (b * syb + od * syd + oh * syh + ow * syw)[:, None] + y_c[None, :],
                mask=p_ok[:, None] & c_ok[None, :],
                other=0.0,
            )
            i_d = od[None, :] + (kd - PAD_D)[:, None]
            ih = oh[None, :] + (kh - PAD_H)[:, None]
            iw = ow[None, :] + (kw - PAD_W)[:, None]
            ok = t_ok[:, None] & p_ok[None, :]
            ok = ok & (i_d >= 0) & (i_d < D_IN) & (ih >= 0) & (ih < H_IN) & (iw >= 0) & (iw < W_IN)
            off = b[None, :] * sxb + i_d * sxd + ih * sxh + iw * sxw
            xv = tl.load(
                x_ptr + off[:, :, None] + x_c[None, None, :],
                mask=ok[:, :, None] & c_ok[None, None, :],
                other=0.0,
            )
            acc += xv.to(ACC) * dy.to(ACC)[None, :, :]
        res = tl.reduce(acc, 1, _sum_combine)
        tl.store(
            part_ptr + (chunk * C_OUT + co)[None, :] * (KD * KH * KW) + lin[:, None],
            res,
            mask=t_ok[:, None] & c_ok[None, :],
        )


def _autotuned(fn, configs: list[tuple], key: list[str]):
    """``fn`` compiled and autotuned over ``configs`` (meta-parameters, warps, stages)."""
    return triton.autotune(
        configs=[
            triton.Config(meta, num_warps=warps, num_stages=stages)
            for meta, warps, stages in configs
        ],
        key=key,
    )(triton.runtime.jit.JITFunction(fn))


# (id of the autotuned kernel, autotune key) -> {config: median ms}, for every shape tuned in
# this process (the dense and tap-list kernels share a name and their keys).
_AUTOTUNE_TIMINGS: dict[tuple[int, tuple], dict] = {}


def _record_autotuning(kernel) -> None:
    """After a launch of an autotuned ``kernel``: keep the timings of the shape it has just tuned.

    The autotuner adds each new key at the end of its ``cache`` and leaves that tuning's timings
    in ``configs_timings`` (Triton 3.6 to 3.8; 3.6, the device image's, has no autotuning
    listener). A launch that tuned nothing finds its last key recorded already.
    """
    cache = getattr(kernel, "cache", None)
    timings = getattr(kernel, "configs_timings", None)
    if not cache or not timings:
        return
    key = (id(kernel), next(reversed(cache)))
    if key not in _AUTOTUNE_TIMINGS:
        _AUTOTUNE_TIMINGS[key] = {
            c: t[0] if isinstance(t, list | tuple) else t for c, t in timings.items()
        }


def _describe_config(config) -> str:
    """``"DOT 16x16x16 k32 w4 s1"``: path, block sizes, warps and stages of one config."""
    meta = config.kwargs
    if "BLOCK_H" in meta:
        blocks = f"{meta['BLOCK_H']}x{meta['BLOCK_W']}x{meta['BLOCK_C']}"
    elif meta["DOT"]:
        blocks = f"rows {meta['BLOCK_P']} x {meta['BLOCK_W']}x{meta['BLOCK_C']}"
        blocks += f" kh{meta['BLOCK_KH']}"
    else:
        blocks = f"taps {meta['BLOCK_T']} x pos {meta['BLOCK_P']} x {meta['BLOCK_C']}"
    path = f"DOT {blocks} k{meta['BLOCK_K']}" if meta["DOT"] else f"FMA {blocks}"
    return f"{path} w{config.num_warps} s{config.num_stages}"


def autotune_summary() -> list[str]:
    """One line per shape the CUDA autotuner has tuned in this process: the config it chose and,
    where this Triton reports timings, the fastest FMA and tensor-core configs with their times
    (what the tensor cores gain on that shape). Empty before any CUDA call."""
    lines = []
    for (name, channels_last, tap_list, _dot, single_row), kernel in _COMPILED_KERNELS.items():
        for key, chosen in getattr(kernel, "cache", {}).items():
            kind = "kernel grad" if name == "kernel_grad" else "conv/input grad"
            layout = ("NHWC" if channels_last else "NCHW") + (" taps" if tap_list else "")
            layout += " 1-row" if single_row else ""
            line = f"{kind} {layout} key {key}: {_describe_config(chosen)}"
            times = _AUTOTUNE_TIMINGS.get((id(kernel), key), {})
            for label, dot in (("FMA", False), ("DOT", True)):
                candidates = {c: t for c, t in times.items() if c.kwargs["DOT"] is dot}
                if candidates:
                    best = min(candidates, key=candidates.get)
                    line += f"; best {label} {candidates[best]:.3f} ms ({_describe_config(best)})"
            lines.append(line)
    return lines


_COMPILED_KERNELS: dict[tuple, object] = {}  # _kernels(False), once built


@functools.cache
def _kernels(interpret: bool) -> dict[tuple, object]:
    """The launchable kernels for one mode, built on first use (see the module docstring).

    Compiled ones are keyed ``(name, channels_last, tap_list, dot, single_row)``: ``dot`` adds
    the tensor-core configs to the autotuner's choice (not for float64, nor for tap tables);
    ``single_row`` takes the 1-row tables (:func:`_config_table`).
    """
    _logger.debug("building the Triton depthwise kernels (interpreter: %s)", interpret)
    if interpret:
        from triton.runtime.interpreter import InterpretedFunction

        return {
            "conv": InterpretedFunction(_conv_kernel),
            "kernel_grad": InterpretedFunction(_kernel_grad_kernel),
        }
    global _sum_combine
    if not isinstance(_sum_combine, triton.runtime.jit.JITFunction):
        # triton was imported under TRITON_INTERPRET=1: its combiner is an interpreted one.
        _sum_combine = triton.runtime.jit.JITFunction(_sum_combine.fn)
    # Neither key holds the batch: a last batch of another size runs the choice of the others
    # (the kernel gradient's N_POS, output positions of the whole batch, used to re-tune it).
    shared_key = ["C_OUT", "D_OUT", "H_OUT", "W_OUT", "KD", "KH", "KW", "M", "CHANNELS_LAST"]
    keys = {"conv": [*shared_key, "R", "PRECISION"], "kernel_grad": [*shared_key, "PRECISION"]}
    fns = {"conv": _conv_kernel, "kernel_grad": _kernel_grad_kernel}
    _COMPILED_KERNELS.update(
        ((name, channels_last, tap_list, dot, single_row), _autotuned(
            fns[name], _config_table(name, channels_last, tap_list, dot, single_row), keys[name]
        ))
        for name in fns
        for channels_last in (True, False)
        for tap_list in (False, True)
        for dot in (False, True)
        for single_row in (False, True)
    )  # fmt: skip
    return _COMPILED_KERNELS


def _kernel_for(
    name: str,
    channels_last: bool,
    tap_list: bool,
    dtype: torch.dtype,
    device: torch.device,
    config: tuple | None = None,
    single_row: bool = False,
) -> tuple[object, dict | None, int, bool]:
    """(kernel, explicit launch meta-parameters or None when autotuned, tap-table channel block,
    whether interpreted); ``single_row`` as in :func:`_config_table`. ``config``,
    ``(meta-parameters, num_warps, num_stages)`` as in :func:`_config_table`, forces one config
    (tests check every config that way; the interpreter ignores its warps and stages). In
    deterministic mode (``torch.use_deterministic_algorithms(True)``) CUDA launches the first
    FMA config of the table instead of the autotuner: configs sum in different orders (the
    kernel gradient's ``BLOCK_P``, the tensor-core path), so a timed choice could change the
    bits between two runs, or a run and its resume."""
    dot = dtype != torch.float64
    if _interpreting():
        blocks = {**_INTERPRETER_DEFAULTS[name], **INTERPRETER_BLOCKS[name]}
        if config is not None:
            blocks = dict(config[0])
        blocks["DOT"] = blocks["DOT"] and dot
        return _kernels(True)[name], blocks, blocks["BLOCK_C"], True
    if device.type != "cuda":
        raise ValueError(
            f"the Triton depthwise convolution runs on CUDA, or on the CPU under Triton's "
            f"interpreter (TRITON_INTERPRET=1), got a tensor on {device}"
        )
    kernel = _kernels(False)[name, channels_last, tap_list, dot, single_row]
    if config is None and torch.are_deterministic_algorithms_enabled():
        config = _config_table(name, channels_last, tap_list, False, single_row)[0]
    if config is None:
        return kernel, None, _TAP_BLOCK_C[channels_last], False
    meta, warps, stages = config
    launch = {**meta, "num_warps": warps, "num_stages": stages}
    return kernel.fn, launch, meta["BLOCK_C"] if tap_list else _TAP_BLOCK_C[channels_last], False


def _kw_unroll(kernel_width: int) -> int:
    """How many taps of a kernel row the forward's FMA loop unrolls: all of them up to
    :data:`_MAX_UNROLLED_KW`, else :data:`_LONG_ROW_UNROLL` (compile time)."""
    return kernel_width if kernel_width <= _MAX_UNROLLED_KW else _LONG_ROW_UNROLL


def _dot_precision(dtype: torch.dtype, interpret: bool) -> str:
    """``tl.dot``'s input precision: TF32 for float32 operands on CUDA where cuDNN's
    convolutions may use it (:func:`_cudnn_conv_allows_tf32`, on by default), as ``F.conv2d``
    does; IEEE otherwise (half-precision operands are exact either way)."""
    tf32 = dtype == torch.float32 and not interpret and _cudnn_conv_allows_tf32()
    return "tf32" if tf32 else "ieee"


def _cudnn_conv_allows_tf32() -> bool:
    """Whether cuDNN's convolutions may use TF32: ``torch.backends.cudnn.conv.fp32_precision``,
    else (``"none"``) its parents', the cuDNN-wide and the global setting. Reading the older
    ``torch.backends.cudnn.allow_tf32`` raises once conv and RNN settings differ (torch >= 2.9)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if not hasattr(conv, "fp32_precision"):
        return torch.backends.cudnn.allow_tf32
    settings = (conv.fp32_precision, torch.backends.cudnn.fp32_precision)
    inherited = [s for s in (*settings, torch.backends.fp32_precision) if s != "none"]
    return bool(inherited) and inherited[0] == "tf32"


def _acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _on_device(t: Tensor) -> contextlib.AbstractContextManager:
    """``t``'s CUDA device as the current one: Triton launches on the current device and its
    current stream, which must be those of the tensors (``cuda:1`` while ``cuda:0`` is current
    would run on the wrong GPU, unordered with torch's work on ``t``)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _as_3d(t: Tensor, n: int) -> Tensor:
    """``(B, C, *S)`` with ``n`` spatial axes as a ``(B, C, D, H, W)`` view (unit axes first)."""
    for _ in range(3 - n):
        t = t.unsqueeze(2)
    return t


def _is_channels_last(t: Tensor) -> bool:
    """Whether ``t`` is laid out channels-last (the memory format ``F.conv`` keeps)."""
    fmt = channels_last_format(t.dim())
    return fmt is not None and t.is_contiguous(memory_format=fmt) and not t.is_contiguous()


def _empty(shape: Sequence[int], like: Tensor, channels_last: bool) -> Tensor:
    fmt = channels_last_format(len(shape)) if channels_last else None
    return torch.empty(
        shape, dtype=like.dtype, device=like.device, memory_format=fmt or torch.contiguous_format
    )


def _tap_table(mask: Tensor, block_c: int) -> tuple[Tensor, Tensor]:
    """Per block of ``block_c`` channels, the sorted taps set in any of its channels.

    Shape:
        mask ``(C, taps)`` bool; returns the table ``(ceil(C / block_c), taps)`` int32 (valid up
        to each block's count, padded with ``taps``) and the counts ``(ceil(C / block_c),)`` int32.
    """
    channels, taps = mask.shape
    blocks = -(-channels // block_c)
    padded = torch.zeros(blocks * block_c, taps, dtype=torch.bool, device=mask.device)
    padded[:channels] = mask
    used = padded.view(blocks, block_c, taps).any(1)
    index = torch.arange(taps, device=mask.device, dtype=torch.int32).expand(blocks, taps)
    table = torch.where(used, index, taps).sort(dim=1).values.to(torch.int32).contiguous()
    return table, used.sum(1, dtype=torch.int32)


def _launch_conv(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    y: Tensor,
    pad_before: Sequence[int],
    kernel_size: Sequence[int],
    multiplier: int,
    reduce: int,
    skip_zero_taps: bool,
    channels_last: bool,
    config: tuple | None = None,
) -> None:
    """Run ``_conv_kernel`` on 3-D views: ``x (B, C_x, D, H, W)``, ``weight (C_w, taps)``,
    ``y (B, C_w / reduce, D', H', W')`` (written in place); ``config`` as in :func:`_kernel_for`."""
    c_out = y.shape[1]
    taps = math.prod(kernel_size)
    tap_list = skip_zero_taps
    batch, _, d_out, h_out, w_out = y.shape
    kernel, blocks, tap_block, interpret = _kernel_for(
        "conv", channels_last, tap_list, x.dtype, x.device, config, single_row=h_out == 1
    )
    w_t = weight.t().contiguous()  # (taps, C_w): one contiguous load of BLOCK_C weights per tap
    table = counts = w_t
    if tap_list:
        used = (weight != 0).reshape(c_out, reduce, taps).any(1)
        table, counts = _tap_table(used, tap_block)
    # The interpreter truncates float32 -> bfloat16 where the GPU rounds to nearest even: there
    # the kernel writes float32 and torch rounds.
    out = y
    if interpret and y.dtype == torch.bfloat16:
        out = torch.empty_like(y, dtype=torch.float32)

    def grid(meta: dict) -> tuple[int, int]:
        tiles = triton.cdiv(h_out, meta["BLOCK_H"]) * triton.cdiv(w_out, meta["BLOCK_W"])
        return batch * d_out * tiles, triton.cdiv(c_out, meta["BLOCK_C"])

    has_bias = bias is not None
    bias = bias.contiguous() if has_bias else w_t  # the kernel reads it with stride 1
    with _on_device(x):
        kernel[grid](
            x, w_t, bias, out, table, counts,
            c_out, *x.shape[2:], d_out, h_out, w_out, w_t.shape[1],
            *x.stride(), *out.stride(), *pad_before,
            KD=kernel_size[0], KH=kernel_size[1], KW=kernel_size[2], M=multiplier, R=reduce,
            HAS_BIAS=has_bias, TAP_LIST=tap_list, CHANNELS_LAST=channels_last,
            ACC=_acc_dtype(y.dtype), DOT_F32=interpret,
            PRECISION=_dot_precision(x.dtype, interpret), UNROLL_KW=_kw_unroll(kernel_size[2]),
            **(blocks or {}),
        )  # fmt: skip
    if not interpret:
        _record_autotuning(kernel)
    if out is not y:
        y.copy_(out)


def _chunks(positions: int, tiles: int, interpret: bool, device: torch.device) -> int:
    """How many chunks the kernel gradient's reduction is cut into (about 4 programs per SM)."""
    if interpret:
        target, min_chunk = 2 * tiles, INTERPRETER_BLOCKS["kernel_grad"]["BLOCK_P"]
    else:
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        target, min_chunk = 4 * sms, _MIN_CHUNK
    return max(1, min(-(-target // tiles), positions // min_chunk))


def _launch_kernel_grad(
    x: Tensor,
    dy: Tensor,
    pad_before: Sequence[int],
    kernel_size: Sequence[int],
    multiplier: int,
    mask: Tensor | None,
    channels_last: bool,
    config: tuple | None = None,
) -> Tensor:
    """Float32 (float64 for float64 inputs) kernel gradient ``(C_w, taps)`` from 3-D views;
    ``config`` as in :func:`_kernel_for`."""
    c_out = dy.shape[1]
    taps = math.prod(kernel_size)
    batch, _, d_out, h_out, w_out = dy.shape
    positions = batch * d_out * h_out * w_out
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    tap_list = mask is not None
    kernel, blocks, tap_block, interpret = _kernel_for(
        "kernel_grad", channels_last, tap_list, x.dtype, x.device, config,
        single_row=kernel_size[1] == 1,
    )  # fmt: skip
    nominal_c, nominal_t = (blocks["BLOCK_C"], blocks["BLOCK_T"]) if interpret else _CHUNK_NOMINAL
    tiles = -(-c_out // nominal_c) * -(-taps // nominal_t)
    chunks = _chunks(positions, tiles, interpret, x.device)
    chunk = -(-positions // chunks)
    rows = batch * d_out * h_out  # the tensor-core path's chunks are whole output rows
    row_chunk = -(-rows // chunks)
    table = counts = dy
    if tap_list:
        table, counts = _tap_table(mask.reshape(c_out, taps), tap_block)
        partial = torch.zeros(chunks, c_out, taps, dtype=acc_dtype, device=x.device)
    else:
        partial = torch.empty(chunks, c_out, taps, dtype=acc_dtype, device=x.device)

    def grid(meta: dict) -> tuple[int, int, int]:
        if meta["DOT"]:  # per BLOCK_KH kernel rows and window of BLOCK_K - BLOCK_W + 1 taps
            windows = triton.cdiv(kernel_size[2], meta["BLOCK_K"] - meta["BLOCK_W"] + 1)
            row_blocks = triton.cdiv(kernel_size[1], meta["BLOCK_KH"])
            tap_blocks = kernel_size[0] * row_blocks * windows
        else:
            tap_blocks = triton.cdiv(taps, meta["BLOCK_T"])
        return triton.cdiv(c_out, meta["BLOCK_C"]), tap_blocks, chunks

    with _on_device(x):
        kernel[grid](
            x, dy, partial, table, counts,
            c_out, *x.shape[2:], d_out, h_out, w_out, positions, chunk, rows, row_chunk,
            *x.stride(), *dy.stride(), *pad_before,
            KD=kernel_size[0], KH=kernel_size[1], KW=kernel_size[2], M=multiplier,
            TAP_LIST=tap_list, CHANNELS_LAST=channels_last, ACC=_acc_dtype(x.dtype),
            DOT_F32=interpret, PRECISION=_dot_precision(x.dtype, interpret),
            **(blocks or {}),
        )  # fmt: skip
    if not interpret:
        _record_autotuning(kernel)
    return partial.sum(0)


def _padded_3d(padding: Sequence[int], n: int) -> list[int]:
    """``(before_0, after_0, ...)`` over ``n`` axes to the 3-D before-paddings."""
    return [0] * (3 - n) + list(padding[::2])


def _out_sizes(sizes: Sequence[int], kernel_size: Sequence[int], padding: Sequence[int]) -> list:
    return [
        s + padding[2 * i] + padding[2 * i + 1] - k + 1
        for i, (s, k) in enumerate(zip(sizes, kernel_size, strict=True))
    ]


# ---- custom ops ---------------------------------------------------------------------------------


@torch.library.custom_op("dcls::triton_dw_conv", mutates_args=())
def _conv_op(
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None,
    padding: list[int],
    skip_zero_taps: bool,
    kernel_grad_mask: Tensor | None,
) -> Tensor:
    """Batched depthwise convolution; ``padding`` is ``(before, after)`` per axis, flattened.
    ``kernel_grad_mask`` only matters to the backward pass."""
    n = kernel.dim() - 2
    channels_last = _is_channels_last(input)
    out_sizes = _out_sizes(input.shape[2:], kernel.shape[2:], padding)
    out = _empty((input.shape[0], kernel.shape[0], *out_sizes), input, channels_last)
    if out.numel():
        ks = [1] * (3 - n) + list(kernel.shape[2:])
        _launch_conv(
            _as_3d(input, n), kernel.reshape(kernel.shape[0], -1), bias, _as_3d(out, n),
            _padded_3d(padding, n), ks, kernel.shape[0] // input.shape[1], 1, skip_zero_taps,
            channels_last,
        )  # fmt: skip
    return out


@_conv_op.register_fake
def _(input, kernel, bias, padding, skip_zero_taps, kernel_grad_mask):
    out_sizes = _out_sizes(input.shape[2:], kernel.shape[2:], padding)
    return _empty((input.shape[0], kernel.shape[0], *out_sizes), input, _is_channels_last(input))


@torch.library.custom_op("dcls::triton_dw_conv_input_grad", mutates_args=())
def _input_grad_op(
    grad_output: Tensor,
    kernel: Tensor,
    input_size: list[int],
    padding: list[int],
    channels_last: bool,
    skip_zero_taps: bool,
) -> Tensor:
    """Gradient of the convolution with respect to its input ``(B, C, *S)``: the output gradient
    convolved with the flipped kernel, padded ``(k - 1 - before, k - 1 - after)``."""
    n = kernel.dim() - 2
    out = _empty(input_size, grad_output, channels_last)
    if out.numel():
        sizes = kernel.shape[2:]
        full = [k - 1 - p for i, k in enumerate(sizes) for p in padding[2 * i : 2 * i + 2]]
        flipped = kernel.flip(tuple(range(2, 2 + n))).reshape(kernel.shape[0], -1)
        _launch_conv(
            _as_3d(grad_output, n), flipped, None, _as_3d(out, n), _padded_3d(full, n),
            [1] * (3 - n) + list(sizes), 1, kernel.shape[0] // input_size[1], skip_zero_taps,
            channels_last,
        )  # fmt: skip
    return out


@_input_grad_op.register_fake
def _(grad_output, kernel, input_size, padding, channels_last, skip_zero_taps):
    return _empty(input_size, grad_output, channels_last)


@torch.library.custom_op("dcls::triton_dw_conv_kernel_grad", mutates_args=())
def _kernel_grad_op(
    input: Tensor,
    grad_output: Tensor,
    kernel_size: list[int],
    padding: list[int],
    kernel_grad_mask: Tensor | None,
) -> Tensor:
    """Gradient of the convolution with respect to its kernel ``(C * m, 1, *k)``, in the input's
    dtype (accumulated in float32); zero where ``kernel_grad_mask`` is False."""
    n = len(kernel_size)
    c_out = grad_output.shape[1]
    if grad_output.numel() == 0:
        return input.new_zeros((c_out, 1, *kernel_size))
    grad = _launch_kernel_grad(
        _as_3d(input, n), _as_3d(grad_output, n), _padded_3d(padding, n),
        [1] * (3 - n) + list(kernel_size), c_out // input.shape[1], kernel_grad_mask,
        _is_channels_last(input),
    )  # fmt: skip
    grad = grad.reshape(c_out, 1, *kernel_size)
    if kernel_grad_mask is not None:
        grad = grad.masked_fill(~kernel_grad_mask.reshape(grad.shape), 0)
    return grad.to(input.dtype)


@_kernel_grad_op.register_fake
def _(input, grad_output, kernel_size, padding, kernel_grad_mask):
    return input.new_empty((grad_output.shape[1], 1, *kernel_size))


def _setup_context(ctx, inputs, output) -> None:
    input, kernel, bias, padding, skip_zero_taps, kernel_grad_mask = inputs
    ctx.save_for_backward(input, kernel, kernel_grad_mask)
    ctx.padding = padding
    ctx.skip_zero_taps = skip_zero_taps
    ctx.has_bias = bias is not None
    ctx.bias_dtype = bias.dtype if bias is not None else None


def _backward(ctx, grad_output: Tensor):
    input, kernel, kernel_grad_mask = ctx.saved_tensors
    grad_input = grad_kernel = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_input = _input_grad_op(
            grad_output, kernel, list(input.shape), ctx.padding, _is_channels_last(input),
            ctx.skip_zero_taps,
        )  # fmt: skip
    if ctx.needs_input_grad[1]:
        grad_kernel = _kernel_grad_op(
            input, grad_output, list(kernel.shape[2:]), ctx.padding, kernel_grad_mask
        )
    if ctx.has_bias and ctx.needs_input_grad[2]:
        dims = (0, *range(2, grad_output.dim()))
        acc = torch.promote_types(grad_output.dtype, torch.float32)
        grad_bias = grad_output.sum(dims, dtype=acc).to(ctx.bias_dtype)
    return grad_input, grad_kernel, grad_bias, None, None, None


def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        "the Triton depthwise convolution is not twice differentiable (a double backward went "
        "through its gradient kernels); use conv_algorithm='split' or 'direct' for that"
    )


_conv_op.register_autograd(_backward, setup_context=_setup_context)
_input_grad_op.register_autograd(_no_double_backward)
_kernel_grad_op.register_autograd(_no_double_backward)


# ---- public function ----------------------------------------------------------------------------


def _check(
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None,
    stride: int | Sequence[int],
    kernel_grad_mask: Tensor | None,
) -> None:
    if kernel.dim() not in (3, 4, 5):
        raise ValueError(
            f"kernel must be (C * m, 1, *k) with 1 to 3 spatial axes, got shape "
            f"{tuple(kernel.shape)}"
        )
    n = kernel.dim() - 2
    if input.dim() not in (n + 1, n + 2):
        raise ValueError(
            f"input must be (B, C, *S) or (C, *S) with {n} spatial axes for a {n}-D kernel, got "
            f"shape {tuple(input.shape)}"
        )
    channels = input.shape[-n - 1]
    if kernel.shape[1] != 1 or kernel.shape[0] % channels:
        raise ValueError(
            f"the Triton convolution is depthwise: kernel must be (C * m, 1, *k) for C = "
            f"{channels} input channels, got kernel shape {tuple(kernel.shape)}"
        )
    strides = (stride,) * n if isinstance(stride, int) else tuple(stride)
    if any(s != 1 for s in strides):
        raise ValueError(f"the Triton convolution needs stride 1, got stride={stride!r}")
    if bias is not None and tuple(bias.shape) != (kernel.shape[0],):
        raise ValueError(
            f"bias must be ({kernel.shape[0]},) (one per output channel), got shape "
            f"{tuple(bias.shape)}"
        )
    if kernel_grad_mask is not None and (
        kernel_grad_mask.dtype != torch.bool or kernel_grad_mask.shape != kernel.shape
    ):
        raise ValueError(
            f"kernel_grad_mask must be a bool tensor of the kernel's shape {tuple(kernel.shape)}, "
            f"got {kernel_grad_mask.dtype} {tuple(kernel_grad_mask.shape)}"
        )
    for name, t in (("kernel", kernel), ("bias", bias), ("kernel_grad_mask", kernel_grad_mask)):
        if t is not None and t.device != input.device:
            raise ValueError(f"{name} must be on the input's device {input.device}, got {t.device}")


def triton_depthwise_conv(
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None = None,
    padding: str | int | Sequence[int] = 0,
    *,
    stride: int | Sequence[int] = 1,
    skip_zero_taps: bool = False,
    kernel_grad_mask: Tensor | None = None,
) -> Tensor:
    """Depthwise stride-1 convolution (``F.conv{1,2,3}d`` semantics, groups = channels) in Triton.

    Under autocast the operands are cast to the autocast dtype, as ``F.conv`` would cast them;
    otherwise input, kernel and bias must share one floating dtype. The output is channels-last
    when the input is. Differentiable once (a double backward raises).

    Args:
        input: the signal, batched or not.
        kernel: the depthwise kernel (``m`` output channels per input channel).
        bias: one value per output channel, or ``None``.
        padding: ``"same"`` (the extra zero after, for even kernels), ``"valid"``, an int or one
            int per spatial axis (zeros on both sides).
        stride: must be 1 (accepted for ``F.conv``-like calls).
        skip_zero_taps: forward and input gradient visit, per channel block, only the taps that
            are non-zero in one of its channels (exact for finite inputs; see the module
            docstring). Pays only for sparse kernels.
        kernel_grad_mask: where the kernel gradient is needed (True); elsewhere it is returned
            as zero and mostly not computed. For DCLS: the taps the interpolation reads.

    Returns:
        The cross-correlation of ``input`` and ``kernel`` plus ``bias``.

    Shape:
        input ``(B, C, *S)`` or ``(C, *S)``; kernel ``(C * m, 1, *k)``; bias ``(C * m,)``;
        kernel_grad_mask as kernel; output ``(B, C * m, *O)`` (unbatched if the input was) with
        ``O_d = S_d + before_d + after_d - k_d + 1``.

    Raises:
        ValueError: for a kernel that is not depthwise ``(C * m, 1, *k)``, a stride other than
            1, an unknown padding, mismatched shapes, devices or dtypes, an empty output, or a
            device Triton cannot run on (see :func:`triton_available`).
    """
    _check(input, kernel, bias, stride, kernel_grad_mask)
    n = kernel.dim() - 2
    unbatched = input.dim() == n + 1
    if unbatched:
        input = input.unsqueeze(0)
    pairs = checked_pad_pairs(padding, input.shape[2:], kernel.shape[2:])
    pads = [v for pair in pairs for v in pair]
    device_type = input.device.type
    if autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        input, kernel = autocast_cast(input, dtype), autocast_cast(kernel, dtype)
        bias = autocast_cast(bias, dtype) if bias is not None else None
    dtypes = {input.dtype, kernel.dtype} | ({bias.dtype} if bias is not None else set())
    if len(dtypes) > 1 or input.dtype not in _FLOAT_DTYPES:
        raise ValueError(
            f"input, kernel and bias must share one dtype among {_FLOAT_DTYPES}, got input "
            f"{input.dtype}, kernel {kernel.dtype}, bias {bias.dtype if bias is not None else None}"
        )
    device = input.device
    if device.type != "meta" and not torch.compiler.is_compiling() and not triton_available(device):
        raise ValueError(
            f"the Triton convolution runs on CUDA, or on the CPU under Triton's interpreter "
            f"(TRITON_INTERPRET=1 with triton installed), got a tensor on {device} (triton "
            f"{'not ' if triton is None else ''}importable)"
        )
    out = _conv_op(input, kernel, bias, pads, skip_zero_taps, kernel_grad_mask)
    return out.squeeze(0) if unbatched else out
