"""The training criterion and Mixup/CutMix of the ``data`` config group (timm's)."""

from __future__ import annotations

from typing import Any

from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn

__all__ = ["build_criterion", "build_mixup"]


def build_mixup(cfg: Any) -> Mixup | None:
    """timm's Mixup/CutMix from ``data.mixup``, ``data.cutmix`` (alphas), ``data.mixup_prob``,
    ``data.mixup_switch_prob``, ``data.mixup_mode`` and ``data.label_smoothing`` (``None`` when
    both alphas are 0)."""
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    return Mixup(
        mixup_alpha=cfg.mixup,
        cutmix_alpha=cfg.cutmix,
        prob=cfg.get("mixup_prob", 1.0),
        switch_prob=cfg.get("mixup_switch_prob", 0.5),
        mode=cfg.get("mixup_mode", "batch"),
        label_smoothing=cfg.label_smoothing,
        num_classes=cfg.num_classes,
    )


def build_criterion(cfg: Any, mixup: Mixup | None) -> nn.Module:
    """Soft-target cross-entropy after Mixup (which already smooths the targets), else
    label-smoothing or plain cross-entropy."""
    if mixup is not None:
        return SoftTargetCrossEntropy()
    if cfg.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(cfg.label_smoothing)
    return nn.CrossEntropyLoss()
