"""Result files of ``eval.py`` and training runs, and the Markdown table ``eval.py`` prints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.data.eval_sets import EVAL_SETS

__all__ = ["RESULTS_FILE", "RUN_RESULTS_FILE", "results_markdown"]

RESULTS_FILE = "eval_results.json"  # what eval.py (and a finished training run) writes
RUN_RESULTS_FILE = "results.json"  # a finished training run's final metrics


def results_markdown(results: Mapping[str, Any]) -> str:
    """One Markdown table of a result file's numbers: one row per set (and per corruption)."""
    rows = [
        "| set | metric | value |",
        "| --- | --- | --- |",
        f"| model | params (M) / GMACs | {results['params'] / 1e6:.2f} / {results['gmacs']:.2f} |",
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
