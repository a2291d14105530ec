"""Whole-model tools: swap convolutions for DCLS layers, freeze them back, load the authors'
state dicts (the tools that read or change positions: :mod:`dcls.positions`).

Like ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``, each function rewrites an already built
``nn.Module`` in place and returns it (a new module when the root itself is replaced).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn

from dcls._utils import as_tuple
from dcls.algorithms import DEFAULT_CONV_ALGORITHM
from dcls.conv import DEFAULT_POSITION_INIT_STD, Dcls1d, Dcls2d, Dcls3d, DclsPositions, _DclsNd

__all__ = [
    "SHARED_POSITIONS_NAME",
    "convert",
    "freeze",
    "is_depthwise",
    "load_authors_state_dict",
    "replace_modules",
]

_logger = logging.getLogger(__name__)

_DCLS_FOR_CONV = {nn.Conv1d: Dcls1d, nn.Conv2d: Dcls2d, nn.Conv3d: Dcls3d}
_CONV_FOR_DCLS = {Dcls1d: nn.Conv1d, Dcls2d: nn.Conv2d, Dcls3d: nn.Conv3d}
SHARED_POSITIONS_NAME = "dcls_positions"


def is_depthwise(name: str, module: nn.Module) -> bool:
    """Default filter of :func:`convert`: depthwise convolutions with a kernel larger than 1."""
    return type(module) in _DCLS_FOR_CONV and _is_depthwise_shape(module)


def _is_depthwise_shape(module: nn.Module) -> bool:
    return (
        isinstance(module, tuple(_DCLS_FOR_CONV))
        and module.groups == module.in_channels == module.out_channels
        and all(k > 1 for k in module.kernel_size)
    )


def _dcls_padding(conv: nn.Module, sizes: tuple[int, ...]) -> str | tuple[int, ...]:
    """Padding that keeps ``conv``'s output size once its kernel is ``sizes``."""
    if conv.padding == "same":
        return conv.padding
    padding = (0,) * len(sizes) if conv.padding == "valid" else conv.padding
    centered = all(
        p == d * (k - 1) // 2
        for p, d, k in zip(padding, conv.dilation, conv.kernel_size, strict=True)
    )
    if not centered:
        raise ValueError(
            f"its padding {conv.padding!r} is not centred on its kernel {conv.kernel_size} "
            f"(dilation {conv.dilation}); only centred convolutions can be converted"
        )
    if all(s % 2 == 1 for s in sizes):
        return tuple(s // 2 for s in sizes)
    if all(s == 1 for s in conv.stride):
        return "same"
    raise ValueError(
        f"dilated_kernel_size {sizes} has an even entry, which cannot keep the output size of "
        f"a convolution of stride {conv.stride}; use odd sizes"
    )


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _owner_module(model: nn.Module, path: str) -> nn.Module:
    """The module at ``path`` that is to own a shared position set.

    Raises:
        ValueError: if ``path`` names a container, whose iteration would then include the set,
            or no module.
    """
    try:
        owner = model.get_submodule(path) if path else model
    except AttributeError as error:
        raise ValueError(f"convert: share_key returned {path!r}, not a module: {error}") from None
    if isinstance(owner, _CONTAINERS):
        raise ValueError(
            f"convert: share_key returned {path!r}, a {type(owner).__name__}: positions "
            f"registered there would be iterated (and called) with its layers; return the path "
            f"of a non-container module, e.g. the stage's first block"
        )
    return owner


def _register_owner(model: nn.Module, path: str, positions: DclsPositions) -> None:
    """Register ``positions`` at ``<path>.dcls_positions``, first among that module's children.

    Every layer sharing the set holds it as a submodule too; the module tree is walked in
    registration order and ``named_parameters()`` names a shared tensor by the first path that
    reaches it, so registering the owner first keeps the names ``<path>.dcls_positions.P``.
    """
    owner = _owner_module(model, path)
    children = list(owner._modules.items())
    owner._modules.clear()
    owner._modules[SHARED_POSITIONS_NAME] = positions
    owner._modules.update((n, child) for n, child in children if n != SHARED_POSITIONS_NAME)


def replace_modules(
    model: nn.Module, replace: Callable[[str, nn.Module], nn.Module | None]
) -> nn.Module:
    """Replace submodules of ``model`` in place, wherever ``replace`` returns a new module.

    ``replace(name, module)`` is called for every module of ``model`` (the root too, named
    ``""``) in model order, and returns the module to put in its place, or ``None`` to keep it
    (and look into its children). The children of a replaced module are not visited.

    Args:
        model: any module.
        replace: ``(name, module) -> new module or None``.

    Returns:
        ``model``, or the root's replacement if ``replace`` replaced the root.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(2, 2, 3), nn.ReLU())
        >>> def gelu(name, module):
        ...     return nn.GELU() if isinstance(module, nn.ReLU) else None
        >>> model = replace_modules(model, gelu)
        >>> type(model[1]).__name__
        'GELU'
    """
    replaced: list[str] = []
    for name, module in list(model.named_modules()):
        if any(name.startswith(f"{r}.") for r in replaced):
            continue
        new = replace(name, module)
        if new is None:
            continue
        if not name:
            return new
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
        replaced.append(name)
    return model


def convert(
    model: nn.Module,
    kernel_count: int,
    dilated_kernel_size: int | Sequence[int],
    version: str = "bilinear",
    filter_fn: Callable[[str, nn.Module], bool] = is_depthwise,
    share_key: Callable[[str], str | None] | None = None,
    position_init_std: float = DEFAULT_POSITION_INIT_STD,
    sigma_init: float | None = None,
    conv_algorithm: str = DEFAULT_CONV_ALGORITHM,
) -> nn.Module:
    """Replace matching ``nn.Conv{1,2,3}d`` of ``model`` by DCLS layers, in place.

    Stride, groups, bias, padding mode, device and dtype are kept; the padding is chosen so that
    every output keeps its size (an even ``dilated_kernel_size`` gets ``"same"``, whose position
    0 reads one step after the output's own input: see :class:`dcls.Dcls2d`). The new layers are
    freshly initialised (a dense kernel has no positions to inherit); each records the kernel
    size it replaced as ``replaced_kernel_size`` (a plain attribute, e.g. ``(7, 7)``: pictures
    outline it).

    Args:
        model: any module.
        kernel_count: kernel elements per channel pair.
        dilated_kernel_size: dilated kernel size of the new layers.
        version: interpolation (see :class:`dcls.Dcls2d`).
        filter_fn: ``(name, module) -> bool`` choosing the convolutions; default
            :func:`is_depthwise`.
        share_key: ``name -> path`` of the module that owns the positions shared by that layer
            (e.g. ``lambda n: n.split(".blocks.")[0]`` for one set per ConvNeXt stage), or
            ``None`` for a layer with its own. The owner is a :class:`dcls.DclsPositions`
            registered at ``<path>.dcls_positions`` (first among that module's children, so
            that parameter names go through it), which must not be a container
            (``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict``).
        position_init_std, sigma_init: initialisation of the positions and widths.
        conv_algorithm: how the new layers apply their kernels (see
            :data:`dcls.CONV_ALGORITHMS`).

    Returns:
        ``model`` (or the new layer if ``model`` itself matched).

    Raises:
        ValueError: naming the convolution, if none matches, one cannot keep its output size or
            be a DCLS layer of these arguments (``"fft"``, ``"split"`` and ``"triton"`` refuse
            strided ones), or ``share_key`` names a container; the model is then unchanged.
    """
    targets = {n for n, m in model.named_modules() if filter_fn(n, m)}
    if filter_fn is is_depthwise:
        _warn_about_conv_subclasses(model)
    if not targets:
        raise ValueError("convert: filter_fn matched no nn.Conv1d/2d/3d in the model")
    owners: dict[str, DclsPositions] = {}

    def build(name: str, conv: nn.Module) -> nn.Module:
        if type(conv) not in _DCLS_FOR_CONV:
            raise ValueError(f"a {type(conv).__name__}, not nn.Conv1d/2d/3d")
        n = len(conv.kernel_size)
        sizes = as_tuple(dilated_kernel_size, n, "dilated_kernel_size")
        factory_kwargs = {"device": conv.weight.device, "dtype": conv.weight.dtype}
        key = share_key(name) if share_key is not None else None
        if key is not None and key not in owners:
            _owner_module(model, key)  # a module that can own them
            owners[key] = DclsPositions(
                sizes,
                conv.out_channels,
                conv.in_channels // conv.groups,
                kernel_count,
                version,
                position_init_std,
                sigma_init,
                **factory_kwargs,
            )
        layer = _DCLS_FOR_CONV[type(conv)](
            conv.in_channels,
            conv.out_channels,
            kernel_count,
            stride=conv.stride,
            padding=_dcls_padding(conv, sizes),
            dilated_kernel_size=sizes,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            version=version,
            positions=owners.get(key) if key is not None else None,
            position_init_std=position_init_std,
            sigma_init=sigma_init,
            conv_algorithm=conv_algorithm,
            **factory_kwargs,
        )
        layer.replaced_kernel_size = tuple(conv.kernel_size)  # (not in the state dict)
        return layer

    layers: dict[str, nn.Module] = {}
    for name, conv in model.named_modules():  # every layer built before the model changes
        if name in targets:
            try:
                layers[name] = build(name, conv)
            except ValueError as error:
                message = str(error).removeprefix("convert: ")
                raise ValueError(
                    f"convert: {name or 'the model'}: {message}; the model is unchanged"
                ) from None
    for path, positions in owners.items():
        _register_owner(model, path, positions)
    model = replace_modules(model, lambda name, _: layers.get(name))
    _logger.info(
        "convert: %d convolutions -> DCLS (K=%d, S=%s, %s), %d shared position sets",
        len(targets),
        kernel_count,
        dilated_kernel_size,
        version,
        len(owners),
    )
    return model


def _warn_about_conv_subclasses(model: nn.Module) -> None:
    """Log the depthwise convolutions that :func:`is_depthwise` leaves out for their class (e.g.
    timm's ``Conv2dSame``, whose TF-style padding a DCLS layer does not have)."""
    left = [
        f"{name} ({type(m).__name__})"
        for name, m in model.named_modules()
        if _is_depthwise_shape(m) and type(m) not in _DCLS_FOR_CONV
    ]
    if left:
        _logger.warning(
            "convert: %d depthwise convolutions are subclasses of nn.Conv1d/2d/3d and stay as "
            "they are (convert replaces the plain classes only): %s",
            len(left),
            ", ".join(left),
        )


@torch.no_grad()
def freeze(model: nn.Module) -> nn.Module:
    """Turn every DCLS layer into a plain ``nn.Conv{1,2,3}d`` holding its constructed kernel.

    For deployment: same outputs, no kernel construction at inference, exportable with
    ``torch.export``. Shared :class:`DclsPositions` modules are removed. In place.

    Returns:
        ``model`` (or the new convolution if ``model`` itself is a DCLS layer).
    """

    def to_conv(name: str, layer: nn.Module) -> nn.Module | None:
        if not isinstance(layer, _DclsNd):
            return None
        kernel = layer.construct_kernel().to(layer.weight.dtype)
        conv = _CONV_FOR_DCLS[type(layer)](
            layer.in_channels,
            layer.out_channels,
            layer.dilated_kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            groups=layer.groups,
            bias=layer.bias is not None,
            padding_mode=layer.padding_mode,
            device=kernel.device,
            dtype=kernel.dtype,
        )
        conv.weight.copy_(kernel)
        if layer.bias is not None:
            conv.bias.copy_(layer.bias)
        return conv

    model = replace_modules(model, to_conv)
    # the shared sets still registered once the layers are gone (e.g. on a ConvNeXt stage)
    owners = [name for name, m in model.named_modules() if isinstance(m, DclsPositions)]
    for name in owners:
        parent, _, child = name.rpartition(".")
        delattr(model.get_submodule(parent) if parent else model, child)
    return model


def load_authors_state_dict(
    model: nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = True
) -> nn.modules.module._IncompatibleKeys:
    """Load into ``model`` a state dict saved from the authors' DCLS layers (their ``DCLS``
    package), with or without its version metadata.

    ``model.load_state_dict`` converts the authors' layout itself when the state dict still
    carries the metadata ``state_dict()`` saves with it (``_version`` 1 of their layers). A dict
    rebuilt by hand (keys renamed, ``module.`` stripped, timm's ``clean_state_dict``) has lost
    it and would load as ours, with the position axes of 2-D and 3-D ``"v1"``/``"gauss"``/
    ``"max"`` layers swapped: this function converts every DCLS layer's entries
    (:func:`dcls.conv.authors_to_ours`; the ``Dcls2dK1d`` weight layout) whatever the metadata.

    Args:
        model: the model whose DCLS layers have the authors' layers' names, sizes and versions.
        state_dict: the authors' model's state dict (not modified).
        strict: as in ``nn.Module.load_state_dict``.

    Returns:
        ``load_state_dict``'s missing and unexpected keys.
    """
    converted = dict(state_dict)  # without metadata: loaded as converted here
    for name, module in model.named_modules():
        if isinstance(module, _DclsNd):
            module._check_authors_layout(converted, f"{name}." if name else "", True)
    return model.load_state_dict(converted, strict=strict)
