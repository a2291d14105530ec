"""Params and multiply-accumulates of every baseline / DCLS / dilated-control model, as Markdown.

MACs are counted at 224x224 with ``torch.utils.flop_counter`` on the meta device (nothing is
computed): a DCLS convolution counts as the dense convolution it runs, and the paper's "FLOPs"
are multiply-accumulates (fvcore's convention), i.e. half of flop_counter's total.

    python scripts/model_table.py
"""

from __future__ import annotations

import argparse
import logging
import sys

import timm

import models  # noqa: F401  (registers the DCLS variants)
from engine.config import cli_number, run_entry_point
from engine.evaluation.paper import paper_value
from engine.evaluation.throughput import params_and_macs as count_params_and_macs

_logger = logging.getLogger("model_table")

# (baseline, variants); the paper's params (M) and GMACs: engine.evaluation.paper
FAMILIES = [
    ("convnext_tiny", ["convnext_tiny_dcls", "convnext_tiny_dc"]),
    ("convnext_small", ["convnext_small_dcls", "convnext_small_dc"]),
    ("convnext_base", ["convnext_base_dcls", "convnext_base_dc"]),
    ("resnet50", ["resnet50_dcls", "resnet50_dc"]),
]


def params_and_macs(name: str, resolution: int = 224, **kwargs: object) -> tuple[int, float]:
    """Parameter count and GMACs of ``timm.create_model(name)`` for one image."""
    return count_params_and_macs(lambda: timm.create_model(name, **kwargs), resolution)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=cli_number(int, 32), default=224)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lines = [
        f"| model | params (M) | GMACs @{args.resolution} | paper params (M) | paper GMACs "
        "| params vs baseline | GMACs vs baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for baseline, variants in FAMILIES:
        base_params, base_macs = params_and_macs(baseline, args.resolution)
        for name in [baseline, *variants]:
            params, macs = params_and_macs(name, args.resolution)
            paper_params, paper_macs = (
                paper_value(name, metric) or "-" for metric in ("params_m", "gmacs")
            )
            lines.append(
                f"| {name} | {params / 1e6:.2f} | {macs:.2f} | {paper_params} | {paper_macs} "
                f"| {params / base_params - 1:+.2%} | {macs / base_macs - 1:+.1%} |"
            )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main, _logger))
