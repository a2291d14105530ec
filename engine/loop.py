"""``train_one_epoch`` and ``evaluate``: one autocast path, gradient accumulation, DCLS clamping.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from timm.utils import accuracy
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

import dcls
from engine.distributed import all_reduce_sum

__all__ = ["AMP_DTYPES", "TrainState", "autocast_context", "evaluate", "train_one_epoch"]

_logger = logging.getLogger(__name__)

# the values of the ``amp`` config keys
AMP_DTYPES = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainState:
    """Everything the loop reads and advances; ``step``, ``epoch`` and ``batch_in_epoch`` are
    the position in the run that a checkpoint stores."""

    model: nn.Module  # possibly DDP-wrapped
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a timm scheduler, stepped per update with ``step_update``
    criterion: nn.Module
    device: torch.device
    update_freq: int = 1
    clip_grad: float | None = None
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    ema: nn.Module | None = None
    mixup: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    channels_last: bool = False
    log_every: int = 50
    repulsive_weight: float = 0.0  # weight of dcls.repulsive_loss in the loss (0: off)
    repulsive_min_distance: float = 1.0
    max_bad_steps: int = 1  # consecutive skipped (non-finite) updates that stop the run
    bad_steps: int = 0  # current run of consecutive skipped updates
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0

    @property
    def unwrapped(self) -> nn.Module:
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model


def autocast_context(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``, or nothing when ``dtype`` is ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _to_device(images: torch.Tensor, targets: torch.Tensor, state: TrainState) -> tuple:
    images = images.to(state.device, non_blocking=True)
    if state.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets.to(state.device, non_blocking=True)


def _any_rank(flag: bool, device: torch.device) -> bool:
    """``flag`` or'ed over all ranks (itself in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=device)).item() > 0)


def _optimizer_update(state: TrainState, bad_loss: bool = False) -> bool:
    """One optimizer update from the accumulated gradients; returns False if it was skipped.

    Raises:
        FloatingPointError: after ``state.max_bad_steps`` consecutive skipped updates.
    """
    if state.scaler is not None:
        state.scaler.unscale_(state.optimizer)
    grads = [p.grad for p in state.model.parameters() if p.grad is not None]
    norm = nn.utils.get_total_norm(grads) if grads else torch.zeros(())
    bad_grads = state.scaler is None and not math.isfinite(norm.item())
    skip = _any_rank(bad_loss or bad_grads, state.device)
    if skip:
        if state.scaler is not None:
            state.scaler.update()  # closes the unscale_ above; lowers the scale on an overflow
        state.bad_steps += 1
        _logger.warning(
            "skipped update at epoch %d, step %d: non-finite %s (%d in a row, limit %d)",
            state.epoch,
            state.step,
            "loss" if bad_loss else "gradients" if bad_grads else "loss on another rank",
            state.bad_steps,
            state.max_bad_steps,
        )
        if state.bad_steps >= state.max_bad_steps:
            raise FloatingPointError(
                f"{state.bad_steps} consecutive updates had a non-finite loss or gradients "
                f"(trainer.max_bad_steps={state.max_bad_steps}), last at epoch {state.epoch}, "
                f"step {state.step}: lower the learning rate, set trainer.clip_grad, or check the "
                "data; the last checkpoint holds the last finite weights"
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
        ``train_loss`` (mean over this call's finite micro-batch losses of all ranks),
        ``train_top1`` (percent of this call's images whose arg-max logit is their label, before
        Mixup/CutMix; the model changes during the epoch), ``images_per_s`` (all ranks
        together), ``updates`` and ``skipped_updates`` (non-finite).

    Raises:
        FloatingPointError: after ``state.max_bad_steps`` consecutive skipped updates.
    """
    state.model.train()
    total_batches = updates_per_epoch * state.update_freq
    loss_sum, repulsion_sum, batches, images_seen, updates = 0.0, 0.0, 0, 0, 0
    skipped, bad_loss, first_index = 0, False, state.batch_in_epoch
    correct = torch.zeros((), dtype=torch.float64, device=state.device)  # no host sync per batch
    start = time.perf_counter()
    for index, (images, targets) in enumerate(loader, start=state.batch_in_epoch):
        if index >= total_batches:
            break
        images, targets = _to_device(images, targets, state)
        labels = targets  # train top-1 is scored against the labels before Mixup/CutMix
        if state.mixup is not None:
            images, targets = state.mixup(images, targets)
        boundary = (index + 1) % state.update_freq == 0
        no_sync = isinstance(state.model, DistributedDataParallel) and not boundary
        with state.model.no_sync() if no_sync else contextlib.nullcontext():
            with autocast_context(state.device, state.amp_dtype):
                logits = state.model(images)
                loss = state.criterion(logits, targets)
            correct += (logits.detach().argmax(1) == labels).sum()
            if state.repulsive_weight > 0:
                repulsion = dcls.repulsive_loss(state.unwrapped, state.repulsive_min_distance)
                loss = loss + state.repulsive_weight * repulsion
                repulsion_sum += repulsion.item()
            scaled = loss / state.update_freq
            (state.scaler.scale(scaled) if state.scaler is not None else scaled).backward()
        loss_value = loss.item()  # one host sync per micro-batch, also the finiteness check
        if math.isfinite(loss_value):
            loss_sum, batches = loss_sum + loss_value, batches + 1
        else:
            bad_loss = True
        images_seen += len(images)
        state.batch_in_epoch = index + 1
        if boundary:
            skipped += not _optimizer_update(state, bad_loss)
            updates, bad_loss = updates + 1, False
            if on_update is not None:
                on_update(state)
            if state.step % state.log_every == 0:
                elapsed = time.perf_counter() - start
                done = index + 1 - first_index
                remaining = (total_batches - index - 1) * elapsed / done
                _logger.info(
                    "epoch %d step %d  loss %.4f  lr %.3g  %.1f img/s  epoch ETA %.0fs",
                    state.epoch,
                    state.step,
                    loss_sum / max(batches, 1),
                    state.optimizer.param_groups[0]["lr"],
                    images_seen / elapsed,
                    remaining,
                )
    elapsed = time.perf_counter() - start
    # Sums over every rank: the mean loss of all micro-batches, the throughput of all processes.
    totals = torch.tensor(
        [loss_sum, repulsion_sum, batches, images_seen], dtype=torch.float64, device=state.device
    )
    totals = torch.cat([totals, correct.view(1)])
    loss_sum, repulsion_sum, batches, images_seen, correct_sum = all_reduce_sum(totals).tolist()
    metrics = {
        "train_loss": loss_sum / max(batches, 1),
        "train_top1": 100 * correct_sum / max(images_seen, 1),
        "images_per_s": images_seen / max(elapsed, 1e-9),
        "updates": float(updates),
        "skipped_updates": float(skipped),
    }
    if state.repulsive_weight > 0:
        metrics["repulsive_loss"] = repulsion_sum / max(batches, 1)
    return metrics


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    class_subset: Sequence[int] | None = None,
) -> dict[str, float]:
    """Top-1/top-5 (percent) and loss over the loader's samples, summed across ranks.

    The evaluation sampler does not pad, so every sample counts exactly once however many
    processes share the set. With ``class_subset`` (e.g. ImageNet-A's 200 of the 1000 classes)
    only those logits are scored and targets are positions in ``class_subset``.
    """
    model.eval()
    subset = None if class_subset is None else torch.as_tensor(class_subset, device=device)
    criterion = nn.CrossEntropyLoss(reduction="sum")
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, amp_dtype):
            logits = model(images)
        if subset is not None:
            logits = logits.index_select(1, subset)
        top1, top5 = accuracy(logits.float(), targets, topk=(1, min(5, logits.shape[1])))
        n = len(targets)
        totals += torch.tensor(
            [
                criterion(logits.float(), targets).item(),
                top1.item() * n / 100,
                top5.item() * n / 100,
                n,
            ],
            dtype=torch.float64,
            device=device,
        )
    all_reduce_sum(totals)
    loss, top1, top5, count = totals.tolist()
    count = max(count, 1.0)
    return {
        "loss": loss / count,
        "top1": 100 * top1 / count,
        "top5": 100 * top5 / count,
        "count": count,
    }
