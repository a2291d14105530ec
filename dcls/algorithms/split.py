"""``"split"``: a depthwise convolution whose backward pass is made of forward convolutions.

Forward as ``"channels_last"``; the backward pass as two more *forward* convolutions, which
PyTorch runs much faster than its own depthwise convolution backward on CPU: the input gradient
is the output gradient convolved with the flipped kernel, and the kernel gradient a depthwise
convolution of the padded input by the output gradient with the batch folded into the channels
(``B * C`` groups), summed over the batch. Stride 1 and ``in_channels == groups`` (depthwise, any
channel multiplier) only; zero padding. Twice differentiable. An ``autograd.Function``, hence not
TorchScript-compatible (scripted and traced layers run its forward convolution instead).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dcls.algorithms._common import (
    autocast_cast,
    autocast_enabled,
    pad_argument,
    pad_pairs,
    to_channels_last,
)
from dcls.algorithms.direct import conv_padded, direct

__all__ = ["split_conv"]


class _SplitConv(torch.autograd.Function):
    """Depthwise (``in_channels == groups``) stride-1 convolution whose backward pass is made of
    forward convolutions (see ``"split"`` in the module docstring).

    Shapes: input ``(B, C, *S)``; kernel ``(C * m, 1, *k)``; bias ``(C * m,)`` or ``None``; pairs
    the (before, after) zero padding per axis; output ``(B, C * m, *O)``.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        input: Tensor,
        kernel: Tensor,
        bias: Tensor | None,
        pairs: tuple[tuple[int, int], ...],
    ) -> Tensor:
        ctx.save_for_backward(input, kernel)  # as given: double backward needs the inputs
        ctx.pairs = pairs
        return conv_padded(to_channels_last(input), kernel, bias, pairs, groups=input.shape[1])

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: Tensor):
        input, kernel = ctx.saved_tensors
        pairs = ctx.pairs
        batch, channels = input.shape[:2]
        out_channels, sizes = kernel.shape[0], kernel.shape[2:]
        multiplier = out_channels // channels
        n = len(sizes)
        grad_input = grad_kernel = grad_bias = None
        if ctx.needs_input_grad[0]:
            # Input channel c collects output channels c*m .. c*m+m-1 through the flipped kernel.
            flipped = kernel.flip(tuple(range(2, 2 + n))).reshape(channels, multiplier, *sizes)
            full = tuple((k - 1 - a, k - 1 - b) for k, (a, b) in zip(sizes, pairs, strict=True))
            grad_input = conv_padded(
                to_channels_last(grad_output), flipped, None, full, groups=channels
            )
        if ctx.needs_input_grad[1]:
            # Each (sample, channel) plane of the padded input correlated with its m output
            # gradients: one depthwise convolution over B * C groups, then summed over B. The
            # input is made contiguous before it is padded (a channels-last input costs one
            # transpose of the unpadded tensor), and padded explicitly: measured on CPU, the
            # convolution's own padding argument sends this problem to a 4x slower kernel.
            planes = input.contiguous().reshape(1, batch * channels, *input.shape[2:])
            planes = F.pad(planes, pad_argument(list(pairs)))
            out_sizes = grad_output.shape[2:]
            kernels = grad_output.contiguous().reshape(batch * out_channels, 1, *out_sizes)
            per_sample = direct(planes, kernels, None, [1] * n, [0] * n, batch * channels)
            per_sample = per_sample.reshape(batch, out_channels, 1, *sizes)
            grad_kernel = per_sample.sum(0, dtype=torch.promote_types(kernel.dtype, torch.float32))
            grad_kernel = grad_kernel.to(kernel.dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum((0, *range(2, 2 + n)))
        return grad_input, grad_kernel, grad_bias, None


def split_conv(
    input: Tensor, kernel: Tensor, bias: Tensor | None, padding: str | int | Sequence[int]
) -> Tensor:
    """Depthwise stride-1 convolution with the ``"split"`` backward pass (``F.conv`` semantics).

    Under autocast the operands are cast to the autocast dtype, as ``F.conv`` would be.

    Shape:
        input ``(B, C, *S)`` or ``(C, *S)``; kernel ``(C * m, 1, *k)``; bias ``(C * m,)``;
        output ``(B, C * m, *O)`` (unbatched if the input was).

    Raises:
        ValueError: if the kernel is not depthwise for this input (``kernel.shape[1] != 1`` or
            ``C * m`` output channels not a multiple of the input's ``C``).
    """
    n = kernel.dim() - 2
    unbatched = input.dim() == n + 1
    if unbatched:
        input = input.unsqueeze(0)
    channels = input.shape[1]
    if kernel.shape[1] != 1 or kernel.shape[0] % channels:
        raise ValueError(
            f"conv_algorithm='split' needs a depthwise kernel (C * m, 1, *k) for {channels} input "
            f"channels, got kernel shape {tuple(kernel.shape)}"
        )
    if isinstance(padding, int):
        padding = (padding,) * n
    pairs = pad_pairs(padding if isinstance(padding, str) else list(padding), kernel.shape[2:])
    pairs = tuple(pairs)
    device_type = input.device.type
    if autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        input, kernel = autocast_cast(input, dtype), autocast_cast(kernel, dtype)
        bias = autocast_cast(bias, dtype) if bias is not None else None
        with torch.autocast(device_type, enabled=False):
            out = _SplitConv.apply(input, kernel, bias, pairs)
    else:
        out = _SplitConv.apply(input, kernel, bias, pairs)
    return out.squeeze(0) if unbatched else out
