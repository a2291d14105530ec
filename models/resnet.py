"""ResNet-dcls (Khalfaoui-Hassani et al., ICLR 2023) and the dilated-convolution control.

Built on timm's ``ResNet``: each Bottleneck's 3x3 ``conv2`` (the one that carries the stride)
becomes a DCLS convolution; the stem, the 1x1 convolutions and the downsample branches are
unchanged. The default is iso-parameter with the baseline: 3 elements per channel pair with their
own positions (3 weights + 6 coordinates = the 9 weights of a 3x3) in a 7x7 dilated kernel. The
authors' timm fork (K-H-Ismail/pytorch-image-models@3e228f8, ``timm/models/resnet_dcls.py``)
defaults to 5 elements in 7x7 with optional per-stage sharing (``--dcls_sync``, off by default,
though its ``clamp_parameters`` only works with it on); which setting the paper's rows used is not
known. ``kernel_count=5, share_positions=True`` gives the fork's: one set per stage, held by the
stage's first block (``layer{i}.0.dcls_positions``), whose layer-wise lr scale it takes.
"""

from __future__ import annotations

from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import Bottleneck, ResNet, _cfg
from torch import nn

import dcls
from dcls.conv import DEFAULT_POSITION_INIT_STD
from models._controls import with_dilated_convs

__all__ = ["dc_resnet", "dcls_resnet"]


def _is_bottleneck_conv2(name: str, module: nn.Module) -> bool:
    return (
        name.endswith(".conv2") and isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3)
    )


def _first_block_of_stage(name: str) -> str:
    """``layer2.3.conv2 -> layer2.0``: the owner of a stage's shared positions. The stage itself
    is an ``nn.Sequential``, which would run the positions as one of its blocks."""
    return f"{name.split('.')[0]}.0"


def dcls_resnet(
    kernel_count: int = 3,
    dilated_kernel_size: int = 7,
    version: str = "bilinear",
    share_positions: bool = False,
    conv_algorithm: str = "auto",
    position_init_std: float = DEFAULT_POSITION_INIT_STD,
    sigma_init: float | None = None,
    **kwargs: Any,
) -> ResNet:
    """timm's ``ResNet(**kwargs)`` with every Bottleneck ``conv2`` replaced by a DCLS layer.

    The DCLS layers keep their own init (kaiming-uniform, a=sqrt(5)), as in the authors' fork
    (``resnet_dcls.py`` L694-704 kaiming-initialises only ``nn.Conv2d``).

    ``conv_algorithm`` (see :mod:`dcls.algorithms`; default ``"auto"``, the fastest per shape)
    applies to the stride-1 layers; "auto" keeps the strided ones direct, "fft" is refused for
    them, and "split" and "triton" (depthwise only) for all. ``position_init_std`` and
    ``sigma_init`` initialise the positions and widths, as :class:`dcls.Dcls2d`.
    """
    return dcls.convert(
        ResNet(**kwargs),
        kernel_count,
        dilated_kernel_size,
        version,
        filter_fn=_is_bottleneck_conv2,
        share_key=_first_block_of_stage if share_positions else None,
        position_init_std=position_init_std,
        sigma_init=sigma_init,
        conv_algorithm=conv_algorithm,
    )


def dc_resnet(dc_kernel_size: int = 3, dilation: int = 3, **kwargs: Any) -> ResNet:
    """timm's ``ResNet(**kwargs)`` with dilated ``conv2`` (the default 3x3 with dilation 3 spans
    7x7, the kernel of ResNet-dcls), initialised as timm initialises the conv it replaces
    (kaiming-normal, fan-out: ``ResNet.init_weights`` ran before the swap)."""

    def init_like_resnet(conv: nn.Module) -> None:
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    return with_dilated_convs(
        ResNet(**kwargs), _is_bottleneck_conv2, dc_kernel_size, dilation, init_like_resnet
    )


def _create(variant: str, builder: Any, pretrained: bool, **kwargs: Any) -> ResNet:
    return build_model_with_cfg(builder, variant, pretrained, **kwargs)


DEPTHS = {"resnet26": (2, 2, 2, 2), "resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}

default_cfgs = generate_default_cfgs(
    {f"{name}_dcls.untrained": _cfg() for name in DEPTHS}
    | {"resnet50_dc.untrained": _cfg()}
    | {"test_resnet_dcls.untrained": _cfg(input_size=(3, 160, 160), pool_size=(5, 5))}
)


def _dcls(name: str, pretrained: bool, kwargs: dict[str, Any]) -> ResNet:
    args = {"block": Bottleneck, "layers": DEPTHS[name], **kwargs}
    return _create(f"{name}_dcls", dcls_resnet, pretrained, **args)


@register_model
def resnet26_dcls(pretrained: bool = False, **kwargs: Any) -> ResNet:
    return _dcls("resnet26", pretrained, kwargs)


@register_model
def resnet50_dcls(pretrained: bool = False, **kwargs: Any) -> ResNet:
    return _dcls("resnet50", pretrained, kwargs)


@register_model
def resnet101_dcls(pretrained: bool = False, **kwargs: Any) -> ResNet:
    return _dcls("resnet101", pretrained, kwargs)


@register_model
def resnet50_dc(pretrained: bool = False, **kwargs: Any) -> ResNet:
    args = {"block": Bottleneck, "layers": DEPTHS["resnet50"], **kwargs}
    return _create("resnet50_dc", dc_resnet, pretrained, **args)


@register_model
def test_resnet_dcls(pretrained: bool = False, **kwargs: Any) -> ResNet:
    args = {"block": Bottleneck, "layers": (1, 1, 1, 1), "base_width": 16, **kwargs}
    return _create("test_resnet_dcls", dcls_resnet, pretrained, **args)
