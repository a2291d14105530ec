"""A model's position sets, and the tools that read or change them.

A *position set* is one ``P`` tensor (with its widths ``SIG``, if any): a shared
:class:`dcls.DclsPositions` (one per ConvNeXt-dcls stage) or the own ``P`` of one DCLS layer
(unshared models such as ResNet-50-dcls). :func:`position_sets` yields each once, with the DCLS
layers that use it; :func:`dcls.param_groups`, :func:`dcls.clamp_`,
:func:`dcls.position_statistics`, :func:`dcls.repulsive_loss` and the sigma helpers all go
through it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import nn

from dcls._utils import position_limits
from dcls.conv import DclsPositions, _DclsNd
from dcls.functional import GAUSS_SIGMA_OFFSET, TRIANGLE_WIDTH_OFFSET, clamp_positions_

__all__ = [
    "REPULSIVE_FORMULAS",
    "PositionSet",
    "clamp_",
    "position_sets",
    "position_statistics",
    "repulsive_loss",
    "set_sigma_",
    "sigma_parameters",
]


class PositionSet(NamedTuple):
    """One position set of a model.

    Attributes:
        name: the owner's module name: ``stages.0.dcls_positions`` for a shared set,
            ``layer1.0.conv2`` for a layer's own positions.
        P: positions, shape ``(L, out_channels, in_channels // groups, kernel_count)``, relative
            to the kernel centre (the parameter itself, not a copy).
        SIG: widths of the same shape (gauss, triangle), else ``None``.
        sizes: grid size of each of the ``L`` learnable axes.
        version: canonical interpolation name.
        layers: names of the DCLS layers using ``P``, in model order.
        owner: the module holding ``P``: the :class:`DclsPositions` or the layer.
    """

    name: str
    P: nn.Parameter
    SIG: nn.Parameter | None
    sizes: tuple[int, ...]
    version: str
    layers: tuple[str, ...]
    owner: nn.Module


def position_sets(model: nn.Module) -> Iterator[PositionSet]:
    """Every position set of ``model`` once, in model order (none if it has no DCLS layer).

    A shared set is named by the first module path that reaches it, its owner's when the owner
    is registered before the layers (as :func:`dcls.convert` does); a set no layer uses (yet) is
    yielded with no layers.
    """
    owners: dict[int, tuple[str, nn.Module]] = {}
    layers: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        if isinstance(module, DclsPositions):
            owners.setdefault(id(module), (name, module))
            layers.setdefault(id(module), [])
        elif isinstance(module, _DclsNd):
            if module.shared_positions is None:
                owners[id(module)] = (name, module)
                layers[id(module)] = [name]
            else:  # its DclsPositions comes next, under the layer, if not met before
                layers.setdefault(id(module.shared_positions), []).append(name)
    for key, (name, owner) in owners.items():
        sizes = owner.sizes if isinstance(owner, DclsPositions) else owner.learnable_sizes
        yield PositionSet(
            name, owner.P, owner.SIG, tuple(sizes), owner.version, tuple(layers[key]), owner
        )


@torch.no_grad()
def clamp_(model: nn.Module) -> nn.Module:
    """Clamp every position set of ``model`` in place (see :func:`dcls.position_sets`).

    Call after each optimizer step (not after each micro-batch), before any EMA update.
    """
    for entry in position_sets(model):
        clamp_positions_(entry.P, entry.sizes)
    return model


@torch.no_grad()
def position_statistics(model: nn.Module) -> dict[str, float]:
    """Summary of all learned positions of ``model``, for logging.

    Returns:
        ``position_abs_mean``: mean distance of a kernel element from its kernel's centre along
        one axis, in cells; ``position_at_border``: fraction of coordinates on a clamp limit;
        ``position_count``: number of coordinates. Axes of size 1, where a coordinate cannot
        move (always 0, on both limits), are left out. Empty if the model has no DCLS positions
        (or none that can move).
    """
    total, at_border, abs_sum = 0, 0, 0.0
    for entry in position_sets(model):
        for j, size in enumerate(entry.sizes):
            if size == 1:
                continue
            low, high = position_limits(size)
            coords = entry.P[j].float()
            abs_sum += coords.abs().sum().item()
            at_border += ((coords <= low) | (coords >= high)).sum().item()
            total += coords.numel()
    if total == 0:
        return {}
    return {
        "position_abs_mean": abs_sum / total,
        "position_at_border": at_border / total,
        "position_count": float(total),
    }


REPULSIVE_FORMULAS = ("authors", "pairs")


def _close_pair_hinges(P: torch.Tensor, min_distance: float) -> torch.Tensor | None:
    """``relu(min_distance - d)`` for every pair of elements of one kernel, or ``None`` if the
    set has fewer than 2 elements per kernel.

    Shape:
        P: ``(L, out, in // groups, K)``; returns ``(out * in // groups, K * (K - 1) / 2)``.
    """
    flat = P.flatten(1, -2)  # (L, B, K)
    count = flat.shape[-1]
    if count < 2:
        return None
    first, second = torch.triu_indices(count, count, 1, device=P.device)  # no host sync
    diff = flat[..., first] - flat[..., second]  # (L, B, pairs)
    distance = (diff.square().sum(0) + 1e-12).sqrt()  # Euclidean, in cells
    return (min_distance - distance).clamp_min(0)


def repulsive_loss(
    model: nn.Module, min_distance: float = 1.0, formula: str = "authors"
) -> torch.Tensor:
    """Penalty on kernel elements of the same kernel that sit closer than ``min_distance``.

    Pairs are formed within one (output, input) kernel of one position set (each shared set
    once), at Euclidean distance ``d`` in cells; differentiable in the positions. Two elements on
    the same cell waste parameters; this pushes them apart.

    - ``"authors"`` (the paper's, ConvNeXt-dcls ``utils.get_dcls_loss_rep`` and ``engine.py``
      L62-67 at aad45f3): per set, the mean of ``relu(min_distance - d)`` over its kernels and
      their ``K(K-1)/2`` pairs; then the mean over sets, **squared**.
    - ``"pairs"``: the mean over all pairs of all sets of ``relu(min_distance - d) ** 2``, so
      that each close pair's push does not depend on how many other pairs are close.

    Sets with fewer than 2 elements per kernel have no pairs and are left out.

    Args:
        model: any module.
        min_distance: elements closer than this (in cells) repel each other.
        formula: ``"authors"`` or ``"pairs"``.

    Returns:
        A scalar tensor (0 if the model has no DCLS positions with 2 elements or more).

    Raises:
        ValueError: for an unknown ``formula``.
    """
    if formula not in REPULSIVE_FORMULAS:
        raise ValueError(f"formula must be one of {REPULSIVE_FORMULAS}, got {formula!r}")
    hinges = [
        h
        for entry in position_sets(model)
        if (h := _close_pair_hinges(entry.P, min_distance)) is not None
    ]
    if not hinges:
        parameter = next(model.parameters(), None)
        return torch.zeros((), device=None if parameter is None else parameter.device)
    if formula == "authors":
        return torch.stack([h.mean() for h in hinges]).mean().square()
    total = sum(h.square().sum() for h in hinges)
    return total / sum(h.numel() for h in hinges)


@torch.no_grad()
def set_sigma_(model: nn.Module, value: float) -> int:
    """Set every interpolation width of ``model`` to ``value`` (for a sigma schedule).

    ``value`` is the effective width: the Gaussian's standard deviation (``|SIG| + 0.27``) or the
    triangle's half-width (``|SIG| + 1``).

    Returns:
        The number of ``SIG`` tensors set.

    Raises:
        ValueError: if ``value`` is below the interpolation's minimum width.
    """
    offsets = {"gauss": GAUSS_SIGMA_OFFSET, "triangle": TRIANGLE_WIDTH_OFFSET}
    entries = [entry for entry in position_sets(model) if entry.SIG is not None]
    for entry in entries:  # every width checked before any is set
        offset = offsets[entry.version]
        if value < offset:
            raise ValueError(f"sigma must be >= {offset} for {entry.version!r}, got {value}")
    for entry in entries:
        entry.SIG.fill_(value - offsets[entry.version])
    return len(entries)


def sigma_parameters(model: nn.Module) -> list[torch.Tensor]:
    """The ``SIG`` tensors (Gaussian / triangle widths) of ``model``, each once."""
    return [entry.SIG for entry in position_sets(model) if entry.SIG is not None]
