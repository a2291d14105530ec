"""``"direct"`` and ``"channels_last"``: ``F.conv{1,2,3}d`` on the kernel as it is, or on the input
and kernel converted to channels-last memory format (the output stays channels-last; values are
those of ``"direct"``). PyTorch's NHWC depthwise kernels are much faster than its NCHW ones on
CPU. ``"channels_last"`` is ``"direct"`` for 1-D. TorchScript-compatible."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from dcls.algorithms._common import pad_argument, to_channels_last

__all__ = ["channels_last", "conv_padded", "direct"]


def direct(
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: str | list[int],
    groups: int,
) -> Tensor:
    """``F.conv{N}d`` with dilation 1; TorchScript-compatible."""
    n = kernel.dim() - 2
    if isinstance(padding, str):
        if n == 1:
            return F.conv1d(input, kernel, bias, stride, padding, 1, groups)
        if n == 2:
            return F.conv2d(input, kernel, bias, stride, padding, 1, groups)
        return F.conv3d(input, kernel, bias, stride, padding, 1, groups)
    if n == 1:
        return F.conv1d(input, kernel, bias, stride, padding, 1, groups)
    if n == 2:
        return F.conv2d(input, kernel, bias, stride, padding, 1, groups)
    return F.conv3d(input, kernel, bias, stride, padding, 1, groups)


def channels_last(
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: str | list[int],
    groups: int,
) -> Tensor:
    """:func:`direct` on ``input`` and ``kernel`` in channels-last memory format; strided
    problems as they come (oneDNN computes some strided channels-last convolutions wrongly on
    the CPU: bf16 depthwise with a channel multiplier and one output column, or a one-channel
    kernel whose layout was permuted; found by fuzzing, up to 1e37 of uninitialised memory)."""
    if any(s != 1 for s in stride):
        return direct(input, kernel, bias, stride, padding, groups)
    return direct(to_channels_last(input), to_channels_last(kernel), bias, stride, padding, groups)


def conv_padded(
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None,
    pairs: Sequence[tuple[int, int]],
    groups: int,
) -> Tensor:
    """Stride-1 ``F.conv`` with (before, after) zero padding per axis; negative entries crop."""
    ones = [1] * len(pairs)
    if all(a == b >= 0 for a, b in pairs):
        return direct(input, kernel, bias, ones, [a for a, _ in pairs], groups)
    input = F.pad(input, pad_argument(list(pairs)))
    return direct(input, kernel, bias, ones, [0] * len(pairs), groups)
