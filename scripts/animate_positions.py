"""Animate the DCLS positions of a run across its snapshots (``<run>/positions/epoch_*.pt``,
written every ``trainer.position_history.every`` epochs): one frame per snapshot, one panel per
position set, a GIF (or an MP4 when ffmpeg is on the PATH and the output ends in ``.mp4``).

    python scripts/animate_positions.py logs/train/RUN [--out positions.gif --fps 4]

Needs matplotlib: pip install -e ".[viz]".
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine.config import cli_number, run_entry_point
from engine.pictures.positions import load_history

_logger = logging.getLogger("animate_positions")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a train.py run folder")
    parser.add_argument("--out", type=Path, help="a .gif or .mp4 (default: <run>/positions.gif)")
    parser.add_argument("--fps", type=cli_number(float, 0, strict=True), default=4)
    parser.add_argument("--dpi", type=cli_number(float, 0, strict=True), default=100)
    parser.add_argument(
        "--panel",
        type=cli_number(float, 0, strict=True),
        default=3.0,
        help="inches per position set",
    )
    parser.add_argument(
        "--max-points", type=cli_number(), default=2000, help="elements drawn per set"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        from engine.pictures import plots
    except ImportError as error:
        print(error, file=sys.stderr)
        return 2
    history = load_history(args.run_dir)
    out = args.out or args.run_dir / "positions.gif"
    path = plots.save_animation(history, out, args.fps, args.dpi, args.panel, args.max_points)
    print(f"{path}: {len(history.epochs)} frames (epochs {history.epochs[0]}-{history.epochs[-1]})")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main, _logger))
