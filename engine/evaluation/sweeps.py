"""The summary of a Hydra multirun: one table of every run's final metrics, and the paper's tables
(:mod:`engine.evaluation.tables`) over the runs' result files, written to
``<sweep folder>/sweep_summary.md``.

:class:`SweepSummary` is the Hydra callback ``configs/hydra/default.yaml`` installs, so every
``python train.py -m ...`` (basic launcher or Slurm through submitit, whose launcher waits for its
jobs) ends with the summary; :func:`summarize_sweep` makes it again for any sweep folder, e.g. one
whose jobs were resubmitted.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from engine.evaluation.results import RUN_RESULTS_FILE
from engine.evaluation.tables import TABLE_HEADINGS, load_results, markdown, tables

__all__ = ["RUN_COLUMNS", "SUMMARY_FILE", "SweepSummary", "summarize_sweep"]

_logger = logging.getLogger(__name__)

SUMMARY_FILE = "sweep_summary.md"
# results.json keys shown per run: (title, key, decimals)
RUN_COLUMNS = (
    ("top-1", "top1", 2),
    ("best top-1", "best_val_top1", 2),
    ("best epoch", "best_epoch", 0),
    ("train loss", "train_loss", 4),
    ("epochs", "epochs", 0),
    ("minutes", "wall_time_s", 1),
)


def _natural_key(name: str) -> list[tuple[int, float | str]]:
    """Sort key that orders the numbers in a name by value: ``lr_scale=5`` before ``=10``."""
    parts = re.split(r"(\d+(?:\.\d+)?(?:e-?\d+)?)", name)
    return [(0, float(part)) if i % 2 else (1, part) for i, part in enumerate(parts)]


def _runs_table(sweep_dir: Path) -> list[list[str]]:
    """One row per job folder: its overrides (the folder name) and its final metrics; a job
    that did not finish (no ``results.json``) is listed with ``-``."""
    rows = [["run", *(title for title, _, _ in RUN_COLUMNS)]]
    folders = [p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for folder in sorted(folders, key=lambda p: _natural_key(p.name)):
        results_file = folder / RUN_RESULTS_FILE
        results: dict[str, Any] = (
            json.loads(results_file.read_text()) if results_file.is_file() else {}
        )
        row = [folder.name]
        for _, key, digits in RUN_COLUMNS:
            value = results.get(key)
            if key == "wall_time_s" and value is not None:
                value = value / 60
            row.append("-" if value is None else f"{value:.{digits}f}")
        rows.append(row)
    return rows


def summarize_sweep(sweep_dir: str | Path, log: bool = True) -> Path:
    """Write ``sweep_summary.md`` for the sweep in ``sweep_dir`` (and log it, if ``log``);
    returns its path."""
    sweep_dir = Path(sweep_dir)
    parts = [f"# Sweep {sweep_dir}", "", "## runs", "", markdown(_runs_table(sweep_dir))]
    try:
        built = tables(load_results([sweep_dir]))
    except FileNotFoundError:
        built = {}
    for title, rows in built.items():
        parts += ["", f"## {TABLE_HEADINGS[title]}", "", markdown(rows)]
    path = sweep_dir / SUMMARY_FILE
    partial = path.with_name(f".{SUMMARY_FILE}.{os.getpid()}")  # one per writing process
    partial.write_text("\n".join(parts) + "\n")
    partial.replace(path)
    if log:
        _logger.info("sweep summary: %s\n%s", path, "\n".join(parts[4:]))
    return path


class SweepSummary(Callback):
    """Hydra callback: :func:`summarize_sweep` after each job of a multirun and when it ends.

    After each job, because Hydra skips ``on_multirun_end`` when a job failed: the summary then
    holds every job that finished, the failed ones listed with ``-``. Each write replaces the
    file atomically (Slurm jobs end on several nodes at once).
    """

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if config.hydra.mode == RunMode.MULTIRUN and sweep_dir.is_dir():
            summarize_sweep(sweep_dir, log=False)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            summarize_sweep(sweep_dir)
