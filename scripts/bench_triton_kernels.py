"""Time the Triton depthwise kernels one by one against cuDNN, per ConvNeXt stage shape.

For each shape (channels x square size), in one interleaved run: the forward, the input gradient
and the kernel gradient of :func:`dcls.triton_depthwise_conv` with a ``--size`` kernel (the DCLS
dilated kernel, 17x17 for ConvNeXt-dcls), and the same three of cuDNN's depthwise convolution
with a 7x7 kernel (ConvNeXt's own layer: the target) and with the ``--size`` kernel (what
``conv_algorithm="direct"`` runs); "dense" is ``F.conv2d`` and ATen's convolution backward. The
ratio column is Triton over dense 7x7. Then one line per
autotuned shape: the config the autotuner chose, and the fastest FMA and tensor-core configs
with their times (``dcls.algorithms.autotune_summary``). This is where to look first when a
layer misses issue 12's 1.5x target: which of the three kernels, and which path.

    python scripts/bench_triton_kernels.py --device cuda --dtype bf16 --channels-last

Runs on the CPU under Triton's interpreter (``TRITON_INTERPRET=1``, small ``--shapes``), for
its tests; the times then mean nothing (and dense is ATen's CPU convolution).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from collections.abc import Callable

import torch
from torch import Tensor

import dcls
from dcls.algorithms import triton as dw_triton
from dcls.timing import synchronize, time_interleaved
from engine.config import cli_number

_logger = logging.getLogger("bench_triton_kernels")

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CONVNEXT_T_SHAPES = ["96x56", "192x28", "384x14", "768x7"]
OPS = ("forward", "input grad", "kernel grad")


def parse_shape(text: str) -> tuple[int, int]:
    """``"96x56"`` -> (channels 96, size 56)."""
    try:
        channels, size = (int(v) for v in text.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a shape is CHANNELSxSIZE, e.g. 96x56, got {text!r}"
        ) from None
    if channels < 1 or size < 1:
        raise argparse.ArgumentTypeError(f"channels and size must be >= 1, got {text!r}")
    return channels, size


def _dense_ops(x: Tensor, weight: Tensor, grad: Tensor) -> dict[str, Callable[[], object]]:
    """ATen's depthwise forward, input gradient and weight gradient (cuDNN's on CUDA), "same"
    padding."""
    channels, k = x.shape[1], weight.shape[-1]
    pad = [k // 2, k // 2]

    def backward(mask: list[bool]) -> Callable[[], object]:
        return lambda: torch.ops.aten.convolution_backward(
            grad, x, weight, None, [1, 1], pad, [1, 1], False, [0, 0], channels, mask
        )

    return {
        "forward": lambda: torch.nn.functional.conv2d(x, weight, None, 1, pad, 1, channels),
        "input grad": backward([True, False, False]),
        "kernel grad": backward([False, True, False]),
    }


def _triton_ops(x: Tensor, weight: Tensor, grad: Tensor) -> dict[str, Callable[[], object]]:
    """The three Triton custom ops behind :func:`dcls.triton_depthwise_conv`, "same" padding."""
    k = weight.shape[-1]
    pads = [k // 2, k - 1 - k // 2] * 2
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return {
        "forward": lambda: dw_triton._conv_op(x, weight, None, pads, False, None),
        "input grad": lambda: dw_triton._input_grad_op(
            grad, weight, list(x.shape), pads, channels_last, False
        ),
        "kernel grad": lambda: dw_triton._kernel_grad_op(x, grad, [k, k], pads, None),
    }


def bench_shape(channels: int, size: int, args: argparse.Namespace) -> dict[str, float]:
    """Median milliseconds per call of each (implementation, op) for one shape."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(args.batch, channels, size, size, device=device, dtype=dtype)
    x = x.contiguous(memory_format=fmt)
    grad = torch.randn_like(x)
    runs: dict[str, Callable[[], object]] = {}
    for name, k in (("dense 7x7", 7), (f"dense {args.size}x{args.size}", args.size)):
        weight = torch.randn(channels, 1, k, k, device=device, dtype=dtype)
        runs |= {f"{name}|{op}": fn for op, fn in _dense_ops(x, weight, grad).items()}
    weight = torch.randn(channels, 1, args.size, args.size, device=device, dtype=dtype)
    runs |= {f"triton|{op}": fn for op, fn in _triton_ops(x, weight, grad).items()}
    for run in runs.values():  # warm-up: compilation, autotuning, cuDNN's algorithm search
        run()
    synchronize(device)
    seconds = time_interleaved(runs, args.repeats, device, calls=args.calls)
    return {name: 1e3 * statistics.median(s) / args.calls for name, s in seconds.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:1, ... (cpu: interpreter)")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--channels-last", action="store_true", help="NHWC inputs")
    parser.add_argument("--batch", type=cli_number(), default=64)
    parser.add_argument(
        "--size", type=cli_number(), default=17, help="the Triton kernel's size (odd)"
    )
    parser.add_argument(
        "--shapes",
        nargs="+",
        type=parse_shape,
        default=[parse_shape(s) for s in CONVNEXT_T_SHAPES],
        help="CHANNELSxSIZE per layer shape (default: ConvNeXt-T's four stages)",
    )
    parser.add_argument("--repeats", type=cli_number(), default=20, help="interleaved rounds")
    parser.add_argument("--calls", type=cli_number(), default=5, help="calls per timed round")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # the dense baselines get cuDNN's fastest algorithm
    if args.size % 2 == 0:
        parser.error(f"--size must be odd (a centred 'same' kernel), got {args.size}")
    if not dw_triton.triton_available(args.device):
        parser.error(
            f"the Triton kernels cannot run on {args.device!r}: use a CUDA device, or the CPU "
            f"with TRITON_INTERPRET=1"
        )
    big = f"dense {args.size}x{args.size}"
    rows = [
        f"| C | HxW | op | dense 7x7 ms | {big} ms | Triton {args.size}x{args.size} ms "
        f"| Triton/dense 7x7 |",
        "|---|---|---|---|---|---|---|",
    ]
    for channels, size in args.shapes:
        ms = bench_shape(channels, size, args)
        for op in OPS:
            dense7, dense_big, ours = (ms[f"{n}|{op}"] for n in ("dense 7x7", big, "triton"))
            rows.append(
                f"| {channels} | {size}x{size} | {op} | {dense7:.3f} | {dense_big:.3f} "
                f"| {ours:.3f} | {ours / dense7:.2f} |"
            )
            _logger.info(rows[-1])
    header = (
        f"device {args.device}, batch {args.batch}, {args.dtype}, "
        f"{'channels_last' if args.channels_last else 'NCHW'}, Triton kernel "
        f"{args.size}x{args.size}, median of {args.repeats} interleaved rounds of {args.calls} "
        f"call(s), torch {torch.__version__}"
    )
    tuned = [f"triton autotune: {line}" for line in dcls.algorithms.autotune_summary()]
    sys.stdout.write("\n".join([header, *tuned, "", *rows]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
