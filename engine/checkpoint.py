"""Atomic checkpoints that hold everything a resumed run needs to continue the same trajectory."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "capture_rng",
    "latest_checkpoint",
    "load_checkpoint",
    "resolve_resume",
    "restore_rng",
    "restore_training",
    "save_checkpoint",
    "training_state",
]

_logger = logging.getLogger(__name__)

LAST = "last.pt"


def save_checkpoint(state: dict[str, Any], directory: Path, name: str = LAST) -> Path:
    """Write ``state`` to ``directory/name`` atomically: temp file, fsync, rename.

    A crash mid-write leaves the previous file intact; readers never see a partial file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = directory / f".{name}.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
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
    """Load a checkpoint without executing pickled code (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


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
        "rng": capture_rng(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def restore_training(state: Any, model: torch.nn.Module, checkpoint: dict[str, Any]) -> None:
    """Load a :func:`training_state` checkpoint into ``model`` and ``state`` (in place)."""
    model.load_state_dict(checkpoint["model"])
    if state.ema is not None and checkpoint.get("ema") is not None:
        state.ema.load_state_dict(checkpoint["ema"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.scheduler.load_state_dict(checkpoint["scheduler"])
    if state.scaler is not None and checkpoint.get("scaler") is not None:
        state.scaler.load_state_dict(checkpoint["scaler"])
    state.epoch, state.step = checkpoint["epoch"], checkpoint["step"]
    state.batch_in_epoch = checkpoint["batch_in_epoch"]
    state.scheduler.step_update(state.step)
    restore_rng(checkpoint["rng"])
