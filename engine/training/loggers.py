"""Metric loggers selected by the ``logger`` config group: CSV, Weights & Biases (with the CSV
too), or none.

Each takes ``log(metrics, step)`` and ``finish()``; only rank 0 builds them. A logger that fails
(no network for W&B, a full disk for CSV) warns once and is switched off: it never stops training.
"""

from __future__ import annotations

import abc
import csv
import hashlib
import logging
import math
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from engine.config import multirun_overrides
from engine.evaluation.results import EARLIER_RUNS_DIR

__all__ = [
    "CsvLogger",
    "LoggerGroup",
    "MetricLogger",
    "WandbLogger",
    "build_logger",
    "wandb_run_id",
]

_logger = logging.getLogger(__name__)


class MetricLogger:
    """The ``logger=none`` choice, and the interface of the others."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record ``metrics`` at optimizer step ``step`` (here: discard them)."""

    def finish(self) -> None:
        """Flush and close (here: nothing to close)."""


class _Guarded(MetricLogger, abc.ABC):
    """Calls ``_log``/``_finish`` and turns the first failure into one warning."""

    failed = False

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._guard(self._log, metrics, step)

    def finish(self) -> None:
        self._guard(self._finish)

    def _guard(self, fn: Any, *args: Any) -> None:
        if self.failed:
            return
        try:
            fn(*args)
        except Exception as error:  # a logger must never kill a training run
            self.failed = True
            _logger.warning(
                "%s failed and is disabled for this run: %s", type(self).__name__, error
            )

    @abc.abstractmethod
    def _log(self, metrics: dict[str, float], step: int) -> None: ...

    def _finish(self) -> None:
        """Close the backend; nothing to do unless a subclass holds one open."""


class CsvLogger(_Guarded):
    """Appends one row per call to ``metrics.csv`` in the run folder (columns grow as needed).

    Args:
        resume_step: the step of the checkpoint a resumed run starts from: the rows logged after
            it (by a run killed between logging and checkpointing) are dropped, as the run
            trains those steps again and logs them anew.
    """

    def __init__(
        self, run_dir: Path, filename: str = "metrics.csv", resume_step: int | None = None
    ) -> None:
        self.path = Path(run_dir) / filename
        self.rows: list[dict[str, float]] = []
        if self.path.is_file():  # a resumed run keeps its history
            self.rows = read_metrics_csv(self.path)
        if resume_step is not None:
            self.rows = [row for row in self.rows if row.get("step", 0) <= resume_step]

    def _log(self, metrics: dict[str, float], step: int) -> None:
        numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        if not numbers:
            return  # media (kernel pictures for W&B): no column of numbers
        row = {"step": float(step), **numbers}
        if self.rows and self.rows[-1].get("step") == row["step"]:
            # The same step again (a run resumed from a checkpoint at its epoch's last update
            # logs that epoch once more, with nothing trained): one row, known values kept.
            known = {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
            self.rows[-1] = {**self.rows[-1], **known}
        else:
            self.rows.append(row)
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows([{k: _csv_value(v) for k, v in row.items()} for row in self.rows])
        tmp.replace(self.path)


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """The rows of a metrics CSV as numbers. Empty cells, and cells that are not numbers (the
    W&B media objects that files written before media were kept out of them hold), are left
    out of their row."""
    with open(path, newline="") as f:
        return [
            {k: number for k, v in row.items() if (number := _as_number(v)) is not None}
            for row in csv.DictReader(f)
        ]


def _as_number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _csv_value(value: Any) -> Any:
    """Whole numbers as integers (``44``, not ``44.0``): steps, epochs and counts read the same
    in every row, those read back from the file after a resume included."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class WandbLogger(_Guarded):
    """Weights & Biases; ``mode`` "offline" (default) or "disabled" needs no network."""

    def __init__(
        self,
        run_dir: Path,
        config: dict[str, Any],
        project: str,
        mode: str,
        name: str | None = None,
        run_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.run = None
        self._guard(self._init, run_dir, config, project, mode, name, run_id, kwargs)

    def _init(
        self,
        run_dir: Path,
        config: dict[str, Any],
        project: str,
        mode: str,
        name: str | None,
        run_id: str | None,
        kwargs: dict[str, Any],
    ) -> None:
        import wandb

        # The same id on a requeued job resumes the same W&B run. A sweep job's folder is named
        # by its overrides alone, the same in every sweep: its sweep folder (dated) is in the id.
        run_dir = Path(run_dir)
        in_sweep = multirun_overrides() is not None
        folder = f"{run_dir.parent.name},{run_dir.name}" if in_sweep else run_dir.name
        earlier = run_dir / EARLIER_RUNS_DIR  # runs set aside by a fresh start: another W&B run
        if earlier.is_dir() and (count := sum(1 for _ in earlier.iterdir())):
            folder += f"-{count + 1}"
        self.run = wandb.init(
            project=project,
            mode=mode,
            dir=str(run_dir),
            config=config,
            name=name,
            id=run_id or wandb_run_id(folder),
            resume="allow",
            **kwargs,
        )

    def _log(self, metrics: dict[str, float], step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def _finish(self) -> None:
        if self.run is not None:
            self.run.finish()


WANDB_ID_LENGTH = 64  # W&B's limit on a run id


def wandb_run_id(name: str) -> str:
    """A W&B run id from a run folder's name (a sweep's is its overrides, ``seed=0,model=x``):
    characters W&B refuses (``:;,#?/'`` and spaces) become ``-``, and a long name is cut and made
    unique by a hash."""
    clean = re.sub(r"[^A-Za-z0-9_.=+-]", "-", name)
    if len(clean) <= WANDB_ID_LENGTH:
        return clean
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{clean[: WANDB_ID_LENGTH - 9]}-{digest}"


class LoggerGroup(MetricLogger):
    """Several loggers as one (``logger=wandb``: the CSV file and W&B)."""

    def __init__(self, loggers: list[MetricLogger]) -> None:
        self.loggers = loggers

    def log(self, metrics: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log(metrics, step)

    def finish(self) -> None:
        for logger in self.loggers:
            logger.finish()


def build_logger(
    cfg: Any, run_dir: Path, config: dict[str, Any], resume_step: int | None = None
) -> MetricLogger:
    """The loggers the ``logger`` group names: ``csv`` and/or ``wandb`` (``None``: none).

    Args:
        resume_step: a resumed run's checkpoint step (see :class:`CsvLogger`).
    """
    loggers: list[MetricLogger] = []
    if cfg is not None and cfg.get("csv") is not None:
        filename = cfg.csv.get("filename", "metrics.csv")
        loggers.append(CsvLogger(run_dir, filename, resume_step))
    if cfg is not None and cfg.get("wandb") is not None:
        w = cfg.wandb
        kwargs = w.get("kwargs") or {}  # more wandb.init keywords (entity, group, tags...)
        if isinstance(kwargs, DictConfig):
            kwargs = OmegaConf.to_container(kwargs, resolve=True)
        loggers.append(
            WandbLogger(
                run_dir, config, w.project, w.mode, w.get("name"), w.get("run_id"), **kwargs
            )
        )
    if not loggers:
        return MetricLogger()
    return loggers[0] if len(loggers) == 1 else LoggerGroup(loggers)
