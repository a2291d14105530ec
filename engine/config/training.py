"""Checks of ``train.yaml``: every user-facing value, before anything is built.

``validate_train_config(cfg)`` raises :class:`ConfigError` naming the key, the value and what is
allowed; the entry point turns it into one log line and exit status 2 (no traceback).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from dcls.algorithms import CONV_ALGORITHMS
from dcls.functional import VERSION_ALIASES, VERSIONS
from dcls.model_tools import REPULSIVE_FORMULAS
from engine.config.checks import (
    check_amp_and_device,
    check_signal_names,
    close_matches,
    fail,
    int_at_least,
    is_int,
    is_number,
    number_at_least,
    one_of,
)

__all__ = ["validate_train_config"]

DATA_KINDS = ("digits", "fake", "folder")
BAD_IMAGE_POLICIES = ("skip", "fail")
RANDOM_ERASING_MODES = ("const", "rand", "pixel")  # timm's RandomErasing modes
LOGGER_KINDS = ("csv", "wandb")


def _check_model(cfg: Any) -> None:
    import timm

    import models  # noqa: F401  (registers the DCLS variants)

    name = cfg.get("model_name")
    if not isinstance(name, str) or not timm.is_model(name):
        hint = close_matches(name, timm.list_models()) or "see timm.list_models()"
        fail("model.model_name", name, f"not a registered timm model; {hint}")
    kernel_count = cfg.get("kernel_count")
    if kernel_count is not None and (not is_int(kernel_count) or kernel_count < 1):
        fail("model.kernel_count", kernel_count, "expected null (iso-parameter rule) or >= 1")
    if "dilated_kernel_size" in cfg:
        size = cfg.dilated_kernel_size
        sizes = list(size) if not is_int(size) and size is not None else [size]
        if not sizes or not all(is_int(s) and s >= 1 for s in sizes):
            fail("model.dilated_kernel_size", size, "expected an integer >= 1 (or one per axis)")
        cells = sizes[0] ** 2 if len(sizes) == 1 else math.prod(sizes)
        if kernel_count is not None and kernel_count > cells:
            fail(
                "model.dilated_kernel_size",
                size,
                f"its {cells} cells cannot hold model.kernel_count={kernel_count} elements; "
                f"expected a size with at least {kernel_count} cells",
            )
    if "drop_path_rate" in cfg and not 0 <= cfg.drop_path_rate < 1:
        fail("model.drop_path_rate", cfg.drop_path_rate, "expected a number in [0, 1)")
    for key, allowed in (
        ("version", (*VERSIONS, *VERSION_ALIASES)),
        ("conv_algorithm", CONV_ALGORITHMS),
    ):
        if key in cfg and cfg[key] not in allowed:
            hint = close_matches(str(cfg[key]), allowed)
            expected = f"expected one of {', '.join(allowed)}; {hint}".rstrip("; ")
            fail(f"model.{key}", cfg[key], expected)


def _check_data(cfg: Any) -> None:
    one_of(cfg, "data", "kind", DATA_KINDS)
    for key in ("batch_size", "eval_batch_size", "num_classes", "image_size"):
        int_at_least(cfg, "data", key, 1)
    int_at_least(cfg, "data", "num_workers", 0)
    for key in ("mixup", "cutmix"):
        number_at_least(cfg, "data", key, 0)
    smoothing = cfg.get("label_smoothing")
    if not is_number(smoothing) or not 0 <= smoothing < 1:
        fail("data.label_smoothing", smoothing, "expected a number in [0, 1)")
    if (cfg.mixup > 0 or cfg.cutmix > 0) and cfg.batch_size % 2:
        fail("data.batch_size", cfg.batch_size, "Mixup/CutMix need an even batch per process")
    if cfg.kind == "digits" and not 0 < cfg.val_fraction < 1:
        fail("data.val_fraction", cfg.val_fraction, "expected a number in (0, 1)")
    if cfg.kind == "folder":
        one_of(cfg, "data", "on_bad_image", BAD_IMAGE_POLICIES)
        one_of(cfg, "data", "re_mode", RANDOM_ERASING_MODES)
        int_at_least(cfg, "data", "re_count", 1)
        if not is_number(cfg.get("re_prob")) or not 0 <= cfg.re_prob <= 1:
            fail("data.re_prob", cfg.get("re_prob"), "expected a number in [0, 1]")
        root = Path(str(cfg.root))
        if not root.is_dir():
            fail(
                "data.root",
                str(root),
                "no such folder; expected an ImageNet-style folder "
                f"<root>/{{{cfg.train_split},{cfg.val_split}}}/<class name>/<image files>",
            )


def _check_trainer(cfg: Any) -> None:
    check_amp_and_device(cfg.get("amp"), cfg.get("device"), "trainer")
    for key in ("epochs", "update_freq", "log_every", "max_bad_steps"):
        int_at_least(cfg, "trainer", key, 1)
    int_at_least(cfg, "trainer", "checkpoint_every", 0)
    number_at_least(cfg, "trainer", "dist_timeout_s", 1)
    if cfg.clip_grad is not None and (not is_number(cfg.clip_grad) or cfg.clip_grad <= 0):
        fail("trainer.clip_grad", cfg.clip_grad, "expected null (off) or a number > 0")
    decay = cfg.ema.decay
    if not is_number(decay) or not 0 <= decay <= 1:
        fail("trainer.ema.decay", decay, "expected a number in [0, 1]")
    repulsion, sigmas = cfg.repulsive_loss, cfg.sigma_schedule
    number_at_least(repulsion, "trainer.repulsive_loss", "weight", 0)
    int_at_least(repulsion, "trainer.repulsive_loss", "start_epoch", 0)
    one_of(repulsion, "trainer.repulsive_loss", "formula", REPULSIVE_FORMULAS)
    for group, key, value in (
        ("repulsive_loss", "min_distance", repulsion.min_distance),
        ("sigma_schedule", "start", sigmas.start),
        ("sigma_schedule", "end", sigmas.end),
    ):
        if not is_number(value) or value <= 0:
            fail(f"trainer.{group}.{key}", value, "expected a number > 0")
    preemption = cfg.preemption
    check_signal_names(preemption.signals)
    code = preemption.exit_code
    if not is_int(code) or not 0 <= code <= 255:
        fail("trainer.preemption.exit_code", code, "expected an integer in [0, 255]")


def _check_optimizer(cfg: Any) -> None:
    from timm.optim import list_optimizers

    known = list_optimizers()
    name = str(cfg.get("opt")).lower()
    if name.removeprefix("lookahead_") not in known:
        hint = close_matches(name, known) or "see timm.optim.list_optimizers()"
        fail("optimizer.opt", cfg.get("opt"), f"not a timm optimizer; {hint}")
    for key in ("lr", "weight_decay"):
        number_at_least(cfg, "optimizer", key, 0)
    number_at_least(cfg, "optimizer", "base_batch_size", 1)
    number_at_least(cfg.positions, "optimizer.positions", "lr_scale", 0)
    layer_decay = cfg.get("layer_decay")
    if layer_decay is not None and (not is_number(layer_decay) or not 0 < layer_decay <= 1):
        fail("optimizer.layer_decay", layer_decay, "expected null (off) or a number in (0, 1]")


def _check_scheduler(cfg: Any, epochs: int) -> None:
    number_at_least(cfg, "scheduler", "warmup_epochs", 0)
    for key in ("warmup_lr", "min_lr"):
        number_at_least(cfg, "scheduler", key, 0)
    prefix = cfg.get("warmup_prefix")
    if not isinstance(prefix, bool):
        fail("scheduler.warmup_prefix", prefix, "expected true or false")
    if prefix and cfg.warmup_epochs >= epochs:
        fail(
            "scheduler.warmup_epochs",
            cfg.warmup_epochs,
            f"with scheduler.warmup_prefix=true, expected fewer than trainer.epochs={epochs}",
        )


def validate_train_config(cfg: Any) -> None:
    """Check the ``train.yaml`` tree ``cfg``; cheap (no model, no data is built).

    Raises:
        ConfigError: on the first invalid value, naming the key, the value and what is allowed.
    """
    _check_trainer(cfg.trainer)
    _check_data(cfg.data)
    _check_optimizer(cfg.optimizer)
    _check_scheduler(cfg.scheduler, cfg.trainer.epochs)
    _check_model(cfg.model)
    unknown = sorted(set(cfg.get("logger") or {}) - set(LOGGER_KINDS))
    if unknown:
        fail("logger", unknown[0], f"expected loggers among {', '.join(LOGGER_KINDS)}")
    resume = cfg.resume
    if resume not in ("auto", "never") and not Path(str(resume)).is_file():
        fail("resume", resume, "expected 'auto', 'never' or the path of a checkpoint file")
