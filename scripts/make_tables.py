"""Turn ``eval.py`` result files into the paper's tables, as Markdown (and CSV).

    python scripts/make_tables.py logs/eval [more files or folders ...] [--csv OUT_DIR]

Two tables: ImageNet-1k (params, GMACs, inference throughput, top-1) and robustness (ImageNet-C
mCE, ImageNet-A, -R, -Sketch, and -V2 when measured). Each DCLS (``_dcls``) or dilated (``_dc``)
row follows its baseline (the same name without the suffix) with the difference to it; the
throughput ratio, and the baseline's images/s next to it, are the ones measured in the same run
by ``eval.py sets=[throughput]`` (images/s of different runs are not comparable). A
result's row name is its ``name`` (``eval.py name=...``, default the model name).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine.evaluation import baseline_name

_logger = logging.getLogger("make_tables")

RESULTS_FILE = "eval_results.json"

Column = tuple[str, Callable[[dict], float | None], int, bool]  # title, getter, digits, delta


def _get(*keys: str) -> Callable[[dict], float | None]:
    def getter(result: dict) -> float | None:
        value: Any = result
        for key in keys:
            if not isinstance(value, dict) or value.get(key) is None:
                return None
            value = value[key]
        return value

    return getter


IMAGENET_COLUMNS: list[Column] = [
    ("params (M)", lambda r: r["params"] / 1e6, 1, False),
    ("GMACs", _get("gmacs"), 2, False),
    ("inference img/s", _get("sets", "throughput", "images_per_s", "inference"), 1, False),
    (
        "baseline img/s (same run)",
        _get("sets", "throughput", "baseline_images_per_s", "inference"),
        1,
        False,
    ),
    ("time vs baseline", _get("sets", "throughput", "ratio", "inference"), 2, False),
    ("top-1", _get("sets", "in1k", "top1"), 2, True),
]
ROBUSTNESS_COLUMNS: list[Column] = [
    ("IN-C mCE (lower is better)", _get("sets", "in_c", "mce"), 2, True),
    ("IN-A", _get("sets", "in_a", "top1"), 2, True),
    ("IN-R", _get("sets", "in_r", "top1"), 2, True),
    ("IN-Sketch", _get("sets", "in_sketch", "top1"), 2, True),
    ("IN-V2", _get("sets", "in_v2", "top1"), 2, True),
]


def load_results(paths: Sequence[str | Path]) -> dict[str, dict]:
    """``{row name: result}`` from result files and folders searched for ``eval_results.json``
    (a later file with the same name replaces an earlier one)."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(path.rglob(RESULTS_FILE))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no result file or folder at {path}")
    results: dict[str, dict] = {}
    for file in files:
        result = json.loads(file.read_text())
        if result["name"] in results:
            _logger.warning("%s replaces an earlier result named %s", file, result["name"])
        results[result["name"]] = result
    if not results:
        raise FileNotFoundError(f"no {RESULTS_FILE} under {[str(p) for p in paths]}")
    return results


def ordered_rows(results: dict[str, dict]) -> list[tuple[str, str | None]]:
    """``(name, baseline name or None)`` with each variant right after its baseline."""
    variants: dict[str, list[str]] = {}
    roots = []
    for name in sorted(results):
        baseline = baseline_name(name, "auto")
        if baseline is not None and baseline in results:
            variants.setdefault(baseline, []).append(name)
        else:
            roots.append(name)
    rows: list[tuple[str, str | None]] = []
    for name in roots:
        rows.append((name, None))
        rows += [(variant, name) for variant in variants.get(name, [])]
    return rows


def table(results: dict[str, dict], columns: list[Column]) -> list[list[str]]:
    """Header and rows of strings; a delta column follows every column marked for one."""
    used = [c for c in columns if any(c[1](r) is not None for r in results.values())]
    header = ["model"]
    for title, _, _, delta in used:
        header += [title, f"Δ {title.split(' (')[0]}"] if delta else [title]
    rows = [header]
    for name, baseline in ordered_rows(results):
        row = [name]
        for _, getter, digits, delta in used:
            value = getter(results[name])
            row.append("-" if value is None else _number(value, digits))
            if delta:
                reference = getter(results[baseline]) if baseline else None
                missing = value is None or reference is None
                row.append("" if missing else f"{value - reference:+.{digits}f}")
        rows.append(row)
    return rows


def _number(value: float, digits: int) -> str:
    """``digits`` decimals, or 3 significant digits for small values (a tiny model's GMACs)."""
    return f"{value:.3g}" if 0 < abs(value) < 0.1 else f"{value:.{digits}f}"


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows[1:]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="eval_results.json files or folders")
    parser.add_argument("--csv", type=Path, help="also write imagenet.csv, robustness.csv here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = load_results(args.paths)
    tables = {
        "imagenet": table(results, IMAGENET_COLUMNS),
        "robustness": table(results, ROBUSTNESS_COLUMNS),
    }
    for title, rows in tables.items():
        if len(rows[0]) > 1:
            print(f"\n## {title}\n\n{markdown(rows)}")
        if args.csv is not None:
            args.csv.mkdir(parents=True, exist_ok=True)
            with (args.csv / f"{title}.csv").open("w", newline="") as handle:
                csv.writer(handle).writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
