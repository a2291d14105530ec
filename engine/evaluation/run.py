"""``evaluate_checkpoint(cfg, run_dir)``: one evaluation as a config says, to
``eval_results.json``; ``eval.py`` is its Hydra entry point."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import timm
import torch
from omegaconf import DictConfig, OmegaConf

import models  # noqa: F401  (registers the DCLS variants with timm)
from engine.amp import AMP_DTYPES, amp_device_note
from engine.checkpoint.models import LoadedModel, load_model
from engine.config import (
    job_overrides,
    validate_eval_config,
)
from engine.distributed import cleanup, init_distributed
from engine.evaluation.accuracy import EvalContext, eval_transform
from engine.evaluation.paper import released_check
from engine.evaluation.results import RESULTS_FILE, eval_row_name, results_markdown
from engine.evaluation.sets import SETS, EvalJob, run_sets
from engine.evaluation.throughput import params_and_macs

_logger = logging.getLogger("eval")


def _model(cfg: DictConfig) -> LoadedModel:
    kwargs = OmegaConf.to_container(cfg.model.kwargs, resolve=True)
    if cfg.checkpoint is not None:
        return load_model(cfg.checkpoint, cfg.model.name, kwargs, cfg.weights)
    model = timm.create_model(cfg.model.name, **kwargs).eval()  # throughput needs no weights
    config = {"_target_": "timm.create_model", "model_name": cfg.model.name, **kwargs}
    return LoadedModel(model, cfg.model.name, config, "none")


def _amp(name: str | None, training_config: dict[str, Any], device: torch.device) -> str | None:
    """``amp``'s value: ``auto`` is the checkpoint's ``trainer.amp`` (the precision its
    validation ran in; float32 for a checkpoint without a training config)."""
    if name != "auto":
        return name
    trainer = training_config.get("trainer")
    amp = (trainer or {}).get("amp")
    reason = ", as the checkpoint's training validated" if trainer else " (no training config)"
    _logger.info("amp=auto: %s%s", amp or "float32", reason)
    note = amp_device_note(amp, device, "amp (auto, from the checkpoint)")
    if note is not None:
        _logger.warning("%s", note)
    return amp


def evaluate_checkpoint(cfg: DictConfig, run_dir: Path | str) -> dict[str, Any]:
    """Evaluate as ``cfg`` says; returns the results (also written to
    ``run_dir/eval_results.json``)."""
    run_dir = Path(run_dir)
    validate_eval_config(cfg, SETS)
    dist_info = init_distributed(cfg.device)
    loaded = _model(cfg)
    loaded.model.to(dist_info.device)
    if cfg.channels_last:
        loaded.model.to(memory_format=torch.channels_last)
    # preprocessing: eval overrides > the checkpoint's training data config > pretrained cfg
    overrides = {k: v for k, v in cfg.transform.items() if v is not None}
    transform, data_config = eval_transform(loaded.model, loaded.data_config | overrides)
    resolution = data_config["input_size"][-1]
    params, gmacs = params_and_macs(
        lambda: hydra.utils.instantiate(OmegaConf.create(loaded.model_config)), resolution
    )
    amp = _amp(cfg.amp, loaded.training_config, dist_info.device)
    context = EvalContext(
        loaded.model,
        dist_info,
        cfg.batch_size,
        cfg.num_workers,
        AMP_DTYPES[amp],
        cfg.channels_last,
    )
    sets = run_sets(EvalJob(cfg, loaded, context, transform, resolution), list(cfg.sets))
    results = {
        "name": cfg.name
        or eval_row_name(
            loaded.training_config.get("name"),
            loaded.name,
            None if cfg.checkpoint is None else str(cfg.checkpoint),
            job_overrides(),
        ),
        "model": loaded.name,
        "seed": loaded.training_config.get("seed"),
        "checkpoint": None if cfg.checkpoint is None else str(cfg.checkpoint),
        "weights": loaded.weights,
        "amp": amp,
        "params": params,
        "gmacs": gmacs,
        "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()},
        "world_size": dist_info.world_size,
        "sets": sets,
    }
    released = released_check(results["checkpoint"], sets.get("in1k"))
    if released is not None:
        results["released"] = released
        _logger.info(
            "%s is the authors' released file: top-1 %.3f, top-5 %.3f expected (%s), "
            "measured minus expected %+.3f, %+.3f",
            released["file"],
            released["expected_top1"],
            released["expected_top5"],
            released["source"],
            released["top1_diff"],
            released["top5_diff"],
        )
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
        _logger.info("%s\nresults: %s", results_markdown(results), run_dir / RESULTS_FILE)
    cleanup()
    return results
