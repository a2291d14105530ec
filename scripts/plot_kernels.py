"""Pictures of a trained DCLS model: one PNG per position set (a stage for ConvNeXt-dcls, a layer
for unshared models such as ResNet-50-dcls) with the constructed kernels of a sample of channels
and a 2-D histogram of all the set's positions over the dilated grid, the dense kernel outlined.

    python scripts/plot_kernels.py logs/train/RUN/checkpoints/last.pt --out pictures --channels 8

Needs matplotlib: pip install -e ".[viz]".
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine.checkpoint.io import LAST
from engine.checkpoint.models import load_model
from engine.config import cli_number, run_entry_point
from engine.pictures.positions import set_pictures

_logger = logging.getLogger("plot_kernels")


def plot_kernels(
    checkpoint: Path,
    out: Path,
    channels: int = 8,
    ema: bool = False,
    dense_size: int | None = None,
    size: tuple[float, float] = (12.0, 5.0),
    dpi: float = 100,
) -> list[Path]:
    """Write ``out/kernels_<set>.png`` for every 2-D position set of the checkpoint's model."""
    from engine.pictures import plots  # first: a missing matplotlib is reported before any work

    model = load_model(checkpoint, weights="ema" if ema else "model").model
    paths = []
    for picture in set_pictures(model, channels, dense_size):
        fig = plots.kernel_figure(picture, size, dpi)
        paths.append(plots.save_figure(fig, Path(out) / f"kernels_{picture.name}.png"))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "checkpoint", type=Path, help="a train.py checkpoint (last.pt), or its run folder"
    )
    parser.add_argument("--out", type=Path, help="folder (default: <run folder>/pictures)")
    parser.add_argument("--channels", type=cli_number(), default=8, help="kernels drawn per set")
    parser.add_argument("--ema", action="store_true", help="draw the EMA weights")
    parser.add_argument(
        "--dense-size",
        type=cli_number(),
        help="dense kernel to outline (default: the one each layer replaced, 7 for ConvNeXt)",
    )
    parser.add_argument(
        "--size",
        type=cli_number(float, 0, strict=True),
        nargs=2,
        default=(12.0, 5.0),
        help="inches",
    )
    parser.add_argument("--dpi", type=cli_number(float, 0, strict=True), default=100)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.checkpoint.is_dir():  # a run folder, as the other picture scripts take
        args.checkpoint = args.checkpoint / "checkpoints" / LAST
    out = args.out or args.checkpoint.resolve().parent.parent / "pictures"
    try:
        paths = plot_kernels(
            args.checkpoint, out, args.channels, args.ema, args.dense_size, args.size, args.dpi
        )
    except ImportError as error:
        print(error, file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main, _logger))
