"""One walk over a model's position sets, for every tool that reads or changes positions.

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

from torch import nn

from dcls.conv import DclsPositions, _DclsNd

__all__ = ["PositionSet", "position_sets"]


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
