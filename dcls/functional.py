"""Functional core of DCLS: build the dense kernel from weights and positions, then convolve.

Every interpolation used by DCLS is a product of one-dimensional factors, one per spatial axis::

    kernel[o, i, s_0, .., s_N-1] = sum_k weight[o, i, k] * prod_d f(s_d; P[d, o, i, k], SIG[d, ..])

so the kernel is built from ``N`` small factor tensors of shape ``(out, in/groups, K, S_d)`` and
one batched matrix product, in ``O(out * in/groups * K * sum(S))`` memory instead of the
``O(out * in/groups * K * prod(S))`` of a dense index grid. Nothing here holds state; the modules in
:mod:`dcls.conv` own the parameters and call these functions.

Conventions (shared by every interpolation and every N):

* ``P[j]`` moves kernel elements along the ``j``-th learnable spatial axis in torch order (for a
  2-D kernel with both axes learnable, ``P[0]`` is the row, ``P[1]`` the column).
* Position ``0`` is the grid cell ``S_d // 2``; see :func:`dcls._utils.position_limits`.
* ``"bilinear"`` (the authors' ``"v1"``) and ``"bilinear_unnormalized"`` (``"v0"``) use the tent
  ``max(0, 1 - |s - p|)``; ``"triangle"`` (``"max"``) the tent of width ``|SIG| + 1``;
  ``"gauss"`` the Gaussian of standard deviation ``|SIG| + 0.27``. All but ``"v0"`` divide each
  element's interpolation weights by their sum over the grid (plus ``1e-7``).

Over 400 lines: two construction paths (factor product, bilinear scatter) and the public 1/2/3-D
wrappers with their shape docstrings belong together. On CUDA the bilinear scatter is replaced by
:mod:`dcls.triton_construct` (one launch forward, one backward; same values). How the kernel is
then applied (direct, FFT, auto) lives in :mod:`dcls.algorithms`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from dcls import triton_construct
from dcls._utils import as_tuple, check_positive_int, normalize_learnable_dims, position_limits
from dcls.algorithms._common import autocast_enabled
from dcls.algorithms.dispatch import (
    DEFAULT_CONV_ALGORITHM,
    _apply_kernel,
    check_conv_algorithm,
    check_convolution,
)
from dcls.algorithms.triton import triton_available

__all__ = [
    "GAUSS_SIGMA_OFFSET",
    "NORMALIZATION_EPS",
    "TRIANGLE_WIDTH_OFFSET",
    "VERSIONS",
    "VERSION_ALIASES",
    "canonical_version",
    "clamp_positions_",
    "construct_kernel",
    "dcls1d",
    "dcls2d",
    "dcls3d",
    "dcls_conv",
    "has_sigma",
]

VERSIONS = ("bilinear", "bilinear_unnormalized", "gauss", "triangle")
VERSION_ALIASES = {
    "v1": "bilinear",
    "v0": "bilinear_unnormalized",
    "max": "triangle",
    "gaussian": "gauss",
}
GAUSS_SIGMA_OFFSET = 0.27
TRIANGLE_WIDTH_OFFSET = 1.0
NORMALIZATION_EPS = 1e-7


def canonical_version(version: str) -> str:
    """Map an interpolation name or one of the authors' aliases to its canonical name.

    Raises:
        ValueError: if ``version`` is neither a canonical name nor an alias.
    """
    if version in VERSIONS:
        return version
    if isinstance(version, str) and version in VERSION_ALIASES:
        return VERSION_ALIASES[version]
    allowed = ", ".join(repr(v) for v in (*VERSIONS, *VERSION_ALIASES))
    raise ValueError(f"version must be one of {allowed}, got {version!r}")


def has_sigma(version: str) -> bool:
    """Whether the interpolation ``version`` has a learnable width ``SIG``."""
    return canonical_version(version) in ("gauss", "triangle")


def _abs_unit_grad(x: Tensor) -> Tensor:
    """``|x|`` whose gradient at ``x == 0`` is ``+1`` rather than ``0``.

    The triangle width ``|SIG| + 1`` starts at ``SIG == 0``, where ``torch.abs`` has a zero
    gradient: the width would never learn. The values are those of ``abs``.
    """
    return torch.where(x >= 0, x, -x)


def _bilinear_cell(position: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Split grid coordinates ``position + size // 2`` into a cell ``base`` and ``frac``.

    The element puts ``1 - frac`` on ``base`` and ``frac`` on ``base + 1``: the tent's values. At
    an integer coordinate the split is chosen so that the derivative is the one-sided one pointing
    to the kernel centre; the tent written with relu/abs has exactly zero gradient there, so a
    position clamped onto the border could never move back. An element wholly outside the grid
    (coordinate ``<= -1`` or ``>= size``: only set by hand, e.g. by the authors' clamp, which
    allows ``+size // 2`` for even sizes) takes the side pointing away, so that its value and
    gradient are 0 as the authors' (the normalised kernel jumps there: the side pointing in gives
    a gradient of about ``1 / eps``).

    Returns:
        ``base`` (no gradient) and ``frac``, both of ``position``'s shape.
    """
    center = size // 2
    p = position + center
    toward_centre = torch.where(p > center, torch.ceil(p) - 1, torch.floor(p))
    away = torch.where(p > center, torch.floor(p), torch.ceil(p) - 1)
    base = torch.where((p > -1) & (p < size), toward_centre, away).detach()
    return base, p - base


def _construct_bilinear_sparse(
    weight: Tensor, P: Tensor, sizes: list[int], normalize: bool, eps: float = NORMALIZATION_EPS
) -> Tensor:
    """Bilinear kernel by scattering each element's ``2^N`` corner weights.

    ``O(out * in/groups * K * 2^N)`` work and memory instead of the factor product's
    ``O(out * in/groups * K * prod(S))``; same values, same gradients.

    Args:
        weight: ``(B, K)``; P: ``(N, B, K)``; sizes: the ``N`` grid sizes.

    Returns:
        ``(B, prod(sizes))``.
    """
    index = torch.zeros([], dtype=weight.dtype, device=weight.device)
    value = weight
    total: Tensor | None = None
    cell_count = 1
    for j, size in enumerate(sizes):
        base, frac = _bilinear_cell(P[j], size)
        cells = torch.stack([base, base + 1])  # (2, B, K)
        corner = torch.where((cells >= 0) & (cells < size), torch.stack([1 - frac, frac]), 0.0)
        if normalize:
            axis_sum = corner.sum(0)
            total = axis_sum if total is None else total * axis_sum
        # Grow the corner axes: after axis j, index and value are (2,) * (j + 1) + (B, K). The
        # index stays in floating point (exact below 2**24 cells) until the scatter.
        corner_shape = [2] + [1] * j + list(cells.shape[1:])
        index = index.unsqueeze(0) * size + cells.clamp(0, size - 1).view(corner_shape)
        value = value.unsqueeze(0) * corner.view(corner_shape)
        cell_count *= size
    if total is not None:
        value = value / (total + eps)
    batch, count = weight.shape[0], weight.shape[1]
    index = index.reshape(-1, batch, count).permute(1, 0, 2).reshape(batch, -1).long()
    value = value.reshape(-1, batch, count).permute(1, 0, 2).reshape(batch, -1)
    kernel = torch.zeros(batch, cell_count, dtype=weight.dtype, device=weight.device)
    return kernel.scatter_add(1, index, value)


def _axis_factors(
    position: Tensor,
    sigma: Tensor | None,
    size: int,
    version: str,
    gauss_offset: float = GAUSS_SIGMA_OFFSET,
    triangle_offset: float = TRIANGLE_WIDTH_OFFSET,
) -> Tensor:
    """Interpolation weights of every kernel element along one axis.

    Args:
        position: positions along this axis relative to the kernel centre, shape ``(*B, K)``.
        sigma: raw widths (``SIG``), same shape, or ``None`` for bilinear.
        size: grid size ``S`` along this axis.
        version: canonical interpolation name.

    Returns:
        Tensor of shape ``(*B, K, S)``.
    """
    grid = torch.arange(size, device=position.device, dtype=position.dtype)
    if version == "bilinear" or version == "bilinear_unnormalized":
        base, frac = _bilinear_cell(position, size)
        base, frac = base.unsqueeze(-1), frac.unsqueeze(-1)
        return torch.where(grid == base, 1 - frac, torch.where(grid == base + 1, frac, 0.0))
    assert sigma is not None, "gauss and triangle have widths"
    distance = grid - (position.unsqueeze(-1) + size // 2)
    if version == "triangle":
        width = _abs_unit_grad(sigma).unsqueeze(-1) + triangle_offset
        return (width - distance.abs()).clamp_min(0)
    std = _abs_unit_grad(sigma).unsqueeze(-1) + gauss_offset
    return torch.exp(-0.5 * (distance / std) ** 2)


def _construct_by_factors(
    weight: Tensor,
    P: Tensor,
    SIG: Tensor | None,
    sizes: list[int],
    version: str,
    eps: float = NORMALIZATION_EPS,
) -> Tensor:
    """Kernel as one batched product of per-axis interpolation factors.

    Args:
        weight: ``(B, K, D)`` with ``D`` the product of the dense axes' sizes (1 if none).
        P, SIG: ``(L, B, K)``; sizes: the ``L`` learnable grid sizes.

    Returns:
        ``(B, S_0, prod(S_1..S_L-1) * D)``.
    """
    factors: list[Tensor] = []
    for j, size in enumerate(sizes):
        sigma: Tensor | None = None
        if SIG is not None:
            sigma = SIG[j]
        factors.append(_axis_factors(P[j], sigma, size, version))
    if version != "bilinear_unnormalized":
        total = factors[0].sum(-1)
        for factor in factors[1:]:
            total = total * factor.sum(-1)
        weight = weight / (total + eps).unsqueeze(-1)
    right = weight
    rest: Tensor | None = None  # outer product of the other learnable axes' factors: (B, K, prod S)
    for factor in factors[1:]:
        rest = factor if rest is None else (rest.unsqueeze(-1) * factor.unsqueeze(-2)).flatten(-2)
    if rest is not None:
        right = (rest.unsqueeze(-1) * right.unsqueeze(-2)).flatten(-2)
    return torch.bmm(factors[0].transpose(1, 2), right)


def _check_kernel_arguments(
    weight: Tensor,
    P: Tensor,
    SIG: Tensor | None,
    sizes: tuple[int, ...],
    version: str,
    learnable_dims: tuple[int, ...],
) -> None:
    """Raise a ValueError naming the first size or tensor whose shape does not fit the others."""
    for size in sizes:
        check_positive_int(size, "every dilated_kernel_size entry")
    dense = [d for d in range(len(sizes)) if d not in learnable_dims]
    out_channels, in_per_group, count = weight.shape[:3]
    expected_weight = (out_channels, in_per_group, count, *(sizes[d] for d in dense))
    if tuple(weight.shape) != expected_weight:
        raise ValueError(
            f"weight must have shape (out, in/groups, K, *dense_sizes) = {expected_weight}, "
            f"got {tuple(weight.shape)}"
        )
    expected_p = (len(learnable_dims), out_channels, in_per_group, count)
    if tuple(P.shape) != expected_p:
        axes = ""
        if P.dim() == 4 and P.shape[0] != len(learnable_dims):
            axes = (
                f": P holds positions along {P.shape[0]} axes, but dilated_kernel_size {sizes} "
                f"with learnable_dims {learnable_dims} has {len(learnable_dims)} learnable axes "
                f"(one size per spatial axis)"
            )
        raise ValueError(f"P must have shape {expected_p}, got {tuple(P.shape)}{axes}")
    if has_sigma(version) != (SIG is not None):
        raise ValueError(f"SIG must be given exactly for 'gauss' and 'triangle', not {version!r}")
    if SIG is not None and SIG.shape != P.shape:
        raise ValueError(f"SIG must have the shape of P {expected_p}, got {tuple(SIG.shape)}")


def construct_kernel(
    weight: Tensor,
    P: Tensor,
    SIG: Tensor | None,
    dilated_kernel_size: Sequence[int],
    version: str = "gauss",
    learnable_dims: Sequence[int] | None = None,
) -> Tensor:
    """Build the dense DCLS kernel.

    Args:
        weight: kernel-element weights, shape ``(out, in/groups, K, *dense_sizes)`` where
            ``dense_sizes`` are the sizes of the spatial axes not in ``learnable_dims`` (none by
            default).
        P: positions, shape ``(L, out, in/groups, K)`` with ``L = len(learnable_dims)``.
        SIG: raw widths, same shape as ``P``, for ``"gauss"`` and ``"triangle"``; else ``None``.
        dilated_kernel_size: size ``S_d`` of the dense kernel along each of the ``N`` spatial
            axes, or one int for all.
        version: interpolation name (see :data:`VERSIONS` and :data:`VERSION_ALIASES`).
        learnable_dims: spatial axes along which positions are learned; the other axes are dense
            (ordinary convolution taps). ``None`` means all axes.

    Returns:
        Kernel of shape ``(out, in/groups, *dilated_kernel_size)``, in ``weight``'s dtype
        promoted to at least float32.

    Raises:
        ValueError: on an unknown ``version`` or tensors whose shapes do not fit together.
    """
    version = canonical_version(version)
    sizes = dilated_kernel_size
    if not isinstance(sizes, Sequence):  # one int: N axes, P's learnable and weight's dense ones
        sizes = as_tuple(sizes, P.shape[0] + weight.dim() - 3, "dilated_kernel_size")
    sizes = tuple(sizes)
    learn = normalize_learnable_dims(learnable_dims, len(sizes))
    _check_kernel_arguments(weight, P, SIG, sizes, version, learn)
    return _kernel(weight, P, SIG, list(sizes), version, list(learn))


def _kernel(
    weight: Tensor,
    P: Tensor,
    SIG: Tensor | None,
    sizes: list[int],
    version: str,
    learnable_dims: list[int],
) -> Tensor:
    """:func:`construct_kernel` for checked arguments (canonical ``version``, sorted
    ``learnable_dims``), built outside autocast: positions need the precision.
    TorchScript-compatible (scripted code does not switch autocast off)."""
    if torch.jit.is_scripting():
        return _build_kernel(weight, P, SIG, sizes, version, learnable_dims)
    else:
        if _use_triton_construction(weight, version, sizes, learnable_dims):
            return _build_bilinear_triton(weight, P, sizes, version)
        if not autocast_enabled(weight.device.type):
            return _build_kernel(weight, P, SIG, sizes, version, learnable_dims)
        with torch.autocast(weight.device.type, enabled=False):
            return _build_kernel(weight, P, SIG, sizes, version, learnable_dims)


def _use_triton_construction(
    weight: Tensor, version: str, sizes: list[int], learnable_dims: list[int]
) -> bool:
    """Whether the kernel is built by :mod:`dcls.triton_construct` (two launches, forward and
    backward, instead of 73 small ATen calls): a bilinear kernel with every axis learnable, on
    CUDA, while :data:`dcls.triton_construct.ENABLED`."""
    return (
        triton_construct.ENABLED
        and version in ("bilinear", "bilinear_unnormalized")
        and len(learnable_dims) == len(sizes)
        and weight.device.type == "cuda"
        and triton_available(weight.device)
    )


def _build_bilinear_triton(weight: Tensor, P: Tensor, sizes: list[int], version: str) -> Tensor:
    """:func:`_build_kernel`'s bilinear kernel with every axis learnable, from the Triton
    kernels, in ``weight``'s dtype promoted to at least float32."""
    out_channels, in_per_group, count = weight.shape
    compute_dtype = torch.promote_types(weight.dtype, torch.float32)
    batch = out_channels * in_per_group
    kernel = triton_construct.bilinear_kernel(
        weight.to(compute_dtype).reshape(batch, count),
        P.to(compute_dtype).reshape(len(sizes), batch, count),
        sizes,
        version == "bilinear",
        NORMALIZATION_EPS,
    )
    return kernel.reshape([out_channels, in_per_group, *sizes])


def _build_kernel(
    weight: Tensor,
    P: Tensor,
    SIG: Tensor | None,
    sizes: list[int],
    version: str,
    learnable_dims: list[int],
) -> Tensor:
    """The construction itself, in ``weight``'s dtype promoted to at least float32."""
    n = len(sizes)
    dense: list[int] = []
    for d in range(n):
        if d not in learnable_dims:
            dense.append(d)
    out_channels, in_per_group, count = weight.shape[0], weight.shape[1], weight.shape[2]
    compute_dtype = torch.promote_types(weight.dtype, torch.float32)
    learn_sizes = [sizes[d] for d in learnable_dims]
    batch = out_channels * in_per_group
    levels = len(learnable_dims)
    weight = weight.to(compute_dtype).reshape(batch, count, -1)
    P = P.to(compute_dtype).reshape(levels, batch, count)
    if SIG is not None:
        SIG = SIG.to(compute_dtype).reshape(levels, batch, count)
    if (version == "bilinear" or version == "bilinear_unnormalized") and len(dense) == 0:
        kernel = _construct_bilinear_sparse(
            weight.squeeze(-1), P, learn_sizes, normalize=version == "bilinear"
        )
    else:
        kernel = _construct_by_factors(weight, P, SIG, learn_sizes, version)
    order = learnable_dims + dense
    kernel = kernel.reshape([out_channels, in_per_group] + [sizes[d] for d in order])
    if len(dense) > 0 and dense[0] < learnable_dims[-1]:  # a dense axis before a learnable one
        inverse = [0] * n
        for i, d in enumerate(order):
            inverse[d] = i
        kernel = kernel.permute([0, 1] + [2 + i for i in inverse])
    return kernel


@torch.no_grad()
def clamp_positions_(P: Tensor, sizes: Sequence[int]) -> Tensor:
    """Clamp positions in place so that every element stays on the grid.

    Args:
        P: positions, shape ``(L, *)``; ``P[j]`` is clamped to :func:`position_limits` of
            ``sizes[j]``.
        sizes: grid size of each of the ``L`` learnable axes.
    """
    for j, size in enumerate(sizes):
        low, high = position_limits(size)
        P[j].clamp_(low, high)
    return P


def _dcls_nd(
    n: int,
    input: Tensor,
    weight: Tensor,
    P: Tensor,
    SIG: Tensor | None,
    bias: Tensor | None,
    stride: int | Sequence[int],
    padding: str | int | Sequence[int],
    dilated_kernel_size: int | Sequence[int],
    groups: int,
    version: str,
    learnable_dims: Sequence[int] | None,
    conv_algorithm: str,
) -> Tensor:
    """Check and normalise the arguments of :func:`dcls1d`/``2d``/``3d``, then convolve."""
    sizes = as_tuple(dilated_kernel_size, n, "dilated_kernel_size")
    version = canonical_version(version)
    learn = normalize_learnable_dims(learnable_dims, n)
    _check_kernel_arguments(weight, P, SIG, sizes, version, learn)
    strides = as_tuple(stride, n, "stride")
    check_conv_algorithm(conv_algorithm, strides, weight.shape[1])
    check_convolution(input, (*weight.shape[:2], *sizes), strides, padding, groups)
    if not isinstance(padding, str):
        padding = list(as_tuple(padding, n, "padding"))
    return dcls_conv(
        input,
        weight,
        P,
        SIG,
        bias,
        list(strides),
        padding,
        list(sizes),
        groups,
        version,
        list(learn),
        conv_algorithm,
    )


def dcls_conv(
    input: Tensor,
    weight: Tensor,
    P: Tensor,
    SIG: Tensor | None,
    bias: Tensor | None,
    stride: list[int],
    padding: str | list[int],
    dilated_kernel_size: list[int],
    groups: int,
    version: str,
    learnable_dims: list[int],
    conv_algorithm: str,
) -> Tensor:
    """DCLS convolution for normalised, checked arguments: what every DCLS layer runs.

    Unlike :func:`dcls2d` it takes lists only (one entry per spatial axis), a canonical
    ``version`` and sorted ``learnable_dims``, and checks nothing: the layers check their
    arguments when they are built. TorchScript-compatible.

    Shape:
        As :func:`dcls1d`, :func:`dcls2d` and :func:`dcls3d`.
    """
    kernel = _kernel(weight, P, SIG, dilated_kernel_size, version, learnable_dims)
    cast = True
    if not torch.jit.is_scripting():
        cast = not autocast_enabled(input.device.type)  # under autocast the conv casts
    if cast:
        kernel = kernel.to(input.dtype)
        if bias is not None:
            bias = bias.to(input.dtype)
    return _apply_kernel(input, kernel, bias, stride, padding, groups, conv_algorithm)


def dcls1d(
    input: Tensor,
    weight: Tensor,
    P: Tensor,
    SIG: Tensor | None = None,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilated_kernel_size: int | Sequence[int] = 1,
    groups: int = 1,
    version: str = "gauss",
    learnable_dims: Sequence[int] | None = None,
    conv_algorithm: str = DEFAULT_CONV_ALGORITHM,
) -> Tensor:
    """1-D DCLS convolution. See :class:`dcls.Dcls1d` for the arguments and shapes.

    ``conv_algorithm`` applies the constructed kernel: ``"direct"`` (``F.conv1d``),
    ``"channels_last"``, ``"fft"``, ``"split"``, ``"triton"`` or ``"auto"``; see
    :mod:`dcls.algorithms`.

    Shape:
        input ``(B, C_in, L)``; weight ``(C_out, C_in/groups, K)``; P and SIG
        ``(1, C_out, C_in/groups, K)``; bias ``(C_out,)``; output ``(B, C_out, L_out)``.
    """
    return _dcls_nd(
        1,
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


def dcls2d(
    input: Tensor,
    weight: Tensor,
    P: Tensor,
    SIG: Tensor | None = None,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilated_kernel_size: int | Sequence[int] = 1,
    groups: int = 1,
    version: str = "gauss",
    learnable_dims: Sequence[int] | None = None,
    conv_algorithm: str = DEFAULT_CONV_ALGORITHM,
) -> Tensor:
    """2-D DCLS convolution. See :class:`dcls.Dcls2d` for the arguments and shapes.

    ``conv_algorithm`` applies the constructed kernel: ``"direct"`` (``F.conv2d``),
    ``"channels_last"``, ``"fft"``, ``"split"``, ``"triton"`` or ``"auto"``; see
    :mod:`dcls.algorithms`.

    Shape:
        input ``(B, C_in, H, W)``; weight ``(C_out, C_in/groups, K)``; P and SIG
        ``(2, C_out, C_in/groups, K)``; bias ``(C_out,)``; output ``(B, C_out, H_out, W_out)``.
    """
    return _dcls_nd(
        2,
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


def dcls3d(
    input: Tensor,
    weight: Tensor,
    P: Tensor,
    SIG: Tensor | None = None,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilated_kernel_size: int | Sequence[int] = 1,
    groups: int = 1,
    version: str = "gauss",
    learnable_dims: Sequence[int] | None = None,
    conv_algorithm: str = DEFAULT_CONV_ALGORITHM,
) -> Tensor:
    """3-D DCLS convolution. See :class:`dcls.Dcls3d` for the arguments and shapes.

    ``conv_algorithm`` applies the constructed kernel: ``"direct"`` (``F.conv3d``),
    ``"channels_last"``, ``"fft"``, ``"split"``, ``"triton"`` or ``"auto"``; see
    :mod:`dcls.algorithms`.

    Shape:
        input ``(B, C_in, D, H, W)``; weight ``(C_out, C_in/groups, K)``; P and SIG
        ``(3, C_out, C_in/groups, K)``; bias ``(C_out,)``; output ``(B, C_out, D_out, H_out,
        W_out)``.
    """
    return _dcls_nd(
        3,
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
