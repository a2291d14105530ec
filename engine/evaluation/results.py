"""Result files of ``eval.py`` and training runs, and the Markdown table ``eval.py`` prints."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from engine.data.eval_sets import EVAL_SETS

__all__ = [
    "EARLIER_RUNS_DIR",
    "RESULTS_FILE",
    "RUN_RESULTS_FILE",
    "eval_row_name",
    "format_number",
    "named_row",
    "results_markdown",
]

RESULTS_FILE = "eval_results.json"  # what eval.py (and a finished training run) writes
RUN_RESULTS_FILE = "results.json"  # a finished training run's final metrics
EARLIER_RUNS_DIR = ".earlier"  # a run folder's runs before a fresh start (resume=never)


def format_number(value: float, digits: int) -> str:
    """``digits`` decimals, or 3 significant digits for small values (a tiny model's GMACs)."""
    return f"{value:.3g}" if 0 < abs(value) < 0.1 else f"{value:.{digits}f}"


def named_row(name: str, overrides: Iterable[str] | None, ignored: Iterable[str]) -> str:
    """``name``, with a sweep job's overrides that make a row of their own: ``"name (a=1,b=2)"``.

    Args:
        overrides: the job's command-line overrides (``None`` outside a multirun).
        ignored: keys that do not (a seed, where the data lives): an override is left out when its
            key is one of them or lies under one (``roots`` leaves out ``roots.in_c=...``).
    Overrides are sorted, so the same job named from two command lines gets one row.
    """
    ignored = tuple(ignored)

    def kept(override: str) -> bool:
        key = override.split("=", 1)[0].lstrip("+~")
        return not any(key == k or key.startswith(k + ".") for k in ignored)

    swept = sorted(o for o in overrides or () if kept(o))
    return f"{name} ({','.join(swept)})" if swept else name


# eval.py overrides that say where the inputs are, which model reads the checkpoint (its row
# names it already) and how fast to go, not what is measured.
EVAL_ROW_KEYS_IGNORED = (
    "checkpoint",
    "model",
    "sets",
    "roots",
    "paths",
    "name",
    "run_name",
    "batch_size",
    "num_workers",
    "device",
    "channels_last",
    "throughput",
)


def eval_row_name(
    training_name: str | None,
    model_name: str,
    checkpoint: str | None,
    overrides: Iterable[str] | None,
) -> str:
    """The table row of an ``eval.py`` result (``name=`` on its command line wins over this).

    Args:
        training_name: the row name ``train.py`` stored in the checkpoint (``None`` for a
            checkpoint from elsewhere, such as the authors' released files).
        model_name: the timm model evaluated.
        checkpoint: the evaluated file (``None``: random weights, for throughput).
        overrides: the run's command-line overrides (an ``eval.py -m`` sweep job's or a single
            run's); those that change what is measured (``transform.crop_pct``, ``weights``,
            ``amp``, ...) name rows.

    A checkpoint from elsewhere gets a row of its own, named by its file: it has no seed, and it
    is not one more seed of the runs trained with that model.
    """
    name = training_name
    if name is None:
        name = model_name if checkpoint is None else f"{model_name} [{Path(checkpoint).name}]"
    return named_row(name, overrides, EVAL_ROW_KEYS_IGNORED)


def results_markdown(results: Mapping[str, Any]) -> str:
    """One Markdown table of a result file's numbers: one row per set (and per corruption)."""
    rows = [
        "| set | metric | value |",
        "| --- | --- | --- |",
        f"| model | params (M) / GMACs | {results['params'] / 1e6:.2f} / "
        f"{format_number(results['gmacs'], 2)} |",
    ]
    for name, result in results["sets"].items():
        if name == "throughput":
            for mode, rate in result["images_per_s"].items():
                line = f"| throughput | {mode} images/s | {rate:.1f}"
                if result["baseline"] is not None:
                    ratio = result["ratio"][mode]
                    line += f" ({result['baseline']}: {result['baseline_images_per_s'][mode]:.1f};"
                    line += f" time ratio {ratio:.3f}x)"
                rows.append(line + " |")
            for mode, gib in result.get("peak_memory_gib", {}).items():
                line = f"| throughput | {mode} peak memory GiB | {gib:.2f}"
                if "memory_ratio" in result:
                    line += (
                        f" ({result['baseline']}: {result['baseline_peak_memory_gib'][mode]:.2f};"
                    )
                    line += f" ratio {result['memory_ratio'][mode]:.3f}x)"
                rows.append(line + " |")
        elif "errors" in result:
            title = {
                "in_c": "ImageNet-C",
                "in_c_extra": "ImageNet-C extra",
                "corrupt": "corrupted on the fly",
                "corrupt_extra": "corrupted on the fly, extra",
            }.get(name, name)
            for corruption, error in result["mean_errors"].items():
                ce = result["ce"].get(corruption)
                ce_text = f" (CE {ce:.2f})" if ce is not None else ""
                rows.append(f"| {title} | {corruption} error | {error:.2f}{ce_text} |")
            if result["mce"] is not None:
                rows.append(f"| {title} | mCE | {result['mce']:.2f} |")
            rows.append(f"| {title} | mean error | {result['mean_error']:.2f} |")
        else:
            spec = EVAL_SETS.get(name)
            title = spec.title if spec is not None else f"validation split (data={result['data']})"
            rows.append(
                f"| {title} | top-1 / top-5 | {result['top1']:.2f} / {result['top5']:.2f} |"
            )
    return "\n".join(rows)
