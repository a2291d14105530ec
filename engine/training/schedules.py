"""Schedules over a run: the learning rate (timm's schedulers, stepped per optimizer update) and
the DCLS training policy that changes per epoch (repulsive-loss weight, interpolation widths).

The loop asks :class:`DclsSchedule` at the start of every epoch what holds for it; ``train.py``
never changes DCLS training state itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from timm.scheduler import create_scheduler_v2
from torch import nn

import dcls
from engine.config.checks import call_with_config_kwargs
from engine.errors import ConfigError

__all__ = ["DclsSchedule", "EpochPolicy", "build_scheduler"]

_logger = logging.getLogger(__name__)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: Any, epochs: int, updates_per_epoch: int
) -> Any:
    """timm's scheduler of the ``scheduler`` config group, stepped per optimizer update.

    With ``warmup_prefix: true`` timm adds the warm-up to the schedule's length, so the cosine is
    given ``epochs - warmup_epochs`` epochs: the run stays ``epochs`` long and the cosine spans the
    epochs after the warm-up, as the authors' ``utils.cosine_scheduler`` (ConvNeXt-dcls utils.py
    L455-472). Their warm-up is ``np.linspace(0, lr, W)`` over ``W`` updates (endpoints included:
    ``lr * t / (W - 1)``); timm's is ``warmup_lr + t * (lr - warmup_lr) / W``, so with
    ``warmup_lr: 0`` each warm-up update gets ``(W - 1) / W`` of the authors' lr (a one-update
    offset, 0.02% at W = 20 x 312); from the first update after the warm-up on, both are equal.

    Args:
        cfg: ``sched``, ``warmup_epochs``, ``warmup_lr``, ``min_lr`` and ``warmup_prefix``
            (``true``: the cosine starts after the warm-up and spans the remaining epochs;
            ``false``: timm's default, the cosine spans all ``epochs`` from update 0 and the
            warm-up runs inside it), and ``kwargs``: more keywords of ``create_scheduler_v2``
            (``decay_epochs`` and ``decay_rate`` for ``step``, ``decay_milestones`` for
            ``multistep``, ``cycle_*``, ``k_decay``...), in epochs; the schedule is stepped per
            update.
        epochs: the run's length.
        updates_per_epoch: optimizer updates per epoch.

    Raises:
        ValueError: if ``warmup_prefix`` leaves no epoch after the warm-up.
        ConfigError: on a ``kwargs`` keyword that another key sets or timm does not take.
    """
    peak = optimizer.defaults["lr"]
    if cfg.min_lr > peak:  # a warning: a tiny debug batch scales the peak below the default
        _logger.warning(
            "scheduler.min_lr=%g is above the peak learning rate %.3g (optimizer.lr scaled by "
            "the effective batch over optimizer.base_batch_size): the learning rate rises "
            "over the run",
            cfg.min_lr,
            peak,
        )
    warmup_prefix = bool(cfg.warmup_prefix)
    schedule_epochs = epochs - cfg.warmup_epochs if warmup_prefix else epochs
    if schedule_epochs <= 0:
        raise ValueError(
            f"scheduler.warmup_epochs={cfg.warmup_epochs} leaves no epoch of the {epochs}-epoch "
            "run after the warm-up (scheduler.warmup_prefix=true); expected fewer warm-up epochs "
            "than trainer.epochs"
        )
    scheduler, _ = call_with_config_kwargs(
        create_scheduler_v2,
        {
            "sched": cfg.sched,
            "num_epochs": schedule_epochs,
            "warmup_epochs": cfg.warmup_epochs,
            "warmup_lr": cfg.warmup_lr,
            "min_lr": cfg.min_lr,
            "warmup_prefix": warmup_prefix,
            "step_on_epochs": False,
            "updates_per_epoch": updates_per_epoch,
        },
        cfg.get("kwargs"),
        "scheduler.kwargs",
        {
            "sched": "scheduler.sched",
            "num_epochs": "trainer.epochs",
            **{key: f"scheduler.{key}" for key in ("warmup_epochs", "warmup_lr", "min_lr")},
            "warmup_prefix": "scheduler.warmup_prefix",
        },
        "timm.scheduler.create_scheduler_v2",
        optimizer,
    )
    return scheduler


@dataclass(frozen=True)
class EpochPolicy:
    """What holds during one epoch.

    Attributes:
        repulsive_weight: weight of :func:`dcls.repulsive_loss` in the loss (0: off).
        sigma: the interpolation width set for the epoch, or ``None`` when widths are learned.
    """

    repulsive_weight: float
    sigma: float | None

    def metrics(self) -> dict[str, float]:
        """The values worth logging with the epoch's metrics."""
        return {} if self.sigma is None else {"sigma": self.sigma}


class DclsSchedule:
    """The DCLS policy of ``trainer.repulsive_loss`` and ``trainer.sigma_schedule``.

    Args:
        cfg: the ``trainer`` config group; reads ``epochs``, ``repulsive_loss.{weight,
            start_epoch, min_distance, formula}`` and ``sigma_schedule.{enabled, start, end}``.
    """

    def __init__(self, cfg: Any) -> None:
        repulsion, sigmas = cfg.repulsive_loss, cfg.sigma_schedule
        self.epochs = int(cfg.epochs)
        self.repulsive_weight = float(repulsion.weight)
        self.repulsive_start = int(repulsion.start_epoch)
        self.min_distance = float(repulsion.min_distance)
        self.repulsive_formula = str(repulsion.formula)
        self.sigma_enabled = bool(sigmas.enabled)
        self.sigma_start, self.sigma_end = float(sigmas.start), float(sigmas.end)

    def prepare(self, model: nn.Module) -> None:
        """Before the optimizer is built: scheduled widths are set, not learned; the repulsive
        loss is switched off for a model with no kernel elements to repel (a baseline, a dilated
        control), as the authors add it only to DCLS models (ConvNeXt-dcls ``engine.py`` L64).

        Raises:
            ConfigError: if the width schedule is on but the model has no widths (a bilinear
                DCLS model, a baseline).
        """
        if self.sigma_enabled:
            sigmas = dcls.sigma_parameters(model)
            if not sigmas:
                raise ConfigError(
                    "trainer.sigma_schedule.enabled=true is invalid: the model has no widths to "
                    "schedule (DCLS widths come with model.version gauss or triangle)"
                )
            for sigma in sigmas:
                sigma.requires_grad_(False)
        if self.repulsive_weight > 0 and not any(
            entry.P.shape[-1] > 1 for entry in dcls.position_sets(model)
        ):
            _logger.info(
                "trainer.repulsive_loss is off: the model has no DCLS positions with 2 or more "
                "elements per kernel (weight %g not applied)",
                self.repulsive_weight,
            )
            self.repulsive_weight = 0.0
        if self.repulsive_weight > 0 and self.repulsive_start >= self.epochs:
            _logger.warning(
                "trainer.repulsive_loss.weight=%g never applies: start_epoch=%d is at or after "
                "the run's end (trainer.epochs=%d; epochs count from 0)",
                self.repulsive_weight,
                self.repulsive_start,
                self.epochs,
            )

    def sigma_at(self, epoch: int) -> float | None:
        """The width of 0-based ``epoch``: linear from ``start`` (first) to ``end`` (last)."""
        if not self.sigma_enabled:
            return None
        progress = epoch / max(self.epochs - 1, 1)
        return self.sigma_start + (self.sigma_end - self.sigma_start) * progress

    def repulsive_weight_at(self, epoch: int) -> float:
        """The repulsive loss's weight in 0-based ``epoch`` (0 before ``start_epoch``; the
        authors' ``epoch > 20`` is ``start_epoch: 21``)."""
        return self.repulsive_weight if epoch >= self.repulsive_start else 0.0

    def repulsive_loss(self, model: nn.Module) -> torch.Tensor:
        """:func:`dcls.repulsive_loss` of ``model`` with this run's ``min_distance`` and
        ``formula``."""
        return dcls.repulsive_loss(model, self.min_distance, self.repulsive_formula)

    def start_epoch(self, model: nn.Module, epoch: int) -> EpochPolicy:
        """Apply the policy of 0-based ``epoch`` to ``model`` and return it."""
        policy = EpochPolicy(self.repulsive_weight_at(epoch), self.sigma_at(epoch))
        if policy.sigma is not None:
            dcls.set_sigma_(model, policy.sigma)
        return policy
