"""``"auto"``: a timed trial of the candidates per problem, cached for the process.

Like ``torch.backends.cudnn.benchmark``. A problem is a :class:`ProblemKey` (device, dtypes,
autocast, shapes, memory format, padding, groups, whether gradients are needed); the trial runs
on random tensors of the same shapes, never on the caller's data, with a private generator. On
CUDA every candidate runs once untimed first (Triton compiles and autotunes, cuFFT plans, cuDNN
benchmarks), so a first-call cost never decides.

A trial on a loaded machine must not lock a slow choice in for a whole run: the first choice is
provisional, and after :data:`RECHECK_AFTER` more calls of the same problem the trial runs once
more; the final choice is the candidate with the lowest median of the two trials (a load spike
inflates a median, it never deflates one). :func:`auto_summary` gives every choice in one line.

Meta tensors, strided convolutions and code traced by ``torch.jit.trace`` go to ``"direct"``
without a trial (so FLOP counting on the meta device counts the dense convolution). Code traced
by ``torch.compile`` cannot run a trial either; it gets ``"triton"`` for depthwise convolutions
on CUDA where Triton runs (the GPU kernel written for large depthwise kernels), else
``"direct"``; name an algorithm to compile another. The same static choice holds in
deterministic mode (``torch.use_deterministic_algorithms(True)``: a timed choice could differ
between two runs, and the results with it; Triton then runs one fixed config, not its
autotuner's timed choice) and under ``torch.func`` transforms. Inside a
checkpointed segment (``torch.utils.checkpoint``, timm's ``set_grad_checkpointing``) a cached
choice never changes, so that the recomputation runs what the forward ran, and a first trial
keeps its tensors out of the segment. Under DDP each process runs its own trial;
processes that choose differently compute gradients that differ at float rounding level before
they are averaged, which keeps replicas in sync.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from dcls.algorithms._common import autocast_enabled, channels_last_format, functorch_active
from dcls.algorithms.triton import triton_available
from dcls.timing import synchronize, time_interleaved

__all__ = [
    "CANDIDATES",
    "MANY_PROBLEMS",
    "RECHECK_AFTER",
    "TRIAL_DROP_FACTOR",
    "TRIAL_REPEATS",
    "ProblemKey",
    "TensorMeta",
    "auto_cache",
    "auto_summary",
    "clear_auto_cache",
    "resolve_auto",
    "static_choice",
]

_logger = logging.getLogger(__name__)

# Algorithms an "auto" trial may choose, in trial order (each where it applies: `_candidates`).
CANDIDATES = ("direct", "channels_last", "fft", "split", "triton")
TRIAL_REPEATS = 3  # timed runs per candidate in an "auto" trial (after one warm-up run)
TRIAL_DROP_FACTOR = 3.0  # candidates whose warm-up is this much slower than the best are dropped
RECHECK_AFTER = 50  # calls of a problem after its first trial until the second, final one
MANY_PROBLEMS = 64  # trialled problems in one process past which inputs likely vary in size
# Triton on CUDA, decided once: what torch.compile'd code may use without a trial.
_TRITON_ON_CUDA = torch.cuda.is_available() and triton_available(torch.device("cuda"))

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


@dataclass
class _Choice:
    """A problem's choice, the best median seen per candidate, and whether it is final."""

    algorithm: str
    seconds: dict[str, float] = field(default_factory=dict)
    calls: int = 0
    final: bool = False


_AUTO_CACHE: dict[ProblemKey, _Choice] = {}


def auto_cache() -> dict[ProblemKey, str]:
    """A copy of the ``"auto"`` choices made so far, keyed by problem."""
    return {key: choice.algorithm for key, choice in _AUTO_CACHE.items()}


def _describe(key: ProblemKey) -> str:
    """``96x56x56 k17x17 train``: channels and spatial size, kernel size, pass."""
    n = len(key.kernel.shape) - 2
    size = "x".join(map(str, key.input.shape[-n - 1 :]))
    kernel = "x".join(map(str, key.kernel.shape[2:]))
    return f"{size} k{kernel} {'train' if key.need_grad else 'infer'}"


def auto_summary() -> str:
    """Every ``"auto"`` choice so far in one line, grouped by algorithm, e.g. ``"fft for
    96x56x56 k17x17 train, 192x28x28 k17x17 train; direct for 768x7x7 k17x17 train"`` (a
    provisional choice, before its second trial, is marked ``?``); ``""`` if none."""
    groups: dict[str, list[str]] = {}
    for key, choice in _AUTO_CACHE.items():
        groups.setdefault(choice.algorithm, []).append(
            _describe(key) + ("" if choice.final else "?")
        )
    return "; ".join(f"{name} for {', '.join(problems)}" for name, problems in groups.items())


def settle_auto_choices() -> bool:
    """Make the second trial of every provisional choice due at its problem's next call; returns
    whether any choice was provisional. For benchmarks: after a warm-up, settle and warm up once
    more, so that no re-check trial (due after :data:`RECHECK_AFTER` calls) lands in a timed
    round or a memory measurement."""
    pending = [choice for choice in _AUTO_CACHE.values() if not choice.final]
    for choice in pending:
        choice.calls = RECHECK_AFTER
    return bool(pending)


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
        and (c != "triton" or (depthwise and key.input.device.type == "cuda" and _TRITON_ON_CUDA))
    )


def _time_candidates(
    key: ProblemKey, make_run: Callable[[str], Callable[[], None]], device: torch.device
) -> dict[str, float]:
    """Median seconds of each candidate, interleaved, after one timed warm-up run each.

    A candidate whose warm-up took over :data:`TRIAL_DROP_FACTOR` times the fastest warm-up is
    dropped (its warm-up time is reported): a slow candidate is not run again and again. A
    candidate that raises in any of its runs (out of memory, a kernel that fails to compile) is
    not run again and left out, with a warning; if every candidate raises, the first error is
    raised. An error of ``"direct"`` (``F.conv``) other than running out of memory is the
    problem's own (a kernel larger than the padded input): raised, not left out.
    """
    failed: dict[str, Exception] = {}

    def guarded(name: str, run: Callable[[], None]) -> Callable[[], None]:
        def call() -> None:
            if name not in failed:
                try:
                    run()
                except Exception as error:  # a candidate that cannot run is not a choice
                    failed[name] = error.with_traceback(None)  # frees the failed run's tensors

        return call

    runs = {name: guarded(name, make_run(name)) for name in _candidates(key)}
    if device.type == "cuda":  # first calls compile, autotune and plan: not what is compared
        for run in runs.values():
            run()
        synchronize(device)
    warm = {name: times[0] for name, times in time_interleaved(runs, 1, device).items()}
    fastest = min((t for name, t in warm.items() if name not in failed), default=math.inf)
    runs = {
        k: r for k, r in runs.items() if k not in failed and warm[k] <= TRIAL_DROP_FACTOR * fastest
    }
    times = time_interleaved(runs, TRIAL_REPEATS, device)
    seconds = warm | {name: statistics.median(values) for name, values in times.items()}
    direct_error = failed.get("direct")
    if direct_error is not None and not isinstance(direct_error, torch.OutOfMemoryError):
        raise direct_error
    for name, error in failed.items():  # in the warm-up or a timed round: not timed, not chosen
        _logger.warning(
            "conv_algorithm='auto': %s left out for %s, it raised %s: %s",
            name, _describe(key), type(error).__name__, error,
        )  # fmt: skip
        del seconds[name]
    if not seconds:
        raise next(iter(failed.values()))
    return seconds


def _trial(key: ProblemKey, padding: str | list[int], run: Runner) -> dict[str, float]:
    """Median seconds of every candidate for ``key``, on random tensors of its shapes."""
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

    return _time_candidates(key, make_run, device)


def _saved_tensor_hooks_active() -> bool:
    """Whether autograd's saved-tensor hooks are on: inside ``torch.utils.checkpoint``'s forward
    or its recomputation (timm's ``set_grad_checkpointing``), or a user's hooks."""
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)  # torch >= 2.0
    return top is not None and top(False) is not None


def _select(key: ProblemKey, padding: str | list[int], run: Runner, frozen: bool = False) -> str:
    """The cached choice for ``key``: trialled at its first call and once more
    :data:`RECHECK_AFTER` calls later (then final).

    Args:
        frozen: the choice must not change (inside a checkpointed segment, whose recomputation
            must run what its forward ran): a cached choice is kept, not counted towards its
            re-check; a first trial runs under its own saved-tensor hooks, so that the segment
            does not record the trial's tensors.
    """
    choice = _AUTO_CACHE.get(key)
    if choice is not None and (frozen or choice.final or choice.calls < RECHECK_AFTER):
        choice.calls += not frozen
        return choice.algorithm
    with torch.autograd.graph.saved_tensors_hooks(_keep, _keep):
        seconds = _trial(key, padding, run)
    if choice is None:
        choice = _AUTO_CACHE[key] = _Choice(min(seconds, key=seconds.get), seconds)
        choice.final = RECHECK_AFTER <= 0
        if len(_AUTO_CACHE) == MANY_PROBLEMS:
            _logger.warning(
                "conv_algorithm='auto' has timed %d different convolutions in this process: "
                "inputs of varying sizes cost a trial each (and its re-check); for them, name "
                "the algorithm (auto_summary() says which ones 'auto' chose)",
                MANY_PROBLEMS,
            )
    else:
        seconds = {k: min(v, choice.seconds.get(k, math.inf)) for k, v in seconds.items()}
        choice.algorithm, choice.seconds, choice.final = (
            min(seconds, key=seconds.get),
            seconds,
            True,
        )
    _logger.debug(
        "conv_algorithm='auto': %s for %s%s (%s)",
        choice.algorithm,
        _describe(key),
        "" if choice.final else ", to be checked again",
        ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in seconds.items()),
    )
    return choice.algorithm


def _keep(t: Tensor) -> Tensor:
    """The identity saved-tensor hook (pack and unpack)."""
    return t


def _compiled_choice(input: Tensor, kernel: Tensor, groups: int) -> str:
    """``"auto"`` inside ``torch.compile``, where no trial can run: the Triton kernel for a
    depthwise convolution on CUDA (where Triton runs), else ``"direct"``."""
    n = kernel.dim() - 2
    return static_choice(input.device.type, kernel.shape[1] == 1 and input.shape[-n - 1] == groups)


def static_choice(device_type: str, depthwise: bool) -> str:
    """What ``"auto"`` runs where it cannot time: ``"triton"`` for depthwise convolutions on
    CUDA where Triton runs, else ``"direct"``."""
    return "triton" if depthwise and device_type == "cuda" and _TRITON_ON_CUDA else "direct"


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
        The cached or newly trialled choice; without a trial, ``"direct"`` on meta tensors, for
        strided convolutions and under ``torch.jit.trace`` (the trial's own convolutions would
        be recorded), and :func:`_compiled_choice` inside ``torch.compile`` (a trial there
        breaks the graph, and inductor fails on the resumed graphs' dynamic shapes), under
        ``torch.func`` transforms, and in deterministic mode
        (``torch.use_deterministic_algorithms``: a timed choice could differ between two runs,
        or after a resume, and their results with it). Inside a checkpointed segment the choice
        does not change (see :func:`_select`).
    """
    if input.device.type == "meta" or any(s != 1 for s in stride) or torch.jit.is_tracing():
        return "direct"
    if (
        torch.compiler.is_compiling()
        or torch.are_deterministic_algorithms_enabled()
        or functorch_active()
    ):
        return _compiled_choice(input, kernel, groups)
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
    return _select(key, padding, run, frozen=_saved_tensor_hooks_active())
