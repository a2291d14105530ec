"""Evaluate a checkpoint: ``python eval.py checkpoint=PATH [sets=[...]] [key=value ...]``.

Sets: ``in1k`` (top-1/top-5), ``in_v2``, ``in_sketch``, ``in_a`` and ``in_r`` (200-class
logit masks), ``in_c`` (15 corruptions x 5 severities -> CE and mCE, plus the 4 extra ones),
``corrupt`` (any val folder corrupted on the fly), ``throughput`` (images/s against the
baseline in the same run). ``torchrun --nproc_per_node=N eval.py ...`` shards every set. See
``configs/eval.yaml`` for every knob.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import timm
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from engine.distributed import cleanup, init_distributed
from engine.eval_data import EVAL_SETS
from engine.evaluation import (
    EvalContext,
    corrupted_folder,
    eval_transform,
    evaluate_corruptions,
    evaluate_folder,
    evaluate_throughput,
    imagenet_c_folder,
    results_markdown,
)
from engine.loop import AMP_DTYPES
from engine.profiling import params_and_macs
from engine.validation import ConfigError
from engine.weights import LoadedModel, load_model

_logger = logging.getLogger("eval")

SETS = (*EVAL_SETS, "corrupt", "throughput")
RESULTS_FILE = "eval_results.json"


def _model(cfg: DictConfig) -> LoadedModel:
    kwargs = OmegaConf.to_container(cfg.model.kwargs, resolve=True)
    if cfg.checkpoint is not None:
        return load_model(cfg.checkpoint, cfg.model.name, kwargs, cfg.weights)
    if list(cfg.sets) != ["throughput"] or cfg.model.name is None:
        raise ConfigError(
            "checkpoint=null is allowed only with sets=[throughput] and model.name=<timm name>"
        )
    model = timm.create_model(cfg.model.name, **kwargs).eval()
    config = {"_target_": "timm.create_model", "model_name": cfg.model.name, **kwargs}
    return LoadedModel(model, cfg.model.name, config, "none")


def evaluate_checkpoint(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """Evaluate as ``cfg`` says; returns the results (also written to ``eval_results.json``)."""
    run_dir = Path(run_dir or HydraConfig.get().runtime.output_dir)
    unknown = [name for name in cfg.sets if name not in SETS]
    if unknown:
        raise ConfigError(f"sets: unknown {unknown}; allowed: {list(SETS)}")
    if cfg.amp not in AMP_DTYPES:
        raise ConfigError(f"amp must be one of null, 'bf16', 'fp16', got {cfg.amp!r}")
    dist_info = init_distributed(cfg.device)
    device, amp_dtype = dist_info.device, AMP_DTYPES[cfg.amp]
    loaded = _model(cfg)
    model = loaded.model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # preprocessing: eval overrides > the checkpoint's training data config > pretrained cfg
    overrides = {k: v for k, v in cfg.transform.items() if v is not None}
    transform, data_config = eval_transform(model, loaded.data_config | overrides)
    resolution = data_config["input_size"][-1]
    params, gmacs = params_and_macs(
        lambda: hydra.utils.instantiate(OmegaConf.create(loaded.model_config)), resolution
    )
    context = EvalContext(
        model, dist_info, cfg.batch_size, cfg.num_workers, amp_dtype, cfg.channels_last
    )
    sets: dict[str, Any] = {}
    for name in cfg.sets:
        if name == "in_c":
            c = cfg.corruptions
            every = [*c.names, *c.extra]
            dataset_for = imagenet_c_folder(cfg.roots.in_c, transform, every, c.severities)
            sets["in_c"] = evaluate_corruptions(context, c.names, c.severities, dataset_for)
            if c.extra:
                sets["in_c_extra"] = evaluate_corruptions(
                    context, c.extra, c.severities, dataset_for
                )
        elif name == "corrupt":
            c = cfg.corruptions
            dataset_for = corrupted_folder(c.root, transform, c.seed)
            names = list(c.names) + list(c.extra)
            sets["corrupt"] = {
                "root": str(c.root),
                **evaluate_corruptions(context, names, c.severities, dataset_for),
            }
        elif name == "throughput":
            throughput_cfg = OmegaConf.to_container(cfg.throughput, resolve=True)
            amp = throughput_cfg["amp"]
            if amp == "auto":  # timm's benchmark: mixed precision where a GPU is present
                amp = "bf16" if device.type == "cuda" else None
            if amp not in AMP_DTYPES:
                raise ConfigError(
                    f"throughput.amp must be one of auto, null, 'bf16', 'fp16', got {amp!r}"
                )
            sets["throughput"] = evaluate_throughput(
                model,
                loaded.name,
                throughput_cfg,
                throughput_cfg["img_size"] or resolution,
                device,
                AMP_DTYPES[amp],
                throughput_cfg["channels_last"],
            )
        else:
            sets[name] = evaluate_folder(context, name, cfg.roots[name], transform)
    results = {
        "name": cfg.name or loaded.name,
        "model": loaded.name,
        "checkpoint": None if cfg.checkpoint is None else str(cfg.checkpoint),
        "weights": loaded.weights,
        "params": params,
        "gmacs": gmacs,
        "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()},
        "world_size": dist_info.world_size,
        "sets": sets,
    }
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
        _logger.info("%s\nresults: %s", results_markdown(results), run_dir / RESULTS_FILE)
    cleanup()
    return results


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Entry point; exit status 2 with one log line on an invalid config value."""
    try:
        evaluate_checkpoint(cfg)
    except ConfigError as error:
        _logger.error("config error: %s", error)
        sys.exit(2)


if __name__ == "__main__":
    main()
