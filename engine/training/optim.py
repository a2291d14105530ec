"""Optimizer from config: DCLS position groups on top of timm's optimizer factory.

Positions and widths get their own groups (``dcls.param_groups``): weight decay from
``optimizer.positions.weight_decay`` (0) and ``lr_scale`` = ``optimizer.positions.lr_scale`` (5
in the paper) times the group's own scale, which timm's schedulers multiply their value by, so the
multiplier survives layer-wise decay and every timm schedule.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from timm.optim import create_optimizer_v2, param_groups_layer_decay
from torch import nn

import dcls
from engine.config.checks import call_with_config_kwargs

__all__ = ["build_optimizer", "positions_lr", "scaled_lr", "schedule_lr"]

_logger = logging.getLogger(__name__)


def scaled_lr(cfg: Any, effective_batch_size: int) -> float:
    """Learning rate scaled linearly from ``cfg.lr`` at ``cfg.base_batch_size`` (4e-3 at 4096)."""
    return cfg.lr * effective_batch_size / cfg.base_batch_size


def build_optimizer(model: nn.Module, cfg: Any, effective_batch_size: int) -> torch.optim.Optimizer:
    """Build the optimizer of the ``optimizer`` config group for ``model``.

    Raises:
        ValueError: on a negative learning rate or weight decay.
    """
    for key in ("lr", "weight_decay"):
        if cfg[key] < 0:
            raise ValueError(f"optimizer.{key} must be >= 0, got {cfg[key]}")
    lr = scaled_lr(cfg, effective_batch_size)
    base_groups = None
    if cfg.layer_decay is not None:
        base_groups = param_groups_layer_decay(
            model, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay
        )
    groups = dcls.param_groups(
        model,
        weight_decay=cfg.weight_decay,
        positions_lr_scale=cfg.positions.lr_scale,
        sigmas_lr_scale=cfg.positions.sigmas_lr_scale,
        positions_weight_decay=cfg.positions.weight_decay,
        base_groups=base_groups,
    )  # no per-group "lr": timm's schedulers start from the optimizer's lr times "lr_scale"
    optimizer = call_with_config_kwargs(
        create_optimizer_v2,
        {"opt": cfg.opt, "lr": lr, "weight_decay": cfg.weight_decay},
        cfg.get("kwargs"),
        "optimizer.kwargs",
        {"opt": "optimizer.opt", "lr": "optimizer.lr", "weight_decay": "optimizer.weight_decay"},
        f"the {cfg.opt} optimizer",
        groups,
    )
    _logger.info(
        "optimizer %s, lr %.3g (base %.3g at batch %d, effective batch %d)",
        cfg.opt,
        lr,
        cfg.lr,
        cfg.base_batch_size,
        effective_batch_size,
    )
    for group in groups:
        _logger.info(
            "  group %-22s %4d tensors  lr_scale %.3g  weight_decay %.3g",
            group["name"],
            len(group["params"]),
            group["lr_scale"],
            group["weight_decay"],
        )
    _logger.debug("parameter groups:\n%s", dcls.describe_param_groups(model, groups))
    return optimizer


def schedule_lr(optimizer: torch.optim.Optimizer) -> float:
    """The schedule's learning rate now, before any group's ``lr_scale`` (layer-wise decay,
    positions): what ``optimizer.lr`` and the scheduler config describe, and what is logged."""
    group = optimizer.param_groups[0]
    return group["lr"] / group.get("lr_scale", 1.0)


def positions_lr(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``{"lr_positions": lr}``: the largest lr of the DCLS position groups, or ``{}``."""
    lrs = [g["lr"] for g in optimizer.param_groups if g.get(dcls.DCLS_GROUP_KEY) == "positions"]
    return {"lr_positions": max(lrs)} if lrs else {}
