"""Figures of what a DCLS run learned: kernels and positions, their motion, training curves.

Needs matplotlib (the ``viz`` extra: ``pip install -e ".[viz]"``); importing this module without
it raises an ImportError that says so. Figures are built on ``matplotlib.figure.Figure`` with the
Agg canvas, never through ``pyplot``: no global backend state, no window, safe in training. A
figure of ``size`` inches at ``dpi`` is saved at exactly ``size * dpi`` pixels.

The arrays drawn come from :mod:`engine.pictures.positions` (``SetPicture``,
``PositionHistory``) and the run's ``metrics.csv``, so tests compare them with the checkpoint
without reading pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.pictures.positions import (
    PositionHistory,
    SetPicture,
    grid_coordinates,
)
from engine.training.loggers import read_metrics_csv

INSTALL_HINT = (
    'matplotlib is needed for pictures; install it with: pip install -e ".[viz]" '
    "(or: pip install matplotlib)"
)

try:
    from matplotlib import animation
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator
except ImportError as error:  # the viz extra is optional
    raise ImportError(INSTALL_HINT) from error

__all__ = [
    "INSTALL_HINT",
    "RUN_PANELS",
    "animation_frames",
    "animation_size",
    "kernel_figure",
    "position_histogram",
    "read_metrics",
    "render",
    "run_figure",
    "save_animation",
    "save_figure",
]

# Panels of plot_run: title -> (column, line style); a column a run lacks is left out.
RUN_PANELS: dict[str, list[tuple[str, str]]] = {
    "loss": [("train_loss", "-"), ("val_loss", "--"), ("val_ema_loss", ":")],
    "top-1 (%)": [("train_top1", "-"), ("val_top1", "--"), ("val_ema_top1", ":")],
    "learning rate": [("lr", "-"), ("lr_positions", "--")],
    "positions": [("position_abs_mean", "-"), ("position_at_border", "--")],
}
_LOG_SCALE_PANELS = ("learning rate",)
_TICK_EVERY = 4  # grid cells between axis ticks
_TITLE_TOP = 0.92  # fraction of an animation's height left to the panels below its title
_OUTLINE = {"fill": False, "linestyle": "--", "linewidth": 1.2}
_COUNT_GAMMA = 0.5  # square-root colour scale: far elements stay visible beside a dense centre


def _new_figure(size: Sequence[float], dpi: float) -> Figure:
    if len(size) != 2 or min(size) <= 0 or dpi <= 0:
        raise ValueError(f"figure size must be 2 positive inches and dpi > 0, got {size}, {dpi}")
    fig = Figure(figsize=tuple(size), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def render(fig: Figure) -> np.ndarray:
    """The figure's pixels, shape ``(height, width, 3)``, uint8."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig: Figure, path: Path) -> Path:
    """Save ``fig`` at its own size and dpi (a format from the suffix, e.g. ``.png``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi)
    return path


def position_histogram(points: np.ndarray, sizes: tuple[int, int]) -> np.ndarray:
    """Count of positions per grid cell.

    Shape:
        ``points``: ``(N, 2)`` grid coordinates (row, column); returns ``(S0, S1)``.
    """
    edges = [np.arange(s + 1) - 0.5 for s in sizes]
    counts, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=edges)
    return counts


def _outline(ax, sizes: tuple[int, int], dense_size: int | None, color: str) -> None:
    if dense_size is None:
        return
    corner = [s // 2 - dense_size // 2 - 0.5 for s in sizes]  # (row, column) of the top left
    ax.add_patch(Rectangle((corner[1], corner[0]), dense_size, dense_size, color=color, **_OUTLINE))


def _grid_ticks(ax, sizes: tuple[int, int]) -> None:
    ax.set_yticks(range(0, sizes[0], _TICK_EVERY))
    ax.set_xticks(range(0, sizes[1], _TICK_EVERY))


def kernel_figure(
    picture: SetPicture, size: Sequence[float] = (12.0, 5.0), dpi: float = 100
) -> Figure:
    """Left: the sampled channels' constructed kernels; right: every position of the set as a
    2-D histogram over the dilated grid. The dense kernel size is outlined on both."""
    fig = _new_figure(size, dpi)
    outer = fig.add_gridspec(1, 2, width_ratios=(1.4, 1.0), wspace=0.15)
    count = len(picture.channels)
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    grid = outer[0].subgridspec(rows, cols, wspace=0.05, hspace=0.25)
    for i, (channel, kernel) in enumerate(zip(picture.channels, picture.kernels, strict=True)):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        limit = float(np.abs(kernel).max()) or 1.0
        ax.imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        _outline(ax, picture.sizes, picture.dense_size, "black")
        ax.set_title(f"channel {channel}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(outer[1])
    counts = position_histogram(picture.points, picture.sizes)
    norm = PowerNorm(_COUNT_GAMMA, vmin=0, vmax=max(counts.max(), 1))
    image = ax.imshow(counts, cmap="viridis", norm=norm, interpolation="nearest")
    _outline(ax, picture.sizes, picture.dense_size, "white")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="elements per cell")
    ax.set_title(f"{len(picture.points)} positions, {picture.sizes[0]}x{picture.sizes[1]} grid")
    _grid_ticks(ax, picture.sizes)
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    dense = (
        f", dense {picture.dense_size}x{picture.dense_size} dashed" if picture.dense_size else ""
    )
    fig.suptitle(f"{picture.name}: kernels of {picture.layer}{dense}")
    return fig


def animation_frames(history: PositionHistory, max_points: int = 2000) -> dict[str, np.ndarray]:
    """Per 2-D set, the points drawn in each frame: ``(T, n, 2)`` grid coordinates (row,
    column) of the same ``n <= max_points`` elements (evenly spaced) in every snapshot."""
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    frames = {}
    for name, P in history.P.items():
        sizes = history.sizes[name]
        if len(sizes) != 2:
            continue
        points = np.stack([grid_coordinates(p, sizes) for p in P])  # (T, N, 2)
        keep = np.unique(np.linspace(0, points.shape[1] - 1, max_points).round().astype(int))
        frames[name] = points[:, keep]
    if not frames:
        raise InputError("the history has no position set with 2 learnable axes to animate")
    return frames


def animation_size(sets: int, panel: float = 3.0, columns: int = 4) -> tuple[float, float]:
    """Figure size in inches of an animation with ``sets`` panels of ``panel`` inches."""
    cols = min(sets, columns)
    return cols * panel, math.ceil(sets / cols) * panel


def save_animation(
    history: PositionHistory,
    path: Path,
    fps: float = 4,
    dpi: float = 100,
    panel: float = 3.0,
    max_points: int = 2000,
) -> Path:
    """Write the positions' motion over the snapshots to ``path`` (``.gif``, or ``.mp4`` when
    ffmpeg is on the PATH), one frame per snapshot, one panel per 2-D position set.

    Raises:
        InputError: on another suffix, or ``.mp4`` without ffmpeg.
    """
    path = Path(path)
    if path.suffix == ".gif":
        writer = animation.PillowWriter(fps=fps)
    elif path.suffix == ".mp4":
        if not animation.writers.is_available("ffmpeg"):
            raise InputError(f"{path}: .mp4 needs ffmpeg on the PATH; write a .gif instead")
        writer = animation.FFMpegWriter(fps=fps)
    else:
        raise InputError(f"animation file must end in .gif or .mp4, got {path.name!r}")
    frames = animation_frames(history, max_points)
    fig = _new_figure(animation_size(len(frames), panel), dpi)
    cols = min(len(frames), 4)
    scatters = []
    for i, (name, points) in enumerate(frames.items()):
        sizes = history.sizes[name]
        ax = fig.add_subplot(math.ceil(len(frames) / cols), cols, i + 1)
        scatters.append(ax.scatter(points[0, :, 1], points[0, :, 0], s=3, alpha=0.4, lw=0))
        ax.set_xlim(-0.5, sizes[1] - 0.5)
        ax.set_ylim(sizes[0] - 0.5, -0.5)  # rows downwards, as in the kernel pictures
        ax.set_aspect("equal")
        _outline(ax, sizes, history.dense_sizes[name], "black")
        _grid_ticks(ax, sizes)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
    title = fig.suptitle(f"epoch {history.epochs[0]}")
    fig.tight_layout(rect=(0, 0, 1, _TITLE_TOP))
    path.parent.mkdir(parents=True, exist_ok=True)
    with writer.saving(fig, str(path), dpi):
        for t, epoch in enumerate(history.epochs):
            for scatter, points in zip(scatters, frames.values(), strict=True):
                scatter.set_offsets(points[t][:, ::-1])
            title.set_text(f"epoch {epoch}")
            writer.grab_frame()
    return path


def read_metrics(run_dir: Path) -> dict[str, np.ndarray]:
    """Columns of ``run_dir/metrics.csv`` as float arrays (NaN where a row has no value).

    Raises:
        FileNotFoundError: if there is no such folder, or the run has no ``metrics.csv``
            (train with ``logger=csv``).
    """
    path = Path(run_dir) / "metrics.csv"
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"no run folder at {run_dir}")
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.csv in {run_dir} (train with logger=csv)")
    rows = read_metrics_csv(path)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return {c: np.array([r.get(c, np.nan) for r in rows], dtype=float) for c in columns}


def run_figure(
    runs: dict[str, dict[str, np.ndarray]], size: Sequence[float] = (12.0, 8.0), dpi: float = 100
) -> Figure:
    """Training curves of one or more runs against the epoch: one panel per :data:`RUN_PANELS`
    entry, one colour per run, one line style per column; lines are labelled ``run: column``."""
    fig = _new_figure(size, dpi)
    axes = fig.subplots(2, 2).ravel()
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for ax, (title, columns) in zip(axes, RUN_PANELS.items(), strict=True):
        for color, (run, metrics) in zip(colors, runs.items(), strict=True):
            x = metrics.get("epoch", np.arange(1, len(next(iter(metrics.values()), [])) + 1))
            for column, style in columns:
                if column in metrics and np.isfinite(metrics[column]).any():
                    y = metrics[column]
                    single = np.isfinite(y).sum() == 1  # one epoch: a point, not an empty line
                    marker = "o" if single else None
                    ax.plot(x, y, style, color=color, marker=marker, label=f"{run}: {column}")
        if title in _LOG_SCALE_PANELS and ax.lines:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, not 1.25
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
