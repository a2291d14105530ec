"""Build a model and load weights from any checkpoint a user brings to evaluation.

Three formats are recognised, all read with ``torch.load(weights_only=True)`` (no pickled code
runs):

- ours (``train.py``'s ``last.pt``): ``{"model", "ema", "config", ...}``; the model is rebuilt
  from the stored config, so no model name is needed;
- timm / torchvision style: a bare state dict, or one under ``state_dict`` / ``state_dict_ema``;
- the authors' released ConvNeXt-dcls files: ``{"model": ..., "model_ema": ...}`` in
  facebookresearch/ConvNeXt's key layout; the model family's ``checkpoint_filter_fn`` (the one
  timm applies to pretrained files) converts the keys.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from omegaconf import OmegaConf
from timm.models import clean_state_dict
from torch import nn

import models  # noqa: F401  (registers the DCLS variants)
from engine.checkpoint.io import CheckpointMismatchError, load_checkpoint, load_model_state
from engine.config.entry import instantiate_model, model_label
from engine.config.evaluation import WEIGHTS
from engine.errors import InputError

__all__ = [
    "CheckpointMismatchError",
    "LoadedModel",
    "load_model",
    "load_state_dict_checked",
    "training_data_config",
]

_logger = logging.getLogger(__name__)

EMA_KEYS = ("ema", "model_ema", "state_dict_ema")
MODEL_KEYS = ("model", "state_dict")


@dataclass
class LoadedModel:
    """A model with its weights and where they came from.

    Attributes:
        model: in eval mode, on CPU.
        name: the timm model name (or the class name of a custom ``_target_``).
        model_config: what rebuilds the model: ``{"_target_": ..., ...}`` for ``instantiate``.
        weights: which weights were loaded: ``"ema"``, ``"model"`` or ``"none"``.
        data_config: the evaluation preprocessing the model was trained with (``img_size``,
            ``crop_pct``, ``interpolation``, ``mean``, ``std``; those its training config
            named), empty for checkpoints without a config.
        training_config: the whole training config stored in the checkpoint (``{}`` if none).
        classes: the class folder names of a folder dataset it was trained on, in label order
            (``None``: unknown, or a dataset made in memory).
    """

    model: nn.Module
    name: str
    model_config: dict[str, Any]
    weights: str
    data_config: dict[str, Any] = field(default_factory=dict)
    training_config: dict[str, Any] = field(default_factory=dict)
    classes: list[str] | None = None


def training_data_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The eval-transform keys found in a training config's ``data`` group."""
    data = config.get("data") or {}
    renamed = {"image_size": "img_size"}
    keys = ("image_size", "crop_pct", "interpolation", "mean", "std")
    return {renamed.get(k, k): data[k] for k in keys if data.get(k) is not None}


def _select_state_dict(checkpoint: Mapping[str, Any], weights: str) -> tuple[dict, str]:
    ema = next((checkpoint[k] for k in EMA_KEYS if checkpoint.get(k) is not None), None)
    plain = next((checkpoint[k] for k in MODEL_KEYS if checkpoint.get(k) is not None), None)
    if plain is None and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        plain = dict(checkpoint)  # a bare state dict
    if weights == "ema" and ema is None:
        raise InputError(
            f"weights=ema but the checkpoint has no EMA weights (none of {list(EMA_KEYS)}); "
            "use weights=auto or weights=model"
        )
    if weights in ("auto", "ema") and ema is not None:
        return clean_state_dict(ema), "ema"
    if plain is None:
        raise InputError(
            f"no weights found in the checkpoint: expected one of {list(EMA_KEYS + MODEL_KEYS)} "
            f"or a bare state dict, got keys {sorted(checkpoint)[:10]}"
        )
    return clean_state_dict(plain), "model"


def _family_filter(model_name: str) -> Any:
    """The ``checkpoint_filter_fn`` of the module that registered ``model_name``, if any."""
    if not timm.is_model(model_name):
        return None
    module = sys.modules[timm.models.model_entrypoint(model_name).__module__]
    return getattr(module, "checkpoint_filter_fn", None)


def load_state_dict_checked(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], model_name: str = ""
) -> None:
    """Load ``state_dict`` strictly, converting it with the family's filter if its keys differ.

    Raises:
        CheckpointMismatchError: listing the missing, unexpected and mis-shaped keys.
    """
    expected = model.state_dict()
    fits = set(state_dict) == set(expected) and all(
        state_dict[k].shape == expected[k].shape for k in expected
    )
    if not fits:
        filter_fn = _family_filter(model_name)
        if filter_fn is not None:
            try:
                converted = filter_fn(dict(state_dict), model)
            except (KeyError, RuntimeError):  # not this family's layout either
                converted = None
            if converted is not None and set(converted) == set(expected):
                state_dict = converted
    load_model_state(model, state_dict, f"checkpoint of {model_name or type(model).__name__}")


def load_model(
    path: str | Path,
    model_name: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    weights: str = "auto",
) -> LoadedModel:
    """Rebuild the model a checkpoint belongs to and load its weights (EMA first by default).

    Args:
        path: the checkpoint file.
        model_name: a timm model name; required when the checkpoint carries no config, and
            overrides the stored config when given.
        model_kwargs: extra ``timm.create_model`` arguments (e.g. ``{"version": "v0"}`` for the
            authors' released ConvNeXt-dcls).
        weights: ``"auto"`` (EMA when present), ``"ema"`` or ``"model"``.

    Raises:
        FileNotFoundError, InputError (CheckpointMismatchError, CheckpointReadError, ...): each
            naming the problem.
    """
    if weights not in WEIGHTS:
        raise InputError(f"weights must be one of {list(WEIGHTS)}, got {weights!r}")
    path = Path(path)
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, Mapping):
        raise InputError(f"checkpoint {path}: expected a dict, got {type(checkpoint).__name__}")
    stored = (checkpoint.get("config") or {}).get("model")
    if model_name is None and stored is None:
        raise InputError(
            f"checkpoint {path} carries no model config (not written by train.py): "
            "set model.name=<timm model name>, e.g. model.name=convnext_tiny_dcls"
        )
    if model_name is not None:
        config = {"_target_": "timm.create_model", "model_name": model_name}
    else:
        config = dict(stored)
    config |= dict(model_kwargs or {})
    state_dict, which = _select_state_dict(checkpoint, weights)
    given = dict.fromkeys(model_kwargs or {}, "model.kwargs.")
    model = instantiate_model(OmegaConf.create(config), given)
    name = model_label(config)
    load_state_dict_checked(model, state_dict, name)
    _logger.info("loaded %s weights of %s from %s", which, name, path)
    training_config = dict(checkpoint.get("config") or {})
    data_config = training_data_config(training_config)
    classes = checkpoint.get("classes")
    return LoadedModel(model.eval(), name, config, which, data_config, training_config, classes)
