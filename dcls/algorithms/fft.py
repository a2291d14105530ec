"""``"fft"``: a cross-correlation through ``torch.fft``.

Its cost does not grow with the kernel area, which makes it much faster than the direct depthwise
kernels for the large dilated kernels of DCLS (17x17 in ConvNeXt-dcls). Stride 1 only; zero
padding (ints, ``"same"``, ``"valid"``); other padding modes are applied by the layer before the
convolution. :func:`_fft_conv` (no autocast handling) is TorchScript-compatible.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dcls.algorithms._common import autocast_cast, autocast_enabled, checked_pad_pairs, pad_argument

__all__ = ["fft_conv"]


def _fast_size(n: int) -> int:
    """Smallest ``m >= n`` whose only prime factors are 2, 3 and 5 (fast FFT lengths).

    Under ``torch.compile`` the size is kept as it is: with dynamic shapes the search would guard
    on every division, one graph per input size until the recompile limit (and Dynamo does not
    tell a symbolic size from an int here).
    """
    if torch.compiler.is_compiling():
        return n
    m = n
    rest = 0
    while rest != 1:
        rest = m
        for p in (2, 3, 5):
            while rest % p == 0:
                rest = rest // p
        m = m + 1  # not in place: under torch.jit.trace sizes are 0-d tensors
    return m - 1


def fft_conv(
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None,
    padding: str | int | Sequence[int],
    groups: int,
) -> Tensor:
    """Cross-correlation of ``input`` with ``kernel`` (what ``F.conv{N}d`` computes) via FFT.

    Stride and dilation 1. Runs in float32 at least; under autocast the result is cast to the
    autocast dtype, like the convolution it replaces.

    Args:
        input: ``(B, C_in, *S)`` or unbatched ``(C_in, *S)``.
        kernel: ``(C_out, C_in / groups, *k)``.
        bias: ``(C_out,)`` or ``None``.
        padding: ``"same"``, ``"valid"``, an int or ``N`` ints (zeros on both sides).
        groups: blocked connections, as in ``F.conv{N}d``.

    Returns:
        ``(B, C_out, *O)`` with ``O_d = S_d + 2 * padding_d - k_d + 1`` (unbatched if the input
        was).

    Raises:
        ValueError: if padding is not ``"same"``, ``"valid"``, an int >= 0 or ``N`` ints >= 0,
            or leaves no output (a kernel larger than the padded input).
    """
    n = kernel.dim() - 2
    pairs = checked_pad_pairs(padding, input.shape[-n:], kernel.shape[2:])
    device_type = input.device.type
    if not autocast_enabled(device_type):
        return _fft_conv(input, kernel, bias, pairs, groups)
    with torch.autocast(device_type, enabled=False):
        out = _fft_conv(input, kernel, bias, pairs, groups)
    return autocast_cast(out, torch.get_autocast_dtype(device_type))


def _fft_conv(
    input: Tensor,
    kernel: Tensor,
    bias: Tensor | None,
    pairs: list[tuple[int, int]],
    groups: int,
) -> Tensor:
    """:func:`fft_conv` with the padding as (before, after) pairs, outside autocast; the result
    has ``input``'s dtype. TorchScript-compatible."""
    n = kernel.dim() - 2
    unbatched = input.dim() == n + 1
    if unbatched:
        input = input.unsqueeze(0)
    compute_dtype = torch.promote_types(
        torch.promote_types(input.dtype, kernel.dtype), torch.float32
    )
    x = input.to(compute_dtype)
    w = kernel.to(compute_dtype)
    # Circular correlation over `fft_sizes >= padded`, the input zero-filled at the end by
    # rfftn itself (no padded copy) and the kernel rolled back by the leading padding:
    # output i reads input i - before .. i - before + k - 1, whose indices below 0 wrap to
    # N - before >= S + after and those from S up stay below N, all zeros: no aliasing.
    fft_sizes: list[int] = []
    out_sizes: list[int] = []
    tails: list[tuple[int, int]] = []
    shifts: list[int] = []
    for d in range(n):
        before, after = pairs[d]
        padded = x.shape[2 + d] + before + after
        fft_sizes.append(_fast_size(padded))
        out_sizes.append(padded - w.shape[2 + d] + 1)
        tails.append((0, fft_sizes[d] - w.shape[2 + d]))
        shifts.append(-before)
    dims = [d - n for d in range(n)]
    # Contiguous first: on a channels-last input rfftn's zero-filling is measured 2x slower.
    x_f = torch.fft.rfftn(x.contiguous(), s=fft_sizes, dim=dims)
    w = torch.roll(F.pad(w, pad_argument(tails)), shifts=shifts, dims=dims)
    w_f = torch.fft.rfftn(w, dim=dims).conj()
    batch = x.shape[0]
    c_out, in_per_group = w.shape[0], w.shape[1]
    spectrum = list(x_f.shape[2:])
    if in_per_group == 1 and c_out == groups:  # depthwise: one product per channel
        y_f = x_f * w_f.squeeze(1)
    else:
        x_f = x_f.reshape([batch, groups, in_per_group] + spectrum)  # noqa: RUF005
        w_f = w_f.reshape([groups, c_out // groups, in_per_group] + spectrum)  # noqa: RUF005
        y_f = torch.einsum("bgi...,goi...->bgo...", [x_f, w_f])
        y_f = y_f.reshape([batch, c_out] + spectrum)  # noqa: RUF005
    y = torch.fft.irfftn(y_f, s=fft_sizes, dim=dims)
    for d in range(n):
        y = y.narrow(2 + d, 0, out_sizes[d])
    if bias is not None:
        y = y + bias.to(compute_dtype).view([-1] + [1] * n)
    y = y.to(input.dtype)
    return y.squeeze(0) if unbatched else y
