"""Benchmark DCLS layers at ConvNeXt shapes: ours vs the authors' package vs a dense conv.

For each ConvNeXt-T/S/B stage shape (depthwise, dilated kernel 17x17, K=34 or 40) and each
interpolation, measures forward+backward time of (a) the kernel construction alone and (b) the
whole layer, for our ``dcls.Dcls2d``, the authors' ``DCLS.construct.modules.Dcls2d`` (when
installed) and a dense depthwise ``nn.Conv2d`` with the same 17x17 kernel, all in the same run,
A/B interleaved, medians. Prints a Markdown table with the ratios ours/authors and ours/dense,
and the largest single allocation of each construction.

    python scripts/bench_layers.py --batch 16 --repeats 5
    python scripts/bench_layers.py --device cuda --amp --channels-last --versions bilinear

Our layer uses ``--conv-algorithm`` (default ``auto``, as the ConvNeXt-dcls configs; its one-time
trial runs in the warm-up); the dense column is ``nn.Conv2d`` (PyTorch's direct algorithm).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
from collections.abc import Callable

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

import dcls
from dcls.timing import time_interleaved

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
AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
AUTHORS_VERSION = {
    "bilinear": "v1",
    "bilinear_unnormalized": "v0",
    "gauss": "gauss",
    "triangle": "max",
}


def load_authors() -> type | None:
    try:
        from DCLS.construct.modules import Dcls2d as AuthorsDcls2d
    except ImportError:
        return None
    return AuthorsDcls2d


def _fwd_bwd(
    fn: Callable[[], torch.Tensor], amp_dtype: torch.dtype | None = None, device_type: str = "cpu"
) -> Callable[[], None]:
    def run() -> None:
        with (
            torch.autocast(device_type, dtype=amp_dtype)
            if amp_dtype is not None
            else contextlib.nullcontext()
        ):
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
    times = time_interleaved(runs, repeats, device)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def _largest_allocation_mb(run: Callable[[], None]) -> float:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    return max(e.self_cpu_memory_usage for e in prof.events()) / 2**20


def bench_row(
    authors_cls: type | None,
    channels: int,
    spatial: int,
    count: int,
    version: str,
    args: argparse.Namespace,
) -> dict[str, float]:
    """Time one shape; returns milliseconds (and MB on CPU) keyed by measurement name."""
    device = torch.device(args.device)
    amp_dtype = AMP_DTYPES[args.amp_dtype] if args.amp else None
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    size = args.size
    shape = {"padding": size // 2, "dilated_kernel_size": size, "groups": channels}
    ours = dcls.Dcls2d(
        channels, channels, count, version=version, conv_algorithm=args.conv_algorithm, **shape
    ).to(device)
    dense = nn.Conv2d(channels, channels, size, padding=size // 2, groups=channels)
    dense = dense.to(device, memory_format=fmt)
    x = torch.randn(args.batch, channels, spatial, spatial, device=device)
    x = x.contiguous(memory_format=fmt).requires_grad_()
    amp = {"amp_dtype": amp_dtype, "device_type": device.type}
    construct = {"ours": _fwd_bwd(ours.construct_kernel)}
    layer = {"ours": _fwd_bwd(lambda: ours(x), **amp), "dense": _fwd_bwd(lambda: dense(x), **amp)}
    if authors_cls is not None:
        theirs = authors_cls(
            channels,
            channels,
            count,
            version=AUTHORS_VERSION[version],
            use_implicit_gemm=device.type == "cuda",
            **shape,
        ).to(device)
        construct["authors"] = _fwd_bwd(lambda: theirs.DCK(theirs.weight, theirs.P, theirs.SIG))
        layer["authors"] = _fwd_bwd(lambda: theirs(x), **amp)
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


def add_run_arguments(parser: argparse.ArgumentParser, ours: str, channels_last: str) -> None:
    """The flags both benchmark scripts share: device, precision, memory format, threads, and the
    ``conv_algorithm`` of ``ours`` (the help text naming what it applies to)."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--amp", action="store_true", help="autocast (see --amp-dtype)")
    parser.add_argument("--amp-dtype", default="bfloat16", choices=list(AMP_DTYPES))
    parser.add_argument("--channels-last", action="store_true", help=channels_last)
    parser.add_argument("--conv-algorithm", default="auto", choices=dcls.CONV_ALGORITHMS, help=ours)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")


def set_up_run(args: argparse.Namespace, seed: int, logger: logging.Logger) -> None:
    """Logging (``logger`` and what ``auto`` picked), threads, cuDNN autotuning on CUDA, seed."""
    # The authors' Dcls2d logs root-logger warnings for every instance on CPU: keep only ours.
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    logger.setLevel(logging.INFO)
    logging.getLogger("dcls.algorithms").setLevel(logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=17, help="dilated kernel size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--versions", nargs="+", default=list(dcls.VERSIONS), choices=dcls.VERSIONS)
    parser.add_argument("--models", nargs="+", default=["T", "S", "B"], choices=["T", "S", "B"])
    parser.add_argument("--stages", nargs="+", type=int, default=[0, 1, 2, 3], choices=range(4))
    add_run_arguments(parser, ours="our Dcls2d", channels_last="NHWC input")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_up_run(args, seed=0, logger=_logger)
    authors_cls = load_authors()
    if authors_cls is None:
        _logger.info("authors' package not installed (pip install dcls): their columns are empty")
    lines = [
        f"device {args.device}, batch {args.batch}, dilated kernel {args.size}x{args.size}, "
        f"depthwise, fwd+bwd, {f'AMP {args.amp_dtype}' if args.amp else 'fp32'}, "
        f"{'channels_last' if args.channels_last else 'NCHW'}, our conv_algorithm "
        f"{args.conv_algorithm}, median of {args.repeats}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        "",
        "| model | stage | C | HxW | K | version | construct ours ms | construct authors ms "
        "| construct authors/ours | largest alloc ours/authors MB | layer ours ms "
        "| layer authors ms | layer dense ms | layer ours/authors | layer ours/dense |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, stage, channels, spatial, count in CONVNEXT_SHAPES:
        if model not in args.models or stage not in args.stages:
            continue
        for version in args.versions:
            r = bench_row(authors_cls, channels, spatial, count, version, args)
            nan = float("nan")
            c_auth, l_auth = r.get("construct_authors", nan), r.get("layer_authors", nan)
            lines.append(
                f"| {model} | {stage} | {channels} | {spatial}x{spatial} | {count} | {version} "
                f"| {r['construct_ours']:.2f} | {c_auth:.2f} | {c_auth / r['construct_ours']:.1f}x "
                f"| {r.get('mem_ours', nan):.1f} / {r.get('mem_authors', nan):.1f} "
                f"| {r['layer_ours']:.1f} | {l_auth:.1f} | {r['layer_dense']:.1f} "
                f"| {r['layer_ours'] / l_auth:.2f} | {r['layer_ours'] / r['layer_dense']:.2f} |"
            )
            _logger.info(lines[-1])
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
