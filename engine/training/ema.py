"""The EMA of the weights: timm's ``ModelEmaV3``, with the authors' averaging of shared DCLS
positions as an option.

The authors' loop (ConvNeXt-dcls, timm 0.3.2's ``ModelEma``) averages the entries of the model's
state dict, where a stage's shared position set appears once in every block that uses it: the set
is averaged once per layer, so its decay is ``decay ** layers`` (0.9999 ** 9 = 0.9991 for stage 2
of ConvNeXt-T). ``ModelEmaV3`` meets every parameter once. ``trainer.ema.shared_positions``
chooses: ``once`` (every parameter at ``decay``) or ``per_layer`` (as the authors').
"""

from __future__ import annotations

import torch
from timm.utils import ModelEmaV3
from torch import nn

import dcls
from engine.config.training import SHARED_POSITION_AVERAGING

__all__ = ["PerLayerPositionEma", "build_ema"]


class PerLayerPositionEma(ModelEmaV3):
    """``ModelEmaV3`` that averages a shared position set (and its widths) once per layer that
    uses it, as the authors' EMA did: ``decay ** layers`` for such a set, ``decay`` elsewhere."""

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        super().update(model, step=step)
        decay = self.get_decay(step)
        sets = zip(dcls.position_sets(self.module), dcls.position_sets(model), strict=True)
        for averaged, current in sets:
            more = len(current.layers) - 1  # the averaging ModelEmaV3 did not do
            if more < 1:
                continue
            weight = 1.0 - decay**more  # ``more`` lerps of weight 1 - decay, in one
            averaged.P.lerp_(current.P, weight)
            if averaged.SIG is not None and current.SIG is not None:
                averaged.SIG.lerp_(current.SIG, weight)


def build_ema(model: nn.Module, decay: float, shared_positions: str = "once") -> ModelEmaV3:
    """The EMA of ``model`` (see the module docstring for ``shared_positions``).

    Raises:
        ValueError: for a ``shared_positions`` not in :data:`SHARED_POSITION_AVERAGING`.
    """
    if shared_positions not in SHARED_POSITION_AVERAGING:
        raise ValueError(
            f"shared_positions={shared_positions!r} is invalid: expected one of "
            f"{', '.join(SHARED_POSITION_AVERAGING)}"
        )
    ema_class = PerLayerPositionEma if shared_positions == "per_layer" else ModelEmaV3
    return ema_class(model, decay=decay)
