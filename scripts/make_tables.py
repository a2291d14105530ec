"""Turn result files into the paper's tables, as Markdown (and CSV).

    python scripts/make_tables.py logs/eval logs/train/multiruns/DATE [more ...] [--csv OUT_DIR]

Reads every ``eval_results.json`` (``eval.py``'s, and each finished training run's) under the
given folders. Two tables: ImageNet-1k (params, GMACs, inference throughput, top-1) and robustness
(ImageNet-C mCE and error, ImageNet-A, -R, -Sketch, -V2), each metric next to the paper's value.
Results of one row and seed in several files are merged (the newest of each set wins, logged);
several seeds give ``mean ± std (n=...)``. Each DCLS (``_dcls``) or dilated (``_dc``) row follows
its baseline with the difference to it; the throughput ratio is the one measured in the same
run by ``eval.py sets=[throughput]``. See :mod:`engine.evaluation.tables`.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

from engine.config import run_entry_point
from engine.evaluation.tables import (
    TABLE_HEADINGS,
    TABLES,
    load_results,
    markdown,
    numeric_table,
    tables,
)

_logger = logging.getLogger("make_tables")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="eval_results.json files or folders")
    parser.add_argument(
        "--csv",
        type=Path,
        help="also write imagenet.csv and robustness.csv here: one line per model and metric "
        "(mean, std, n, delta to the baseline, paper), numbers only",
    )
    args = parser.parse_args(argv)
    if args.csv is not None and args.csv.exists() and not args.csv.is_dir():
        parser.error(f"--csv must be a folder, got the file {args.csv}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = load_results(args.paths)
    for title, rows in tables(results).items():
        sys.stdout.write(f"\n## {TABLE_HEADINGS[title]}\n\n{markdown(rows)}\n")
        if args.csv is not None:
            args.csv.mkdir(parents=True, exist_ok=True)
            with (args.csv / f"{title}.csv").open("w", newline="") as handle:
                writer = csv.writer(handle)
                for line in numeric_table(results, TABLES[title]):
                    writer.writerow(["" if v is None else v for v in line])
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main, _logger))
