"""Top-1/top-5 of a model on a loader, and the settings every evaluated set shares.

:func:`evaluate` is the one accuracy loop: ``train.py`` validates with it after every epoch and
``eval.py`` scores every folder set with it, so both report the same number on the same images.
Evaluation shards are not padded and counts are summed across ranks, so ``torchrun`` gives the
numbers of one process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from timm.data import create_transform, resolve_data_config
from torch import nn
from torch.utils.data import DataLoader, Dataset

from engine.amp import autocast_context
from engine.config.evaluation import TRANSFORM_KEYS
from engine.data.datasets import usable_workers
from engine.data.samplers import ResumableSampler
from engine.distributed import DistInfo, all_reduce_sum
from engine.errors import InputError

__all__ = ["EvalContext", "eval_transform", "evaluate", "validate_model_and_ema"]

_logger = logging.getLogger(__name__)


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

    Raises:
        InputError: when the model has fewer outputs than the labels need (a model trained on
            other classes than the set's).
    """
    model.eval()
    subset = None if class_subset is None else torch.as_tensor(class_subset, device=device)
    largest_subset_class = None if class_subset is None else max(class_subset)
    criterion = nn.CrossEntropyLoss(reduction="sum")
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    for images, cpu_targets in loader:
        images = images.to(device, non_blocking=True)  # pinned by the loader: copies overlap
        targets = cpu_targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, amp_dtype):
            logits = model(images)
        # (targets are still on the CPU: no device synchronisation)
        needed = 1 + (largest_subset_class if subset is not None else int(cpu_targets.max()))
        if logits.shape[1] < needed:
            raise InputError(
                f"the model has {logits.shape[1]} outputs, but this set's labels need at least "
                f"{needed}: it was trained on other classes; evaluate the split it was trained "
                "for (eval.py sets=[val])"
            )
        if subset is not None:
            logits = logits.index_select(1, subset)
        logits = logits.float()
        hits = _hits_in_top_k(logits, targets, k=(1, 5))
        count = torch.full((), len(targets), device=device)
        totals += torch.stack([criterion(logits, targets).double(), *hits.double(), count.double()])
    all_reduce_sum(totals)
    loss, top1, top5, count = totals.tolist()
    count = max(count, 1.0)
    return {
        "loss": loss / count,
        "top1": 100 * top1 / count,
        "top5": 100 * top5 / count,
        "count": count,
    }


def validate_model_and_ema(
    model: nn.Module,
    ema: nn.Module | None,
    loader: DataLoader,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Training's validation: :func:`evaluate` of the model (``val_loss``, ``val_top1``,
    ``val_top5``) and of its EMA, if any (``val_ema_top1``...); ``ema`` is timm's EMA wrapper,
    whose ``module`` holds the averaged weights."""
    evaluated = {"": model} | ({"ema_": ema.module} if ema is not None else {})
    metrics = {}
    for prefix, module in evaluated.items():
        result = evaluate(module, loader, device, amp_dtype, channels_last)
        metrics |= {f"val_{prefix}{k}": v for k, v in result.items() if k != "count"}
    return metrics


def _hits_in_top_k(logits: torch.Tensor, targets: torch.Tensor, k: tuple[int, ...]) -> torch.Tensor:
    """How many targets are among the ``k`` largest logits, an exact count per ``k``.

    Args:
        logits: (N, num_classes).
        targets: (N,) class indices.
        k: the ranks to count at; each is capped at ``num_classes``.

    Returns:
        (len(k),) integer counts, on the logits' device (no host sync).
    """
    largest = min(max(k), logits.shape[1])
    ranked = logits.topk(largest, dim=1).indices  # (N, largest)
    found = ranked == targets[:, None]
    return torch.stack([found[:, : min(each, largest)].any(dim=1).sum() for each in k])


class EvalContext:
    """The model and the settings every set is evaluated with.

    Args:
        model: in eval mode, already on ``dist_info.device``.
        dist_info: this process's rank, world size and device.
        batch_size, num_workers: per-process loader settings.
        amp_dtype: autocast dtype or ``None``.
        channels_last: feed images in channels-last memory format.
    """

    def __init__(
        self,
        model: nn.Module,
        dist_info: DistInfo,
        batch_size: int,
        num_workers: int,
        amp_dtype: torch.dtype | None = None,
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.model, self.dist_info = model, dist_info
        self.batch_size, self.num_workers = batch_size, usable_workers(num_workers)
        self.amp_dtype, self.channels_last = amp_dtype, channels_last

    def loader(self, dataset: Dataset) -> DataLoader:
        sampler = ResumableSampler(
            len(dataset), self.dist_info.rank, self.dist_info.world_size, shuffle=False, pad=False
        )
        return DataLoader(
            dataset,
            self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.dist_info.device.type == "cuda",
        )

    def accuracy(self, dataset: Dataset, class_subset: Sequence[int] | None = None) -> dict:
        return evaluate(
            self.model,
            self.loader(dataset),
            self.dist_info.device,
            self.amp_dtype,
            self.channels_last,
            class_subset,
        )


def eval_transform(model: nn.Module, overrides: Mapping[str, Any]) -> tuple[Callable, dict]:
    """timm's eval transform from the model's pretrained cfg, with non-null ``overrides``
    (``img_size``, ``crop_pct``, ``interpolation``, ``mean``, ``std``) applied.

    Returns:
        The transform and the resolved data config (``input_size``, ``crop_pct``, ...).
    """
    unknown = sorted(set(overrides) - set(TRANSFORM_KEYS))
    if unknown:
        raise ValueError(f"transform: unknown keys {unknown}; allowed: {list(TRANSFORM_KEYS)}")
    args = {k: v for k, v in overrides.items() if v is not None}
    if "mean" in args:
        args["mean"] = tuple(args["mean"])
    if "std" in args:
        args["std"] = tuple(args["std"])
    config = resolve_data_config(args, model=model)
    return create_transform(**config, is_training=False), config
