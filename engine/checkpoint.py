"""Atomic checkpoints that hold everything a resumed run needs to continue the same trajectory."""

from __future__ import annotations

import logging
import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckpointMismatchError",
    "capture_rng",
    "latest_checkpoint",
    "load_checkpoint",
    "load_model_state",
    "non_finite_tensors",
    "resolve_resume",
    "restore_rng",
    "restore_training",
    "save_checkpoint",
    "training_state",
]

_logger = logging.getLogger(__name__)

LAST = "last.pt"


class CheckpointMismatchError(ValueError):
    """A checkpoint's weights do not fit the model; the message lists the differing keys."""


WEIGHT_KEYS = ("model", "ema")  # the entries of a training checkpoint checked for NaN/inf
LISTED_KEYS = 5  # keys named per kind of mismatch; the rest are counted


def non_finite_tensors(state: dict[str, Any]) -> list[str]:
    """Keys ``"model.<name>"``/``"ema.<name>"`` of floating tensors that hold NaN or inf."""
    bad = []
    for entry in WEIGHT_KEYS:
        for key, value in (state.get(entry) or {}).items():
            floating = torch.is_tensor(value) and value.is_floating_point()
            if floating and not torch.isfinite(value).all():
                bad.append(f"{entry}.{key}")
    return bad


def save_checkpoint(
    state: dict[str, Any], directory: Path, name: str = LAST, check_finite: bool = True
) -> Path:
    """Write ``state`` to ``directory/name`` atomically: temp file, fsync, rename.

    A crash mid-write leaves the previous file intact; readers never see a partial file. A write
    that fails (disk full, an exception in ``torch.save``) removes its temp file and re-raises.

    Raises:
        FloatingPointError: if ``check_finite`` and the ``model``/``ema`` weights hold NaN or inf;
            nothing is written, so the previous good checkpoint survives.
    """
    if check_finite and (bad := non_finite_tensors(state)):
        raise FloatingPointError(
            f"refusing to write {directory / name}: {len(bad)} weight tensors hold NaN/inf "
            f"({', '.join(bad[:LISTED_KEYS])}); the previous checkpoint is kept"
        )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = directory / f".{name}.tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def latest_checkpoint(directory: Path) -> Path | None:
    """The run's latest checkpoint (``last.pt``), or ``None``."""
    path = directory / LAST
    return path if path.is_file() else None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint without executing pickled code (``weights_only=True``).

    Raises:
        pickle.UnpicklingError: if the file holds objects other than tensors, containers and
            plain values (for instance pickled code); the message names the file.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0]
        raise pickle.UnpicklingError(
            f"refusing to load {path}: it holds pickled objects other than tensors and plain "
            f"values, which could run code (loaded with weights_only=True): {first_line}"
        ) from error


def _listed(keys: list[str]) -> str:
    return ", ".join(keys[:LISTED_KEYS]) + (", ..." if len(keys) > LISTED_KEYS else "")


def load_model_state(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """``model.load_state_dict(state_dict)`` with a short report of what does not fit.

    Raises:
        CheckpointMismatchError: on missing, unexpected or differently shaped keys, naming up to
            ``LISTED_KEYS`` of each kind and counting the rest.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and torch.is_tensor(v) and state_dict[k].shape != v.shape
    ]
    problems = [
        f"{len(keys)} {kind} ({_listed(keys)})"
        for kind, keys in (("missing", missing), ("unexpected", unexpected), ("reshaped", shapes))
        if keys
    ]
    if problems:
        raise CheckpointMismatchError(
            f"{source} does not fit {type(model).__name__}: {'; '.join(problems)} "
            "(was it saved for another model.model_name or DCLS setting?)"
        )
    model.load_state_dict(state_dict)


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


def resolve_resume(resume: str, checkpoint_dir: Path) -> Path | None:
    """Checkpoint to continue from: ``"auto"`` (the run's latest, if any), ``"never"``, or a path.

    Raises:
        ValueError: if ``resume`` names a file that does not exist.
    """
    if resume == "never":
        return None
    if resume == "auto":
        return latest_checkpoint(checkpoint_dir)
    path = Path(resume)
    if not path.is_file():
        raise ValueError(f"resume: no checkpoint at {path} (use 'auto', 'never' or a file path)")
    return path


def training_state(state: Any, model: torch.nn.Module, cfg: Any) -> dict[str, Any]:
    """Everything needed to continue ``state`` (a ``TrainState``) on the same trajectory."""
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
        "world_size": _world_size(),
        "rng": capture_rng(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def _world_size() -> int:
    initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_world_size() if initialized else 1


def _resume_position(
    checkpoint: dict[str, Any], batch_size: int, world_size: int, update_freq: int
) -> int:
    """This run's ``batch_in_epoch`` for a checkpoint taken with another world size.

    The rule: the effective batch (batch_size x world_size x update_freq) must be the one the
    checkpoint was trained with, so the schedule, the updates and the images of an epoch stay the
    same; the images already seen this epoch are then a whole number of this run's updates.
    """
    old_cfg = checkpoint.get("config") or {}
    old_batch = old_cfg.get("data", {}).get("batch_size", batch_size)
    old_freq = old_cfg.get("trainer", {}).get("update_freq", update_freq)
    old_world = checkpoint.get("world_size", 1)
    old_effective = old_batch * old_world * old_freq
    if old_effective != batch_size * world_size * update_freq:
        from engine.validation import ConfigError

        keep = old_effective / (batch_size * world_size)
        hint = f"set trainer.update_freq={int(keep)}" if keep == int(keep) else "adjust"
        raise ConfigError(
            f"trainer.update_freq={update_freq} is invalid for this resume: the checkpoint's "
            f"effective batch is {old_effective} (data.batch_size={old_batch} x {old_world} "
            f"processes x update_freq={old_freq}), this run's is "
            f"{batch_size * world_size * update_freq}; {hint} to keep it"
        )
    return checkpoint["batch_in_epoch"] * old_batch * old_world // (batch_size * world_size)


def restore_training(
    state: Any,
    model: torch.nn.Module,
    checkpoint: dict[str, Any],
    batch_size: int | None = None,
    world_size: int = 1,
) -> None:
    """Load a :func:`training_state` checkpoint into ``model`` and ``state`` (in place).

    Args:
        batch_size, world_size: this run's per-process batch and process count; given, a
            checkpoint from another world size resumes at the same image of the epoch (see
            ``_resume_position``: the effective batch must be unchanged).

    Raises:
        CheckpointMismatchError: if the weights do not fit ``model``.
        ConfigError: if the effective batch differs from the checkpoint's.
    """
    load_model_state(model, checkpoint["model"])
    if state.ema is not None and checkpoint.get("ema") is not None:
        state.ema.load_state_dict(checkpoint["ema"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.scheduler.load_state_dict(checkpoint["scheduler"])
    if state.scaler is not None and checkpoint.get("scaler") is not None:
        state.scaler.load_state_dict(checkpoint["scaler"])
    state.epoch, state.step = checkpoint["epoch"], checkpoint["step"]
    state.batch_in_epoch = checkpoint["batch_in_epoch"]
    if batch_size is not None:
        state.batch_in_epoch = _resume_position(
            checkpoint, batch_size, world_size, state.update_freq
        )
    state.scheduler.step_update(state.step)
    restore_rng(checkpoint["rng"])
