"""Benchmark baseline / DCLS model pairs: training step and inference, in one interleaved run.

For each pair (e.g. ``convnext_tiny`` and ``convnext_tiny_dcls``) measures a training step
(forward, cross-entropy, backward, AdamW step) and an inference forward (``eval``, no grad), A/B
interleaved with medians (the timing helper of ``bench_layers.py``, CUDA-synchronised). With the
authors' package installed (``pip install dcls``, import name ``DCLS``) it also times our DCLS
model with every ``dcls.Dcls2d`` swapped for the authors' ``Dcls2d``, same run. Prints a Markdown
table with the ratios DCLS/baseline and ours/authors.

    python scripts/bench_models.py --models convnext_tiny --batch 16 --img-size 224 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable

import timm
import torch
from bench_layers import (
    AMP_DTYPES,
    AUTHORS_VERSION,
    add_run_arguments,
    interleaved_medians,
    load_authors,
    set_up_run,
)
from torch import nn

import dcls
import models  # noqa: F401  (registers the DCLS models)

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


def swap_in_authors_layers(model: nn.Module, authors_cls: type, use_implicit_gemm: bool) -> int:
    """Replace every ``dcls.Dcls2d`` of ``model`` by the authors' ``Dcls2d`` of the same shape.

    The authors' layers own their positions (no sharing): same compute, more parameters.

    Returns:
        The number of layers swapped.
    """
    swapped = 0
    for name, layer in list(model.named_modules()):
        if not isinstance(layer, dcls.Dcls2d):
            continue
        if isinstance(layer.padding, str):
            raise ValueError(f"{name}: the authors' Dcls2d takes int padding, got {layer.padding}")
        theirs = authors_cls(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_count,
            stride=layer.stride,
            padding=layer.padding,
            dilated_kernel_size=layer.dilated_kernel_size,
            groups=layer.groups,
            bias=layer.bias is not None,
            padding_mode=layer.padding_mode,
            version=AUTHORS_VERSION[layer.version],
            use_implicit_gemm=use_implicit_gemm,
        ).to(layer.weight.device, layer.weight.dtype)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, theirs)
        swapped += 1
    return swapped


def _step_runs(
    model: nn.Module, x: torch.Tensor, labels: torch.Tensor, amp_dtype: torch.dtype | None
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(training step, inference forward) closures for one model."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    device_type = x.device.type

    def autocast() -> contextlib.AbstractContextManager:
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=amp_dtype)

    def train_step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()

    def infer() -> None:
        model.eval()
        with torch.no_grad(), autocast():
            model(x)

    return train_step, infer


def bench_pair(
    baseline: str,
    variant: str,
    args: argparse.Namespace,
    authors_cls: type | None,
) -> dict[str, dict[str, float]]:
    """Median milliseconds per mode ("train", "infer") and model ("baseline", "dcls", "authors")."""
    device = torch.device(args.device)
    amp_dtype = AMP_DTYPES[args.amp_dtype] if args.amp else None
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    built = {
        "baseline": timm.create_model(baseline, num_classes=NUM_CLASSES),
        "dcls": timm.create_model(
            variant, num_classes=NUM_CLASSES, conv_algorithm=args.conv_algorithm
        ),
    }
    if authors_cls is not None:
        authors = timm.create_model(variant, num_classes=NUM_CLASSES)
        if swap_in_authors_layers(authors, authors_cls, use_implicit_gemm=device.type == "cuda"):
            built["authors"] = authors
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
    x = x.contiguous(memory_format=fmt)
    labels = torch.randint(0, NUM_CLASSES, (args.batch,), device=device)
    runs = {}
    for key, model in built.items():
        runs[key] = _step_runs(model.to(device, memory_format=fmt), x, labels, amp_dtype)
    return {
        mode: interleaved_medians({k: r[i] for k, r in runs.items()}, args.repeats, device)
        for i, mode in enumerate(("train", "infer"))
        if mode in args.modes
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_PAIRS, choices=list(PAIRS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per model (median)")
    add_run_arguments(parser, ours="our DCLS layers", channels_last="models and input NHWC")
    parser.add_argument(
        "--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"]
    )
    parser.add_argument("--no-authors", action="store_true", help="skip the authors' layers")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_up_run(args, seed=args.seed, logger=_logger)
    authors_cls = None if args.no_authors else load_authors()
    if authors_cls is None and not args.no_authors:
        _logger.info("authors' package not installed (pip install dcls): their column is empty")
    precision = f"AMP {args.amp_dtype}" if args.amp else "fp32"
    lines = [
        f"device {args.device}, batch {args.batch}, {args.img_size}x{args.img_size}, {precision}, "
        f"{'channels_last' if args.channels_last else 'NCHW'}, our conv_algorithm "
        f"{args.conv_algorithm}, median of {args.repeats} (interleaved), "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}",
        "",
        "| pair | mode | baseline ms | DCLS ms | authors' DCLS ms | DCLS/baseline "
        "| authors/baseline | DCLS/authors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    nan = float("nan")
    for pair in args.models:
        baseline, variant = PAIRS[pair]
        for mode, r in bench_pair(baseline, variant, args, authors_cls).items():
            theirs = r.get("authors", nan)
            lines.append(
                f"| {variant} / {baseline} | {mode} | {r['baseline']:.1f} | {r['dcls']:.1f} "
                f"| {theirs:.1f} | {r['dcls'] / r['baseline']:.2f} "
                f"| {theirs / r['baseline']:.2f} | {r['dcls'] / theirs:.2f} |"
            )
            _logger.info(lines[-1])
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
