"""Training curves from the ``metrics.csv`` of one or more runs (a sweep on one figure): loss,
top-1 (val, EMA), learning rate and position learning rate, position statistics.

    python scripts/plot_run.py logs/train/RUN [logs/train/OTHER ...] [--out curves.png]

Needs matplotlib: pip install -e ".[viz]".
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine.config import cli_number, run_entry_point

_logger = logging.getLogger("plot_run")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+", help="train.py run folders")
    parser.add_argument("--out", type=Path, help="image file (default: <first run>/curves.png)")
    parser.add_argument(
        "--size",
        type=cli_number(float, 0, strict=True),
        nargs=2,
        default=(12.0, 8.0),
        help="inches",
    )
    parser.add_argument("--dpi", type=cli_number(float, 0, strict=True), default=100)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        from engine.pictures import plots
    except ImportError as error:
        print(error, file=sys.stderr)
        return 2
    names = [d.resolve().name for d in args.run_dirs]
    if len(set(names)) < len(names):  # e.g. multirun jobs 0, 1, ...: use the relative paths
        names = [str(d) for d in args.run_dirs]
    runs = {name: plots.read_metrics(d) for name, d in zip(names, args.run_dirs, strict=True)}
    fig = plots.run_figure(runs, args.size, args.dpi)
    print(plots.save_figure(fig, args.out or args.run_dirs[0] / "curves.png"))
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main, _logger))
