"""Checks of ``train.yaml``: every user-facing value, before anything is built.

``validate_train_config(cfg)`` raises :class:`ConfigError` naming the key, the value and what is
allowed; the entry point turns it into one log line and exit status 2 (no traceback).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from dcls.algorithms import CONV_ALGORITHMS
from dcls.functional import VERSION_ALIASES, VERSIONS
from dcls.positions import REPULSIVE_FORMULAS
from engine.config.checks import (
    check_amp_and_device,
    check_image_transform,
    check_signal_names,
    close_matches,
    fail,
    int_at_least,
    is_int,
    is_number,
    number_at_least,
    one_of,
)

__all__ = ["SHARED_POSITION_AVERAGING", "resolve_update_freq", "validate_train_config"]

# trainer.ema.shared_positions (engine/training/ema.py): how often a shared position set is
# averaged per update
SHARED_POSITION_AVERAGING = ("once", "per_layer")

_logger = logging.getLogger(__name__)

DATA_KINDS = ("digits", "fake", "folder")
# What each data.kind reads beyond the common keys, and the data group that sets them.
DATA_KIND_KEYS = {
    "digits": ("digits", ("val_fraction", "split_seed", "max_shift")),
    "fake": ("fake", ("train_size", "val_size")),
    "folder": (
        "imagenet",
        (
            *("root", "train_split", "val_split", "on_bad_image"),
            *("auto_augment", "color_jitter", "re_prob", "re_mode", "re_count"),
        ),
    ),
}
BAD_IMAGE_POLICIES = ("skip", "fail")
MIXUP_MODES = ("batch", "pair", "elem")  # timm's Mixup modes
RANDOM_ERASING_MODES = ("const", "rand", "pixel")  # timm's RandomErasing modes
LOGGER_KINDS = ("csv", "wandb")
WANDB_MODES = ("online", "offline", "disabled")
# timm's create_scheduler_v2 names (timm 1.0) but "plateau", which steps once per epoch on a metric
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "poly", "constant", "wsd", "rsqrt")
PREEMPTION_RESERVED_CODES = (0, 1, 2, 130)  # success, failure, bad input, Ctrl-C
TIMM_BUILDER = "timm.create_model"  # the model group's _target_ (a model of one's own: another)
MAX_SEED = 2**31 - 1  # NumPy's seeds are 32-bit, and rank r seeds with seed + r


def _check_model(cfg: Any) -> None:
    import timm

    import models  # noqa: F401  (registers the DCLS variants)

    name = cfg.get("model_name")
    builds_with_timm = cfg.get("_target_", TIMM_BUILDER) == TIMM_BUILDER  # else: the user's own
    if builds_with_timm and (not isinstance(name, str) or not timm.is_model(name)):
        fail(
            "model.model_name",
            name,
            "not a registered timm model",
            near=timm.list_models(),
            no_match="see timm.list_models()",
        )
    int_at_least(cfg, "model", "kernel_count", 1, null="the iso-parameter rule")
    kernel_count = cfg.get("kernel_count")
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
    rate = cfg.get("drop_path_rate", 0.0)
    if not is_number(rate) or not 0 <= rate < 1:
        fail("model.drop_path_rate", rate, "expected a number in [0, 1)")
    for key, allowed in (
        ("version", (*VERSIONS, *VERSION_ALIASES)),
        ("conv_algorithm", CONV_ALGORITHMS),
    ):
        if key in cfg and cfg[key] not in allowed:
            fail(f"model.{key}", cfg[key], f"expected one of {', '.join(allowed)}", near=allowed)


def _check_data_transform(cfg: Any) -> None:
    """``data.interpolation``, ``crop_pct``, ``mean`` and ``std``: eval.py's transform for the
    run's checkpoints (it read a bad one only then, with a traceback); a built-in kind's are how
    its images are made, which these keys record and cannot change."""
    from engine.data.datasets import BUILTIN_TRANSFORMS

    check_image_transform(cfg, "data")
    made = BUILTIN_TRANSFORMS.get(cfg.kind, {})
    for key, value in made.items():
        given = cfg.get(key)
        given = list(given) if hasattr(given, "__len__") and not isinstance(given, str) else given
        if given != value:
            fail(
                f"data.{key}",
                cfg.get(key),
                f"the {cfg.kind} images are made with {key} {value}: this key records it for "
                "eval.py and cannot change it",
            )


def _check_data(cfg: Any) -> None:
    one_of(cfg, "data", "kind", DATA_KINDS)
    group, kind_keys = DATA_KIND_KEYS[cfg.kind]
    missing = [key for key in kind_keys if key not in cfg]
    if missing:
        fail(
            "data.kind",
            cfg.kind,
            f"the data group {cfg.get('name')!r} has no {', '.join(missing)}; choose the group "
            f"that sets them, data={group} (data.kind only says which one a group is)",
        )
    for key in ("batch_size", "eval_batch_size", "num_classes", "image_size"):
        int_at_least(cfg, "data", key, 1)
    int_at_least(cfg, "data", "num_workers", 0)
    for key in ("mixup", "cutmix"):
        number_at_least(cfg, "data", key, 0)
    _check_data_transform(cfg)
    for key in ("mixup_prob", "mixup_switch_prob"):
        if key in cfg and (not is_number(cfg[key]) or not 0 <= cfg[key] <= 1):
            fail(f"data.{key}", cfg[key], "expected a probability in [0, 1]")
    if "mixup_mode" in cfg:
        one_of(cfg, "data", "mixup_mode", MIXUP_MODES)
    smoothing = cfg.get("label_smoothing")
    if not is_number(smoothing) or not 0 <= smoothing < 1:
        fail("data.label_smoothing", smoothing, "expected a number in [0, 1)")
    if (cfg.mixup > 0 or cfg.cutmix > 0) and cfg.batch_size % 2:
        fail("data.batch_size", cfg.batch_size, "Mixup/CutMix need an even batch per process")
    if cfg.kind == "digits":
        if not is_number(cfg.val_fraction) or not 0 < cfg.val_fraction < 1:
            fail("data.val_fraction", cfg.val_fraction, "expected a number in (0, 1)")
        shift = cfg.get("max_shift")
        if not is_int(shift) or not 0 <= shift < cfg.image_size // 2:
            fail(
                "data.max_shift",
                shift,
                f"expected an integer in [0, {cfg.image_size // 2}) pixels "
                f"(under half of data.image_size={cfg.image_size})",
            )
    if cfg.kind == "fake":
        for key in ("train_size", "val_size"):
            int_at_least(cfg, "data", key, 1)
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
    int_at_least(cfg, "trainer", "effective_batch_size", 1, null="update_freq as given")
    effective = cfg.get("effective_batch_size")
    if effective is not None and cfg.update_freq != 1:
        fail(
            "trainer.update_freq",
            cfg.update_freq,
            f"trainer.effective_batch_size={effective} sets it from the process count; set "
            "one of them (trainer.effective_batch_size=null to give update_freq yourself)",
        )
    clip = cfg.clip_grad
    if clip is not None and (not (is_number(clip) or clip == math.inf) or clip <= 0):
        fail("trainer.clip_grad", clip, "expected null (off) or a number > 0 (inf: log the norm)")
    decay = cfg.ema.decay
    if not is_number(decay) or not 0 <= decay <= 1:
        fail("trainer.ema.decay", decay, "expected a number in [0, 1]")
    one_of(cfg.ema, "trainer.ema", "shared_positions", SHARED_POSITION_AVERAGING)
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
    int_at_least(cfg.position_history, "trainer.position_history", "every", 0)
    int_at_least(
        cfg.position_history, "trainer.position_history", "max_out_channels", 1, null="all"
    )
    preemption = cfg.preemption
    check_signal_names(preemption.signals)
    code = preemption.exit_code
    if not is_int(code) or not 0 <= code <= 255 or code in PREEMPTION_RESERVED_CODES:
        fail(
            "trainer.preemption.exit_code",
            code,
            "expected an integer in [0, 255] other than 0 (success), 1 (failure), 2 (bad input) "
            "and 130 (Ctrl-C), which a requeue script must tell apart from preemption",
        )


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
    number_at_least(cfg.positions, "optimizer.positions", "weight_decay", 0)
    number_at_least(
        cfg.positions,
        "optimizer.positions",
        "sigmas_lr_scale",
        0,
        null="optimizer.positions.lr_scale",
    )
    layer_decay = cfg.get("layer_decay")
    if layer_decay is not None and (not is_number(layer_decay) or not 0 < layer_decay <= 1):
        fail("optimizer.layer_decay", layer_decay, "expected null (off) or a number in (0, 1]")


def _check_scheduler(cfg: Any, epochs: int) -> None:
    if cfg.get("sched") == "plateau":
        fail(
            "scheduler.sched",
            "plateau",
            "the schedules here are stepped per optimizer update, and timm's plateau schedule "
            f"only per epoch; expected one of {', '.join(SCHEDULERS)}",
        )
    if cfg.get("sched") not in SCHEDULERS:
        expected = f"expected one of timm's {', '.join(SCHEDULERS)}"
        fail("scheduler.sched", cfg.get("sched"), expected, near=SCHEDULERS)
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
    if not prefix and cfg.warmup_epochs >= epochs:
        _logger.warning(
            "scheduler.warmup_epochs=%g is %s the %d-epoch run: the learning rate never reaches "
            "its peak",
            cfg.warmup_epochs,
            "as long as" if cfg.warmup_epochs == epochs else "longer than",
            epochs,
        )


def _check_logger(cfg: Any) -> None:
    unknown = sorted(set(cfg or {}) - set(LOGGER_KINDS))
    if unknown:
        fail("logger", unknown[0], f"expected loggers among {', '.join(LOGGER_KINDS)}")
    for kind in LOGGER_KINDS:
        entry = (cfg or {}).get(kind)
        if entry is not None and not isinstance(entry.get("filename", ""), str):
            fail(f"logger.{kind}.filename", entry.get("filename"), "expected a file name")
    wandb = (cfg or {}).get("wandb")
    if wandb is not None:
        one_of(wandb, "logger.wandb", "mode", WANDB_MODES)
        int_at_least(wandb, "logger.wandb", "media_every", 0)
        int_at_least(wandb, "logger.wandb", "media_channels", 1)
        _check_wandb_kwargs(wandb.get("kwargs"))


# wandb.init's keywords that logger.wandb's own keys (or the run folder) set
WANDB_SET_BY = {
    "project": "logger.wandb.project",
    "mode": "logger.wandb.mode",
    "name": "logger.wandb.name",
    "id": "logger.wandb.run_id",
    "dir": "the run folder",
    "config": "the run's config",
    "resume": "a resumed run (resume='allow')",
}


def _check_wandb_kwargs(kwargs: Any) -> None:
    """``logger.wandb.kwargs`` are keywords of ``wandb.init`` (entity, group, tags, notes...)
    that no other key sets."""
    if not kwargs:
        return
    if not hasattr(kwargs, "items"):
        fail("logger.wandb.kwargs", kwargs, "expected a mapping of wandb.init keyword: value")
    import inspect

    import wandb

    known = [k for k in inspect.signature(wandb.init).parameters if k not in WANDB_SET_BY]
    for key, value in kwargs.items():
        if key in WANDB_SET_BY:
            fail(f"logger.wandb.kwargs.{key}", value, f"{WANDB_SET_BY[key]} sets it")
        if key not in known:
            hint = close_matches(key, known) or f"expected one of {', '.join(known)}"
            fail(f"logger.wandb.kwargs.{key}", value, f"not a keyword of wandb.init; {hint}")


def resolve_update_freq(cfg: Any, world_size: int) -> int:
    """Micro-batches per optimizer update: ``trainer.update_freq``, or with
    ``trainer.effective_batch_size`` set, that batch over ``data.batch_size`` x ``world_size``.

    Raises:
        ConfigError: if ``data.batch_size`` x ``world_size`` does not divide the effective batch.
    """
    effective = cfg.trainer.get("effective_batch_size")
    if effective is None:
        return cfg.trainer.update_freq
    per_micro_batch = cfg.data.batch_size * world_size
    if effective % per_micro_batch:
        fail(
            "trainer.effective_batch_size",
            effective,
            f"not a multiple of data.batch_size x processes = {cfg.data.batch_size} x "
            f"{world_size} = {per_micro_batch}; change data.batch_size or the process count",
        )
    return effective // per_micro_batch


def validate_train_config(cfg: Any) -> None:
    """Check the ``train.yaml`` tree ``cfg``; cheap (no model, no data is built).

    Raises:
        ConfigError: on the first invalid value, naming the key, the value and what is allowed.
    """
    seed = cfg.get("seed")
    if not is_int(seed) or not 0 <= seed <= MAX_SEED:
        fail("seed", seed, f"expected an integer in [0, {MAX_SEED}]")
    run_name = cfg.get("run_name")
    parts = run_name.replace("\\", "/").split("/") if isinstance(run_name, str) else [""]
    if any(part.strip() in ("", ".", "..") for part in parts):
        # (the run folder is logs/train/<run_name>: '' wrote into logs/train, '..' into logs)
        fail(
            "run_name", run_name, "expected a folder name (or a/b), with no empty, '.' or '..' part"
        )
    _check_trainer(cfg.trainer)
    _check_data(cfg.data)
    _check_optimizer(cfg.optimizer)
    _check_scheduler(cfg.scheduler, cfg.trainer.epochs)
    _check_model(cfg.model)
    classes = cfg.model.get("num_classes", cfg.data.num_classes)
    if classes != cfg.data.num_classes or not is_int(classes):
        fail(
            "model.num_classes",
            classes,
            f"the data has data.num_classes={cfg.data.num_classes} classes (the model's default "
            f"follows it); expected {cfg.data.num_classes}",
        )
    _check_logger(cfg.get("logger"))
    resume = cfg.resume
    if resume not in ("auto", "never") and not Path(str(resume)).is_file():
        fail("resume", resume, "expected 'auto', 'never' or the path of a checkpoint file")
