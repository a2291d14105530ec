"""Parameters, multiply-accumulates and throughput of a model, and of a model against its baseline.

MACs are counted with ``torch.utils.flop_counter`` on the meta device (nothing is computed): a
DCLS convolution counts as the dense convolution it runs, and the paper's "FLOPs" are
multiply-accumulates (fvcore's convention), i.e. half of flop_counter's total.

Throughput follows timm's ``benchmark.py``: a fixed random batch, warm-up steps, then timed
steps with the device synchronised before and after; inference under ``torch.no_grad`` and
training as forward, cross-entropy, backward and an optimizer step (SGD as timm, or AdamW as the
recipe). Models measured together are interleaved round by round and the median round is kept,
so that their ratio is not skewed by the machine's load drifting during the run. On CUDA the
peak memory of one step of each model is measured too. ``eval.py sets=[throughput]`` and
``scripts/bench_models.py`` both time models through :func:`measure_throughput`.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dcls.algorithms import settle_auto_choices
from dcls.timing import synchronize, time_interleaved
from engine.amp import autocast_context

__all__ = [
    "OPTIMIZERS",
    "StepSpec",
    "baseline_name",
    "device_busy_us",
    "evaluate_throughput",
    "host_busy_us",
    "measure_peak_memory",
    "measure_throughput",
    "params_and_macs",
    "profile_steps",
]

_logger = logging.getLogger(__name__)


def params_and_macs(build: Callable[[], nn.Module], resolution: int = 224) -> tuple[int, float]:
    """Parameter count (shared tensors once) and GMACs of ``build()`` for one image.

    ``build`` is called under ``torch.device("meta")``, so even the largest model costs no
    memory.
    """
    with torch.device("meta"):
        model = build().eval()
        image = torch.empty(1, 3, resolution, resolution)
    for module in model.modules():  # the dense convolution counts as one (fft and triton
        if hasattr(module, "conv_algorithm"):  # run no aten convolution the counter sees)
            module.conv_algorithm = "direct"
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(image)
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() / 2e9


OPTIMIZERS = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """The step that is timed, profiled or measured for memory, the same for every model.

    Attributes:
        batch_size, resolution: the fixed random input ``(batch_size, 3, resolution,
            resolution)``.
        device: where the models and the input go.
        amp_dtype: autocast dtype (``None``: float32).
        channels_last: the models and the input in channels_last.
        train: a training step (forward, cross-entropy, backward, optimizer step) instead of an
            inference under ``torch.no_grad``.
        optimizer: the training step's optimizer, ``"adamw"`` (the recipe's) or ``"sgd"``
            (timm's benchmark).
    """

    batch_size: int
    resolution: int
    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    train: bool = False
    optimizer: str = "adamw"

    def __post_init__(self) -> None:
        for name in ("batch_size", "resolution"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}"
            )


def _step_fn(model: nn.Module, images: torch.Tensor, spec: StepSpec) -> Callable[[], None]:
    device, amp_dtype = images.device, spec.amp_dtype
    if not spec.train:

        def infer() -> None:
            with torch.no_grad(), autocast_context(device, amp_dtype):
                model(images)

        return infer
    step = OPTIMIZERS[spec.optimizer](model.parameters(), lr=1e-6)
    num_classes = getattr(model, "num_classes", None)  # timm's models (and compiled ones) say
    if not isinstance(num_classes, int) or num_classes < 1:  # others (or a timm model without a
        # classifier, num_classes=0, which outputs its features): one forward tells
        model.eval()
        with torch.no_grad(), autocast_context(device, amp_dtype):
            num_classes = model(images[:1]).shape[-1]
    model.train()
    targets = torch.randint(num_classes, (images.shape[0],), device=device)

    def train_step() -> None:
        with autocast_context(device, amp_dtype):
            loss = nn.functional.cross_entropy(model(images).float(), targets)
        loss.backward()
        step.step()
        step.zero_grad(set_to_none=True)

    return train_step


def _prepared_steps(
    named_models: Mapping[str, nn.Module], spec: StepSpec
) -> dict[str, Callable[[], None]]:
    memory_format = torch.channels_last if spec.channels_last else torch.contiguous_format
    images = torch.randn(spec.batch_size, 3, spec.resolution, spec.resolution, device=spec.device)
    images = images.contiguous(memory_format=memory_format)
    steps = {}
    for name, model in named_models.items():
        model.to(device=spec.device, memory_format=memory_format).train(spec.train)
        steps[name] = _step_fn(model, images, spec)
    return steps


def measure_throughput(
    named_models: Mapping[str, nn.Module],
    spec: StepSpec,
    warmup: int = 3,
    steps: int = 10,
    rounds: int = 3,
) -> dict[str, float]:
    """Images per second of each model (median over ``rounds`` interleaved rounds).

    Args:
        named_models: the models to measure, e.g. ``{"convnext_tiny": ..., "convnext_tiny_dcls":
            ...}``; they are moved to ``spec.device`` (and put in train or eval mode).
        spec: the step timed.
        warmup: untimed steps per model before the first round (``"auto"``'s trials run here).
        steps: timed steps per model per round.

    Returns:
        ``{name: images per second}``.
    """
    for name, value in (("steps", steps), ("rounds", rounds)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    step_fns = _prepared_steps(named_models, spec)
    for step in step_fns.values():
        for _ in range(warmup):
            step()
    if settle_auto_choices():  # "auto"'s second trials run here, not in a timed round
        for step in step_fns.values():
            step()
    seconds = time_interleaved(step_fns, rounds, spec.device, calls=steps)
    images = spec.batch_size * steps
    return {name: images / statistics.median(times) for name, times in seconds.items()}


def measure_peak_memory(
    named_models: Mapping[str, nn.Module], spec: StepSpec
) -> dict[str, float] | None:
    """Peak CUDA memory (GiB) of one step of each model, measured alone after a warm-up step;
    ``None`` off CUDA. Weights, gradients, optimizer state and the input batch are included; the
    other models wait on the CPU meanwhile, and all are on ``spec.device`` again at the end."""
    device = spec.device
    if device.type != "cuda":
        return None
    peaks = {}
    for name, model in named_models.items():
        for other in named_models.values():
            if other is not model:
                other.to("cpu")
        (step,) = _prepared_steps({name: model}, spec).values()
        step()
        if settle_auto_choices():  # no "auto" trial in the measured step
            step()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        peaks[name] = torch.cuda.max_memory_allocated(device) / 2**30
        del step  # its optimizer state and input batch
        gc.collect()
    for model in named_models.values():
        model.to(device)
    return peaks


def device_busy_us(events: Sequence[Any]) -> float:
    """Microseconds the device spent in kernels: the device events' own times. An operator's
    ``self_device_time_total`` repeats the time of the kernels it launched, which are events of
    their own (as ``torch.profiler``'s table totals them); user annotations are ranges, not work.
    """
    return sum(
        e.self_device_time_total
        for e in events
        if e.device_type != torch.autograd.DeviceType.CPU and not e.is_user_annotation
    )


def host_busy_us(events: Sequence[Any]) -> float:
    """Microseconds the host spent in operators, not waiting for the device (the
    ``cudaDeviceSynchronize``-like calls, whose wait would make a device-bound step look
    host-bound)."""
    return sum(e.self_cpu_time_total for e in events if "Synchronize" not in e.key)


def profile_steps(
    named_models: Mapping[str, nn.Module],
    spec: StepSpec,
    steps: int = 2,
    row_limit: int = 15,
) -> dict[str, str]:
    """Where each model's step spends its time: ``torch.profiler``'s table of the ops and kernels
    with the most self time (device time on CUDA, else CPU time) over ``steps`` steps, after one
    untimed step.

    The table's first line gives, per step, the wall time, on CUDA the device's busy time (the sum
    of its kernels' times), and the host's time in operators: a device busy for much less than
    the wall time waits on the host (launch overhead, synchronisations). The profiler slows the
    host, so the wall times are not the benchmark's.

    Returns:
        ``{name: text}``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = spec.device
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    sort_by = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    step_fns = _prepared_steps(named_models, spec)
    tables = {}
    for name, step in step_fns.items():
        step()
        if settle_auto_choices():  # no "auto" re-check inside the profile
            step()
        synchronize(device)
        with torch.profiler.profile(activities=activities) as profiler:
            start = time.perf_counter()
            for _ in range(steps):
                step()
            synchronize(device)
            wall = time.perf_counter() - start
        events = profiler.key_averages()
        busy_us, host_us = device_busy_us(events), host_busy_us(events)
        busy = f", device busy {busy_us / 1e3 / steps:.1f} ms" if device.type == "cuda" else ""
        summary = (
            f"{name}: per step under the profiler, wall {1e3 * wall / steps:.1f} ms{busy}, host "
            f"in operators {host_us / 1e3 / steps:.1f} ms ({steps} steps)"
        )
        tables[name] = summary + "\n" + events.table(sort_by=sort_by, row_limit=row_limit)
    return tables


def baseline_name(model_name: str, baseline: str | None) -> str | None:
    """The model a DCLS variant is compared with: ``auto`` drops a ``_dcls``/``_dc`` suffix
    (``None`` when the model is not a variant); otherwise ``baseline`` itself."""
    if baseline != "auto":
        return baseline
    for suffix in ("_dcls", "_dc"):
        if model_name.endswith(suffix):
            return model_name.removesuffix(suffix)
    return None


def evaluate_throughput(
    model: nn.Module,
    model_name: str,
    cfg: Mapping[str, Any],
    resolution: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
) -> dict:
    """Images/s of ``model`` and of its baseline measured in the same run, and their ratios.

    A copy of ``model`` is timed, so its weights and batch-norm statistics are left as they were;
    ``model`` is back on its device, and ``cudnn.benchmark`` as it was, when this returns or
    raises.

    ``cfg`` holds ``baseline`` (``auto``, a timm name or null), ``batch_size``, ``warmup``,
    ``steps``, ``rounds``, ``train`` (also time training steps) and ``optimizer`` (of the
    training steps, default ``"adamw"`` as the recipe). On CUDA the peak memory of a step of each
    model is reported too, with its ratio to the baseline's.
    """
    named = {model_name: copy.deepcopy(model)}  # training steps must not touch the weights
    baseline = baseline_name(model_name, cfg["baseline"])
    # (a model of one's own may carry its baseline's name: both are timed, each under its key)
    baseline_key = f"{baseline} (baseline)" if baseline == model_name else baseline
    if baseline is not None:
        if not timm.is_model(baseline):
            raise ValueError(f"throughput.baseline: {baseline!r} is not a timm model name")
        num_classes = getattr(model, "num_classes", 1000)
        named[baseline_key] = timm.create_model(baseline, num_classes=num_classes)
    modes = ("inference", "train") if cfg["train"] else ("inference",)
    specs = {
        mode: StepSpec(
            cfg["batch_size"],
            resolution,
            device,
            amp_dtype,
            channels_last,
            train=mode == "train",
            optimizer=cfg.get("optimizer", "adamw"),
        )
        for mode in modes
    }
    home = next(model.parameters(), torch.empty(0)).device
    benchmark = torch.backends.cudnn.benchmark
    model.to("cpu")  # only the timed copies on the device: the memory peaks hold one model each
    try:
        if device.type == "cuda":  # timm's benchmark: cuDNN picks its fastest algorithm per shape
            torch.backends.cudnn.benchmark = True
        repeats = {k: cfg[k] for k in ("warmup", "steps", "rounds")}
        measured = {mode: measure_throughput(named, specs[mode], **repeats) for mode in modes}
        memory = {mode: measure_peak_memory(named, specs[mode]) for mode in modes}
    finally:
        torch.backends.cudnn.benchmark = benchmark
        model.to(home)
    result: dict[str, Any] = {
        "batch_size": cfg["batch_size"],
        "resolution": resolution,
        "device": str(device),
        "amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else None,
        "channels_last": channels_last,
        "images_per_s": {mode: measured[mode][model_name] for mode in modes},
        "baseline": baseline,
    }
    if memory["inference"] is not None:
        result["peak_memory_gib"] = {mode: memory[mode][model_name] for mode in modes}
    if baseline is not None:
        result |= _baseline_ratios(measured, memory, model_name, baseline_key)
        _logger.info(
            "throughput %s / %s (time per image, same run): %s",
            model_name,
            baseline,
            "  ".join(f"{mode} {ratio:.3f}x" for mode, ratio in result["ratio"].items()),
        )
    return result


def _baseline_ratios(
    measured: Mapping[str, Mapping[str, float]],
    memory: Mapping[str, Mapping[str, float] | None],
    model_key: str,
    baseline_key: str,
) -> dict[str, Any]:
    """The baseline's images/s (and peak memory, where measured) per mode, and the model's
    ratios to them: time per image over the baseline's, memory over the baseline's."""
    modes = list(measured)
    result: dict[str, Any] = {
        "baseline_images_per_s": {mode: measured[mode][baseline_key] for mode in modes},
        "ratio": {mode: measured[mode][baseline_key] / measured[mode][model_key] for mode in modes},
    }
    if memory[modes[0]] is not None:
        result["baseline_peak_memory_gib"] = {mode: memory[mode][baseline_key] for mode in modes}
        result["memory_ratio"] = {
            mode: memory[mode][model_key] / memory[mode][baseline_key] for mode in modes
        }
    return result
