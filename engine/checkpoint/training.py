"""What a training checkpoint holds, and how a run continues from one on the same trajectory.

:func:`training_state` gathers the model, EMA, optimizer, scheduler, scaler, position in the run
(epoch, step, batch of the epoch), every RNG state and the resolved config;
:func:`restore_training` puts them back, also into a run with another world size whose effective
batch is unchanged.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

from engine.checkpoint.io import load_model_state
from engine.distributed import world_size as process_count
from engine.errors import ConfigError

__all__ = ["capture_rng", "restore_rng", "restore_training", "training_state"]

_logger = logging.getLogger(__name__)

# Config keys a resumed run takes from its own config (the schedule, the optimizer, the
# augmentation, where the data lies): a resume that changes one logs it.
_HYPERPARAMETER_KEYS = ("optimizer", "scheduler", "trainer", "data")
# What the run trains and on what: a change is another run, refused on resume (the model but
# how its convolutions are computed; the dataset, its classes and image size).
_RUN_IDENTITY_KEYS = (
    "model",
    "data.kind",
    "data.name",
    "data.num_classes",
    "data.image_size",
    "data.mean",
    "data.std",
    "data.val_fraction",
    "data.split_seed",
    "data.train_size",
    "data.val_size",
)
_IDENTITY_KEYS_FREE = ("model.conv_algorithm",)


def capture_rng() -> dict[str, Any]:
    """Every RNG state the loop consumes: Python's, NumPy's (timm's Mixup), torch's CPU and CUDA.

    Stored as ints and tensors only, so that ``weights_only=True`` loading accepts it.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_rng(seed: int, rank: int, step: int) -> None:
    """Seed every RNG of this process from ``(seed, rank, step)``: independent streams per rank,
    for a rank whose state a checkpoint does not hold (the world grew)."""
    (derived,) = np.random.SeedSequence([seed, rank, step]).generate_state(1)
    random.seed(int(derived))
    np.random.seed(int(derived))
    torch.manual_seed(int(derived))


def training_state(
    state: Any,
    model: torch.nn.Module,
    cfg: Any,
    rng: list[dict[str, Any]] | None = None,
    epoch_totals: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Everything needed to continue ``state`` (a ``TrainState``) on the same trajectory.

    Args:
        rng: every rank's :func:`capture_rng`, indexed by rank (``all_gather_objects``); default:
            this process's only.
        epoch_totals: the unfinished epoch's sums over all ranks
            (``engine.training.loop.epoch_totals``), so that a resumed epoch reports all its
            batches; None between epochs.
    """
    from omegaconf import OmegaConf

    return {
        "model": model.state_dict(),
        "ema": state.ema.state_dict() if state.ema is not None else None,
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
        "epoch": state.epoch,
        "step": state.step,
        "batch_in_epoch": state.batch_in_epoch,
        "epoch_totals": epoch_totals,
        "run_seconds": state.run_seconds(),
        "best_val_top1": state.best_val_top1,
        "best_epoch": state.best_epoch,
        "world_size": process_count(),
        "rng": rng if rng is not None else [capture_rng()],
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def _resume_position(
    checkpoint: dict[str, Any],
    batch_size: int,
    world_size: int,
    update_freq: int,
    effective_batch_size: int | None = None,
) -> int:
    """This run's ``batch_in_epoch`` for a checkpoint taken with another world size.

    The rule: the effective batch (batch_size x world_size x update_freq) must be the one the
    checkpoint was trained with, so the schedule, the updates and the images of an epoch stay the
    same; the images already seen this epoch are then a whole number of this run's updates.
    ``effective_batch_size``: this run's ``trainer.effective_batch_size`` (from which its
    ``update_freq`` follows), named in the error instead of ``update_freq``.
    """
    old_cfg = checkpoint.get("config") or {}
    old_batch = old_cfg.get("data", {}).get("batch_size", batch_size)
    old_trainer = old_cfg.get("trainer", {})
    old_freq = old_trainer.get("update_freq", update_freq)
    old_world = checkpoint.get("world_size", 1)
    old_effective = old_trainer.get("effective_batch_size") or old_batch * old_world * old_freq
    if old_effective != batch_size * world_size * update_freq:
        keep = old_effective / (batch_size * world_size)
        if effective_batch_size is not None:
            key, hint = "effective_batch_size", f"set trainer.effective_batch_size={old_effective}"
        else:
            key = "update_freq"
            hint = f"set trainer.update_freq={int(keep)}" if keep == int(keep) else "adjust"
        this_run = effective_batch_size if effective_batch_size is not None else update_freq
        raise ConfigError(
            f"trainer.{key}={this_run} is invalid for this resume: the checkpoint's "
            f"effective batch is {old_effective} (data.batch_size={old_batch} x {old_world} "
            f"processes x update_freq={old_effective // (old_batch * old_world)}), this run's "
            f"is {batch_size * world_size * update_freq}; {hint} to keep it"
        )
    return checkpoint["batch_in_epoch"] * old_batch * old_world // (batch_size * world_size)


def _changed_hyperparameters(
    old: dict[str, Any], new: dict[str, Any], keys: tuple[str, ...] = _HYPERPARAMETER_KEYS
) -> list[str]:
    """``"key old -> new"`` for every leaf under ``keys`` that both configs have and that
    differs (a key added to the project after the checkpoint was written is no change)."""

    missing = object()

    def leaves(tree: Any, prefix: str) -> dict[str, Any]:
        if tree is missing:
            return {}
        if not isinstance(tree, dict):
            return {prefix: tree}
        return {
            k: v for key, sub in tree.items() for k, v in leaves(sub, f"{prefix}.{key}").items()
        }

    def select(cfg: Any, dotted: str) -> Any:
        for part in dotted.split("."):
            cfg = cfg.get(part, missing) if isinstance(cfg, dict) else missing
        return cfg

    changes = []
    for key in keys:
        before, after = leaves(select(old, key), key), leaves(select(new, key), key)
        changes += [
            f"{k} {before[k]} -> {after[k]}"
            for k in sorted(before.keys() & after.keys())
            if before[k] != after[k]
        ]
    return changes


def _check_same_run(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint of another model or other data (the experiments' fixed run
    names would otherwise continue a smoke run's checkpoint in the real run)."""
    changes = [
        change
        for change in _changed_hyperparameters(old, new, _RUN_IDENTITY_KEYS)
        if not change.split(" ", 1)[0].startswith(_IDENTITY_KEYS_FREE)
    ]
    if not old or not changes:
        return
    shown = "; ".join(changes[:5]) + (f"; ... ({len(changes)} in all)" if len(changes) > 5 else "")
    raise ConfigError(
        f"the checkpoint this run resumes (run_name={new.get('run_name')!r}) was trained with "
        f"other model or data settings ({shown}); run it in another folder (another "
        "run_name=..., or another hydra.sweep.dir in a multirun), or start that run over with "
        "resume=never"
    )


def _load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """The checkpoint's optimizer state (moments, step counts) under this run's per-group
    hyperparameters (``load_state_dict`` would bring back the checkpoint's)."""
    settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, own in zip(optimizer.param_groups, settings, strict=True):
        group.update(own)


def _restore_rng_of_rank(
    saved: dict[str, Any] | list[dict[str, Any]], rank: int, seed: int, step: int
) -> None:
    """This rank's saved RNG states; a rank the checkpoint has none for (a larger world than the
    checkpoint's) gets fresh streams from ``(seed, rank, step)``."""
    states = saved if isinstance(saved, list) else [saved]  # one dict: an older checkpoint
    if rank < len(states):
        restore_rng(states[rank])
    else:
        _seed_rng(seed, rank, step)


def restore_training(
    state: Any,
    model: torch.nn.Module,
    checkpoint: dict[str, Any],
    batch_size: int | None = None,
    world_size: int = 1,
    *,
    rank: int = 0,
    seed: int = 0,
    config: dict[str, Any] | None = None,
) -> None:
    """Load a :func:`training_state` checkpoint into ``model`` and ``state`` (in place).

    The schedule and the optimizer's hyperparameters stay the ones ``state`` was built with
    (this run's config); the optimizer's moments, the position in the run, the EMA, the scaler
    and this rank's RNG states come from the checkpoint.

    Args:
        batch_size, world_size: this run's per-process batch and process count; given, a
            checkpoint from another world size resumes at the same image of the epoch (see
            ``_resume_position``: the effective batch must be unchanged).
        rank, seed: this process's rank, and the run's seed for a rank the checkpoint holds no
            RNG states for.
        config: this run's resolved config, to log the hyperparameters that changed.

    Raises:
        CheckpointMismatchError: if the weights do not fit ``model``.
        ConfigError: if the effective batch differs from the checkpoint's.
    """
    if config is not None:
        _check_same_run(checkpoint.get("config") or {}, config)
    load_model_state(model, checkpoint["model"])
    if state.ema is not None and checkpoint.get("ema") is not None:
        state.ema.load_state_dict(checkpoint["ema"])
    _load_optimizer_state(state.optimizer, checkpoint["optimizer"])
    if config is not None:
        changes = _changed_hyperparameters(checkpoint.get("config") or {}, config)
        if changes:
            _logger.warning(
                "resuming with changed hyperparameters, which this run's config sets: %s",
                "; ".join(changes),
            )
    if state.scaler is not None and checkpoint.get("scaler") is not None:
        state.scaler.load_state_dict(checkpoint["scaler"])
    state.epoch, state.step = checkpoint["epoch"], checkpoint["step"]
    state.batch_in_epoch = checkpoint["batch_in_epoch"]
    state.best_val_top1 = checkpoint.get("best_val_top1")
    state.best_epoch = checkpoint.get("best_epoch")
    if batch_size is not None:
        effective = ((config or {}).get("trainer") or {}).get("effective_batch_size")
        state.batch_in_epoch = _resume_position(
            checkpoint, batch_size, world_size, state.update_freq, effective
        )
    state.resume_epoch(checkpoint.get("epoch_totals"), main=rank == 0)
    state.seconds_before = checkpoint.get("run_seconds", 0.0)
    state.scheduler.step_update(state.step)
    _restore_rng_of_rank(checkpoint["rng"], rank, seed, state.step)
