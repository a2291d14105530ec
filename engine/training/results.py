"""What a finished training run leaves behind: ``results.json``, an ``eval_results.json`` that
``scripts/make_tables.py`` reads like ``eval.py``'s, and the end-of-run summary in the log.

The reported top-1 is the last epoch's validation top-1 of the weights ``eval.py`` evaluates by
default (``weights=auto``: the EMA when the run keeps one), so ``python eval.py
checkpoint=<run>/checkpoints/last.pt sets=[val]`` prints the same number.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from engine.config import command_line_override, model_label
from engine.evaluation.results import (
    EARLIER_RUNS_DIR,
    RESULTS_FILE,
    RUN_RESULTS_FILE,
    named_row,
)
from engine.evaluation.throughput import params_and_macs

__all__ = [
    "RunRecord",
    "finished_results",
    "row_name",
    "set_aside_earlier_run",
    "write_results",
]

_logger = logging.getLogger(__name__)

# Overrides that do not make a row of their own (nor the keys under them): a paper sweep's seeds
# and experiments share one row per model; what the sweep folder's name leaves out (where data
# lives, resume, launcher) neither, nor what says where the run goes, how fast, and what it logs.
# The model group option (``-m model=a,b``) is the row's model name already; other keys under
# ``model.`` do name rows.
ROW_KEYS_IGNORED = (
    "seed",
    "experiment",
    "run_name",
    "logger",
    "model.conv_algorithm",
    "data.num_workers",
    "trainer.device",
    "trainer.channels_last",
    "trainer.compile",
    "trainer.log_every",
    "trainer.checkpoint_every",
    "trainer.dist_timeout_s",
    "trainer.max_bad_steps",
    "trainer.preemption",
    "trainer.position_history",
)


def row_name(cfg: DictConfig, overrides: list[str] | None = None) -> str:
    """The run's row in ``scripts/make_tables.py``'s tables.

    Args:
        cfg: the training config; its ``name``, if set, is the row name.
        overrides: the run's command-line overrides (a sweep job's, or a single run's). Those
            that are neither in :data:`ROW_KEYS_IGNORED`, nor the model group option, nor left
            out of the sweep folder's name (``hydra.job.config.override_dirname.exclude_keys``)
            are added to the model name, sorted, so that the rows of a hyperparameter sweep stay
            apart, and a smoke run (``debug=default data=fake``) or a run with other settings
            does not become one more result of the model's row.
    """
    if cfg.get("name"):
        return str(cfg.name)
    ignored = set(ROW_KEYS_IGNORED)
    if HydraConfig.initialized():
        ignored |= set(HydraConfig.get().job.config.override_dirname.exclude_keys)
    swept = [o for o in overrides or () if o.split("=", 1)[0].lstrip("+~") != "model"]
    return named_row(model_label(cfg.model), swept, ignored)


def _eval_arguments(record: RunRecord) -> str:
    """``eval.py``'s arguments that validate ``record``'s checkpoint as training did: the same
    split (and, by eval.py's ``amp=auto``, the same autocast precision)."""
    return f"{command_line_override('checkpoint', str(record.checkpoint))} sets=[val]"


def finished_results(run_dir: Path) -> dict[str, Any] | None:
    """The ``results.json`` a finished run left in ``run_dir`` (``None`` if there is none): what a
    relaunch of that run reports, instead of results of a validation alone."""
    path = Path(run_dir) / RUN_RESULTS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def set_aside_earlier_run(run_dir: Path, outputs: list[str]) -> Path | None:
    """Move what an earlier run left in ``run_dir`` (the ``outputs`` present: files, and folders
    that are not empty) into ``run_dir/.earlier/<time>/``, so that a run starting over there
    (``resume=never``, or a run killed before its first checkpoint) does not mix its history,
    checkpoints and results with the earlier run's, and loses none of them.

    Returns:
        The folder they were moved to, or ``None`` if there was nothing to move.
    """
    present = [
        path
        for path in (Path(run_dir) / name for name in dict.fromkeys(outputs))
        if path.is_file() or (path.is_dir() and any(path.iterdir()))
    ]
    if not present:
        return None
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    target = Path(run_dir) / EARLIER_RUNS_DIR / stamp
    suffix = 1
    while target.exists():  # two fresh starts within one second
        target, suffix = target.with_name(f"{stamp}_{suffix}"), suffix + 1
    target.mkdir(parents=True)
    for path in present:
        path.rename(target / path.name)
    return target


@dataclass
class RunRecord:
    """A finished run.

    Attributes:
        cfg: its config.
        run_dir: its folder.
        checkpoint: its last checkpoint.
        metrics: the last epoch's metrics (``val_top1``, ``val_ema_top1``, ...).
        val_count: images in the validation split.
        best_val_top1, best_epoch: the best validation top-1 of the reported weights, and its
            1-based epoch.
        wall_time_s: seconds the run trained, its processes one after another (a resumed run
            adds the seconds up to its checkpoint).
        weights: the reported weights, ``"ema"`` or ``"model"``.
    """

    cfg: DictConfig
    run_dir: Path
    checkpoint: Path
    metrics: dict[str, float]
    val_count: int
    best_val_top1: float | None
    best_epoch: int | None
    wall_time_s: float
    weights: str


def _reported(record: RunRecord, key: str) -> float:
    prefix = "val_ema_" if record.weights == "ema" else "val_"
    return record.metrics[f"{prefix}{key}"]


def _eval_results(record: RunRecord) -> dict[str, Any]:
    """The run's validation result in ``eval.py``'s result format (one set, ``val``)."""
    cfg = record.cfg
    params, gmacs = params_and_macs(lambda: instantiate(cfg.model), cfg.data.image_size)
    return {
        "name": row_name(cfg),
        "model": model_label(cfg.model),
        "checkpoint": str(record.checkpoint),
        "weights": record.weights,
        "amp": cfg.trainer.amp,  # (the validation's autocast)
        "seed": cfg.seed,
        "source": "train.py",
        "created": time.time(),
        "params": params,
        "gmacs": gmacs,
        "sets": {
            "val": {
                "data": cfg.data.name,
                "top1": _reported(record, "top1"),
                "top5": _reported(record, "top5"),
                "loss": _reported(record, "loss"),
                "count": record.val_count,
                "best_top1": record.best_val_top1,  # over all epochs (kept across resumes)
                "best_epoch": record.best_epoch,
            }
        },
    }


def write_results(record: RunRecord, enabled: bool = True) -> dict[str, Any]:
    """Write ``results.json`` and ``eval_results.json`` in the run folder and log the summary.

    Args:
        enabled: ``False`` on every rank but the first (nothing is written or logged).

    Returns:
        The contents of ``results.json``: the last epoch's metrics, ``top1``/``top5`` of the
        reported weights, ``weights``, ``best_val_top1``, ``best_epoch``, ``epochs``,
        ``wall_time_s``, ``run_dir`` and ``checkpoint``.
    """
    results = {
        **record.metrics,
        "top1": _reported(record, "top1"),
        "top5": _reported(record, "top5"),
        "weights": record.weights,
        "best_val_top1": record.best_val_top1,
        "best_epoch": record.best_epoch,
        "epochs": record.cfg.trainer.epochs,
        "wall_time_s": record.wall_time_s,
        "run_dir": str(record.run_dir),
        "checkpoint": str(record.checkpoint),
    }
    if not enabled:
        return results
    record.run_dir.mkdir(parents=True, exist_ok=True)
    (record.run_dir / RUN_RESULTS_FILE).write_text(json.dumps(results, indent=2))
    (record.run_dir / RESULTS_FILE).write_text(json.dumps(_eval_results(record), indent=2))
    best = (
        f"best {record.best_val_top1:.2f} at epoch {record.best_epoch}"
        if record.best_val_top1 is not None
        else "no epoch ran in this process"
    )
    _logger.info(
        "finished %d epoch%s in %.0f s: val top-1 %.2f, top-5 %.2f (last epoch, %s weights; %s)\n"
        "  checkpoint: %s\n  run folder: %s (%s, %s, train.log)\n"
        "  same numbers from eval.py: python eval.py %s",
        record.cfg.trainer.epochs,
        "" if record.cfg.trainer.epochs == 1 else "s",
        record.wall_time_s,
        results["top1"],
        results["top5"],
        record.weights,
        best,
        record.checkpoint,
        record.run_dir,
        RUN_RESULTS_FILE,
        RESULTS_FILE,
        _eval_arguments(record),
    )
    return results
