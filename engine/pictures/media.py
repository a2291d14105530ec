"""Per-epoch pictures of a training run: position snapshots, and W&B kernel images and histograms.

``train.py`` builds one :class:`EpochMedia` and calls :meth:`EpochMedia.start` before the first
epoch and :meth:`EpochMedia.end` after each. Snapshots (``trainer.position_history``) need only
torch; W&B media (``logger=wandb`` with ``logger.wandb.media_every > 0``) import matplotlib and
wandb when they are first drawn, so a run without them never imports matplotlib. A failure to
draw warns once and switches the media off: pictures never stop a training run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch import nn

import dcls
from engine.pictures.positions import (
    HISTORY_DIR,
    grid_coordinates,
    position_snapshots,
    save_snapshot,
    set_pictures,
)

__all__ = ["EpochMedia"]

_logger = logging.getLogger(__name__)


class MetricLogger(Protocol):
    """Where media go: any of :mod:`engine.training.loggers` (``log(payload, step)``)."""

    def log(self, metrics: dict[str, Any], step: int) -> None: ...


def _has_positions(model: nn.Module) -> bool:
    return next(iter(dcls.position_sets(model)), None) is not None


def _due(epoch: int, every: int, last_epoch: int) -> bool:
    return every > 0 and (epoch % every == 0 or epoch == last_epoch)


class EpochMedia:
    """Position snapshots and W&B media at the end of epochs.

    Args:
        cfg: the training config; reads ``trainer.epochs``, ``trainer.position_history.every``,
            ``trainer.position_history.max_out_channels``, ``logger.wandb.media_every`` and
            ``logger.wandb.media_channels``.
        run_dir: the run folder (snapshots go to ``run_dir/positions/``).
        logger: the run's metric logger; media go through its ``log``.
        enabled: ``False`` on every rank but the first.
    """

    def __init__(self, cfg: Any, run_dir: Path, logger: MetricLogger, enabled: bool = True):
        history = cfg.trainer.get("position_history") or {}
        self.run_dir, self.logger, self.enabled = Path(run_dir), logger, enabled
        self.last_epoch = cfg.trainer.epochs
        self.history_every = int(history.get("every", 0))
        self.max_out_channels = history.get("max_out_channels")
        wandb_cfg = (cfg.get("logger") or {}).get("wandb") or {}
        self.media_every = int(wandb_cfg.get("media_every", 0))
        self.media_channels = int(wandb_cfg.get("media_channels", 8))
        for key, value in (
            ("position_history.every", self.history_every),
            ("logger.wandb.media_every", self.media_every),
        ):
            if value < 0:
                raise ValueError(f"{key} must be >= 0 (0: off), got {value}")

    def start(self, model: nn.Module, epoch: int) -> None:
        """Snapshot the initial positions (epoch 0) of a run that starts from scratch (not again
        when it resumes within its first epoch: the model has trained since)."""
        taken = (self.run_dir / HISTORY_DIR / "epoch_0000.pt").is_file()
        due = self.enabled and epoch == 0 and self.history_every > 0 and not taken
        if due and _has_positions(model):
            save_snapshot(model, self.run_dir, 0, self.max_out_channels)

    def end(self, model: nn.Module, epoch: int, step: int) -> None:
        """After epoch ``epoch`` (1-based) at optimizer step ``step``: snapshot and media if due."""
        if not self.enabled or not _has_positions(model):
            return
        if _due(epoch, self.history_every, self.last_epoch):
            save_snapshot(model, self.run_dir, epoch, self.max_out_channels)
        if _due(epoch, self.media_every, self.last_epoch):
            payload = self._draw(model)
            if payload:
                self.logger.log(payload, step)

    def _draw(self, model: nn.Module) -> dict[str, Any]:
        """Kernel images and position histograms as W&B objects ({} and media off on failure)."""
        try:
            import wandb

            from engine.pictures import plots

            payload: dict[str, Any] = {}
            for picture in set_pictures(model, self.media_channels):
                image = plots.render(plots.kernel_figure(picture))
                payload[f"kernels/{picture.name}"] = wandb.Image(image, caption=picture.layer)
            for pset in position_snapshots(model):
                points = grid_coordinates(pset.P, pset.sizes)
                for axis, size in enumerate(pset.sizes):
                    edges = np.arange(size + 1) - 0.5  # one bin per grid cell
                    counts = np.histogram(points[:, axis], bins=edges)
                    payload[f"positions/{pset.name}/axis{axis}"] = wandb.Histogram(
                        np_histogram=counts
                    )
            return payload
        except Exception as error:  # pictures must never stop training
            self.media_every = 0
            _logger.warning("W&B media are disabled for this run: %s", error)
            return {}
