"""What a DCLS model learned, as plain arrays: position sets, sampled kernels, position history.

No matplotlib here: training imports this module for its per-epoch position history, and the
plotting code (:mod:`engine.pictures.plots`, the ``viz`` extra) draws what these functions return.

A *position set* is one ``P`` tensor: a stage's shared :class:`dcls.DclsPositions` (ConvNeXt-dcls)
or the own ``P`` of one DCLS layer (unshared models such as ResNet-50-dcls). Pictures are made per
set. Coordinates are given on the dilated grid: position ``p`` along an axis of size ``S`` sits at
grid coordinate ``p + S // 2`` (``0`` to ``S - 1``), as in :func:`dcls._utils.position_limits`.

History: every ``trainer.position_history.every`` epochs, the training loop writes one small
file per snapshot, ``<run_dir>/positions/epoch_NNNN.pt`` (epoch 0 = the initialisation). One file
per snapshot is append-only (no rewrite of a growing file each epoch), each written atomically, a
resumed run only rewrites the epochs it repeats, and ``checkpoints/last.pt`` is left as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

import dcls
from engine.checkpoint.io import save_checkpoint
from engine.errors import InputError

__all__ = [
    "HISTORY_DIR",
    "PositionHistory",
    "PositionSnapshot",
    "SetPicture",
    "dense_kernel_size",
    "grid_coordinates",
    "load_history",
    "position_snapshots",
    "save_snapshot",
    "set_pictures",
]

HISTORY_DIR = "positions"
_SNAPSHOT = re.compile(r"epoch_(\d+)\.pt")


@dataclass
class PositionSnapshot:
    """One ``P`` tensor of a model and the DCLS layers that use it, as a CPU copy for pictures
    and snapshots (:func:`dcls.position_sets` yields the parameters themselves).

    Attributes:
        name: the owner's module name (``stages.0.dcls_positions`` or ``layer1.0.conv2``).
        P: positions, shape ``(L, out_channels, in_channels // groups, kernel_count)``, relative
            to the kernel centre, on the CPU.
        sizes: grid size of each of the ``L`` learnable axes.
        layers: names of the DCLS layers using ``P``, in model order.
    """

    name: str
    P: torch.Tensor
    sizes: tuple[int, ...]
    layers: list[str] = field(default_factory=list)


def position_snapshots(model: nn.Module) -> list[PositionSnapshot]:
    """Every position set of ``model`` (:func:`dcls.position_sets`) as CPU float copies, in
    model order (empty if it has no DCLS layer)."""
    return [
        PositionSnapshot(s.name, s.P.detach().float().cpu(), tuple(s.sizes), list(s.layers))
        for s in dcls.position_sets(model)
    ]


def grid_coordinates(P: torch.Tensor, sizes: tuple[int, ...]) -> np.ndarray:
    """Positions as points on the dilated grid.

    Shape:
        ``P``: ``(L, ...)``; returns ``(N, L)`` with ``N`` the number of elements of ``P[0]``.
    """
    centres = torch.tensor([s // 2 for s in sizes], dtype=torch.float32)
    return (P.detach().float().cpu().reshape(len(sizes), -1).T + centres).numpy()


def dense_kernel_size(layer: nn.Module) -> int | None:
    """Size of the square dense kernel ``layer`` replaced (``replaced_kernel_size``, recorded by
    :func:`dcls.convert`: 7 for ConvNeXt's depthwise convs, 3 for ResNet's), or ``None`` for a
    layer built otherwise or a kernel that is not square."""
    sizes = set(getattr(layer, "replaced_kernel_size", None) or ())
    return sizes.pop() if len(sizes) == 1 else None


@dataclass
class SetPicture:
    """The arrays one picture of a 2-D position set shows.

    Attributes:
        name: the set's name.
        layer: the layer whose kernels are shown (the first one using the set).
        channels: the output channels shown, shape ``(n,)``.
        kernels: constructed kernels ``layer.construct_kernel()[channels, 0]``, ``(n, S0, S1)``
            (along the learnable axes; a dense axis, as in a ``Dcls3d`` learning two of its
            three, at its centre tap).
        points: every position of the set on the grid, ``(N, 2)`` as (row, column).
        sizes: the dilated grid ``(S0, S1)``.
        dense_size: the dense kernel size to outline, or ``None``.
    """

    name: str
    layer: str
    channels: np.ndarray
    kernels: np.ndarray
    points: np.ndarray
    sizes: tuple[int, int]
    dense_size: int | None


def _sample_channels(count: int, available: int) -> np.ndarray:
    """``count`` evenly spaced channel indices out of ``available`` (all if fewer)."""
    return np.unique(np.linspace(0, available - 1, min(count, available)).round().astype(int))


def _learnable_plane(kernels: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """The kernels along the layer's learnable axes, at the centre tap of every other axis.

    Shape:
        ``kernels``: ``(n, *dilated_kernel_size)``; returns ``(n, S_0, S_1)`` for the two
        learnable axes (a ``Dcls3d`` with ``learnable_dims=(1, 2)`` gives its middle depth slice).
    """
    index = [slice(None)] + [
        slice(None) if axis in layer.learnable_dims else size // 2
        for axis, size in enumerate(kernels.shape[1:])
    ]
    return kernels[tuple(index)]


@torch.no_grad()
def set_pictures(
    model: nn.Module, channels: int = 8, dense_size: int | None = None
) -> list[SetPicture]:
    """The arrays to draw for every 2-D position set of ``model``.

    Args:
        model: a model with DCLS layers learning positions along 2 axes (``Dcls2d``, or
            ``Dcls3d`` with two ``learnable_dims``).
        channels: output channels whose kernels are shown, evenly spaced over the layer.
        dense_size: dense kernel size to outline; ``None``: the one the layer replaced
            (:func:`dense_kernel_size`).

    Raises:
        ValueError: if ``channels < 1`` or the model has no DCLS layer with 2 learnable axes.
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    modules = dict(model.named_modules())
    pictures = []
    for pset in position_snapshots(model):
        if len(pset.sizes) != 2 or not pset.layers:
            continue
        layer = modules[pset.layers[0]]
        chosen = _sample_channels(channels, layer.out_channels)
        outline = dense_size if dense_size is not None else dense_kernel_size(layer)
        kernels = _learnable_plane(layer.construct_kernel()[torch.as_tensor(chosen), 0], layer)
        pictures.append(
            SetPicture(
                name=pset.name,
                layer=pset.layers[0],
                channels=chosen,
                kernels=kernels.float().cpu().numpy(),
                points=grid_coordinates(pset.P, pset.sizes),
                sizes=(pset.sizes[0], pset.sizes[1]),
                dense_size=outline,
            )
        )
    if not pictures:
        raise InputError("the model has no DCLS layer with 2 learnable axes to draw")
    return pictures


def save_snapshot(
    model: nn.Module, run_dir: Path, epoch: int, max_out_channels: int | None = None
) -> Path:
    """Write the positions of every set of ``model`` to ``run_dir/positions/epoch_NNNN.pt``.

    Args:
        max_out_channels: keep only the first output channels of each set (bounds the size of
            unshared models' sets); ``None`` keeps all.
    """
    if max_out_channels is not None and max_out_channels < 1:
        raise ValueError(f"max_out_channels must be >= 1 or null, got {max_out_channels}")
    modules = dict(model.named_modules())
    sets = {
        s.name: {
            "P": s.P[:, :max_out_channels].clone(),
            "sizes": list(s.sizes),
            "layers": s.layers,
            "dense_size": dense_kernel_size(modules[s.layers[0]]) if s.layers else None,
        }
        for s in position_snapshots(model)
    }
    state = {"epoch": epoch, "sets": sets}
    return save_checkpoint(state, Path(run_dir) / HISTORY_DIR, f"epoch_{epoch:04d}.pt")


@dataclass
class PositionHistory:
    """Positions of a run over time.

    Attributes:
        epochs: the snapshot epochs, ascending (0 = the initialisation).
        P: per set, positions stacked over snapshots, ``(T, L, out_channels, in/groups, K)``.
        sizes: per set, the grid size of each learnable axis.
        layers: per set, the DCLS layers using it.
        dense_sizes: per set, the dense kernel size its layers replaced (:func:`dense_kernel_size`;
            ``None`` if unknown, as in snapshots written before it was recorded).
    """

    epochs: list[int]
    P: dict[str, torch.Tensor]
    sizes: dict[str, tuple[int, ...]]
    layers: dict[str, list[str]]
    dense_sizes: dict[str, int | None]


# Snapshots written before the dense size was stored: ConvNeXt-dcls's depthwise 7x7 (``conv_dw``)
# and ResNet-dcls's Bottleneck 3x3 (``conv2``), the only models that wrote them.
_LEGACY_DENSE_SIZES = {"conv_dw": 7, "conv2": 3}


def _dense_size_of(snapshot_set: dict) -> int | None:
    if "dense_size" in snapshot_set:
        return snapshot_set["dense_size"]
    layer = next(iter(snapshot_set.get("layers") or []), "")
    return _LEGACY_DENSE_SIZES.get(layer.rsplit(".", 1)[-1])


def load_history(run_dir: Path) -> PositionHistory:
    """Read the snapshots :func:`save_snapshot` wrote for the run in ``run_dir``.

    Raises:
        FileNotFoundError: if there is no such folder, or the run has no snapshot (no DCLS
            layer, or ``trainer.position_history.every=0``).
    """
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"no run folder at {run_dir}")
    folder = Path(run_dir) / HISTORY_DIR
    files = sorted(
        (int(m.group(1)), p)
        for p in (folder.iterdir() if folder.is_dir() else [])
        if (m := _SNAPSHOT.fullmatch(p.name))
    )
    if not files:
        raise FileNotFoundError(
            f"no position snapshots in {folder}: the run's model has no DCLS layer, or it "
            "trained with trainer.position_history.every=0 (snapshots need >= 1)"
        )
    snapshots = [torch.load(p, map_location="cpu", weights_only=True) for _, p in files]
    names = list(snapshots[0]["sets"])
    return PositionHistory(
        epochs=[epoch for epoch, _ in files],
        P={n: torch.stack([s["sets"][n]["P"] for s in snapshots]) for n in names},
        sizes={n: tuple(snapshots[0]["sets"][n]["sizes"]) for n in names},
        layers={n: list(snapshots[0]["sets"][n].get("layers", [n])) for n in names},
        dense_sizes={n: _dense_size_of(snapshots[0]["sets"][n]) for n in names},
    )
