"""DCLS modules: ``Dcls1d``, ``Dcls2d``, ``Dcls3d`` and the shareable ``DclsPositions``.

The layout follows ``torch/nn/modules/conv.py``: ``_DclsNd`` holds the argument checks, parameter
allocation, initialisation, clamping and ``extra_repr``; the per-dimension classes only turn
arguments into tuples and call :mod:`dcls.functional`. Parameter names and shapes are those of the
authors' package (``weight``, ``P``, ``SIG``, ``bias``) so their state dicts load here.

The file runs past 400 lines because each public class keeps its full signature and docstring
(arguments, shapes, attributes, a runnable example), as ``torch/nn/modules/conv.py`` does.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import init

from dcls import functional as DF
from dcls._utils import (
    as_tuple,
    check_floating_dtype,
    check_positive_int,
    normalize_learnable_dims,
)
from dcls.algorithms import DEFAULT_CONV_ALGORITHM, check_conv_algorithm
from dcls.algorithms._common import pad_argument, pad_pairs

__all__ = ["Dcls1d", "Dcls2d", "Dcls3d", "DclsPositions", "authors_axis_order", "authors_to_ours"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
PADDING_STRINGS = ("valid", "same")
DEFAULT_POSITION_INIT_STD = 0.5
DEFAULT_SIGMA_INIT = {"gauss": 0.23, "triangle": 0.0}
SHARED_CHILD_NAME = "shared_positions"  # a shared DclsPositions, as a submodule of each layer

# How the authors' package (state dicts of `_version` 1) orders P[0..N-1] against our torch
# order: ours[d] = theirs[perm[d]]. Their "v0" follows torch order in 2-D but swaps the last two
# axes in 3-D; their "v1"/"gauss"/"max" read the axes in reverse.
_AUTHORS_AXIS_ORDER = {
    (2, "bilinear_unnormalized"): (0, 1),
    (3, "bilinear_unnormalized"): (0, 2, 1),
    (2, "bilinear"): (1, 0),
    (2, "gauss"): (1, 0),
    (2, "triangle"): (1, 0),
    (3, "bilinear"): (2, 1, 0),
    (3, "gauss"): (2, 1, 0),
    (3, "triangle"): (2, 1, 0),
}


def authors_axis_order(layer: nn.Module) -> list[int] | None:
    """How to index the authors' ``P``/``SIG`` (their first axis) to get ``layer``'s: ``ours =
    theirs[order]``; ``None`` where the two orders agree, or where ``layer`` does not learn
    positions on every axis. For filter functions that read the authors' checkpoints, which
    lose the state dict's version metadata :meth:`_DclsNd._load_from_state_dict` relies on."""
    n = len(layer.dilated_kernel_size)
    order = _AUTHORS_AXIS_ORDER.get((n, layer.version))
    if order is None or list(order) == list(range(n)) or len(layer.learnable_dims) != n:
        return None
    return list(order)


def authors_to_ours(layer: nn.Module, name: str, value: Tensor) -> Tensor:
    """``layer``'s ``P`` or ``SIG`` (``name``) as the authors' package stores it, in ours.

    Their axes are reordered (:func:`authors_axis_order`). Where their order differs from ours,
    they centre the positions they store for axis ``a`` on the middle of axis ``a``'s size but
    apply them along another axis, so on a non-square kernel ``ours[d] = theirs[order[d]] +
    S[order[d]] // 2 - S[d] // 2`` (no shift on square and cubic kernels). Their kernels are
    then ours, for every shape.

    Shape:
        value ``(N, out, in/groups, K)``; returns the same shape.
    """
    order = authors_axis_order(layer)
    if order is None or value.dim() < 1:
        return value
    value = value[order]
    if name == "P":
        sizes = layer.dilated_kernel_size
        shift = [sizes[axis] // 2 - sizes[d] // 2 for d, axis in enumerate(order)]
        value = value + torch.tensor(shift, dtype=value.dtype, device=value.device).view(
            -1, *(1,) * (value.dim() - 1)
        )
    return value


def _init_positions_(P: Tensor, sizes: Sequence[int], std: float) -> None:
    with torch.no_grad():
        init.normal_(P, 0.0, std)
        DF.clamp_positions_(P, sizes)


class DclsPositions(nn.Module):
    """Positions (and widths) owned outside any one layer, shared by several DCLS layers.

    ConvNeXt-dcls uses one set of positions per stage for all its blocks. Create one
    ``DclsPositions``, register it in the model at its owner (before the layers, so that
    ``named_parameters()`` names its tensors there), and pass it as ``positions=`` to each layer
    that shares it. Each layer holds it as its ``shared_positions`` submodule, so TorchScript,
    ``torch.fx`` (layers traced through or kept as leaves), ``torch.jit.trace`` and
    ``torch.export`` all see it as a parameter of the module tree; ``parameters()`` yields its
    tensors once and ``state_dict()`` saves them once, at the owner (the layers' state-dict hook
    drops their copies, and loading fills them back in). :func:`dcls.convert` does all this.

    Args:
        sizes: grid size of each learnable axis, ``(S_0, ..., S_{L-1})``.
        out_channels: output channels of the layers that share these positions.
        in_channels_per_group: ``in_channels // groups`` of those layers.
        kernel_count: kernel elements per (output, input) channel pair.
        version: interpolation; ``SIG`` is allocated for ``"gauss"`` and ``"triangle"``.
        position_init_std: std of the normal initialisation of ``P`` (then clamped).
        sigma_init: initial value of ``SIG`` (default 0.23 for gauss, 0 for triangle).

    Attributes:
        P (Tensor): shape ``(L, out_channels, in_channels_per_group, kernel_count)``.
        SIG (Tensor or None): same shape as ``P``, or ``None`` for bilinear.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        out_channels: int,
        in_channels_per_group: int,
        kernel_count: int,
        version: str = "gauss",
        position_init_std: float = DEFAULT_POSITION_INIT_STD,
        sigma_init: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_floating_dtype(dtype)
        factory_kwargs = {"device": device, "dtype": dtype}
        _check_init_values(position_init_std, sigma_init)
        try:  # any iterable (a numpy array too), not a string
            values = () if isinstance(sizes, str) else tuple(sizes)
        except TypeError:  # not iterable
            values = ()
        if not values:
            raise ValueError(
                f"sizes must be a sequence of ints >= 1, one per learnable axis, got {sizes!r}"
            )
        self.sizes = tuple(check_positive_int(s, "every sizes entry") for s in values)
        self.version = DF.canonical_version(version)
        self.position_init_std = position_init_std
        self.sigma_init = DEFAULT_SIGMA_INIT.get(self.version) if sigma_init is None else sigma_init
        shape = (
            len(self.sizes),
            check_positive_int(out_channels, "out_channels"),
            check_positive_int(in_channels_per_group, "in_channels_per_group"),
            check_positive_int(kernel_count, "kernel_count"),
        )
        self.P = nn.Parameter(torch.empty(shape, **factory_kwargs))
        if DF.has_sigma(self.version):
            self.SIG = nn.Parameter(torch.empty(shape, **factory_kwargs))
        else:
            self.register_parameter("SIG", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init_positions_(self.P, self.sizes, self.position_init_std)
        if self.SIG is not None:
            init.constant_(self.SIG, self.sigma_init)

    def clamp_parameters(self) -> None:
        """Clamp ``P`` in place so that every kernel element stays inside the dilated kernel."""
        DF.clamp_positions_(self.P, self.sizes)

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, shape={tuple(self.P.shape)}, version={self.version}"


class _DclsNd(nn.Module):
    """Base class of the DCLS modules; see :class:`Dcls2d` for the arguments."""

    # 2: positions in torch axis order. 1 (nn.Module's default): saved by the authors' package.
    _version = 2
    # Python-side conveniences that TorchScript would otherwise compile (it compiles properties).
    __jit_unused_properties__: ClassVar[list[str]] = ["positions", "learnable_sizes"]

    def __init__(
        self,
        n: int,
        in_channels: int,
        out_channels: int,
        kernel_count: int,
        stride: int | Sequence[int],
        padding: str | int | Sequence[int],
        dilated_kernel_size: int | Sequence[int],
        groups: int,
        bias: bool,
        padding_mode: str,
        version: str,
        learnable_dims: Sequence[int] | None,
        positions: DclsPositions | None,
        position_init_std: float,
        sigma_init: float | None,
        conv_algorithm: str,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        check_floating_dtype(dtype)
        factory_kwargs = {"device": device, "dtype": dtype}
        in_channels = check_positive_int(in_channels, "in_channels")
        out_channels = check_positive_int(out_channels, "out_channels")
        groups = check_positive_int(groups, "groups")
        if in_channels % groups != 0:
            raise ValueError(f"in_channels ({in_channels}) must be divisible by groups ({groups})")
        if out_channels % groups != 0:
            raise ValueError(
                f"out_channels ({out_channels}) must be divisible by groups ({groups})"
            )
        kernel_count = check_positive_int(kernel_count, "kernel_count")
        if not isinstance(bias, bool):
            raise ValueError(f"bias must be True or False, got {bias!r}")
        _check_init_values(position_init_std, sigma_init)
        sizes = as_tuple(dilated_kernel_size, n, "dilated_kernel_size")
        for size in sizes:
            check_positive_int(size, "every dilated_kernel_size entry")
        self.stride = as_tuple(stride, n, "stride")
        for s in self.stride:
            check_positive_int(s, "every stride entry")
        if isinstance(padding, str):
            if padding not in PADDING_STRINGS:
                raise ValueError(
                    f"padding must be one of {PADDING_STRINGS} or ints >= 0, got {padding!r}"
                )
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"padding='same' needs stride 1, got stride={self.stride}")
            self.padding: str | tuple[int, ...] = padding
        else:
            self.padding = as_tuple(padding, n, "padding")
            if any(p < 0 for p in self.padding):
                raise ValueError(f"padding entries must be >= 0, got {padding!r}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_count = kernel_count
        self.dilated_kernel_size = sizes
        self.groups = groups
        self.conv_algorithm = conv_algorithm  # checked by __setattr__, as any later assignment
        self.padding_mode = padding_mode
        self.version = DF.canonical_version(version)
        self.learnable_dims = normalize_learnable_dims(learnable_dims, n)
        self.position_init_std = position_init_std
        self.sigma_init = DEFAULT_SIGMA_INIT.get(self.version) if sigma_init is None else sigma_init
        self._pad_before_conv = self._explicit_padding(n)

        dense_sizes = [sizes[d] for d in range(n) if d not in self.learnable_dims]
        in_per_group = in_channels // groups
        self.weight = nn.Parameter(
            torch.empty((out_channels, in_per_group, kernel_count, *dense_sizes), **factory_kwargs)
        )
        position_shape = (len(self.learnable_dims), out_channels, in_per_group, kernel_count)
        # A shared set is a submodule of every layer that uses it, so that every tracer and
        # TorchScript sees its tensors as parameters of the layer; it is saved once, at its owner
        # (see `_drop_shared_positions` and `_load_from_state_dict`).
        if positions is not None:
            self._check_shared(positions, position_shape)
            self.register_parameter("P", None)
            self.register_parameter("SIG", None)
        else:
            self.P = nn.Parameter(torch.empty(position_shape, **factory_kwargs))
            if DF.has_sigma(self.version):
                self.SIG = nn.Parameter(torch.empty(position_shape, **factory_kwargs))
            else:
                self.register_parameter("SIG", None)
        self.shared_positions = positions  # a submodule, or a plain None attribute
        self.register_state_dict_post_hook(_drop_shared_positions)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory_kwargs))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def _check_shared(self, positions: DclsPositions, shape: tuple[int, ...]) -> None:
        if not isinstance(positions, DclsPositions):
            raise TypeError(f"positions must be a DclsPositions, got {type(positions).__name__}")
        learn_sizes = tuple(self.dilated_kernel_size[d] for d in self.learnable_dims)
        if tuple(positions.P.shape) != shape or positions.sizes != learn_sizes:
            raise ValueError(
                f"shared positions must have P of shape {shape} over sizes {learn_sizes}, got "
                f"{tuple(positions.P.shape)} over {positions.sizes}"
            )
        if positions.version != self.version:
            raise ValueError(
                f"shared positions were made for version {positions.version!r}, "
                f"this layer uses {self.version!r}"
            )

    def _explicit_padding(self, n: int) -> tuple[int, ...]:
        """Padding for ``F.pad`` (last axis first, before/after pairs) for non-zero modes;
        computed for every mode, so that TorchScript always sees ``2 * n`` ints."""
        padding = self.padding if isinstance(self.padding, str) else list(self.padding)
        return tuple(pad_argument(pad_pairs(padding, list(self.dilated_kernel_size))))

    @property
    def positions(self) -> tuple[Tensor, Tensor | None]:
        """``(P, SIG)`` used by this layer: its own, or those of its shared set."""
        shared = self.shared_positions
        if shared is not None:
            return shared.P, shared.SIG
        return self.P, self.SIG

    @property
    def learnable_sizes(self) -> tuple[int, ...]:
        """Grid size of each learnable axis, in the order of ``P``."""
        return tuple(self.dilated_kernel_size[d] for d in self.learnable_dims)

    def reset_parameters(self) -> None:
        """Weight kaiming-uniform (a=sqrt(5)), bias by fan-in, P normal then clamped, SIG const."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)
        if self.P is not None:
            _init_positions_(self.P, self.learnable_sizes, self.position_init_std)
        if self.SIG is not None:
            init.constant_(self.SIG, self.sigma_init)

    def clamp_parameters(self) -> None:
        """Clamp this layer's own ``P`` in place (a shared owner clamps its own)."""
        if self.P is not None:
            DF.clamp_positions_(self.P, self.learnable_sizes)

    def construct_kernel(self) -> Tensor:
        """Dense kernel, shape ``(out_channels, in_channels // groups, *dilated_kernel_size)``."""
        P, SIG = self.positions
        return DF.construct_kernel(
            self.weight, P, SIG, self.dilated_kernel_size, self.version, self.learnable_dims
        )

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "conv_algorithm":  # e.g. `layer.conv_algorithm = "fft"` on a strided layer
            value = check_conv_algorithm(value, self.stride, self.in_channels // self.groups)
        super().__setattr__(name, value)

    def forward(self, input: Tensor) -> Tensor:
        shared = self.shared_positions
        if shared is None:
            P, SIG = self.P, self.SIG
        else:
            P, SIG = shared.P, shared.SIG
        padding = self.padding
        return _layer_forward(
            input,
            self.weight,
            P,
            SIG,
            self.bias,
            self.in_channels,
            list(self.stride),
            padding if isinstance(padding, str) else list(padding),
            self.padding_mode,
            list(self._pad_before_conv),
            list(self.dilated_kernel_size),
            self.groups,
            self.version,
            list(self.learnable_dims),
            self.conv_algorithm,
        )

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any], *args: Any
    ) -> None:
        shared = self.shared_positions
        if shared is not None:
            # A shared set is saved once, at its owner (see `_drop_shared_positions`); this
            # layer's path to it loads its current tensors onto themselves. Whichever of the two
            # paths is loaded first, the owner's values are the ones kept.
            for name, tensor in (("P", shared.P), ("SIG", shared.SIG)):
                if tensor is not None:
                    state_dict.setdefault(f"{prefix}{SHARED_CHILD_NAME}.{name}", tensor)
        self._check_authors_layout(state_dict, prefix, local_metadata.get("version") == 1)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)

    def _check_authors_layout(
        self, state_dict: dict[str, Any], prefix: str, from_authors: bool
    ) -> None:
        """Convert a state dict of the authors' package to this layer's layout, in place, or
        raise a ValueError naming the authors' layout this layer cannot hold.

        State dicts saved by the authors' modules carry ``_version`` 1. Their positions over all
        ``N`` axes are reordered to torch order; their ``Dcls2dK1d`` weight ``(out, in/groups,
        K)`` gains this layer's size-1 dense axis. A state dict without metadata (rebuilt by hand
        or by a filter function) is taken as ours.
        """
        n = len(self.dilated_kernel_size)
        name = type(self).__name__
        P = state_dict.get(prefix + "P")
        if P is not None and P.dim() > 4:
            raise ValueError(
                f"{prefix}P has shape {tuple(P.shape)}, one position per dense tap: the layout "
                f"of the authors' Dcls3_1d, which learns positions along the last axis separately "
                f"for every tap of the other axes. {name} with learnable_dims shares each "
                f"element's position across its dense taps; this state dict cannot be loaded"
            )
        if not from_authors:
            return
        for name in ("P", "SIG"):
            if prefix + name in state_dict:
                state_dict[prefix + name] = authors_to_ours(self, name, state_dict[prefix + name])
        weight = state_dict.get(prefix + "weight")
        dense = [self.dilated_kernel_size[d] for d in range(n) if d not in self.learnable_dims]
        if weight is not None and dense and weight.dim() == 3:
            if math.prod(dense) != 1:
                raise ValueError(
                    f"{prefix}weight has shape {tuple(weight.shape)}, the layout of the authors' "
                    f"Dcls2dK1d (a 1-D kernel in a 2-D convolution): it loads into a layer whose "
                    f"dense axis has size 1, e.g. {name}(..., dilated_kernel_size=(S, 1), "
                    f"learnable_dims=(0,)), not dense sizes {tuple(dense)}"
                )
            state_dict[prefix + "weight"] = weight.reshape(*weight.shape, *dense)

    def extra_repr(self) -> str:
        n = len(self.dilated_kernel_size)
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_count={self.kernel_count}, "
            f"dilated_kernel_size={self.dilated_kernel_size}, version={self.version}"
        )
        if self.stride != (1,) * n:
            s += f", stride={self.stride}"
        if self.padding != (0,) * n:
            s += f", padding={self.padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        if self.learnable_dims != tuple(range(n)):
            s += f", learnable_dims={self.learnable_dims}"
        if self.shared_positions is not None:
            s += ", positions=shared"
        if self.conv_algorithm != DEFAULT_CONV_ALGORITHM:
            s += f", conv_algorithm={self.conv_algorithm}"
        return s


def _is_real(value: object) -> bool:
    """Whether ``value`` is a finite real number (an int or float of any library, not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_init_values(position_init_std: object, sigma_init: object) -> None:
    if not _is_real(position_init_std) or position_init_std < 0:
        raise ValueError(
            f"position_init_std must be a finite number >= 0, got {position_init_std!r}"
        )
    if sigma_init is not None and (not _is_real(sigma_init) or sigma_init < 0):
        raise ValueError(f"sigma_init must be None or a finite number >= 0, got {sigma_init!r}")


def _same_memory(a: Tensor, b: Tensor) -> bool:
    """Whether ``a`` is ``b`` or a detached copy of it (the state dict's): the same storage (on
    the meta device every ``data_ptr`` is 0), address and shape."""
    return (
        a.untyped_storage()._cdata == b.untyped_storage()._cdata
        and a.data_ptr() == b.data_ptr()
        and a.shape == b.shape
    )


def _drop_shared_positions(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any]
) -> None:
    """State-dict post-hook of every DCLS layer: a shared :class:`DclsPositions` is saved once,
    at its owner, not again under each layer that holds it (the checkpoint format). The layer
    keeps its copy where the owner's is not in ``state_dict`` (the state dict of a block, or of
    anything else that holds the layer but not the owner), so that no positions go missing."""
    shared = module.shared_positions
    if shared is None:
        return
    child = f"{prefix}{SHARED_CHILD_NAME}"
    own = [k for k in state_dict if k.startswith(child + ".")]
    saved = (v for k, v in state_dict.items() if k not in own and isinstance(v, torch.Tensor))
    if not any(_same_memory(v, shared.P) for v in saved):
        return
    for key in own:
        del state_dict[key]
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        metadata.pop(child, None)


def _layer_forward(
    input: Tensor,
    weight: Tensor,
    P: Tensor,
    SIG: Tensor | None,
    bias: Tensor | None,
    in_channels: int,
    stride: list[int],
    padding: str | list[int],
    padding_mode: str,
    pad_before: list[int],
    dilated_kernel_size: list[int],
    groups: int,
    version: str,
    learnable_dims: list[int],
    conv_algorithm: str,
) -> Tensor:
    """Forward pass of every DCLS layer: input checks, non-zero padding, then
    :func:`dcls.functional.dcls_conv`.

    TorchScript-compatible, and a leaf of ``torch.fx`` symbolic tracing (``torch.fx.wrap``
    below): a traced graph holds one call taking the layer's tensors, instead of the checks and
    the kernel construction, whose Python control flow depends on shapes.

    Raises:
        ValueError: if the input's rank, channel count or dtype does not fit the layer, or
            ``P``/``SIG`` (replaced by the user) not its shape.
    """
    n = len(dilated_kernel_size)
    if not input.is_floating_point():
        raise ValueError(
            f"Dcls{n}d expects a floating-point input (its kernel is real-valued), got "
            f"{input.dtype}: convert it first, e.g. input.float()"
        )
    if input.dim() != n + 1 and input.dim() != n + 2:
        raise ValueError(
            f"Dcls{n}d expects a {n + 2}-D (batched) or {n + 1}-D (unbatched) input, got "
            f"{input.dim()}-D of shape {list(input.shape)}"
        )
    channels = input.shape[-n - 1]
    if channels != in_channels:
        raise ValueError(
            f"Dcls{n}d expects {in_channels} input channels, got {channels} (input shape "
            f"{list(input.shape)})"
        )
    expected = [len(learnable_dims), weight.shape[0], weight.shape[1], weight.shape[2]]
    for name, tensor in (("P", P), ("SIG", SIG)):
        if tensor is not None and list(tensor.shape) != expected:
            raise ValueError(
                f"Dcls{n}d's {name} must have shape {expected} (learnable axes, out_channels, "
                f"in_channels / groups, kernel_count), got {list(tensor.shape)}"
            )
    if padding_mode != "zeros":
        input = F.pad(input, pad_before, mode=padding_mode)
        padding = [0] * n
    return DF.dcls_conv(
        input,
        weight,
        P,
        SIG,
        bias,
        stride,
        padding,
        dilated_kernel_size,
        groups,
        version,
        learnable_dims,
        conv_algorithm,
    )


torch.fx.wrap("_layer_forward")


_ARGS_DOC = """
    Args:
        in_channels: channels of the input.
        out_channels: channels produced by the convolution.
        kernel_count: kernel elements ``K`` per (output, input) channel pair, each with a
            learnable weight and a learnable position.
        stride: stride of the convolution. Default: 1.
        padding: ``"valid"``, ``"same"`` (stride 1 only) or ints added to both sides. Default: 0.
        dilated_kernel_size: size ``S`` of the dense kernel the elements live in (the receptive
            field); along a non-learnable axis, the dense kernel size there. Position 0 is cell
            ``S // 2``; for an even ``S`` that is the cell after the middle, and ``"same"``
            (which pads ``(S - 1) // 2`` before, as ``F.conv``) makes it read the input one
            step after the output's own (use an odd ``S`` for a centred kernel). Default: 1.
        groups: blocked connections from input to output channels. Default: 1.
        bias: add a learnable bias. Default: ``True``.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        version: interpolation: ``"bilinear"``, ``"bilinear_unnormalized"``, ``"gauss"`` or
            ``"triangle"``; the authors' ``"v1"``, ``"v0"``, ``"max"`` are aliases. Default:
            ``"gauss"`` (the authors' default).
        learnable_dims: spatial axes along which positions are learned; the others are ordinary
            dense taps and ``weight`` gains those axes. Default: all.
        positions: a :class:`DclsPositions` to use instead of owning ``P``/``SIG``.
        position_init_std: std of the normal initialisation of ``P``. Default: 0.5.
        sigma_init: initial ``SIG`` (default 0.23 for gauss, 0 for triangle).
        conv_algorithm: how the constructed kernel is applied: ``"direct"`` (``F.conv``),
            ``"channels_last"`` (``F.conv`` in NHWC), ``"fft"`` (stride 1 only; fast for large
            depthwise kernels), ``"split"`` (depthwise, stride 1: a backward pass made of forward
            convolutions, fast on CPU), ``"triton"`` (depthwise, stride 1, CUDA: a Triton kernel
            for large depthwise kernels) or ``"auto"`` (a cached timed trial per input shape,
            checked once more after :data:`dcls.algorithms.RECHECK_AFTER` calls); see
            :mod:`dcls.algorithms`. Default: ``"direct"``.

    Attributes:
        weight: ``(out_channels, in_channels // groups, kernel_count, *dense_sizes)``,
            kaiming-uniform with ``a = sqrt(5)``.
        P: ``(L, out_channels, in_channels // groups, kernel_count)`` with ``L`` the number of
            learnable axes; ``N(0, position_init_std)`` clamped to the kernel. ``None`` when shared.
        SIG: same shape as ``P`` for gauss/triangle, else ``None``.
        bias: ``(out_channels,)``.
"""


class Dcls1d(_DclsNd):
    __doc__ = (
        """1-D convolution with learnable spacings.

    Shape:
        - Input: ``(B, C_in, L_in)`` or ``(C_in, L_in)``
        - Output: ``(B, C_out, L_out)`` with
          ``L_out = floor((L_in + 2 * padding - S) / stride + 1)``.
    """
        + _ARGS_DOC
        + """
    Examples:
        >>> m = Dcls1d(4, 8, kernel_count=3, dilated_kernel_size=9, padding=4, version="bilinear")
        >>> m(torch.randn(2, 4, 50)).shape
        torch.Size([2, 8, 50])
    """
    )

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_count: int,
        stride: int | Sequence[int] = 1,
        padding: str | int | Sequence[int] = 0,
        dilated_kernel_size: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        version: str = "gauss",
        learnable_dims: Sequence[int] | None = None,
        positions: DclsPositions | None = None,
        position_init_std: float = DEFAULT_POSITION_INIT_STD,
        sigma_init: float | None = None,
        conv_algorithm: str = DEFAULT_CONV_ALGORITHM,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            1,
            in_channels,
            out_channels,
            kernel_count,
            stride,
            padding,
            dilated_kernel_size,
            groups,
            bias,
            padding_mode,
            version,
            learnable_dims,
            positions,
            position_init_std,
            sigma_init,
            conv_algorithm,
            device,
            dtype,
        )


class Dcls2d(_DclsNd):
    __doc__ = (
        """2-D convolution with learnable spacings (Khalfaoui-Hassani et al., ICLR 2023).

    Each of the ``kernel_count`` elements of a (output, input) kernel has a weight and a real
    position ``(P[0], P[1])`` (row, column, relative to the kernel centre); an interpolation
    spreads it over the ``S_0 x S_1`` dilated kernel, which an ordinary ``F.conv2d`` then applies.

    Shape:
        - Input: ``(B, C_in, H_in, W_in)`` or ``(C_in, H_in, W_in)``
        - Output: ``(B, C_out, H_out, W_out)`` with
          ``H_out = floor((H_in + 2 * padding[0] - S_0) / stride[0] + 1)`` and likewise ``W_out``.
    """
        + _ARGS_DOC
        + """
    Examples:
        >>> m = Dcls2d(96, 96, kernel_count=34, dilated_kernel_size=17, padding=8, groups=96,
        ...            version="bilinear")
        >>> m(torch.randn(2, 96, 28, 28)).shape
        torch.Size([2, 96, 28, 28])
    """
    )

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_count: int,
        stride: int | Sequence[int] = 1,
        padding: str | int | Sequence[int] = 0,
        dilated_kernel_size: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        version: str = "gauss",
        learnable_dims: Sequence[int] | None = None,
        positions: DclsPositions | None = None,
        position_init_std: float = DEFAULT_POSITION_INIT_STD,
        sigma_init: float | None = None,
        conv_algorithm: str = DEFAULT_CONV_ALGORITHM,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            2,
            in_channels,
            out_channels,
            kernel_count,
            stride,
            padding,
            dilated_kernel_size,
            groups,
            bias,
            padding_mode,
            version,
            learnable_dims,
            positions,
            position_init_std,
            sigma_init,
            conv_algorithm,
            device,
            dtype,
        )


class Dcls3d(_DclsNd):
    __doc__ = (
        """3-D convolution with learnable spacings.

    With ``learnable_dims=(0,)`` positions are learned along time (depth) only and the other two
    axes are dense: each element has one position, shared by its dense taps. This is not the
    authors' ``Dcls3_1d``, which learns positions along the last axis with separate positions
    per dense tap (``P`` of shape ``(1, out, in/groups, k_0, k_1, K)``); its state dicts do not
    load here (loading one raises a ValueError naming it). The authors' ``Dcls2dK1d`` state
    dicts load into ``Dcls2d(..., dilated_kernel_size=(S, 1), learnable_dims=(0,))`` (their
    ``flat_dim=0``; ``(1, S)`` and ``(1,)`` for ``flat_dim=1``).

    Shape:
        - Input: ``(B, C_in, D_in, H_in, W_in)`` or ``(C_in, D_in, H_in, W_in)``
        - Output: ``(B, C_out, D_out, H_out, W_out)``, each size as in :class:`Dcls1d`.
    """
        + _ARGS_DOC
        + """
    Examples:
        >>> m = Dcls3d(2, 4, kernel_count=5, dilated_kernel_size=(9, 3, 3), padding=(4, 1, 1),
        ...            learnable_dims=(0,), version="gauss")
        >>> m.weight.shape, m.P.shape
        (torch.Size([4, 2, 5, 3, 3]), torch.Size([1, 4, 2, 5]))
        >>> m(torch.randn(1, 2, 16, 8, 8)).shape
        torch.Size([1, 4, 16, 8, 8])
    """
    )

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_count: int,
        stride: int | Sequence[int] = 1,
        padding: str | int | Sequence[int] = 0,
        dilated_kernel_size: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        version: str = "gauss",
        learnable_dims: Sequence[int] | None = None,
        positions: DclsPositions | None = None,
        position_init_std: float = DEFAULT_POSITION_INIT_STD,
        sigma_init: float | None = None,
        conv_algorithm: str = DEFAULT_CONV_ALGORITHM,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            3,
            in_channels,
            out_channels,
            kernel_count,
            stride,
            padding,
            dilated_kernel_size,
            groups,
            bias,
            padding_mode,
            version,
            learnable_dims,
            positions,
            position_init_std,
            sigma_init,
            conv_algorithm,
            device,
            dtype,
        )
