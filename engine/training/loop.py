"""``train_one_epoch``: one autocast path, gradient accumulation, DCLS clamping.

Order of one optimizer update (after ``update_freq`` micro-batches): unscale (fp16), clip, step,
zero the gradients, **clamp the DCLS positions**, then update the EMA — so the EMA averages
positions that are inside their kernels (the authors' loop updates the EMA before clamping).

A non-finite loss in any micro-batch of an update, or non-finite gradients (fp32/bf16), *skips*
the update: gradients are zeroed, the optimizer, clamp and EMA do not run, but ``step`` and the
schedule advance, exactly as when fp16's GradScaler skips an overflowing step (whose overflows are
the scaler's business and are not counted). ``max_bad_steps`` consecutive skipped updates stop the
run with a ``FloatingPointError``. Under DDP the decision is taken on all ranks together.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

import dcls
from engine.amp import autocast_context
from engine.distributed import all_reduce_sum, is_distributed
from engine.training import preemption
from engine.training.optim import schedule_lr
from engine.training.schedules import DclsSchedule, EpochPolicy

__all__ = ["EPOCH_TOTALS", "TrainState", "epoch_totals", "train_one_epoch"]

_logger = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Everything the loop reads and advances; ``step``, ``epoch`` and ``batch_in_epoch`` are
    the position in the run that a checkpoint stores."""

    model: nn.Module  # possibly DDP-wrapped
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a timm scheduler, stepped per update with ``step_update``
    criterion: nn.Module
    device: torch.device
    epochs: int = 1  # of the whole run, for its ETA
    update_freq: int = 1
    clip_grad: float | None = None
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    ema: nn.Module | None = None
    mixup: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    channels_last: bool = False
    log_every: int = 50
    dcls_schedule: DclsSchedule | None = None  # repulsive loss and widths per epoch (None: off)
    max_bad_steps: int = 1  # consecutive skipped (non-finite) updates that stop the run
    bad_steps: int = 0  # current run of consecutive skipped updates
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_val_top1: float | None = None  # of the reported weights (EMA if any), over the epochs
    best_epoch: int | None = None  # 1-based
    auto_choices: str = ""  # conv_algorithm="auto"'s choices as last logged
    # The epoch so far, for its metrics: this process's device sums (:data:`EPOCH_TOTALS`: the
    # finite micro-batches' loss, their count, the repulsive loss, the correct top-1 guesses and
    # the images), and the updates and skipped updates; a resumed epoch starts from its
    # checkpoint's totals (rank 0).
    epoch_sums: torch.Tensor | None = None
    epoch_updates: int = 0
    epoch_skipped: int = 0
    stop_requested: bool = False  # a preemption signal reached some rank (set at each update)
    seconds_before: float = 0.0  # the run's training time before this process (a resume's)
    clock_start: float = field(default_factory=lambda: time.perf_counter())  # this process

    def should_stop(self) -> bool:
        """Whether to checkpoint and stop now: a preemption signal reached some rank by the last
        update (all ranks agree on it), or, in a single process, has arrived since."""
        return self.stop_requested or (not is_distributed() and preemption.signal_received())

    def resume_epoch(self, totals: dict[str, float] | None, main: bool) -> None:
        """Continue an unfinished epoch from a checkpoint's :func:`epoch_totals`: the main
        process holds the sums (the epoch's metrics add every rank's), every rank the update
        counts. Without totals (between epochs, or a checkpoint from before them) the epoch's
        metrics cover the batches trained from here."""
        if totals is None or self.batch_in_epoch == 0:
            return
        sums = [totals[k] if main else 0.0 for k in EPOCH_TOTALS]
        self.epoch_sums = torch.tensor(sums, dtype=torch.float64, device=self.device)
        self.epoch_updates = int(totals["updates"])
        self.epoch_skipped = int(totals["skipped_updates"])

    def run_seconds(self) -> float:
        """The run's training time so far: its processes' one after another (a resumed run
        counts the seconds up to its checkpoint, not those lost after it)."""
        return self.seconds_before + time.perf_counter() - self.clock_start

    def record_val_top1(self, top1: float) -> None:
        """Keep the best validation top-1 and its (1-based) epoch; call once per epoch."""
        if self.best_val_top1 is None or top1 > self.best_val_top1:
            self.best_val_top1, self.best_epoch = top1, self.epoch + 1

    @property
    def ddp(self) -> DistributedDataParallel | None:
        """The DDP wrapper of the model, under ``torch.compile``'s wrapper if compiled."""
        inner = getattr(self.model, "_orig_mod", self.model)
        return inner if isinstance(inner, DistributedDataParallel) else None

    @property
    def unwrapped(self) -> nn.Module:
        """The model itself, without the DDP and ``torch.compile`` wrappers."""
        ddp = self.ddp
        return ddp.module if ddp is not None else getattr(self.model, "_orig_mod", self.model)


# What a checkpoint keeps of an unfinished epoch (epoch_totals), all ranks together.
EPOCH_TOTALS = ("loss_sum", "finite_batches", "repulsion_sum", "correct", "images")


def epoch_totals(state: TrainState) -> dict[str, float] | None:
    """The unfinished epoch's sums over every rank (:data:`EPOCH_TOTALS`, with ``updates`` and
    ``skipped_updates``), for a checkpoint: a resumed epoch then reports all its batches. None
    between epochs. A collective under DDP: call it on every rank at once."""
    if state.batch_in_epoch == 0 or state.epoch_sums is None:
        return None
    sums = all_reduce_sum(state.epoch_sums.clone()).tolist()
    return dict(zip(EPOCH_TOTALS, sums, strict=True)) | {
        "updates": state.epoch_updates,
        "skipped_updates": state.epoch_skipped,
    }


def _to_device(images: torch.Tensor, targets: torch.Tensor, state: TrainState) -> tuple:
    images = images.to(state.device, non_blocking=True)
    if state.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets.to(state.device, non_blocking=True)


def _flags_of_all_ranks(
    bad_loss: torch.Tensor, bad_grads: torch.Tensor, device: torch.device
) -> tuple[bool, bool, bool, bool]:
    """(non-finite loss here, non-finite gradients here, either on some rank, a preemption
    signal on some rank): at most one all-reduce (DDP) and one host synchronisation."""
    local = torch.stack([bad_loss, bad_grads]).to(torch.float32)
    if not is_distributed():
        here_loss, here_grads = (local > 0).tolist()
        return here_loss, here_grads, here_loss or here_grads, preemption.signal_received()
    stop = torch.full((1,), float(preemption.signal_received()), device=device)  # no copy
    shared = all_reduce_sum(torch.cat([local.max().view(1), stop]))
    here_loss, here_grads, anywhere, stop_anywhere = (torch.cat([local, shared]) > 0).tolist()
    return here_loss, here_grads, anywhere, stop_anywhere


def _optimizer_update(state: TrainState, bad_loss: torch.Tensor | bool = False) -> bool:
    """One optimizer update from the accumulated gradients; returns False if it was skipped.

    Args:
        bad_loss: whether a micro-batch of this update had a non-finite loss (a device tensor,
            read in the update's one synchronisation).

    Raises:
        FloatingPointError: after ``state.max_bad_steps`` consecutive skipped updates.
    """
    if state.scaler is not None:
        state.scaler.unscale_(state.optimizer)
    norm = None  # needed to clip, and to find non-finite gradients without a GradScaler
    if state.clip_grad or state.scaler is None:
        grads = [p.grad for p in state.model.parameters() if p.grad is not None]
        norm = nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=state.device)
    if state.scaler is None:
        bad_grads = ~torch.isfinite(norm)
    else:  # GradScaler checks and skips overflows itself
        bad_grads = torch.zeros((), dtype=torch.bool, device=state.device)
    bad_loss, bad_grads, skip, state.stop_requested = _flags_of_all_ranks(
        torch.as_tensor(bad_loss, device=state.device), bad_grads, state.device
    )
    if skip:
        if state.scaler is not None:
            state.scaler.update()  # closes the unscale_ above; lowers the scale on an overflow
        state.bad_steps += 1
        _logger.warning(
            "skipped update at epoch %d, step %d: non-finite %s (%d in a row, limit %d)",
            state.epoch + 1,  # counted from 1, as the progress lines
            state.step,
            "loss" if bad_loss else "gradients" if bad_grads else "loss on another rank",
            state.bad_steps,
            state.max_bad_steps,
        )
        if state.bad_steps >= state.max_bad_steps:
            raise FloatingPointError(
                f"{state.bad_steps} consecutive updates had a non-finite loss or gradients "
                f"(trainer.max_bad_steps={state.max_bad_steps}), last at epoch {state.epoch + 1}, "
                f"step {state.step}: lower the learning rate, set trainer.clip_grad, or check the "
                "data; the last checkpoint, if one was written, holds the last finite weights"
            )
    else:
        state.bad_steps = 0
        if state.clip_grad:
            nn.utils.clip_grads_with_norm_(state.model.parameters(), state.clip_grad, norm)
        if state.scaler is not None:
            state.scaler.step(state.optimizer)
            state.scaler.update()
        else:
            state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    if not skip:
        dcls.clamp_(state.unwrapped)
        if state.ema is not None:
            state.ema.update(state.unwrapped, step=state.step)
    state.step += 1  # a skipped update still uses its slot of the schedule, as GradScaler's do
    state.scheduler.step_update(state.step)
    return not skip


def _log_auto_choices(state: TrainState) -> None:
    """One line with every ``conv_algorithm="auto"`` choice, whenever they changed."""
    choices = dcls.algorithms.auto_summary()
    if choices != state.auto_choices:
        _logger.info("conv_algorithm='auto' (? = to be checked again): %s", choices)
        state.auto_choices = choices


def _log_progress(
    state: TrainState,
    index: int,
    first_index: int,
    total_batches: int,
    loss_sum: float,
    batches: int,
    images_seen: int,
    elapsed: float,
) -> None:
    """One progress line: 1-based epoch of the run, step, loss, lr, speed, epoch and run ETA;
    and the ``"auto"`` choices when they changed."""
    _log_auto_choices(state)
    seconds_per_batch = elapsed / (index + 1 - first_index)
    left_in_epoch = total_batches - index - 1
    left_in_run = left_in_epoch + (state.epochs - state.epoch - 1) * total_batches
    _logger.info(
        "epoch %d/%d step %d  loss %.4f  lr %.3g  %.1f img/s  ETA epoch %s, run %s",
        state.epoch + 1,
        state.epochs,
        state.step,
        loss_sum / max(batches, 1),
        schedule_lr(state.optimizer),
        images_seen / max(elapsed, 1e-9),
        _duration(left_in_epoch * seconds_per_batch),
        _duration(left_in_run * seconds_per_batch),
    )


def _duration(seconds: float) -> str:
    """``"42s"``, ``"7m05s"`` or ``"3h12m"``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _micro_batch(
    state: TrainState,
    images: torch.Tensor,
    targets: torch.Tensor,
    policy: EpochPolicy,
    repulsion: torch.Tensor | None,
    boundary: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Forward and backward of one micro-batch, its gradient added to the update's.

    Args:
        images: ``(B, 3, H, W)`` on the device; targets: ``(B,)`` labels or ``(B, classes)``
            soft targets (Mixup/CutMix).
        policy: the epoch's repulsive-loss weight.
        repulsion: the update's repulsive loss if an earlier micro-batch computed it.
        boundary: whether the update follows this micro-batch (DDP synchronises its gradients
            only then).

    Returns:
        The loss as reported (detached, the repulsive loss at its weight included), the logits
        ``(B, classes)`` (detached), and the update's repulsive loss (None without one).
    """
    ddp = state.ddp
    with ddp.no_sync() if ddp is not None and not boundary else contextlib.nullcontext():
        with autocast_context(state.device, state.amp_dtype):
            logits = state.model(images)
            loss = state.criterion(logits, targets)
        scaled = loss / state.update_freq
        if policy.repulsive_weight > 0:
            if repulsion is None:  # the positions hold still until the update: the penalty is
                # computed once, in its first micro-batch, at its full weight (the same gradient
                # as its share in each micro-batch's loss)
                repulsion = state.dcls_schedule.repulsive_loss(state.unwrapped)
                scaled = scaled + policy.repulsive_weight * repulsion
            loss = loss + policy.repulsive_weight * repulsion.detach()  # as reported
        (state.scaler.scale(scaled) if state.scaler is not None else scaled).backward()
    return loss.detach(), logits.detach(), repulsion


def train_one_epoch(
    state: TrainState,
    loader: DataLoader,
    updates_per_epoch: int,
    on_update: Callable[[TrainState], None] | None = None,
) -> dict[str, float]:
    """Train from ``state.batch_in_epoch`` to the end of the epoch.

    Args:
        state: advanced in place (``step``, ``batch_in_epoch``).
        loader: yields the epoch's remaining micro-batches (its sampler skips those done).
        updates_per_epoch: optimizer updates in a full epoch; the micro-batches past the last
            complete accumulation are not used.
        on_update: called after every optimizer update (checkpointing, fault injection).

    Returns:
        Over the whole epoch (a resumed one included the batches before its checkpoint where
        the checkpoint kept their totals, :func:`epoch_totals`): ``train_loss`` (mean of the
        finite micro-batch losses of all ranks), ``train_top1`` (percent of the images whose
        arg-max logit is their label, before Mixup/CutMix; the model changes during the
        epoch), ``updates`` and ``skipped_updates`` (non-finite); with the DCLS schedule,
        ``repulsive_loss`` (its mean, while its weight is > 0) and ``sigma`` (a scheduled
        width). Over this call: ``images_per_s`` (all ranks together). A mean is NaN when there
        was nothing to average: no finite micro-batch, or none left to train and no totals (a
        checkpoint from before the totals, taken at the epoch's last update).

    Raises:
        FloatingPointError: after ``state.max_bad_steps`` consecutive skipped updates.
    """
    state.model.train()
    schedule = state.dcls_schedule
    policy = (
        schedule.start_epoch(state.unwrapped, state.epoch)
        if schedule is not None
        else EpochPolicy(repulsive_weight=0.0, sigma=None)
    )
    total_batches = updates_per_epoch * state.update_freq
    images_seen, first_index = 0, state.batch_in_epoch
    if state.batch_in_epoch == 0 or state.epoch_sums is None:  # a new epoch (or no totals)
        state.epoch_sums = torch.zeros(len(EPOCH_TOTALS), dtype=torch.float64, device=state.device)
        state.epoch_updates = state.epoch_skipped = 0
    sums = state.epoch_sums
    # Whether this update's micro-batches had a non-finite loss.
    bad_loss = torch.zeros((), dtype=torch.bool, device=state.device)
    repulsion = None  # this update's repulsive loss, once computed
    start = time.perf_counter()
    for index, (images, targets) in enumerate(loader, start=state.batch_in_epoch):
        if index >= total_batches:
            break
        images, targets = _to_device(images, targets, state)
        labels = targets  # train top-1 is scored against the labels before Mixup/CutMix
        if state.mixup is not None:
            images, targets = state.mixup(images, targets)
        boundary = (index + 1) % state.update_freq == 0
        loss, logits, repulsion = _micro_batch(state, images, targets, policy, repulsion, boundary)
        finite = torch.isfinite(loss)
        bad_loss |= ~finite
        correct = (logits.argmax(1) == labels).sum()
        repulsion_value = repulsion.detach() if repulsion is not None else torch.zeros_like(loss)
        count = torch.full((), len(images), dtype=torch.float64, device=state.device)  # a fill
        step_sums = [torch.where(finite, loss, 0), finite, repulsion_value, correct, count]
        sums += torch.stack([t.to(torch.float64) for t in step_sums])  # as EPOCH_TOTALS
        images_seen += len(images)
        state.batch_in_epoch = index + 1
        if boundary:
            state.epoch_skipped += not _optimizer_update(state, bad_loss)
            state.epoch_updates += 1
            bad_loss = torch.zeros((), dtype=torch.bool, device=state.device)
            repulsion = None
            if on_update is not None:
                on_update(state)
            if state.step % state.log_every == 0:
                loss_sum, batches = sums[:2].tolist()
                _log_progress(
                    state,
                    index,
                    first_index,
                    total_batches,
                    loss_sum,
                    int(batches),
                    images_seen,
                    time.perf_counter() - start,
                )
    elapsed = time.perf_counter() - start
    _log_auto_choices(state)
    # Sums over every rank: the mean loss of all micro-batches, the throughput of all processes.
    seen = torch.tensor([images_seen], dtype=torch.float64, device=state.device)
    loss_sum, batches, repulsion_sum, correct_sum, images, images_seen = all_reduce_sum(
        torch.cat([sums, seen])
    ).tolist()
    metrics = {  # NaN, not 0, where there is nothing to average
        "train_loss": loss_sum / batches if batches else math.nan,
        "train_top1": 100 * correct_sum / images if images else math.nan,
        "images_per_s": images_seen / max(elapsed, 1e-9) if images_seen else math.nan,
        "updates": float(state.epoch_updates),
        "skipped_updates": float(state.epoch_skipped),
    }
    if policy.repulsive_weight > 0:
        metrics["repulsive_loss"] = repulsion_sum / batches if batches else math.nan
    return metrics | policy.metrics()
