"""Optimizer parameter groups for models with DCLS layers.

Positions (``P``) and widths (``SIG``) get their own groups: no weight decay, and a learning rate
``lr_scale`` times that of the group they come from (5x in the paper). The ``lr_scale`` key is the
one timm's schedulers multiply their value by, and it composes with timm's layer-wise decay: pass
the groups of ``timm.optim.param_groups_layer_decay`` as ``base_groups`` and each position group
inherits its layer's scale times the position scale (positions shared by several layers: the scale
of the first layer using them).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn

from dcls.conv import DclsPositions
from dcls.positions import position_sets

__all__ = ["DCLS_GROUP_KEY", "describe_param_groups", "param_groups"]

DCLS_GROUP_KEY = "dcls"  # marks the position and width groups: {"dcls": "positions" | "sigmas"}


def _dcls_tensor_ids(model: nn.Module) -> tuple[set[int], set[int]]:
    positions, sigmas = set(), set()
    for entry in position_sets(model):
        positions.add(id(entry.P))
        if entry.SIG is not None:
            sigmas.add(id(entry.SIG))
    return positions, sigmas


def _default_groups(
    model: nn.Module, weight_decay: float, no_weight_decay_list: Sequence[str]
) -> list[dict[str, Any]]:
    patterns = set(no_weight_decay_list)
    if hasattr(model, "no_weight_decay"):
        patterns |= set(model.no_weight_decay())
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim <= 1 or any(fnmatch.fnmatch(name, p) for p in patterns)
        (no_decay if skip else decay).append(param)
    return [
        {"name": "decay", "params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
    ]


def param_groups(
    model: nn.Module,
    weight_decay: float = 0.05,
    positions_lr_scale: float = 5.0,
    sigmas_lr_scale: float | None = None,
    positions_weight_decay: float = 0.0,
    no_weight_decay_list: Sequence[str] = (),
    base_groups: Iterable[dict[str, Any]] | None = None,
    lr: float | None = None,
) -> list[dict[str, Any]]:
    """Split a model's parameters into decay, no-decay, position and sigma groups.

    Args:
        model: any module holding DCLS layers (or shared :class:`dcls.DclsPositions`).
        weight_decay: decay of the ``decay`` group (ignored with ``base_groups``).
        positions_lr_scale: learning-rate multiplier of positions.
        sigmas_lr_scale: multiplier of widths; default ``positions_lr_scale``.
        positions_weight_decay: weight decay of positions and widths.
        no_weight_decay_list: parameter names (wildcards allowed) kept out of decay, added to the
            model's ``no_weight_decay()``; 0-D and 1-D tensors never decay.
        base_groups: groups to refine instead of the default decay/no-decay split, e.g.
            ``timm.optim.param_groups_layer_decay(model, ...)``; their keys are kept. Shared
            positions (and widths) join the group of the first layer using them, whichever
            group their owner's name fell in.
        lr: base learning rate; when given each group also gets ``lr = lr * lr_scale``, so that
            torch schedulers (which scale each group's initial lr) keep the multipliers too.
            Leave it out with timm's schedulers: they multiply by ``lr_scale`` themselves.

    Returns:
        A list of param-group dicts with ``name``, ``params``, ``weight_decay`` and ``lr_scale``
        (and, for position and width groups, :data:`DCLS_GROUP_KEY`: ``"positions"`` or
        ``"sigmas"``), ready for ``torch.optim`` or ``timm.optim.create_optimizer_v2``; empty
        groups are dropped.
    """
    positions, sigmas = _dcls_tensor_ids(model)
    sigmas_lr_scale = positions_lr_scale if sigmas_lr_scale is None else sigmas_lr_scale
    if base_groups is None:
        base_groups = _default_groups(model, weight_decay, no_weight_decay_list)
    base_groups = list(base_groups)
    homes = _shared_set_homes(model, base_groups)
    parts: list[dict[str, list[nn.Parameter]]] = [
        {"": [], "positions": [], "sigmas": []} for _ in base_groups
    ]
    for index, group in enumerate(base_groups):
        for param in group["params"]:
            kind = (
                "positions" if id(param) in positions else "sigmas" if id(param) in sigmas else ""
            )
            home = homes.get(id(param), index) if kind else index
            parts[home][kind].append(param)
    groups = []
    for index, group in enumerate(base_groups):
        name = group.get("name", f"group_{index}")
        scale = group.get("lr_scale", 1.0)
        for kind, params in parts[index].items():
            if not params:
                continue
            new = {**group, "name": name, "params": params, "lr_scale": scale}
            if kind:
                new["name"] = f"{name}_{kind}"
                new[DCLS_GROUP_KEY] = kind
                new["weight_decay"] = positions_weight_decay
                new["lr_scale"] = scale * (
                    positions_lr_scale if kind == "positions" else sigmas_lr_scale
                )
            if lr is not None:
                new["lr"] = lr * new["lr_scale"]
            groups.append(new)
    return groups


def _shared_set_homes(model: nn.Module, base_groups: Sequence[dict[str, Any]]) -> dict[int, int]:
    """``id`` of each shared ``P`` and ``SIG`` -> the index of the base group holding the weight
    of the first layer using them: a shared set takes that layer's learning-rate scale, wherever
    its owner (``stages.0.dcls_positions``) falls in a layer-wise grouping (timm's group matchers
    do not know the owner's name: it landed in the top group, at the head's scale)."""
    group_of = {id(p): index for index, group in enumerate(base_groups) for p in group["params"]}
    homes = {}
    for entry in position_sets(model):
        if not isinstance(entry.owner, DclsPositions) or not entry.layers:
            continue
        weight = model.get_submodule(entry.layers[0]).weight
        if id(weight) in group_of:
            for tensor in (entry.P, entry.SIG):
                if tensor is not None:
                    homes[id(tensor)] = group_of[id(weight)]
    return homes


def describe_param_groups(model: nn.Module, groups: Sequence[dict[str, Any]]) -> str:
    """JSON text naming, for each group, its settings and the parameter names it holds."""
    names = {id(p): n for n, p in model.named_parameters()}
    described = [
        {
            **{k: v for k, v in g.items() if k != "params"},
            "params": [names.get(id(p), "?") for p in g["params"]],
        }
        for g in groups
    ]
    return json.dumps(described, indent=2)
