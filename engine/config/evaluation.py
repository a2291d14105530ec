"""Checks of ``eval.yaml``: every user-facing value, before a model or a set is loaded."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from engine.amp import AMP_CHOICES
from engine.config.checks import (
    check_amp_and_device,
    check_image_transform,
    fail,
    int_at_least,
)

__all__ = ["TRANSFORM_KEYS", "WEIGHTS", "validate_eval_config"]

_logger = logging.getLogger(__name__)

WEIGHTS = ("auto", "ema", "model")
TRANSFORM_KEYS = ("img_size", "crop_pct", "interpolation", "mean", "std")
THROUGHPUT_AMP = ("auto", *AMP_CHOICES)
THROUGHPUT_OPTIMIZERS = ("adamw", "sgd")


def validate_eval_config(cfg: Any, set_names: Sequence[str]) -> None:
    """Check the ``eval.yaml`` tree ``cfg``; cheap (no model, no data is loaded).

    Args:
        set_names: the sets ``eval.py`` can run.

    Raises:
        ConfigError: on the first invalid value, naming the key, the value and what is allowed.
    """
    if OmegaConf.is_missing(cfg, "checkpoint"):
        fail(
            "checkpoint",
            "???",
            "required: checkpoint=PATH (train.py's last.pt, a timm state dict or the authors' "
            "file), or checkpoint=null with sets=[throughput] model.name=<timm name>",
        )
    if isinstance(cfg.sets, str) or not cfg.sets:
        fail("sets", cfg.sets, f"expected a non-empty list, e.g. sets=[{cfg.sets or 'in1k'}]")
    sets = list(cfg.sets)
    for name in sets:
        if name not in set_names:
            fail("sets", name, f"expected names from {list(set_names)}", near=set_names)
    amp = cfg.get("amp")  # (auto is known once the checkpoint is read)
    if amp != "auto" and amp not in AMP_CHOICES:
        fail("amp", amp, "expected auto (the checkpoint's), null (float32), 'bf16' or 'fp16'")
    check_amp_and_device(None if amp == "auto" else amp, cfg.get("device"), None)
    if cfg.weights not in WEIGHTS:
        fail("weights", cfg.weights, f"expected one of {', '.join(WEIGHTS)}", near=WEIGHTS)
    int_at_least(cfg, None, "batch_size", 1)
    int_at_least(cfg, None, "num_workers", 0)
    unknown = sorted(set(cfg.transform) - set(TRANSFORM_KEYS))
    if unknown:
        fail("transform", unknown[0], f"expected keys among {list(TRANSFORM_KEYS)}")
    int_at_least(cfg.transform, "transform", "img_size", 1, null="the checkpoint's")
    check_image_transform(cfg.transform, "transform", null="the checkpoint's")
    if "val" in sets and any(v is not None for v in cfg.transform.values()):
        _logger.warning(
            "transform.* applies to the image-folder sets; sets=[val] evaluates the training "
            "run's validation split with its own data config, unchanged"
        )
    if "throughput" in sets:
        _check_throughput(cfg.throughput)
    if "throughput" in sets and cfg.throughput.amp not in THROUGHPUT_AMP:
        fail("throughput.amp", cfg.throughput.amp, "expected auto, null, 'bf16' or 'fp16'")
    if (
        "throughput" in sets
        and cfg.throughput.get("optimizer", "adamw") not in THROUGHPUT_OPTIMIZERS
    ):
        fail("throughput.optimizer", cfg.throughput.optimizer, "expected adamw or sgd")
    _check_model_name(cfg.model.name)
    if cfg.checkpoint is None:
        if sets != ["throughput"] or cfg.model.name is None:
            fail(
                "checkpoint",
                None,
                "null is allowed only with sets=[throughput] and model.name=<timm name>",
            )
    elif not Path(str(cfg.checkpoint)).is_file():
        fail("checkpoint", str(cfg.checkpoint), "no such file; expected a checkpoint file")


def _check_model_name(name: Any) -> None:
    """``model.name``: null (the checkpoint's), a registered timm model (ours too), or a timm
    source (``hf-hub:...``, ``local-dir:...``, resolved when the model is built)."""
    import timm
    from timm.models import parse_model_name

    import models  # noqa: F401  (registers the DCLS variants)

    if name is None:
        return
    if isinstance(name, str):
        try:
            source, _ = parse_model_name(name)
        except ValueError as error:  # e.g. 'timm/x': a hub id without its 'hf-hub:' prefix
            fail("model.name", name, str(error))
        if source is not None or timm.is_model(name):
            return
    fail(
        "model.name",
        name,
        "expected null (the checkpoint's) or a timm model name",
        near=timm.list_models(),
        no_match="see timm.list_models()",
    )


def _check_throughput(cfg: Any) -> None:
    """The ``throughput`` group: counts, and the baseline's name (a timm model)."""
    import timm

    for key, minimum in (("batch_size", 1), ("warmup", 0), ("steps", 1), ("rounds", 1)):
        int_at_least(cfg, "throughput", key, minimum)
    int_at_least(cfg, "throughput", "img_size", 1, null="the evaluation's")
    baseline = cfg.get("baseline")
    if baseline not in (None, "auto") and not timm.is_model(baseline):
        allowed = "expected auto, null or a timm model name"
        fail("throughput.baseline", baseline, allowed, near=timm.list_models())
