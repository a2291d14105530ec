"""Checkpoints: file I/O (:mod:`.io`), training state (:mod:`.training`), and models rebuilt
from any checkpoint a user brings (:mod:`.models`)."""

from engine.checkpoint.io import (
    LAST,
    CheckpointMismatchError,
    CheckpointReadError,
    UnsafeCheckpointError,
    latest_checkpoint,
    load_checkpoint,
    load_model_state,
    load_resumable,
    non_finite_tensors,
    resolve_resume,
    save_checkpoint,
)
from engine.checkpoint.models import LoadedModel, load_model, load_state_dict_checked
from engine.checkpoint.training import (
    capture_rng,
    restore_rng,
    restore_training,
    training_state,
)

__all__ = [
    "LAST",
    "CheckpointMismatchError",
    "CheckpointReadError",
    "LoadedModel",
    "UnsafeCheckpointError",
    "capture_rng",
    "latest_checkpoint",
    "load_checkpoint",
    "load_model",
    "load_model_state",
    "load_resumable",
    "load_state_dict_checked",
    "non_finite_tensors",
    "resolve_resume",
    "restore_rng",
    "restore_training",
    "save_checkpoint",
    "training_state",
]
