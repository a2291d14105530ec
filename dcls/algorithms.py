"""How a DCLS layer applies its constructed dense kernel: direct, channels_last, fft, split, auto.

* ``"direct"``: ``F.conv{1,2,3}d`` (PyTorch's own algorithm choice: mkldnn/cuDNN/naive).
* ``"fft"``: a cross-correlation through ``torch.fft``. Its cost does not grow with the kernel
  area, which makes it much faster than the direct depthwise kernels for the large dilated
  kernels of DCLS (17x17 in ConvNeXt-dcls). Stride 1 only; zero padding (ints, ``"same"``,
  ``"valid"``); other padding modes are applied by the layer before the convolution.
* ``"channels_last"``: ``F.conv{2,3}d`` on the input converted to channels-last memory format
  (the output stays channels-last; values are those of ``"direct"``). PyTorch's NHWC depthwise
  kernels are much faster than its NCHW ones on CPU. Same as ``"direct"`` for 1-D.
* ``"split"``: forward as ``"channels_last"``; the backward pass as two more *forward* convolutions,
  which PyTorch runs much faster than its own depthwise convolution backward on CPU: the input
  gradient is the output gradient convolved with the flipped kernel, and the kernel gradient a
  depthwise convolution of the padded input by the output gradient with the batch folded into
  the channels (``B * C`` groups), summed over the batch. Stride 1 and ``in_channels == groups``
  (depthwise, any channel multiplier) only; zero padding. Twice differentiable.
* ``"auto"``: a one-time timed trial of the candidates per problem key (device, dtypes, autocast,
  shapes, memory format, padding, groups, whether gradients are needed), cached for the process,
  like ``torch.backends.cudnn.benchmark``. The trial runs on random tensors of the same shapes,
  never on the caller's data. Meta tensors, strided convolutions and code traced by
  ``torch.compile`` or ``torch.jit.trace`` go to ``"direct"`` without a trial (so FLOP counting
  on the meta device counts the dense convolution; name ``"fft"`` explicitly to compile the FFT
  path).

All algorithms give the same outputs and gradients up to float rounding (about 1e-6 relative in
float32). Under DDP each process runs its own trial; processes that choose differently compute
gradients that differ at that rounding level before they are averaged, which keeps replicas in
sync.

TorchScript and ``torch.jit.trace``: the functions a layer's forward pass reaches
(:func:`_apply_kernel` and below) are TorchScript-compatible, which is why they take lists,
avoid starred list displays (``# noqa: RUF005``) and in-place arithmetic on sizes (sizes are 0-d
tensors under tracing). Scripted or traced, ``"split"`` runs its forward convolution (its
``autograd.Function`` would be a Python call) and ``"auto"`` runs ``"direct"``.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dcls.timing import time_interleaved

__all__ = [
    "CONV_ALGORITHMS",
    "DEFAULT_CONV_ALGORITHM",
    "TRIAL_DROP_FACTOR",
    "TRIAL_REPEATS",
    "auto_cache",
    "check_conv_algorithm",
    "clear_auto_cache",
    "convolve",
    "fft_conv",
    "split_conv",
]

_logger = logging.getLogger(__name__)

CONV_ALGORITHMS = ("direct", "channels_last", "fft", "split", "auto")
_CANDIDATES = ("direct", "channels_last", "fft", "split")
DEFAULT_CONV_ALGORITHM = "direct"
TRIAL_REPEATS = 3  # timed runs per candidate in an "auto" trial (after one warm-up run)
TRIAL_DROP_FACTOR = 3.0  # candidates whose warm-up is this much slower than the best are dropped
_AUTO_CACHE: dict[tuple, str] = {}


def check_conv_algorithm(
    algorithm: str,
    stride: Sequence[int] | None = None,
    in_channels_per_group: int | None = None,
) -> str:
    """Validate a ``conv_algorithm`` argument.

    Args:
        algorithm: one of :data:`CONV_ALGORITHMS`.
        stride: the layer's stride, if known; ``"fft"`` and ``"split"`` need all ones.
        in_channels_per_group: ``in_channels // groups``, if known; ``"split"`` needs 1.

    Raises:
        ValueError: on an unknown name, or an algorithm the layer's shape does not allow.
    """
    if algorithm not in CONV_ALGORITHMS:
        raise ValueError(f"conv_algorithm must be one of {CONV_ALGORITHMS}, got {algorithm!r}")
    if algorithm in ("fft", "split") and stride is not None and any(s != 1 for s in stride):
        raise ValueError(
            f"conv_algorithm={algorithm!r} needs stride 1, got stride={tuple(stride)}; use "
            f"'direct' or 'auto' (which uses 'direct' for strided convolutions)"
        )
    if algorithm == "split" and in_channels_per_group not in (None, 1):
        raise ValueError(
            f"conv_algorithm='split' needs in_channels == groups (a depthwise convolution), got "
            f"in_channels // groups = {in_channels_per_group}; use 'direct', 'fft' or 'auto'"
        )
    return algorithm


def _autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (never for types without autocast, e.g. the
    "meta" device used to count FLOPs). Eager mode only."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def _fast_size(n: int) -> int:
    """Smallest ``m >= n`` whose only prime factors are 2, 3 and 5 (fast FFT lengths)."""
    m = n
    rest = 0
    while rest != 1:
        rest = m
        for p in (2, 3, 5):
            while rest % p == 0:
                rest = rest // p
        m = m + 1  # not in place: under torch.jit.trace sizes are 0-d tensors
    return m - 1


def _pad_pairs(padding: str | list[int], kernel_sizes: list[int]) -> list[tuple[int, int]]:
    """(before, after) zero padding per spatial axis, as ``F.conv`` applies it."""
    pairs: list[tuple[int, int]] = []
    for d, k in enumerate(kernel_sizes):
        if isinstance(padding, str):
            pairs.append(((k - 1) // 2, k - 1 - (k - 1) // 2) if padding == "same" else (0, 0))
        else:
            pairs.append((padding[d], padding[d]))
    return pairs


def _to_channels_last(t: Tensor) -> Tensor:
    """``t`` in channels-last memory format where one exists (4-D/5-D), else unchanged."""
    if t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if t.dim() == 5:
        return t.contiguous(memory_format=torch.channels_last_3d)
    return t


def _pad_argument(pairs: list[tuple[int, int]]) -> list[int]:
    """``F.pad``'s argument (last axis first) for (before, after) pairs in axis order."""
    argument: list[int] = []
    for d in range(len(pairs) - 1, -1, -1):
        argument.append(pairs[d][0])
        argument.append(pairs[d][1])
    return argument


def fft_conv(
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None,
    padding: str | int | Sequence[int],
    groups: int,
) -> Tensor:
    """Cross-correlation of ``input`` with ``kernel`` (what ``F.conv{N}d`` computes) via FFT.

    Stride and dilation 1. Runs in float32 at least; under autocast the result is cast to the
    autocast dtype, like the convolution it replaces.

    Args:
        input: ``(B, C_in, *S)`` or unbatched ``(C_in, *S)``.
        kernel: ``(C_out, C_in / groups, *k)``.
        bias: ``(C_out,)`` or ``None``.
        padding: ``"same"``, ``"valid"``, an int or ``N`` ints (zeros on both sides).
        groups: blocked connections, as in ``F.conv{N}d``.

    Returns:
        ``(B, C_out, *O)`` with ``O_d = S_d + 2 * padding_d - k_d + 1`` (unbatched if the input
        was).

    Raises:
        ValueError: if padding is an unknown string or a wrong-length sequence.
    """
    n = kernel.dim() - 2
    if isinstance(padding, str) and padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'same', 'valid' or ints, got {padding!r}")
    if isinstance(padding, int):
        padding = (padding,) * n
    if not isinstance(padding, str) and len(padding) != n:
        raise ValueError(f"padding must have {n} entries, got {padding!r}")
    pairs = _pad_pairs(padding if isinstance(padding, str) else list(padding), kernel.shape[2:])
    device_type = input.device.type
    if not _autocast_enabled(device_type):
        return _fft_conv(input, kernel, bias, pairs, groups)
    with torch.autocast(device_type, enabled=False):
        out = _fft_conv(input, kernel, bias, pairs, groups)
    return out.to(torch.get_autocast_dtype(device_type))


def _fft_conv(
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None,
    pairs: list[tuple[int, int]],
    groups: int,
) -> Tensor:
    """:func:`fft_conv` with the padding as (before, after) pairs, outside autocast; the result
    has ``input``'s dtype. TorchScript-compatible."""
    n = kernel.dim() - 2
    unbatched = input.dim() == n + 1
    if unbatched:
        input = input.unsqueeze(0)
    compute_dtype = torch.promote_types(
        torch.promote_types(input.dtype, kernel.dtype), torch.float32
    )
    x = input.to(compute_dtype)
    w = kernel.to(compute_dtype)
    # Circular correlation over `fft_sizes >= padded`, the input zero-filled at the end by
    # rfftn itself (no padded copy) and the kernel rolled back by the leading padding:
    # output i reads input i - before .. i - before + k - 1, whose indices below 0 wrap to
    # N - before >= S + after and those from S up stay below N, all zeros: no aliasing.
    fft_sizes: list[int] = []
    out_sizes: list[int] = []
    tails: list[tuple[int, int]] = []
    shifts: list[int] = []
    for d in range(n):
        before, after = pairs[d]
        padded = x.shape[2 + d] + before + after
        fft_sizes.append(_fast_size(padded))
        out_sizes.append(padded - w.shape[2 + d] + 1)
        tails.append((0, fft_sizes[d] - w.shape[2 + d]))
        shifts.append(-before)
    dims = [d - n for d in range(n)]
    # Contiguous first: on a channels-last input rfftn's zero-filling is measured 2x slower.
    x_f = torch.fft.rfftn(x.contiguous(), s=fft_sizes, dim=dims)
    w = torch.roll(F.pad(w, _pad_argument(tails)), shifts=shifts, dims=dims)
    w_f = torch.fft.rfftn(w, dim=dims).conj()
    batch = x.shape[0]
    c_out, in_per_group = w.shape[0], w.shape[1]
    spectrum = list(x_f.shape[2:])
    if in_per_group == 1 and c_out == groups:  # depthwise: one product per channel
        y_f = x_f * w_f.squeeze(1)
    else:
        x_f = x_f.reshape([batch, groups, in_per_group] + spectrum)  # noqa: RUF005
        w_f = w_f.reshape([groups, c_out // groups, in_per_group] + spectrum)  # noqa: RUF005
        y_f = torch.einsum("bgi...,goi...->bgo...", [x_f, w_f])
        y_f = y_f.reshape([batch, c_out] + spectrum)  # noqa: RUF005
    y = torch.fft.irfftn(y_f, s=fft_sizes, dim=dims)
    for d in range(n):
        y = y.narrow(2 + d, 0, out_sizes[d])
    if bias is not None:
        y = y + bias.to(compute_dtype).view([-1] + [1] * n)
    y = y.to(input.dtype)
    return y.squeeze(0) if unbatched else y


def _direct(
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: str | list[int],
    groups: int,
) -> Tensor:
    """``F.conv{N}d`` with dilation 1; TorchScript-compatible."""
    n = kernel.dim() - 2
    if isinstance(padding, str):
        if n == 1:
            return F.conv1d(input, kernel, bias, stride, padding, 1, groups)
        if n == 2:
            return F.conv2d(input, kernel, bias, stride, padding, 1, groups)
        return F.conv3d(input, kernel, bias, stride, padding, 1, groups)
    if n == 1:
        return F.conv1d(input, kernel, bias, stride, padding, 1, groups)
    if n == 2:
        return F.conv2d(input, kernel, bias, stride, padding, 1, groups)
    return F.conv3d(input, kernel, bias, stride, padding, 1, groups)


def _conv_padded(
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None,
    pairs: Sequence[tuple[int, int]],
    groups: int,
) -> Tensor:
    """Stride-1 ``F.conv`` with (before, after) zero padding per axis; negative entries crop."""
    ones = [1] * len(pairs)
    if all(a == b >= 0 for a, b in pairs):
        return _direct(input, kernel, bias, ones, [a for a, _ in pairs], groups)
    input = F.pad(input, _pad_argument(list(pairs)))
    return _direct(input, kernel, bias, ones, [0] * len(pairs), groups)


class _SplitConv(torch.autograd.Function):
    """Depthwise (``in_channels == groups``) stride-1 convolution whose backward pass is made of
    forward convolutions (see ``"split"`` in the module docstring).

    Shapes: input ``(B, C, *S)``; kernel ``(C * m, 1, *k)``; bias ``(C * m,)`` or ``None``; pairs
    the (before, after) zero padding per axis; output ``(B, C * m, *O)``.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        input: Tensor,
        kernel: Tensor,
        bias: Tensor | None,
        pairs: tuple[tuple[int, int], ...],
    ) -> Tensor:
        ctx.save_for_backward(input, kernel)  # as given: double backward needs the inputs
        ctx.pairs = pairs
        return _conv_padded(_to_channels_last(input), kernel, bias, pairs, groups=input.shape[1])

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: Tensor):
        input, kernel = ctx.saved_tensors
        pairs = ctx.pairs
        batch, channels = input.shape[:2]
        out_channels, sizes = kernel.shape[0], kernel.shape[2:]
        multiplier = out_channels // channels
        n = len(sizes)
        grad_input = grad_kernel = grad_bias = None
        if ctx.needs_input_grad[0]:
            # Input channel c collects output channels c*m .. c*m+m-1 through the flipped kernel.
            flipped = kernel.flip(tuple(range(2, 2 + n))).reshape(channels, multiplier, *sizes)
            full = tuple((k - 1 - a, k - 1 - b) for k, (a, b) in zip(sizes, pairs, strict=True))
            grad_input = _conv_padded(
                _to_channels_last(grad_output), flipped, None, full, groups=channels
            )
        if ctx.needs_input_grad[1]:
            # Each (sample, channel) plane of the padded input correlated with its m output
            # gradients: one depthwise convolution over B * C groups, then summed over B. The
            # input is made contiguous before it is padded (a channels-last input costs one
            # transpose of the unpadded tensor), and padded explicitly: measured on CPU, the
            # convolution's own padding argument sends this problem to a 4x slower kernel.
            planes = input.contiguous().reshape(1, batch * channels, *input.shape[2:])
            planes = F.pad(planes, _pad_argument(list(pairs)))
            out_sizes = grad_output.shape[2:]
            kernels = grad_output.contiguous().reshape(batch * out_channels, 1, *out_sizes)
            per_sample = _direct(planes, kernels, None, [1] * n, [0] * n, batch * channels)
            per_sample = per_sample.reshape(batch, out_channels, 1, *sizes)
            grad_kernel = per_sample.sum(0, dtype=torch.promote_types(kernel.dtype, torch.float32))
            grad_kernel = grad_kernel.to(kernel.dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum((0, *range(2, 2 + n)))
        return grad_input, grad_kernel, grad_bias, None


def split_conv(
    input: Tensor, kernel: Tensor, bias: Tensor | None, padding: str | int | Sequence[int]
) -> Tensor:
    """Depthwise stride-1 convolution with the ``"split"`` backward pass (``F.conv`` semantics).

    Under autocast the operands are cast to the autocast dtype, as ``F.conv`` would be.

    Shape:
        input ``(B, C, *S)`` or ``(C, *S)``; kernel ``(C * m, 1, *k)``; bias ``(C * m,)``;
        output ``(B, C * m, *O)`` (unbatched if the input was).

    Raises:
        ValueError: if the kernel is not depthwise for this input (``kernel.shape[1] != 1`` or
            ``C * m`` output channels not a multiple of the input's ``C``).
    """
    n = kernel.dim() - 2
    unbatched = input.dim() == n + 1
    if unbatched:
        input = input.unsqueeze(0)
    channels = input.shape[1]
    if kernel.shape[1] != 1 or kernel.shape[0] % channels:
        raise ValueError(
            f"conv_algorithm='split' needs a depthwise kernel (C * m, 1, *k) for {channels} input "
            f"channels, got kernel shape {tuple(kernel.shape)}"
        )
    if isinstance(padding, int):
        padding = (padding,) * n
    pairs = _pad_pairs(padding if isinstance(padding, str) else list(padding), kernel.shape[2:])
    pairs = tuple(pairs)
    device_type = input.device.type
    if _autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        input, kernel = input.to(dtype), kernel.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
        with torch.autocast(device_type, enabled=False):
            out = _SplitConv.apply(input, kernel, bias, pairs)
    else:
        out = _SplitConv.apply(input, kernel, bias, pairs)
    return out.squeeze(0) if unbatched else out


def _run(
    algorithm: str,
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: str | list[int],
    groups: int,
) -> Tensor:
    """Apply ``kernel`` with a named algorithm (not ``"auto"``), in eager mode."""
    if algorithm == "fft":
        return fft_conv(input, kernel, bias, padding, groups)
    if algorithm == "split":
        return split_conv(input, kernel, bias, padding)
    if algorithm == "channels_last":
        input, kernel = _to_channels_last(input), _to_channels_last(kernel)
    return _direct(input, kernel, bias, stride, padding, groups)


def _time_candidates(
    key: tuple, make_run: Callable[[str], Callable[[], None]], device: torch.device
) -> dict[str, float]:
    """Median seconds of each candidate, interleaved, after one timed warm-up run each.

    A candidate whose warm-up took over :data:`TRIAL_DROP_FACTOR` times the fastest warm-up is
    dropped (its warm-up time is reported): a slow candidate is not run again and again.
    """
    runs = {name: make_run(name) for name in _candidates(key)}
    warm = {name: times[0] for name, times in time_interleaved(runs, 1, device).items()}
    fastest = min(warm.values())
    runs = {k: r for k, r in runs.items() if warm[k] <= TRIAL_DROP_FACTOR * fastest}
    times = time_interleaved(runs, TRIAL_REPEATS, device)
    return warm | {name: statistics.median(values) for name, values in times.items()}


def _select(
    key: tuple,
    input_meta: tuple,
    kernel_meta: tuple,
    bias_meta: tuple | None,
    padding,
    groups: int,
    need_grad: bool,
) -> str:
    """The cached choice for ``key``, trialled once on random tensors of the same shapes."""
    choice = _AUTO_CACHE.get(key)
    if choice is not None:
        return choice

    # A private generator: a trial must not move the global RNG (training stays reproducible
    # whether or not this call ran a trial).
    generator = torch.Generator(device=input_meta[2]).manual_seed(0)

    def make(meta: tuple, grad: bool) -> Tensor:
        shape, dtype, device, channels_last = meta
        t = torch.randn(shape, dtype=dtype, device=device, generator=generator)
        if channels_last:
            t = t.contiguous(memory_format=_channels_last(len(shape)))
        return t.requires_grad_(grad)

    device = input_meta[2]
    x = make(input_meta, need_grad)
    w = make(kernel_meta, need_grad)
    b = make(bias_meta, need_grad) if bias_meta is not None else None

    def make_run(name: str) -> Callable[[], None]:
        def run() -> None:
            with torch.set_grad_enabled(need_grad):
                out = _run(name, x, w, b, [1] * (len(kernel_meta[0]) - 2), padding, groups)
                if need_grad:
                    out.backward(torch.ones_like(out))

        return run

    times = _time_candidates(key, make_run, device)
    choice = min(times, key=times.get)
    _AUTO_CACHE[key] = choice
    _logger.info(
        "conv_algorithm='auto': %s for %s (%s)",
        choice,
        key,
        ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in times.items()),
    )
    return choice


def _candidates(key: tuple) -> tuple[str, ...]:
    """Algorithms worth a trial for a problem key: channels-last only where it differs from
    direct (4-D/5-D); split only for depthwise kernels with gradients (its forward is direct's).
    """
    (input_shape, *_), (kernel_shape, *_), *_, groups, need_grad = key
    n = len(kernel_shape) - 2
    channels = input_shape[-n - 1]
    depthwise = kernel_shape[1] == 1 and channels == groups
    return tuple(
        c
        for c in _CANDIDATES
        if (c != "channels_last" or _channels_last(len(input_shape)) is not None)
        and (c != "split" or (depthwise and need_grad))
    )


def _channels_last(dim: int) -> torch.memory_format | None:
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(dim)


def _meta(t: Tensor) -> tuple:
    fmt = _channels_last(t.dim())
    channels_last = (
        fmt is not None
        and t.dim() > 0
        and t.is_contiguous(memory_format=fmt)
        and (not t.is_contiguous())
    )
    return tuple(t.shape), t.dtype, t.device, channels_last


def auto_cache() -> dict[tuple, str]:
    """A copy of the ``"auto"`` choices made so far, keyed by problem."""
    return dict(_AUTO_CACHE)


def clear_auto_cache() -> None:
    """Forget every ``"auto"`` choice (the next call of each problem runs a new trial)."""
    _AUTO_CACHE.clear()


def _resolve_auto(
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: str | list[int],
    groups: int,
) -> str:
    """The algorithm ``"auto"`` runs for this problem (eager mode).

    No trial on meta tensors, for strided convolutions, inside ``torch.compile`` (a trial there
    breaks the graph, and inductor fails on the resumed graphs' dynamic shapes) or under
    ``torch.jit.trace`` (the trial's own convolutions would be recorded): those run ``"direct"``.
    """
    if (
        input.device.type == "meta"
        or any(s != 1 for s in stride)
        or torch.compiler.is_compiling()
        or torch.jit.is_tracing()
    ):
        return "direct"
    need_grad = torch.is_grad_enabled() and (
        input.requires_grad or kernel.requires_grad or (bias is not None and bias.requires_grad)
    )
    device_type = input.device.type
    autocast_dtype = (
        torch.get_autocast_dtype(device_type) if _autocast_enabled(device_type) else None
    )
    input_meta, kernel_meta = _meta(input), _meta(kernel)
    bias_meta = _meta(bias) if bias is not None else None
    pad_key = padding if isinstance(padding, str) else tuple(padding)
    key = (input_meta, kernel_meta, bias_meta, autocast_dtype, pad_key, groups, need_grad)
    return _select(key, input_meta, kernel_meta, bias_meta, padding, groups, need_grad)


def _apply_kernel(
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: str | list[int],
    groups: int,
    algorithm: str,
) -> Tensor:
    """:func:`convolve` for arguments already normalised and checked: what every DCLS layer's
    forward pass calls. TorchScript-compatible.

    TorchScript can hold neither ``"split"``'s ``autograd.Function`` nor ``"auto"``'s timed
    trial: scripted, ``"split"`` runs its forward convolution (``"channels_last"``, same values;
    autograd then differentiates it as usual) and ``"auto"`` runs ``"direct"``. Under
    ``torch.jit.trace`` the same two substitutions are made, so that a traced graph holds no
    Python call and can be saved.
    """
    if torch.jit.is_scripting():
        if algorithm == "fft":
            return _fft_conv(input, kernel, bias, _pad_pairs(padding, kernel.shape[2:]), groups)
        if algorithm == "channels_last" or algorithm == "split":
            input, kernel = _to_channels_last(input), _to_channels_last(kernel)
        return _direct(input, kernel, bias, stride, padding, groups)
    else:
        if algorithm == "auto":
            algorithm = _resolve_auto(input, kernel, bias, stride, padding, groups)
        elif algorithm == "split" and torch.jit.is_tracing():
            algorithm = "channels_last"
        return _run(algorithm, input, kernel, bias, stride, padding, groups)


def convolve(
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None,
    stride: int | Sequence[int],
    padding: str | int | Sequence[int],
    groups: int,
    algorithm: str = DEFAULT_CONV_ALGORITHM,
) -> Tensor:
    """Apply a dense kernel with the chosen algorithm (``F.conv{N}d`` semantics, dilation 1).

    Shape:
        input ``(B, C_in, *S)`` or ``(C_in, *S)``; kernel ``(C_out, C_in / groups, *k)``; bias
        ``(C_out,)``; output as ``F.conv{N}d``'s.

    Raises:
        ValueError: on an unknown ``algorithm``, or one the problem does not allow (see
            :func:`check_conv_algorithm`).
    """
    n = kernel.dim() - 2
    strides = [stride] * n if isinstance(stride, int) else list(stride)
    check_conv_algorithm(algorithm, tuple(strides), kernel.shape[1])
    if isinstance(padding, int):
        padding = [padding] * n
    elif not isinstance(padding, str):
        padding = list(padding)
    return _apply_kernel(input, kernel, bias, strides, padding, groups, algorithm)
