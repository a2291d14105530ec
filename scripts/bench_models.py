"""Benchmark baseline / DCLS model pairs: training step, inference and peak memory, one run.

For each pair (e.g. ``convnext_tiny`` and ``convnext_tiny_dcls``) times a training step (forward,
cross-entropy, backward, AdamW step) and an inference forward (``eval``, no grad) of the baseline
and of the DCLS model with every ``--conv-algorithms`` value, through the library's throughput
measurement (:func:`engine.evaluation.throughput.measure_throughput`: interleaved rounds,
medians, CUDA-synchronised), and on CUDA the peak memory of a step. With the authors' package
installed (``pip install dcls``, import name ``DCLS``) it also times our DCLS model with every
``dcls.Dcls2d`` swapped for the authors' ``Dcls2d``. Prints a Markdown table with ms per step and
the ratios DCLS/baseline.

    python scripts/bench_models.py --models convnext_tiny --batch 16 --img-size 224 --repeats 5
    python scripts/bench_models.py --device cuda --amp bf16 --channels-last --batch 128 \\
        --models convnext_tiny --conv-algorithms auto triton fft

``--profile-out FILE`` also writes ``torch.profiler`` tables of each model's step (where the time
goes); ``--compile`` times ``torch.compile``'d models.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import timm
import torch
from bench_common import (
    add_run_arguments,
    autocast_dtype,
    load_authors,
    set_up_run,
    swap_in_authors_layers,
)
from torch import nn

import dcls
import models  # noqa: F401  (registers the DCLS models)
from engine.config import cli_number, run_entry_point
from engine.evaluation.throughput import (
    StepSpec,
    measure_peak_memory,
    measure_throughput,
    profile_steps,
)

_logger = logging.getLogger("bench_models")

PAIRS = {
    **{
        f"convnext_{s}": (f"convnext_{s}", f"convnext_{s}_dcls")
        for s in ("atto", "femto", "pico", "nano", "tiny", "small", "base")
    },
    "resnet50": ("resnet50", "resnet50_dcls"),
    "test_convnext": ("test_convnext", "test_convnext_dcls"),  # tiny: for tests
}
DEFAULT_PAIRS = [name for name in PAIRS if not name.startswith("test_")]
NUM_CLASSES = 1000
MODES = {"train": True, "infer": False}


def build_models(
    baseline: str, variant: str, args: argparse.Namespace, authors_cls: type | None
) -> dict[str, nn.Module]:
    """``{"baseline": ..., "dcls <algorithm>": ..., "authors": ...}`` for one pair."""
    built = {"baseline": timm.create_model(baseline, num_classes=NUM_CLASSES)}
    for algorithm in args.conv_algorithms:
        built[f"dcls {algorithm}"] = timm.create_model(
            variant, num_classes=NUM_CLASSES, conv_algorithm=algorithm
        )
    if args.compile:  # compiled at the warm-up's first step; "auto" takes its static choice
        built = {name: torch.compile(m, backend=args.compile) for name, m in built.items()}
    if authors_cls is not None:
        authors = timm.create_model(variant, num_classes=NUM_CLASSES)
        use_implicit_gemm = args.device.startswith("cuda")
        if swap_in_authors_layers(authors, authors_cls, use_implicit_gemm):
            built["authors"] = authors
    return built


def bench_pair(
    baseline: str, variant: str, args: argparse.Namespace, authors_cls: type | None
) -> dict[str, dict[str, dict[str, float | str]]]:
    """``{mode: {"ms": {model: ms per step}, "gib": {model: peak GiB}, "profile": {model:
    table}}}``, modes "train" and "infer" as ``args.modes`` asks (``gib`` empty off CUDA,
    ``profile`` empty without ``--profile-out``)."""
    built = build_models(baseline, variant, args, authors_cls)
    results = {}
    for mode in args.modes:
        spec = StepSpec(
            args.batch,
            args.img_size,
            torch.device(args.device),
            autocast_dtype(args),
            args.channels_last,
            train=MODES[mode],
            optimizer="adamw",
        )
        rates = measure_throughput(
            built, spec, warmup=args.warmup, steps=args.steps, rounds=args.repeats
        )
        memory = measure_peak_memory(built, spec) or {}
        profiles = {}
        if args.profile_out is not None:
            try:  # a diagnostic: a profiler that cannot start (no CUPTI) must not lose the table
                profiles = profile_steps(
                    built, spec, steps=args.profile_steps, row_limit=args.profile_rows
                )
            except RuntimeError as error:
                _logger.warning("%s %s: profiling failed: %s", variant, mode, error)
        results[mode] = {
            "ms": {name: 1e3 * args.batch / rate for name, rate in rates.items()},
            "gib": memory,
            "profile": profiles,
        }
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_PAIRS, choices=list(PAIRS))
    parser.add_argument("--batch", type=cli_number(), default=16)
    parser.add_argument("--img-size", type=cli_number(int, 32), default=224)
    parser.add_argument(
        "--repeats", type=cli_number(), default=5, help="interleaved rounds (median)"
    )
    parser.add_argument(
        "--steps", type=cli_number(), default=1, help="timed steps per model per round"
    )
    parser.add_argument(
        "--warmup", type=cli_number(int, 0), default=1, help="untimed steps per model first"
    )
    add_run_arguments(parser, channels_last="models and input NHWC")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--no-authors", action="store_true", help="skip the authors' layers")
    parser.add_argument(
        "--compile",
        nargs="?",
        const="inductor",
        metavar="BACKEND",
        help="time torch.compile'd models (backend: inductor if not named; the authors' layers "
        "are not compiled)",
    )
    parser.add_argument(
        "--profile-out",
        type=Path,
        help="also profile each model's step (torch.profiler) and write the tables to this file",
    )
    parser.add_argument(
        "--profile-steps", type=cli_number(), default=2, help="steps per profile (--profile-out)"
    )
    parser.add_argument(
        "--profile-rows", type=cli_number(), default=20, help="ops per profile (--profile-out)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_up_run(args, seed=args.seed, logger=_logger)
    authors_cls = None if args.no_authors else load_authors()
    if authors_cls is None and not args.no_authors:
        _logger.info("authors' package not installed (pip install dcls): their row is empty")
    rows = [
        "| pair | mode | model | ms/step | img/s | vs baseline | peak GiB | memory vs baseline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    profiles = []
    for pair in args.models:
        baseline, variant = PAIRS[pair]
        for mode, result in bench_pair(baseline, variant, args, authors_cls).items():
            ms, gib = result["ms"], result["gib"]
            for name, value in ms.items():
                label = baseline if name == "baseline" else f"{variant} ({name})"
                if name in result["profile"]:
                    profiles += [f"## {mode}: {label}", "", "```", result["profile"][name], "```"]
                memory, baseline_memory = gib.get(name), gib.get("baseline")
                measured = memory is not None and baseline_memory is not None  # (CUDA only)
                rows.append(
                    f"| {pair} | {mode} | {label} | {value:.1f} | {1e3 * args.batch / value:.0f} "
                    f"| {value / ms['baseline']:.2f} "
                    f"| {f'{memory:.2f}' if memory is not None else '-'} "
                    f"| {f'{memory / baseline_memory:.2f}' if measured else '-'} |"
                )
                _logger.info(rows[-1])
    precision = f"AMP {args.amp}" if args.amp else "fp32"
    header = (
        f"device {args.device}, batch {args.batch}, {args.img_size}x{args.img_size}, {precision}, "
        f"{'channels_last' if args.channels_last else 'NCHW'}, "
        f"{f'torch.compile ({args.compile}), ' if args.compile else ''}AdamW training step, "
        f"median of "
        f"{args.repeats} interleaved rounds of {args.steps} step(s), "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    choices = dcls.algorithms.auto_summary()
    tuned = [f"triton autotune: {line}" for line in dcls.algorithms.autotune_summary()]
    lines = [header, *([f"auto chose: {choices}"] if choices else []), *tuned, "", *rows]
    sys.stdout.write("\n".join(lines) + "\n")
    if args.profile_out is not None:
        args.profile_out.parent.mkdir(parents=True, exist_ok=True)
        args.profile_out.write_text("\n".join([f"# Profiles: {header}", "", *profiles]) + "\n")
        _logger.info("profiles in %s", args.profile_out)
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main, _logger))
