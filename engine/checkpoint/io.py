"""Checkpoint files: atomic writes, safe reads (``weights_only=True``), strict weight loading.

Every file the project writes (training checkpoints, position snapshots) goes through
:func:`save_checkpoint`, and every file it reads through :func:`load_checkpoint`.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from engine.errors import InputError

__all__ = [
    "LAST",
    "SAFE_CLASSES",
    "CheckpointMismatchError",
    "CheckpointReadError",
    "UnsafeCheckpointError",
    "latest_checkpoint",
    "load_checkpoint",
    "load_model_state",
    "load_resumable",
    "non_finite_tensors",
    "previous_path",
    "resolve_resume",
    "save_checkpoint",
]

_logger = logging.getLogger(__name__)

LAST = "last.pt"
# Classes a checkpoint may hold besides tensors and plain values: the authors' ConvNeXt-dcls
# training checkpoints store their argparse arguments (timm allows the same class).
SAFE_CLASSES = (argparse.Namespace,)


class CheckpointMismatchError(InputError):
    """A checkpoint's weights do not fit the model; the message lists the differing keys."""


class CheckpointReadError(InputError):
    """A checkpoint file that cannot be read: truncated, damaged, or not a checkpoint."""


class UnsafeCheckpointError(InputError, pickle.UnpicklingError):
    """A checkpoint holding pickled objects that could run code: refused."""


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


def previous_path(path: Path) -> Path:
    """Where :func:`save_checkpoint` keeps the file ``path`` replaced (``last.previous.pt``)."""
    return path.with_suffix(f".previous{path.suffix}")


def save_checkpoint(
    state: dict[str, Any],
    directory: Path,
    name: str = LAST,
    check_finite: bool = True,
    keep_previous: bool = False,
) -> Path:
    """Write ``state`` to ``directory/name`` atomically: temp file, fsync, rename.

    A crash mid-write leaves the previous file intact; readers never see a partial file. A write
    that fails (disk full, an exception in ``torch.save``) removes its temp file and re-raises.
    With ``keep_previous``, the file it replaces is kept as :func:`previous_path` (a damaged
    newest file then still leaves one to resume from).

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
        if keep_previous and path.is_file():
            os.replace(path, previous_path(path))
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
    """The run's latest checkpoint (``last.pt``; its previous one if a crash came between the
    two renames of :func:`save_checkpoint`), or ``None``."""
    path = directory / LAST
    for candidate in (path, previous_path(path)):
        if candidate.is_file():
            return candidate
    return None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint without executing pickled code (``weights_only=True``).

    Raises:
        FileNotFoundError: if there is no file at ``path``.
        UnsafeCheckpointError: if the file holds objects other than tensors, containers, plain
            values and :data:`SAFE_CLASSES` (for instance pickled code); names the file.
        CheckpointReadError: if the file cannot be read (truncated, damaged, not a checkpoint).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no file at {path}")
    try:
        with torch.serialization.safe_globals(list(SAFE_CLASSES)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if refused is None:  # not a refused class: the bytes are not a checkpoint (torch's
            # message would suggest weights_only=False, wrong advice for a damaged file)
            raise CheckpointReadError(_unreadable(path, error, detail=False)) from error
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it holds pickled objects other than tensors and plain "
            f"values, which could run code (loaded with weights_only=True): {refused[1]}"
        ) from error
    except Exception as error:  # garbage bytes raise any of KeyError, EOFError, RuntimeError...
        raise CheckpointReadError(_unreadable(path, error)) from error


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _unreadable(path: Path, error: BaseException, detail: bool = True) -> str:
    cause = f"{type(error).__name__}: {_first_line(error)}" if detail else type(error).__name__
    return (
        f"checkpoint {path} cannot be read: it is truncated, damaged or not a checkpoint ({cause})"
    )


TRAINING_KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "rng")


def load_resumable(path: Path) -> tuple[dict[str, Any], Path]:
    """Load a training checkpoint to resume from; if it cannot be read, its previous one.

    Returns:
        The checkpoint and the path it was read from.

    Raises:
        CheckpointReadError: if neither file is a readable training checkpoint; names both.
    """
    candidates = [Path(path)] + [p for p in [previous_path(Path(path))] if p.is_file()]
    problems = []
    for candidate in candidates:
        try:
            checkpoint = load_checkpoint(candidate)
            missing = [k for k in TRAINING_KEYS if k not in checkpoint]
            if missing:
                raise CheckpointReadError(
                    f"{candidate} is not a training checkpoint of train.py (no {missing})"
                )
        except (CheckpointReadError, FileNotFoundError) as error:
            problems.append(str(error))
            if candidate != candidates[-1]:
                _logger.warning("%s; resuming from %s instead", error, candidates[-1])
            continue
        return checkpoint, candidate
    raise CheckpointReadError("; ".join(problems) + " (start over with resume=never)")


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
            "(was it saved for another model or DCLS setting? train.py's model.model_name, "
            "eval.py's model.name)"
        )
    model.load_state_dict(state_dict)


def resolve_resume(resume: str, checkpoint_dir: Path) -> Path | None:
    """Checkpoint to continue from: ``"auto"`` (the run's latest, if any), ``"never"``, or a path.

    Raises:
        FileNotFoundError: if ``resume`` names a file that does not exist.
    """
    if resume == "never":
        return None
    if resume == "auto":
        return latest_checkpoint(checkpoint_dir)
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(
            f"resume: no checkpoint at {path} (use 'auto', 'never' or a file path)"
        )
    return path
