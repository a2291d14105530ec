"""``"auto"``: a one-time timed trial of the candidates per problem, cached for the process.

Like ``torch.backends.cudnn.benchmark``. A problem is a :class:`ProblemKey` (device, dtypes,
autocast, shapes, memory format, padding, groups, whether gradients are needed); the trial runs
on random tensors of the same shapes, never on the caller's data, with a private generator.
Meta tensors, strided convolutions and code traced by ``torch.compile`` or ``torch.jit.trace``
go to ``"direct"`` without a trial (so FLOP counting on the meta device counts the dense
convolution; name ``"fft"`` explicitly to compile the FFT path). Under DDP each process runs its
own trial; processes that choose differently compute gradients that differ at float rounding
level before they are averaged, which keeps replicas in sync.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from dcls.algorithms._common import autocast_enabled, channels_last_format
from dcls.timing import time_interleaved

__all__ = [
    "CANDIDATES",
    "TRIAL_DROP_FACTOR",
    "TRIAL_REPEATS",
    "ProblemKey",
    "TensorMeta",
    "auto_cache",
    "clear_auto_cache",
    "resolve_auto",
]

_logger = logging.getLogger(__name__)

# Algorithms an "auto" trial may choose, in trial order. A GPU kernel (dcls/triton_conv.py, to
# become dcls/algorithms/triton.py) joins here and in dispatch.CONV_ALGORITHMS, with its own
# condition in `_candidates` (e.g. CUDA tensors only).
CANDIDATES = ("direct", "channels_last", "fft", "split")
TRIAL_REPEATS = 3  # timed runs per candidate in an "auto" trial (after one warm-up run)
TRIAL_DROP_FACTOR = 3.0  # candidates whose warm-up is this much slower than the best are dropped

# (algorithm, input, kernel, bias, stride, padding, groups) -> output: how a trial runs a candidate
Runner = Callable[..., Tensor]


class TensorMeta(NamedTuple):
    """What a trial needs to know of one operand: it rebuilds a random tensor from this."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    channels_last: bool  # channels-last memory format (and not also contiguous)

    @classmethod
    def of(cls, t: Tensor) -> TensorMeta:
        fmt = channels_last_format(t.dim())
        channels_last = fmt is not None and t.is_contiguous(memory_format=fmt)
        return cls(tuple(t.shape), t.dtype, t.device, channels_last and not t.is_contiguous())


class ProblemKey(NamedTuple):
    """One convolution problem of the ``"auto"`` cache: every choice is per key."""

    input: TensorMeta
    kernel: TensorMeta
    bias: TensorMeta | None
    autocast_dtype: torch.dtype | None
    padding: str | tuple[int, ...]
    groups: int
    need_grad: bool


_AUTO_CACHE: dict[ProblemKey, str] = {}


def auto_cache() -> dict[ProblemKey, str]:
    """A copy of the ``"auto"`` choices made so far, keyed by problem."""
    return dict(_AUTO_CACHE)


def clear_auto_cache() -> None:
    """Forget every ``"auto"`` choice (the next call of each problem runs a new trial)."""
    _AUTO_CACHE.clear()


def _candidates(key: ProblemKey) -> tuple[str, ...]:
    """Algorithms worth a trial for a problem key: channels-last only where it differs from
    direct (4-D/5-D); split only for depthwise kernels with gradients (its forward is direct's).
    """
    input_shape, kernel_shape = key.input.shape, key.kernel.shape
    n = len(kernel_shape) - 2
    depthwise = kernel_shape[1] == 1 and input_shape[-n - 1] == key.groups
    return tuple(
        c
        for c in CANDIDATES
        if (c != "channels_last" or channels_last_format(len(input_shape)) is not None)
        and (c != "split" or (depthwise and key.need_grad))
    )


def _time_candidates(
    key: ProblemKey, make_run: Callable[[str], Callable[[], None]], device: torch.device
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


def _select(key: ProblemKey, padding: str | list[int], run: Runner) -> str:
    """The cached choice for ``key``, trialled once on random tensors of the same shapes."""
    choice = _AUTO_CACHE.get(key)
    if choice is not None:
        return choice

    # A private generator: a trial must not move the global RNG (training stays reproducible
    # whether or not this call ran a trial).
    device = key.input.device
    generator = torch.Generator(device=device).manual_seed(0)

    def make(meta: TensorMeta) -> Tensor:
        t = torch.randn(meta.shape, dtype=meta.dtype, device=meta.device, generator=generator)
        if meta.channels_last:
            t = t.contiguous(memory_format=channels_last_format(len(meta.shape)))
        return t.requires_grad_(key.need_grad)

    x, w = make(key.input), make(key.kernel)
    b = make(key.bias) if key.bias is not None else None
    ones = [1] * (len(key.kernel.shape) - 2)

    def make_run(name: str) -> Callable[[], None]:
        def trial() -> None:
            with torch.set_grad_enabled(key.need_grad):
                out = run(name, x, w, b, ones, padding, key.groups)
                if key.need_grad:
                    out.backward(torch.ones_like(out))

        return trial

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


def resolve_auto(
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: str | list[int],
    groups: int,
    run: Runner,
) -> str:
    """The algorithm ``"auto"`` runs for this problem (eager mode).

    Args:
        input, kernel, bias, stride, padding, groups: the convolution, as
            :func:`dcls.algorithms.convolve` takes it (normalised).
        run: ``(algorithm, input, kernel, bias, stride, padding, groups) -> output``, what a
            trial times for each candidate.

    Returns:
        The cached or newly trialled choice; ``"direct"`` without a trial on meta tensors, for
        strided convolutions, inside ``torch.compile`` (a trial there breaks the graph, and
        inductor fails on the resumed graphs' dynamic shapes) or under ``torch.jit.trace`` (the
        trial's own convolutions would be recorded).
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
    key = ProblemKey(
        TensorMeta.of(input),
        TensorMeta.of(kernel),
        TensorMeta.of(bias) if bias is not None else None,
        torch.get_autocast_dtype(device_type) if autocast_enabled(device_type) else None,
        padding if isinstance(padding, str) else tuple(padding),
        groups,
        need_grad,
    )
    return _select(key, padding, run)
