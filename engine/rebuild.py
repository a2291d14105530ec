"""Rebuild a trained model from a ``train.py`` checkpoint, as ``train.py`` built it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

import models  # noqa: F401  (registers the DCLS variants with timm)
from engine.checkpoint import load_checkpoint

__all__ = ["model_from_checkpoint"]

_EMA_PREFIX = "module."  # timm's ModelEmaV3 holds the averaged copy as ``module``


def model_from_checkpoint(path: Path, ema: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The model of checkpoint ``path`` (``instantiate(cfg.model)``, weights loaded, eval mode).

    Args:
        path: a checkpoint written by ``train.py`` (``<run_dir>/checkpoints/last.pt``).
        ema: load the EMA weights instead of the model's.

    Returns:
        ``(model, checkpoint)``: the model on the CPU, and the loaded checkpoint dict.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the checkpoint has no config, or no EMA weights when ``ema`` is asked.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict) or "config" not in checkpoint:
        raise ValueError(f"{path} is not a train.py checkpoint (it has no 'config' entry)")
    model = instantiate(OmegaConf.create(checkpoint["config"]).model)
    weights = checkpoint["model"]
    if ema:
        if checkpoint.get("ema") is None:
            raise ValueError(f"{path} has no EMA weights (the run had trainer.ema.enabled=false)")
        weights = {k.removeprefix(_EMA_PREFIX): v for k, v in checkpoint["ema"].items()}
    model.load_state_dict(weights)
    return model.eval(), checkpoint
