"""``create_conv``: one factory that returns a dense, dilated or DCLS 2-D convolution by name.

Modelled on timm's ``create_conv2d``: model code names the kind of convolution as a string (which a
YAML config can carry) instead of a class. Both model families build their dilated controls
(``*_dc``) with it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from dcls.conv import Dcls2d

__all__ = ["CONV_KINDS", "create_conv"]

CONV_KINDS = ("conv", "dilated", "dcls")


def create_conv(
    kind: str,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int | tuple[int, int] = 1,
    groups: int = 1,
    bias: bool = True,
    dilation: int = 1,
    **dcls_kwargs: Any,
) -> nn.Module:
    """Build a 2-D convolution whose output keeps the input's size at stride 1.

    Args:
        kind: ``"conv"`` (``nn.Conv2d``), ``"dilated"`` (``nn.Conv2d`` with ``dilation``) or
            ``"dcls"`` (:class:`dcls.Dcls2d`, where ``kernel_size`` is the dilated kernel size and
            ``dcls_kwargs`` must hold ``kernel_count`` and may hold ``version`` etc.).
        in_channels, out_channels, stride, groups, bias: as in ``nn.Conv2d``.
        kernel_size: odd kernel size (the dilated size for ``"dcls"``).
        dilation: dilation for ``"dilated"``; must be 1 otherwise.

    Raises:
        ValueError: on an unknown kind, an even kernel size, or arguments that do not fit the kind.
    """
    if kind not in CONV_KINDS:
        raise ValueError(f"kind must be one of {CONV_KINDS}, got {kind!r}")
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd to keep the input size, got {kernel_size}")
    if kind != "dilated" and dilation != 1:
        raise ValueError(
            f"dilation is only for kind='dilated', got dilation={dilation} for {kind!r}"
        )
    if kind != "dcls" and dcls_kwargs:
        raise ValueError(f"kind={kind!r} takes no DCLS arguments, got {sorted(dcls_kwargs)}")
    padding = dilation * (kernel_size - 1) // 2
    if kind == "dcls":
        if "kernel_count" not in dcls_kwargs:
            raise ValueError("kind='dcls' needs kernel_count")
        return Dcls2d(
            in_channels,
            out_channels,
            stride=stride,
            padding=padding,
            dilated_kernel_size=kernel_size,
            groups=groups,
            bias=bias,
            **dcls_kwargs,
        )
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=bias,
    )
