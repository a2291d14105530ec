"""ConvNeXt-dcls (Khalfaoui-Hassani et al., ICLR 2023) and the dilated-convolution control.

Paper: "Dilated Convolution with Learnable Spacings", arXiv 2112.03740, Section 4; original code:
https://github.com/K-H-Ismail/ConvNeXt-dcls. Built on timm's ``ConvNeXt``: the model is timm's,
plus one conversion step that swaps every block's depthwise 7x7 ``conv_dw`` for a DCLS layer (or a
dilated conv). State-dict keys stay timm's (``stages.N.blocks.M.conv_dw.*``); positions shared by a
stage live once at ``stages.N.dcls_positions``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.convnext import ConvNeXt
from timm.models.convnext import checkpoint_filter_fn as timm_checkpoint_filter_fn
from torch import Tensor, nn

import dcls
from dcls._utils import as_tuple
from dcls.conv import DEFAULT_POSITION_INIT_STD, authors_to_ours
from models._controls import with_dilated_convs
from models._grouping import with_shared_positions

__all__ = [
    "DclsConvNeXt",
    "checkpoint_filter_fn",
    "dc_convnext",
    "dcls_convnext",
    "init_like_convnext_",
    "iso_parameter_kernel_count",
]

DENSE_KERNEL_SIZE = 7  # ConvNeXt's depthwise kernel, the parameter budget of the DCLS variants


def iso_parameter_kernel_count(
    depths: Sequence[int],
    dims: Sequence[int],
    dense_kernel_size: int = DENSE_KERNEL_SIZE,
    shared: bool = True,
    version: str = "bilinear",
    spatial_dims: int = 2,
) -> int:
    """Largest kernel count whose depthwise weights and positions fit the dense kernels' budget.

    The authors' rule: ``sum_s (depth_s + 2) * dim_s * K <= sum_s depth_s * dim_s * 7 * 7`` with
    one shared ``P`` (2 coordinates) per stage; 34 for ConvNeXt-T, 40 for S and B. Gaussian and
    triangle DCLS count their widths too; unshared positions count per block.
    """
    per_element = spatial_dims * (2 if dcls.functional.has_sigma(version) else 1)
    budget = sum(d * c for d, c in zip(depths, dims, strict=True)) * dense_kernel_size**spatial_dims
    if shared:
        cost = sum((d + per_element) * c for d, c in zip(depths, dims, strict=True))
    else:
        cost = sum(d * c * (1 + per_element) for d, c in zip(depths, dims, strict=True))
    return budget // cost


def _is_block_dwconv(name: str, module: nn.Module) -> bool:
    return name.endswith(".conv_dw") and isinstance(module, nn.Conv2d)


def _stage_of(name: str) -> str:
    return name.split(".blocks.")[0]


@torch.no_grad()
def init_like_convnext_(conv: nn.Module) -> nn.Module:
    """ConvNeXt's init of a convolution, in place: weight ``trunc_normal(std=0.02)``, bias 0.

    timm's ``convnext._init_weights`` and the authors' ``ConvNeXt_dcls._init_weights``
    (ConvNeXt-dcls ``models/convnext_dcls.py`` L132-135 at aad45f3, which also catches their
    DCLS layer). The layers swapped in after timm's init need it again: a DCLS layer's own
    kaiming-uniform init gives a depthwise weight std of about 0.1 and a bias up to +-0.17.
    Positions keep their own init (normal, std 0.5, clamped; as the authors').
    """
    trunc_normal_(conv.weight, std=0.02)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class DclsConvNeXt(ConvNeXt):
    """timm's ConvNeXt whose layer grouping also places each stage's shared positions.

    Layer-wise lr decay (``timm.optim.param_groups_layer_decay``) groups parameters by
    ``group_matcher``; timm's patterns do not match ``stages.N.dcls_positions`` and would give the
    positions the top layer's scale. They get the scale of their stage's first block.
    """

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return with_shared_positions(super().group_matcher(coarse), r"^stages\.", coarse)


def dcls_convnext(
    kernel_count: int | None = None,
    dilated_kernel_size: int | Sequence[int] = 17,
    version: str = "bilinear",
    share_positions: bool = True,
    conv_algorithm: str = "auto",
    position_init_std: float = DEFAULT_POSITION_INIT_STD,
    sigma_init: float | None = None,
    **kwargs: Any,
) -> ConvNeXt:
    """timm's ``ConvNeXt(**kwargs)`` with every block's depthwise conv replaced by a DCLS layer.

    The DCLS layers get ConvNeXt's init (:func:`init_like_convnext_`), as the authors'.

    Args:
        kernel_count: elements per channel; default the iso-parameter rule
            (:func:`iso_parameter_kernel_count`).
        dilated_kernel_size: size of the dilated kernel (17 in the paper, padding 8).
        version: interpolation ("bilinear"; the released checkpoints use "v0").
        share_positions: one set of positions per stage (the paper) or one per block.
        conv_algorithm: how the DCLS layers apply their kernels: ``"direct"``,
            ``"channels_last"``, ``"fft"``, ``"split"``, ``"triton"`` or ``"auto"`` (the
            default, as the configs: the fastest per shape, see :mod:`dcls.algorithms`).
        position_init_std, sigma_init: initial positions' std (clamped to the kernel) and
            widths (``None``: the version's default), as :class:`dcls.Dcls2d`.
        **kwargs: ``ConvNeXt`` arguments (``depths``, ``dims``, ``drop_path_rate``, ...).
    """
    if kernel_count is None:
        kernel_count = iso_parameter_kernel_count(
            kwargs["depths"], kwargs["dims"], shared=share_positions, version=version
        )
        cells = math.prod(as_tuple(dilated_kernel_size, 2, "dilated_kernel_size"))
        if kernel_count > cells:
            raise ValueError(
                f"dilated_kernel_size={dilated_kernel_size} is invalid: its {cells} cells cannot "
                f"hold the {kernel_count} elements of the iso-parameter rule; expected at least "
                f"{kernel_count} cells, e.g. {math.isqrt(kernel_count - 1) + 1} (or set "
                "kernel_count)"
            )
    model = dcls.convert(
        DclsConvNeXt(**kwargs),
        kernel_count,
        dilated_kernel_size,
        version,
        filter_fn=_is_block_dwconv,
        share_key=_stage_of if share_positions else None,
        position_init_std=position_init_std,
        sigma_init=sigma_init,
        conv_algorithm=conv_algorithm,
    )
    for module in model.modules():
        if isinstance(module, dcls.Dcls2d):
            init_like_convnext_(module)
    return model


def dc_convnext(dc_kernel_size: int = 5, dilation: int = 4, **kwargs: Any) -> ConvNeXt:
    """timm's ``ConvNeXt(**kwargs)`` with dilated depthwise convs: the paper's "DC" control.

    The default 5x5 kernel with dilation 4 spans 17x17, the receptive field of ConvNeXt-dcls. The
    dilated convs get ConvNeXt's init (:func:`init_like_convnext_`), as timm's would.
    """

    return with_dilated_convs(
        ConvNeXt(**kwargs), _is_block_dwconv, dc_kernel_size, dilation, init_like_convnext_
    )


_AUTHORS_POSITION_KEY = re.compile(r"stages\.(\d+)\.(\d+)\.dwconv\.(P|SIG)")


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Remap the authors' ConvNeXt-dcls checkpoints (facebookresearch-ConvNeXt layout) to ours.

    Their layout repeats a stage's shared positions under every block
    (``stages.{i}.{j}.dwconv.P``); ours holds them once at ``stages.{i}.dcls_positions.P``. Their
    position axes come in their package's order (reversed for "v1"/"gauss"/"max" in 2-D), which
    the layers would read from the state dict's version metadata, lost here: they are put in
    ours (:func:`dcls.conv.authors_to_ours`). The other keys are remapped by timm's own
    ConvNeXt filter. timm-format state dicts pass unchanged.

    Raises:
        ValueError: if the model shares positions per stage but the checkpoint's blocks disagree.
    """
    state_dict = state_dict.get("model", state_dict)
    shared = {n for n, m in model.named_modules() if isinstance(m, dcls.DclsPositions)}
    remapped: dict[str, Tensor] = {}
    layers = dict(model.named_modules())
    for key, value in state_dict.items():
        match = _AUTHORS_POSITION_KEY.fullmatch(key)
        layer = layers.get(f"stages.{match[1]}.blocks.{match[2]}.conv_dw") if match else None
        if layer is not None:
            value = authors_to_ours(layer, match[3], value)
        owner = f"stages.{match[1]}.{dcls.SHARED_POSITIONS_NAME}" if match else None
        if owner in shared:
            target = f"{owner}.{match[3]}"
            if target in remapped and not torch.equal(remapped[target], value):
                raise ValueError(
                    f"{key} differs from the other blocks of stage {match[1]}: this checkpoint "
                    f"does not share positions per stage; create the model with "
                    f"share_positions=False"
                )
            remapped[target] = value
        else:
            remapped[key] = value
    return timm_checkpoint_filter_fn(remapped, model)


def _create(variant: str, builder: Any, pretrained: bool, **kwargs: Any) -> ConvNeXt:
    return build_model_with_cfg(
        builder,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True),
        **kwargs,
    )


def _cfg(url: str = "", **kwargs: Any) -> dict[str, Any]:
    return {
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.0",
        "classifier": "head.fc",
        **kwargs,
    }


SIZES = {
    "atto": dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), conv_mlp=True),
    "femto": dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384), conv_mlp=True),
    "pico": dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512), conv_mlp=True),
    "nano": dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640), conv_mlp=True),
    "tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    "small": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    "base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
    "large": dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)),
}
TEST_SIZE = dict(depths=(1, 2, 4, 2), dims=(24, 32, 48, 64), norm_eps=1e-5, act_layer="gelu_tanh")

default_cfgs = generate_default_cfgs(
    {f"convnext_{size}_dcls.untrained": _cfg() for size in SIZES}
    | {f"convnext_{size}_dc.untrained": _cfg() for size in ("atto", "tiny", "small", "base")}
    | {"test_convnext_dcls.untrained": _cfg(input_size=(3, 160, 160), pool_size=(5, 5))}
)


def _dcls(size: str, pretrained: bool, kwargs: dict[str, Any]) -> ConvNeXt:
    return _create(f"convnext_{size}_dcls", dcls_convnext, pretrained, **{**SIZES[size], **kwargs})


def _dc(size: str, pretrained: bool, kwargs: dict[str, Any]) -> ConvNeXt:
    return _create(f"convnext_{size}_dc", dc_convnext, pretrained, **{**SIZES[size], **kwargs})


@register_model
def convnext_atto_dcls(pretrained: bool = False, **kwargs: Any) -> ConvNeXt:
    return _dcls("atto", pretrained, kwargs)


@register_model
def convnext_femto_dcls(pretrained: bool = False, **kwargs: Any) -> ConvNeXt:
    return _dcls("femto", pretrained, kwargs)


@register_model
def convnext_pico_dcls(pretrained: bool = False, **kwargs: Any) -> ConvNeXt:
    return _dcls("pico", pretrained, kwargs)


@register_model
def convnext_nano_dcls(pretrained: bool = False, **kwargs: Any) -> ConvNeXt:
    return _dcls("nano", pretrained, kwargs)


@register_model
def convnext_tiny_dcls(pretrained: bool = False, **kwargs: Any) -> ConvNeXt:
    return _dcls("tiny", pretrained, kwargs)


@register_model
def convnext_small_dcls(pretrained: bool = False, **kwargs: Any) -> ConvNeXt:
    return _dcls("small", pretrained, kwargs)


@register_model
def convnext_base_dcls(pretrained: bool = False, **kwargs: Any) -> ConvNeXt:
    return _dcls("base", pretrained, kwargs)


@register_model
def convnext_large_dcls(pretrained: bool = False, **kwargs: Any) -> ConvNeXt:
    return _dcls("large", pretrained, kwargs)


@register_model
def convnext_atto_dc(pretrained: bool = False, **kwargs: Any) -> ConvNeXt:
    return _dc("atto", pretrained, kwargs)


@register_model
def convnext_tiny_dc(pretrained: bool = False, **kwargs: Any) -> ConvNeXt:
    return _dc("tiny", pretrained, kwargs)


@register_model
def convnext_small_dc(pretrained: bool = False, **kwargs: Any) -> ConvNeXt:
    return _dc("small", pretrained, kwargs)


@register_model
def convnext_base_dc(pretrained: bool = False, **kwargs: Any) -> ConvNeXt:
    return _dc("base", pretrained, kwargs)


@register_model
def test_convnext_dcls(pretrained: bool = False, **kwargs: Any) -> ConvNeXt:
    return _create("test_convnext_dcls", dcls_convnext, pretrained, **{**TEST_SIZE, **kwargs})
