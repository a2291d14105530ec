"""What the benchmark scripts share: their run flags and set-up, and the authors' layers as a
reference (the authors' PyPI package ``dcls``, import name ``DCLS``, when installed).

Imported by ``bench_layers.py`` and ``bench_models.py`` (scripts run with their folder on
``sys.path``); the timing itself is the library's (:mod:`dcls.timing`,
:mod:`engine.evaluation.throughput`).
"""

from __future__ import annotations

import argparse
import logging

import torch
from torch import nn

import dcls
from engine.amp import AMP_CHOICES, amp_dtype

__all__ = [
    "AUTHORS_VERSION",
    "add_run_arguments",
    "autocast_dtype",
    "load_authors",
    "set_up_run",
    "swap_in_authors_layers",
]

# Our interpolation names -> the authors' ``version`` argument.
AUTHORS_VERSION = {
    "bilinear": "v1",
    "bilinear_unnormalized": "v0",
    "gauss": "gauss",
    "triangle": "max",
}


def load_authors() -> type | None:
    """The authors' ``Dcls2d``, or ``None`` when their package is not installed."""
    try:
        from DCLS.construct.modules import Dcls2d as AuthorsDcls2d
    except ImportError:
        return None
    return AuthorsDcls2d


def swap_in_authors_layers(model: nn.Module, authors_cls: type, use_implicit_gemm: bool) -> int:
    """Replace every ``dcls.Dcls2d`` of ``model`` by the authors' ``Dcls2d`` of the same shape.

    The authors' layers own their positions (no sharing): same compute, more parameters.

    Returns:
        The number of layers swapped.

    Raises:
        ValueError: for a layer with string padding (the authors' layer takes ints).
    """
    swapped = []

    def theirs(name: str, layer: nn.Module) -> nn.Module | None:
        if not isinstance(layer, dcls.Dcls2d):
            return None
        if isinstance(layer.padding, str):
            raise ValueError(f"{name}: the authors' Dcls2d takes int padding, got {layer.padding}")
        swapped.append(name)
        return authors_cls(
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

    dcls.replace_modules(model, theirs)
    return len(swapped)


def add_run_arguments(parser: argparse.ArgumentParser, channels_last: str) -> None:
    """The flags both benchmark scripts share: device, precision, memory format, threads, and the
    ``conv_algorithm`` values of our layers to time (each in the same run)."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--amp", default=None, choices=[c for c in AMP_CHOICES if c], help="autocast dtype"
    )
    parser.add_argument("--channels-last", action="store_true", help=channels_last)
    parser.add_argument(
        "--conv-algorithms",
        nargs="+",
        default=["auto"],
        choices=dcls.CONV_ALGORITHMS,
        help="our layers' conv_algorithm values, each timed in the same run",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--tf32", action="store_true", help="TF32 matmuls and convolutions (CUDA)")


def autocast_dtype(args: argparse.Namespace) -> torch.dtype | None:
    return amp_dtype(args.amp, "--amp")


def set_up_run(args: argparse.Namespace, seed: int, logger: logging.Logger) -> None:
    """Logging (``logger`` only: the authors' Dcls2d logs root-logger warnings for every instance
    on CPU), threads, cuDNN autotuning and TF32 (``--tf32``) on CUDA, seed."""
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    logger.setLevel(logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    torch.manual_seed(seed)
