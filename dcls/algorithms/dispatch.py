"""Which algorithm applies a kernel: names, argument checks, and the dispatch every layer runs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from dcls._utils import as_tuple, check_positive_int
from dcls.algorithms._common import checked_pad_pairs, forward_ad_active, pad_pairs
from dcls.algorithms.auto import resolve_auto
from dcls.algorithms.direct import channels_last, direct
from dcls.algorithms.fft import _fft_conv, fft_conv
from dcls.algorithms.split import split_conv
from dcls.algorithms.triton import triton_depthwise_conv

__all__ = [
    "CONV_ALGORITHMS",
    "DEFAULT_CONV_ALGORITHM",
    "DEPTHWISE",
    "STRIDE_ONE",
    "check_conv_algorithm",
    "check_convolution",
    "convolve",
]

CONV_ALGORITHMS = ("direct", "channels_last", "fft", "split", "triton", "auto")
STRIDE_ONE = ("fft", "split", "triton")  # algorithms for stride-1 convolutions only
DEPTHWISE = ("split", "triton")  # algorithms for depthwise convolutions only
DEFAULT_CONV_ALGORITHM = "direct"


def check_conv_algorithm(
    algorithm: str,
    stride: Sequence[int] | None = None,
    in_channels_per_group: int | None = None,
) -> str:
    """Validate a ``conv_algorithm`` argument.

    Args:
        algorithm: one of :data:`CONV_ALGORITHMS`.
        stride: the layer's stride, if known; ``"fft"``, ``"split"`` and ``"triton"`` need all
            ones.
        in_channels_per_group: ``in_channels // groups``, if known; ``"split"`` and
            ``"triton"`` need 1.

    Raises:
        ValueError: on an unknown name, or an algorithm the layer's shape does not allow.
    """
    if algorithm not in CONV_ALGORITHMS:
        raise ValueError(f"conv_algorithm must be one of {CONV_ALGORITHMS}, got {algorithm!r}")
    if algorithm in STRIDE_ONE and stride is not None and any(s != 1 for s in stride):
        raise ValueError(
            f"conv_algorithm={algorithm!r} needs stride 1, got stride={tuple(stride)}; use "
            f"'direct' or 'auto' (which uses 'direct' for strided convolutions)"
        )
    if algorithm in DEPTHWISE and in_channels_per_group not in (None, 1):
        raise ValueError(
            f"conv_algorithm={algorithm!r} needs in_channels == groups (a depthwise "
            f"convolution), got in_channels // groups = {in_channels_per_group}; use 'direct', "
            f"'fft' or 'auto'"
        )
    return algorithm


def check_convolution(
    input: Tensor,
    kernel_shape: Sequence[int],
    stride: Sequence[int],
    padding: str | int | Sequence[int],
    groups: int,
) -> None:
    """Refuse what ``F.conv{N}d`` refuses, for every algorithm alike: ``"split"`` and
    ``"triton"`` pad and group by themselves, and would otherwise run a depthwise convolution
    over whatever channels they are given.

    Args:
        input: ``(B, C_in, *S)`` or ``(C_in, *S)``.
        kernel_shape: ``(C_out, C_in / groups, *k)``.
        stride, padding, groups: as ``F.conv{N}d`` takes them (``stride`` one int per axis).

    Raises:
        ValueError: naming the first argument that does not fit the others.
    """
    n = len(kernel_shape) - 2
    groups = check_positive_int(groups, "groups")
    if input.dim() not in (n + 1, n + 2):
        raise ValueError(
            f"input must have shape (batch, channels, *{n} sizes) or (channels, *{n} sizes) for "
            f"a {n}-D kernel, got {tuple(input.shape)}"
        )
    channels, (out_channels, in_per_group) = input.shape[-n - 1], kernel_shape[:2]
    if channels != in_per_group * groups:
        raise ValueError(
            f"input has {channels} channels; a kernel of shape {tuple(kernel_shape)} with "
            f"groups={groups} takes {in_per_group * groups}"
        )
    if out_channels % groups != 0:
        raise ValueError(
            f"the kernel's {out_channels} output channels must be divisible by groups={groups}"
        )
    if padding == "same" and any(s != 1 for s in stride):
        raise ValueError(f"padding='same' needs stride 1, got stride={tuple(stride)}")
    checked_pad_pairs(padding, input.shape[-n:], kernel_shape[2:])


def _run(
    algorithm: str,
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: str | list[int],
    groups: int,
) -> Tensor:
    """Apply ``kernel`` with a named algorithm (not ``"auto"``), in eager mode."""
    if algorithm == "fft":
        return fft_conv(input, kernel, bias, padding, groups)
    if algorithm == "split":
        return split_conv(input, kernel, bias, padding)
    if algorithm == "triton":
        return triton_depthwise_conv(input, kernel, bias, padding)
    if algorithm == "channels_last":
        return channels_last(input, kernel, bias, stride, padding, groups)
    return direct(input, kernel, bias, stride, padding, groups)


def _apply_kernel(
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: str | list[int],
    groups: int,
    algorithm: str,
) -> Tensor:
    """:func:`convolve` for arguments already normalised and checked: what every DCLS layer's
    forward pass calls. TorchScript-compatible.

    TorchScript can hold neither ``"split"``'s ``autograd.Function``, ``"triton"``'s Python
    wrapper nor ``"auto"``'s timed trial: scripted, ``"split"`` runs its forward convolution
    (``"channels_last"``, same values; autograd then differentiates it as usual), ``"triton"``
    and ``"auto"`` run ``"direct"``. Under ``torch.jit.trace`` the same substitutions are made,
    so that a traced graph holds no Python call and can be saved and loaded anywhere. Under
    forward-mode AD and ``torch.func`` transforms (``grad``, ``vmap``, ``jvp``), which their
    backward passes do not support, ``"split"`` and ``"triton"`` make the same substitutions.
    """
    if torch.jit.is_scripting():
        if algorithm == "fft":
            return _fft_conv(input, kernel, bias, pad_pairs(padding, kernel.shape[2:]), groups)
        if algorithm == "channels_last" or algorithm == "split":
            return channels_last(input, kernel, bias, stride, padding, groups)
        return direct(input, kernel, bias, stride, padding, groups)
    else:
        if input.numel() == 0:  # an empty batch: F.conv's shapes and (zero) gradients
            algorithm = "direct"
        elif algorithm == "auto":
            algorithm = resolve_auto(input, kernel, bias, stride, padding, groups, _run)
        if algorithm in ("split", "triton") and (torch.jit.is_tracing() or forward_ad_active()):
            algorithm = "channels_last" if algorithm == "split" else "direct"  # same values
        return _run(algorithm, input, kernel, bias, stride, padding, groups)


def convolve(
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None,
    stride: int | Sequence[int],
    padding: str | int | Sequence[int],
    groups: int,
    algorithm: str = DEFAULT_CONV_ALGORITHM,
) -> Tensor:
    """Apply a dense kernel with the chosen algorithm (``F.conv{N}d`` semantics, dilation 1).

    Shape:
        input ``(B, C_in, *S)`` or ``(C_in, *S)``; kernel ``(C_out, C_in / groups, *k)``; bias
        ``(C_out,)``; output as ``F.conv{N}d``'s.

    Raises:
        ValueError: on an unknown ``algorithm``, one the problem does not allow (see
            :func:`check_conv_algorithm`), or arguments ``F.conv{N}d`` refuses (see
            :func:`check_convolution`).
    """
    n = kernel.dim() - 2
    strides = list(as_tuple(stride, n, "stride"))
    check_conv_algorithm(algorithm, tuple(strides), kernel.shape[1])
    check_convolution(input, kernel.shape, strides, padding, groups)
    if not isinstance(padding, str):
        padding = list(as_tuple(padding, n, "padding"))
    return _apply_kernel(input, kernel, bias, strides, padding, groups, algorithm)
