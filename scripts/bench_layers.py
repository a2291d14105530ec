"""Benchmark DCLS layers at ConvNeXt shapes: ours (each conv algorithm) vs dense depthwise convs
and the authors' package, in one interleaved run.

For each ConvNeXt-T/S/B stage shape (depthwise, dilated kernel 17x17, K=34 or 40) and each
interpolation, measures forward+backward time of the whole layer for our ``dcls.Dcls2d`` with
every ``--conv-algorithms`` value, a dense depthwise ``nn.Conv2d`` with the 7x7 kernel the DCLS
layer replaces (the baseline ConvNeXt's) and with the same 17x17 kernel, and the authors'
``DCLS.construct.modules.Dcls2d`` (when installed), all A/B interleaved, medians; and the kernel
construction alone (ours vs the authors', with its largest allocation on CPU). Prints two
Markdown tables: layers, with the ratio to the dense 7x7 layer (the GPU target: <= 1.5), and
constructions.

    python scripts/bench_layers.py --batch 16 --repeats 5
    python scripts/bench_layers.py --device cuda --amp bf16 --channels-last --versions bilinear \\
        --conv-algorithms auto triton fft

``auto`` runs its trials in the warm-up; the line under the header says what it chose.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from collections.abc import Callable

import torch
from bench_common import (
    AUTHORS_VERSION,
    add_run_arguments,
    autocast_dtype,
    load_authors,
    set_up_run,
)
from torch import nn
from torch.profiler import ProfilerActivity, profile

import dcls
from dcls._utils import position_limits
from dcls.algorithms.triton import triton_depthwise_conv
from dcls.timing import time_interleaved
from engine.amp import autocast_context
from engine.config import cli_number, run_entry_point

_logger = logging.getLogger("bench_layers")

# (model, stage, channels, spatial size, kernel count)
CONVNEXT_SHAPES = [
    (model, stage, dim, 56 // 2**stage, count)
    for model, dims, count in [
        ("T", (96, 192, 384, 768), 34),
        ("S", (96, 192, 384, 768), 40),
        ("B", (128, 256, 512, 1024), 40),
    ]
    for stage, dim in enumerate(dims)
]
CONSTRUCT_MIN_REPEATS = 30
DENSE_SIZE = 7  # the depthwise kernel ConvNeXt's blocks have, which DCLS replaces


def _fwd_bwd(
    fn: Callable[[], torch.Tensor], device: torch.device, amp_dtype: torch.dtype | None = None
) -> Callable[[], None]:
    def run() -> None:
        with autocast_context(device, amp_dtype):
            out = fn()
        out.backward(torch.ones_like(out))

    return run


def interleaved_medians(
    runs: dict[str, Callable[[], None]], repeats: int, device: torch.device | None = None
) -> dict[str, float]:
    """Median milliseconds of each run: one warm-up each, then ``repeats`` rounds A, B, A, B...

    On CUDA the device is synchronised before and after each timed run.
    """
    for run in runs.values():  # warm-up (and the "auto" trials)
        run()
    if dcls.algorithms.settle_auto_choices():  # "auto"'s second trials too, before timing
        for run in runs.values():
            run()
    times = time_interleaved(runs, repeats, device)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


# The Triton kernel's two sparsity options (dcls.algorithms.triton), timed with --triton-taps.
TAP_VARIANTS = {
    "triton+skip": {"skip_zero_taps": True, "mask_kernel_grad": False},
    "triton+mask": {"skip_zero_taps": False, "mask_kernel_grad": True},
    "triton+skip+mask": {"skip_zero_taps": True, "mask_kernel_grad": True},
}


def _triton_with_taps(
    layer: dcls.Dcls2d, x: torch.Tensor, skip_zero_taps: bool, mask_kernel_grad: bool
) -> torch.Tensor:
    """``layer(x)`` through the Triton kernel with its sparsity options: skip the taps that are
    zero in every channel of a block, and compute the kernel gradient only where the constructed
    kernel is non-zero (the taps a bilinear interpolation reads)."""
    kernel = layer.construct_kernel()
    mask = kernel.detach() != 0 if mask_kernel_grad else None
    return triton_depthwise_conv(
        x,
        kernel,
        layer.bias,
        layer.padding,
        skip_zero_taps=skip_zero_taps,
        kernel_grad_mask=mask,
    )


@torch.no_grad()
def spread_positions_(layer: dcls.Dcls2d) -> None:
    """Positions uniform over the whole dilated grid, as training leaves them (the new layer's
    N(0, 0.5) start keeps every element near the centre, the most favourable case for skipping)."""
    for entry in dcls.position_sets(layer):
        for axis, size in enumerate(entry.sizes):
            low, high = position_limits(size)
            entry.P[axis].uniform_(low, high)


def _largest_allocation_mb(run: Callable[[], None]) -> float:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    return max(e.self_cpu_memory_usage for e in prof.events()) / 2**20


def bench_shape(
    authors_cls: type | None,
    channels: int,
    spatial: int,
    count: int,
    version: str,
    args: argparse.Namespace,
) -> dict[str, float]:
    """Time one shape; returns milliseconds (and MB on CPU) keyed by measurement name:
    ``layer_<algorithm>``, ``layer_dense7``, ``layer_dense17``, ``layer_authors``,
    ``construct_ours``, ``construct_authors``, ``mem_ours``, ``mem_authors``."""
    device = torch.device(args.device)
    amp_dtype = autocast_dtype(args)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    size = args.size
    shape = {"padding": size // 2, "dilated_kernel_size": size, "groups": channels}
    x = torch.randn(args.batch, channels, spatial, spatial, device=device)
    x = x.contiguous(memory_format=fmt).requires_grad_()
    reference = dcls.Dcls2d(channels, channels, count, version=version, **shape).to(device)
    if args.spread_positions:
        spread_positions_(reference)
    layer: dict[str, Callable[[], None]] = {}
    for algorithm in args.conv_algorithms:
        ours = dcls.Dcls2d(
            channels, channels, count, version=version, conv_algorithm=algorithm, **shape
        ).to(device)
        ours.load_state_dict(reference.state_dict())
        layer[algorithm] = _fwd_bwd(lambda ours=ours: ours(x), device, amp_dtype)
    if args.triton_taps:
        layer |= {
            name: _fwd_bwd(
                lambda flags=flags: _triton_with_taps(reference, x, **flags), device, amp_dtype
            )
            for name, flags in TAP_VARIANTS.items()
        }
    for name, dense_size in (("dense7", DENSE_SIZE), ("dense17", size)):
        dense = nn.Conv2d(channels, channels, dense_size, padding=dense_size // 2, groups=channels)
        dense = dense.to(device, memory_format=fmt)
        layer[name] = _fwd_bwd(lambda dense=dense: dense(x), device, amp_dtype)
    construct = {"ours": _fwd_bwd(reference.construct_kernel, device)}
    if authors_cls is not None:
        theirs = authors_cls(
            channels,
            channels,
            count,
            version=AUTHORS_VERSION[version],
            use_implicit_gemm=device.type == "cuda",
            **shape,
        ).to(device)
        construct["authors"] = _fwd_bwd(
            lambda: theirs.DCK(theirs.weight, theirs.P, theirs.SIG), device
        )
        layer["authors"] = _fwd_bwd(lambda: theirs(x), device, amp_dtype)
    # Construction takes milliseconds: more repeats for a stable median.
    construct_repeats = max(args.repeats, CONSTRUCT_MIN_REPEATS)
    result = {
        f"construct_{k}": v
        for k, v in interleaved_medians(construct, construct_repeats, device).items()
    }
    result |= {f"layer_{k}": v for k, v in interleaved_medians(layer, args.repeats, device).items()}
    if device.type == "cpu":
        result |= {f"mem_{k}": _largest_allocation_mb(run) for k, run in construct.items()}
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=cli_number(), default=16)
    parser.add_argument("--size", type=cli_number(), default=17, help="dilated kernel size")
    parser.add_argument("--repeats", type=cli_number(), default=5)
    parser.add_argument("--versions", nargs="+", default=list(dcls.VERSIONS), choices=dcls.VERSIONS)
    parser.add_argument("--models", nargs="+", default=["T", "S", "B"], choices=["T", "S", "B"])
    parser.add_argument("--stages", nargs="+", type=int, default=[0, 1, 2, 3], choices=range(4))
    parser.add_argument(
        "--triton-taps",
        action="store_true",
        help=f"also time the Triton kernel's sparsity options: {', '.join(TAP_VARIANTS)}",
    )
    parser.add_argument(
        "--spread-positions",
        action="store_true",
        help="positions uniform over the dilated grid (as after training) instead of N(0, 0.5)",
    )
    add_run_arguments(parser, channels_last="NHWC input")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_up_run(args, seed=0, logger=_logger)
    authors_cls = load_authors()
    if authors_cls is None:
        _logger.info("authors' package not installed (pip install dcls): their columns are empty")
    nan = float("nan")
    layers = [
        "| model | stage | C | HxW | K | version | ours | ours ms | dense 7x7 ms | dense 17x17 ms "
        "| authors ms | ours/dense 7x7 | ours/dense 17x17 | ours/authors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    constructions = [
        "| model | stage | C | K | version | construct ours ms | construct authors ms "
        "| authors/ours | largest alloc ours/authors MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, stage, channels, spatial, count in CONVNEXT_SHAPES:
        if model not in args.models or stage not in args.stages:
            continue
        for version in args.versions:
            r = bench_shape(authors_cls, channels, spatial, count, version, args)
            head = f"| {model} | {stage} | {channels} | {spatial}x{spatial} | {count} | {version}"
            authors = r.get("layer_authors", nan)
            for algorithm in [*args.conv_algorithms, *(TAP_VARIANTS if args.triton_taps else ())]:
                ours = r[f"layer_{algorithm}"]
                layers.append(
                    f"{head} | {algorithm} | {ours:.2f} | {r['layer_dense7']:.2f} "
                    f"| {r['layer_dense17']:.2f} | {authors:.2f} | {ours / r['layer_dense7']:.2f} "
                    f"| {ours / r['layer_dense17']:.2f} | {ours / authors:.2f} |"
                )
                _logger.info(layers[-1])
            c_auth = r.get("construct_authors", nan)
            constructions.append(
                f"| {model} | {stage} | {channels} | {count} | {version} "
                f"| {r['construct_ours']:.2f} | {c_auth:.2f} | {c_auth / r['construct_ours']:.1f}x "
                f"| {r.get('mem_ours', nan):.1f} / {r.get('mem_authors', nan):.1f} |"
            )
    header = (
        f"device {args.device}, batch {args.batch}, dilated kernel {args.size}x{args.size}, "
        f"depthwise, fwd+bwd, {f'AMP {args.amp}' if args.amp else 'fp32'}, "
        f"{'channels_last' if args.channels_last else 'NCHW'}, median of {args.repeats}, "
        f"positions {'uniform over the grid' if args.spread_positions else 'as initialised'}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    choices = dcls.algorithms.auto_summary()
    lines = [
        header,
        *([f"auto chose: {choices}"] if choices else []),
        *(f"triton autotune: {line}" for line in dcls.algorithms.autotune_summary()),
        "",
        *layers,
        "",
        *constructions,
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main, _logger))
