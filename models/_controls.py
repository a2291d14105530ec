"""The paper's "DC" controls: a backbone's chosen convolutions made dilated convolutions."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

import dcls


def with_dilated_convs(
    model: nn.Module,
    filter_fn: Callable[[str, nn.Module], bool],
    kernel_size: int,
    dilation: int,
    init_fn: Callable[[nn.Module], object],
) -> nn.Module:
    """Replace each ``nn.Conv2d`` that ``filter_fn(name, conv)`` picks by a ``kernel_size``
    convolution with ``dilation`` (spanning ``dilation * (kernel_size - 1) + 1``), of the same
    channels, stride, groups, bias, device and dtype, with the output size kept; ``init_fn``
    initialises each new convolution (in place) as the backbone initialised the one it replaces.
    """

    def dilated(name: str, conv: nn.Module) -> nn.Module | None:
        if not filter_fn(name, conv):
            return None
        dilated_conv = dcls.create_conv(
            "dilated",
            conv.in_channels,
            conv.out_channels,
            kernel_size,
            stride=conv.stride,
            groups=conv.groups,
            bias=conv.bias is not None,
            dilation=dilation,
        ).to(conv.weight.device, conv.weight.dtype)
        init_fn(dilated_conv)
        return dilated_conv

    return dcls.replace_modules(model, dilated)
