"""The paper's tables from result files: ImageNet-1k and robustness, seeds aggregated.

Result files are ``eval_results.json``, written by ``eval.py`` and by every finished training run
(``sets.val``: its validation split). Files of one row (``name``) and one ``seed`` are merged: for
each set the newest result wins (by its ``created`` time, else the file's), and every replacement
is logged. Rows with several seeds show ``mean ± std (n=...)`` (sample standard deviation). Each
DCLS (``_dcls``) or dilated (``_dc``) row follows its baseline (the same name without the suffix)
with the difference of the means; the paper's value (:mod:`engine.evaluation.paper`) stands next
to every metric it reports. Sets that no table shows are named in the log.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.evaluation.paper import paper_value
from engine.evaluation.results import RESULTS_FILE, format_number
from engine.evaluation.throughput import baseline_name

__all__ = [
    "IMAGENET_COLUMNS",
    "ROBUSTNESS_COLUMNS",
    "TABLES",
    "TABLE_HEADINGS",
    "Column",
    "load_results",
    "markdown",
    "numeric_table",
    "result_files",
    "table",
    "tables",
]

_logger = logging.getLogger(__name__)


def _get(*keys: str) -> Callable[[dict], float | None]:
    def getter(result: dict) -> float | None:
        value: Any = result
        for key in keys:
            if not isinstance(value, dict) or value.get(key) is None:
                return None
            value = value[key]
        return value

    return getter


def _scaled(getter: Callable[[dict], Any], factor: float) -> Callable[[dict], float | None]:
    def scaled(result: dict) -> float | None:
        value = getter(result)
        return None if value is None else value * factor

    return scaled


def _top1(result: dict) -> float | None:
    """ImageNet-1k top-1 from ``eval.py``, else the training run's validation top-1."""
    sets = result.get("sets", {})
    for name in ("in1k", "val"):
        if (sets.get(name) or {}).get("top1") is not None:
            return sets[name]["top1"]
    return None


@dataclass(frozen=True)
class Column:
    """One measured column of a table.

    Attributes:
        title: the header.
        get: the value of one result file, or ``None``.
        digits: decimals printed.
        delta: a ``Δ`` column follows, the difference to the row's baseline.
        paper: the :data:`~engine.evaluation.paper.PAPER` metric printed next to it, if any.
        sets: the result sets the column reads (sets no column reads are reported).
        spread: print ``± std (n=...)`` over seeds (not for what seeds do not change).
    """

    title: str
    get: Callable[[dict], float | None]
    digits: int
    delta: bool = False
    paper: str | None = None
    sets: tuple[str, ...] = ()
    spread: bool = True


IMAGENET_COLUMNS = [
    Column("params (M)", _scaled(_get("params"), 1e-6), 1, paper="params_m", spread=False),
    Column("GMACs", _get("gmacs"), 2, paper="gmacs", spread=False),
    Column(
        "inference img/s",
        _get("sets", "throughput", "images_per_s", "inference"),
        1,
        paper="throughput",
        sets=("throughput",),
    ),
    Column(
        "baseline img/s (same run)",
        _get("sets", "throughput", "baseline_images_per_s", "inference"),
        1,
        sets=("throughput",),
    ),
    Column(
        "time vs baseline",
        _get("sets", "throughput", "ratio", "inference"),
        2,
        sets=("throughput",),
    ),
    Column("top-1", _top1, 2, delta=True, paper="top1", sets=("in1k", "val")),
    # a training run's best epoch on its validation split (ConvNeXt's "max accuracy")
    Column("best val top-1", _get("sets", "val", "best_top1"), 2, sets=("val",)),
]
ROBUSTNESS_COLUMNS = [
    Column("IN-C mCE (lower is better)", _get("sets", "in_c", "mce"), 2, True, sets=("in_c",)),
    Column("IN-C error", _get("sets", "in_c", "mean_error"), 2, True, sets=("in_c",)),
    Column("IN-A", _get("sets", "in_a", "top1"), 2, True, "in_a", sets=("in_a",)),
    Column("IN-R", _get("sets", "in_r", "top1"), 2, True, "in_r", sets=("in_r",)),
    Column("IN-Sketch", _get("sets", "in_sketch", "top1"), 2, True, "in_sketch", ("in_sketch",)),
    Column("IN-V2", _get("sets", "in_v2", "top1"), 2, True, sets=("in_v2",)),
]
TABLES = {"imagenet": IMAGENET_COLUMNS, "robustness": ROBUSTNESS_COLUMNS}  # names: the CSV files'
# Each table's heading in Markdown: what its top-1 is, so that a digits sweep does not read as
# ImageNet.
TABLE_HEADINGS = {
    "imagenet": "top-1 and cost (the paper's ImageNet-1k table; top-1 on ImageNet-1k val from "
    "eval.py, else on the run's own validation split)",
    "robustness": "robustness (ImageNet-C, -A, -R, -Sketch, -V2)",
}


def result_files(paths: Sequence[str | Path]) -> list[Path]:
    """Result files given directly or found under folders (not in their hidden folders).

    Raises:
        FileNotFoundError: for a path that does not exist, or when no file is found.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():  # (not in hidden folders: a run folder's .earlier/ runs)
            found = sorted(path.rglob(RESULTS_FILE))
            files += [f for f in found if not _hidden(f.relative_to(path))]
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no result file or folder at {path}")
    if not files:
        raise FileNotFoundError(f"no {RESULTS_FILE} under {[str(p) for p in paths]}")
    return files


def _hidden(relative: Path) -> bool:
    """Whether a path lies in a folder whose name starts with a dot."""
    return any(part.startswith(".") for part in relative.parts[:-1])


def _warn_if_other_model(row: str, first: dict, second: dict) -> None:
    """Results of one row should be of one model: a warning when their parameter counts or
    GMACs differ (e.g. an untrained ``checkpoint=null`` throughput run named like a trained
    model, or a run at another image size or dilated kernel size)."""
    differences = [
        f"{first[key]} and {second[key]} {key}"
        for key in ("params", "gmacs")
        if first.get(key) is not None
        and second.get(key) is not None
        and not math.isclose(first[key], second[key], rel_tol=1e-6)
    ]
    if differences:
        _logger.warning(
            "%s: %s and %s are results of different models (%s) in one row; name=... keeps a "
            "run in a row of its own",
            row,
            first["_file"],
            second["_file"],
            ", ".join(differences),
        )


def _measured_otherwise(older: dict, newer: dict, set_name: str) -> list[str]:
    """How two results of one set were measured differently: on other data (a validation
    split), with other weights (EMA or not) or in another precision; ``"data fake -> imagenet"``
    per difference, for what both files record."""
    pairs = {
        "data": (older["sets"][set_name] or {}, newer["sets"][set_name] or {}),
        "weights": (older, newer),
        "amp": (older, newer),
    }
    return [
        f"{key} {before[key]} -> {after[key]}"
        for key, (before, after) in pairs.items()
        if key in before and key in after and before[key] != after[key]
    ]


# What a training run's result holds of a set beyond what an evaluation of one checkpoint does.
TRAINING_ONLY_KEYS = ("best_top1", "best_epoch")


def _merge(older: dict, newer: dict) -> dict:
    """``newer``'s values over ``older``'s; for the sets, per set (logged when one replaces, a
    warning when the two were measured differently), keeping the older set's
    :data:`TRAINING_ONLY_KEYS` that the newer lacks."""
    _warn_if_other_model(newer["name"], older, newer)
    merged = copy.deepcopy(older) | {k: v for k, v in newer.items() if k != "sets"}
    merged["sets"], merged["_sources"] = dict(older["sets"]), dict(older["_sources"])
    for name, result in newer["sets"].items():
        if name in merged["sets"]:
            otherwise = _measured_otherwise(older, newer, name)
            _logger.log(
                logging.WARNING if otherwise else logging.INFO,
                "%s (seed %s): %s of %s replaces the one of %s%s (results of one row name and "
                "seed are merged; name=... keeps a run in a row of its own)",
                newer["name"],
                newer.get("seed"),
                name,
                newer["_file"],
                merged["_sources"][name],
                f", measured otherwise: {'; '.join(otherwise)}" if otherwise else "",
            )
            # eval.py scores one checkpoint: the best epoch only the training run knew stays
            kept = {k: v for k, v in merged["sets"][name].items() if k in TRAINING_ONLY_KEYS}
            result = kept | result
        merged["sets"][name], merged["_sources"][name] = result, newer["_file"]
    return merged


def load_results(paths: Sequence[str | Path]) -> dict[str, list[dict]]:
    """``{row name: [one merged result per seed]}`` from result files and folders.

    Raises:
        FileNotFoundError: see :func:`result_files`.
    """
    loaded = []
    for file in result_files(paths):
        result = json.loads(file.read_text())
        result["_file"] = str(file)
        result.setdefault("sets", {})
        result["_sources"] = dict.fromkeys(result["sets"], str(file))
        result.setdefault("created", file.stat().st_mtime)
        loaded.append(result)
    merged: dict[tuple[str, Any], dict] = {}
    for result in sorted(loaded, key=lambda r: r["created"]):
        key = (result["name"], result.get("seed"))
        merged[key] = _merge(merged[key], result) if key in merged else result
    rows: dict[str, list[dict]] = {}
    for (name, _), result in sorted(merged.items(), key=lambda item: str(item[0])):
        if name in rows:  # another seed
            _warn_if_other_model(name, rows[name][0], result)
        rows.setdefault(name, []).append(result)
    return rows


@dataclass(frozen=True)
class _Stat:
    mean: float
    std: float
    n: int


def _aggregate(values: list[float | None]) -> _Stat | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    std = statistics.stdev(present) if len(present) > 1 else 0.0
    return _Stat(statistics.fmean(present), std, len(present))


def _cell(stat: _Stat | None, digits: int, spread: bool = True) -> str:
    if stat is None:
        return "-"
    if stat.n == 1 or not spread:
        return format_number(stat.mean, digits)
    return f"{format_number(stat.mean, digits)} ± {stat.std:.{digits}f} (n={stat.n})"


def _baseline_row(name: str, results: list[dict]) -> str | None:
    """The baseline's row name of row ``name``: its model without the ``_dcls``/``_dc`` suffix,
    with the same tail (a sweep's overrides, ``convnext_tiny_dcls (lr=1)`` ->
    ``convnext_tiny (lr=1)``)."""
    model = _model(results)
    if not name.startswith(model):  # a row named by the user: pair by its own suffix
        return baseline_name(name, "auto")
    baseline = baseline_name(model, "auto")
    return None if baseline is None else baseline + name[len(model) :]


def ordered_rows(rows: dict[str, list[dict]]) -> list[tuple[str, str | None]]:
    """``(name, baseline name or None)`` with each variant right after its baseline."""
    variants: dict[str, list[str]] = {}
    roots = []
    for name in sorted(rows):
        baseline = _baseline_row(name, rows[name])
        if baseline is not None and baseline in rows:
            variants.setdefault(baseline, []).append(name)
        else:
            roots.append(name)
    ordered: list[tuple[str, str | None]] = []
    for name in roots:
        ordered.append((name, None))
        ordered += [(variant, name) for variant in variants.get(name, [])]
    return ordered


def _model(results: list[dict]) -> str:
    return results[-1].get("model") or results[-1]["name"]


def _measured(
    rows: dict[str, list[dict]], columns: list[Column]
) -> tuple[list[Column], dict[str, dict[str, _Stat | None]], dict[str, dict[str, float | None]]]:
    """The columns some row has a value for, every row's statistics per column, and the paper's
    value per column (``{}`` for columns the paper has none of) and row."""
    stats = {
        name: {c.title: _aggregate([c.get(r) for r in res]) for c in columns}
        for name, res in rows.items()
    }
    used = [c for c in columns if any(stats[name][c.title] is not None for name in rows)]
    papers = {
        c.title: {name: paper_value(_model(rows[name]), c.paper) for name in rows}
        if c.paper
        else {}
        for c in used
    }
    return used, stats, papers


def table(rows: dict[str, list[dict]], columns: list[Column]) -> list[list[str]]:
    """Header and rows of strings: each measured column, its ``Δ`` to the baseline and the
    paper's value, where any row has one."""
    used, stats, papers = _measured(rows, columns)
    header = ["model"]
    for column in used:
        header.append(column.title)
        if column.delta:
            header.append(f"Δ {column.title.split(' (')[0]}")
        if any(v is not None for v in papers[column.title].values()):
            header.append(f"paper {column.title.split(' (')[0]}")
    out = [header]
    for name, baseline in ordered_rows(rows):
        row = [name]
        for column in used:
            stat = stats[name][column.title]
            row.append(_cell(stat, column.digits, column.spread))
            if column.delta:
                reference = stats[baseline][column.title] if baseline else None
                missing = stat is None or reference is None
                row.append("" if missing else f"{stat.mean - reference.mean:+.{column.digits}f}")
            if any(v is not None for v in papers[column.title].values()):
                value = papers[column.title][name]
                row.append("-" if value is None else format_number(value, column.digits))
        out.append(row)
    return out


def numeric_table(rows: dict[str, list[dict]], columns: list[Column]) -> list[list[Any]]:
    """The same numbers as :func:`table`, one line per row and metric, for a CSV file: header
    ``model, baseline, metric, mean, std, n, delta, paper`` (``None`` where there is none; std
    and delta unrounded, std ``None`` for a single seed)."""
    used, stats, papers = _measured(rows, columns)
    out: list[list[Any]] = [["model", "baseline", "metric", "mean", "std", "n", "delta", "paper"]]
    for name, baseline in ordered_rows(rows):
        for column in used:
            stat = stats[name][column.title]
            if stat is None:
                continue
            reference = stats[baseline][column.title] if baseline else None
            delta = stat.mean - reference.mean if column.delta and reference else None
            std = stat.std if stat.n > 1 else None
            paper = papers[column.title].get(name)
            out.append([name, baseline, column.title, stat.mean, std, stat.n, delta, paper])
    return out


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows[1:]])


def tables(rows: dict[str, list[dict]]) -> dict[str, list[list[str]]]:
    """Every table of :data:`TABLES` that has a measured column; logs the sets none shows."""
    shown = {s for columns in TABLES.values() for c in columns for s in c.sets}
    for name, results in rows.items():
        hidden = sorted({s for r in results for s in r.get("sets", {})} - shown)
        if hidden:
            _logger.info("%s: sets %s are in its result files but in no table", name, hidden)
    built = {title: table(rows, columns) for title, columns in TABLES.items()}
    return {title: t for title, t in built.items() if len(t[0]) > 1}
