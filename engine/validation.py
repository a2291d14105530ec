"""Check every user-facing config value before anything is built, with one-line messages.

``validate_config(cfg)`` raises :class:`ConfigError` naming the key, the value and what is allowed;
``train.py``'s entry point turns it into one log line and exit status 2 (no traceback).
"""

from __future__ import annotations

import difflib
import signal
from pathlib import Path
from typing import Any

from engine.loop import AMP_DTYPES

__all__ = ["AMP_CHOICES", "ConfigError", "validate_config"]

AMP_CHOICES = tuple(AMP_DTYPES)
DEVICES = ("auto", "cpu", "cuda")
DATA_KINDS = ("digits", "fake", "folder")
BAD_IMAGE_POLICIES = ("skip", "fail")
LOGGER_KINDS = ("none", "csv", "wandb")
CLOSE_MATCHES = 3  # model names suggested for a typo


class ConfigError(ValueError):
    """An invalid config value; the message is one line: key, value, what is allowed."""


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_at_least(cfg: Any, prefix: str, key: str, minimum: int) -> None:
    value = cfg.get(key)
    if not _is_int(value) or value < minimum:
        _fail(f"{prefix}.{key}", value, f"expected an integer >= {minimum}")


def _number_at_least(cfg: Any, prefix: str, key: str, minimum: float) -> None:
    value = cfg.get(key)
    if not _is_number(value) or value < minimum:
        _fail(f"{prefix}.{key}", value, f"expected a number >= {minimum}")


def _one_of(cfg: Any, prefix: str, key: str, choices: tuple) -> None:
    value = cfg.get(key)
    if value not in choices:
        _fail(f"{prefix}.{key}", value, f"expected one of {', '.join(map(repr, choices))}")


def _check_model(cfg: Any) -> None:
    import timm

    import models  # noqa: F401  (registers the DCLS variants)

    name = cfg.get("model_name")
    if not isinstance(name, str) or not timm.is_model(name):
        close = difflib.get_close_matches(str(name), timm.list_models(), n=CLOSE_MATCHES)
        hint = f"close matches: {', '.join(close)}" if close else "see timm.list_models()"
        _fail("model.model_name", name, f"not a registered timm model; {hint}")
    kernel_count = cfg.get("kernel_count")
    if kernel_count is not None and (not _is_int(kernel_count) or kernel_count < 1):
        _fail("model.kernel_count", kernel_count, "expected null (iso-parameter rule) or >= 1")
    if "dilated_kernel_size" in cfg:
        size = cfg.dilated_kernel_size
        sizes = list(size) if not _is_int(size) and size is not None else [size]
        if not sizes or not all(_is_int(s) and s >= 1 for s in sizes):
            _fail("model.dilated_kernel_size", size, "expected an integer >= 1 (or one per axis)")
        cells = sizes[0] ** 2 if len(sizes) == 1 else _product(sizes)
        if kernel_count is not None and kernel_count > cells:
            _fail(
                "model.dilated_kernel_size",
                size,
                f"its {cells} cells cannot hold model.kernel_count={kernel_count} elements; "
                f"expected a size with at least {kernel_count} cells",
            )
    if "drop_path_rate" in cfg and not 0 <= cfg.drop_path_rate < 1:
        _fail("model.drop_path_rate", cfg.drop_path_rate, "expected a number in [0, 1)")


def _product(values: list[int]) -> int:
    result = 1
    for v in values:
        result *= v
    return result


def _check_data(cfg: Any) -> None:
    _one_of(cfg, "data", "kind", DATA_KINDS)
    for key in ("batch_size", "eval_batch_size", "num_classes", "image_size"):
        _int_at_least(cfg, "data", key, 1)
    _int_at_least(cfg, "data", "num_workers", 0)
    for key in ("mixup", "cutmix"):
        _number_at_least(cfg, "data", key, 0)
    smoothing = cfg.get("label_smoothing")
    if not _is_number(smoothing) or not 0 <= smoothing < 1:
        _fail("data.label_smoothing", smoothing, "expected a number in [0, 1)")
    if (cfg.mixup > 0 or cfg.cutmix > 0) and cfg.batch_size % 2:
        _fail("data.batch_size", cfg.batch_size, "Mixup/CutMix need an even batch per process")
    if cfg.kind == "digits" and not 0 < cfg.val_fraction < 1:
        _fail("data.val_fraction", cfg.val_fraction, "expected a number in (0, 1)")
    if cfg.kind == "folder":
        _one_of(cfg, "data", "on_bad_image", BAD_IMAGE_POLICIES)
        root = Path(str(cfg.root))
        if not root.is_dir():
            _fail(
                "data.root",
                str(root),
                "no such folder; expected an ImageNet-style folder "
                f"<root>/{{{cfg.train_split},{cfg.val_split}}}/<class name>/<image files>",
            )


def _check_trainer(cfg: Any) -> None:
    _one_of(cfg, "trainer", "device", DEVICES)
    _one_of(cfg, "trainer", "amp", AMP_CHOICES)
    for key in ("epochs", "update_freq", "log_every", "max_bad_steps"):
        _int_at_least(cfg, "trainer", key, 1)
    _int_at_least(cfg, "trainer", "checkpoint_every", 0)
    _number_at_least(cfg, "trainer", "dist_timeout_s", 1)
    if cfg.clip_grad is not None and (not _is_number(cfg.clip_grad) or cfg.clip_grad <= 0):
        _fail("trainer.clip_grad", cfg.clip_grad, "expected null (off) or a number > 0")
    decay = cfg.ema.decay
    if not _is_number(decay) or not 0 <= decay <= 1:
        _fail("trainer.ema.decay", decay, "expected a number in [0, 1]")
    repulsion, sigmas = cfg.repulsive_loss, cfg.sigma_schedule
    _number_at_least(repulsion, "trainer.repulsive_loss", "weight", 0)
    _int_at_least(repulsion, "trainer.repulsive_loss", "start_epoch", 0)
    for group, key, value in (
        ("repulsive_loss", "min_distance", repulsion.min_distance),
        ("sigma_schedule", "start", sigmas.start),
        ("sigma_schedule", "end", sigmas.end),
    ):
        if not _is_number(value) or value <= 0:
            _fail(f"trainer.{group}.{key}", value, "expected a number > 0")
    preemption = cfg.preemption
    for name in preemption.signals:
        if not str(name).startswith("SIG") or not hasattr(signal, str(name)):
            _fail("trainer.preemption.signals", name, "expected signal names like SIGTERM")
    code = preemption.exit_code
    if not _is_int(code) or not 0 <= code <= 255:
        _fail("trainer.preemption.exit_code", code, "expected an integer in [0, 255]")


def _check_optimizer(cfg: Any) -> None:
    from timm.optim import list_optimizers

    known = list_optimizers()
    name = str(cfg.get("opt")).lower()
    if name.removeprefix("lookahead_") not in known:
        close = difflib.get_close_matches(name, known, n=CLOSE_MATCHES)
        _fail("optimizer.opt", cfg.get("opt"), f"not a timm optimizer; close matches: {close}")
    for key in ("lr", "weight_decay"):
        _number_at_least(cfg, "optimizer", key, 0)
    _number_at_least(cfg, "optimizer", "base_batch_size", 1)
    _number_at_least(cfg.positions, "optimizer.positions", "lr_scale", 0)
    layer_decay = cfg.get("layer_decay")
    if layer_decay is not None and (not _is_number(layer_decay) or not 0 < layer_decay <= 1):
        _fail("optimizer.layer_decay", layer_decay, "expected null (off) or a number in (0, 1]")


def _check_scheduler(cfg: Any) -> None:
    _number_at_least(cfg, "scheduler", "warmup_epochs", 0)
    for key in ("warmup_lr", "min_lr"):
        _number_at_least(cfg, "scheduler", key, 0)


def validate_config(cfg: Any) -> None:
    """Check the ``train.yaml`` tree ``cfg``; cheap (no model, no data is built).

    Raises:
        ConfigError: on the first invalid value, naming the key, the value and what is allowed.
    """
    _check_trainer(cfg.trainer)
    _check_data(cfg.data)
    _check_optimizer(cfg.optimizer)
    _check_scheduler(cfg.scheduler)
    _check_model(cfg.model)
    logger_kind = cfg.logger.get("kind") if cfg.get("logger") is not None else "none"
    if logger_kind not in LOGGER_KINDS:
        _fail("logger.kind", logger_kind, f"expected one of {', '.join(LOGGER_KINDS)}")
    resume = cfg.resume
    if resume not in ("auto", "never") and not Path(str(resume)).is_file():
        _fail("resume", resume, "expected 'auto', 'never' or the path of a checkpoint file")
