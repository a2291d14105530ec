"""The bilinear DCLS kernel built in one Triton kernel, and its gradient in another.

:func:`dcls.functional.construct_kernel` builds a ``"bilinear"`` (or ``"bilinear_unnormalized"``)
kernel with about 30 small torch operations forward and 30 backward per layer: on a GPU that is
some 60 kernel launches per layer and training step, each a few microseconds of launch and
dispatch for a few kilobytes of work (18 layers in ConvNeXt-T-dcls). Here the forward is one
launch and the backward one (plus an empty tensor each), with the same values and gradients:

* forward: ``kernel[b, cell] = sum_k w[b, k] * prod_a c_a(b, k, cell) / norm(b, k)``, with
  ``c_a`` the tent's value at the cell along axis ``a`` (``1 - frac`` on the element's base cell,
  ``frac`` on the next one), ``norm`` the product over axes of the in-grid tent mass plus
  :data:`dcls.functional.NORMALIZATION_EPS` (``1`` unnormalised). One program per block of rows
  ``b`` (output channel x input channel per group) and block of cells, looping over the elements.
* backward: each element only touches its ``2^L`` corner cells, so one program per block of
  (row, element) pairs gathers the kernel gradient there and writes ``dw`` and ``dP``, the
  derivative of ``c_a`` being ``-1`` on the base cell and ``+1`` on the next, as autograd gives
  for the torch construction (with its one-sided choice of ``base`` at integer coordinates, see
  :func:`dcls.functional._bilinear_cell`). No reduction across programs: deterministic.

1-, 2- and 3-D, any grid size, float32 or float64 (for ``gradcheck``). Registered as custom ops
(``dcls::bilinear_kernel``, ``dcls::bilinear_kernel_backward``) with fake kernels and autograd, so
``torch.compile(fullgraph=True)`` traces them; differentiable once (a double backward raises: the
torch construction is used where that is needed, on the CPU and under TorchScript). Used by
:mod:`dcls.functional` on CUDA (:data:`ENABLED`); on the CPU the kernels run under Triton's
interpreter (``TRITON_INTERPRET=1``), for the tests.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from dcls.algorithms.triton import _on_device, tl, triton, triton_available

__all__ = ["ENABLED", "bilinear_kernel", "bilinear_kernel_available"]

ENABLED = True  # dcls.functional uses this construction on CUDA (False: the torch one everywhere)
_FORWARD_BLOCKS = {"BLOCK_ROWS": 16, "BLOCK_CELLS": 256}  # rows x cells per forward program
_BACKWARD_BLOCK = 128  # (row, element) pairs per backward program
_FLOAT_DTYPES = (torch.float32, torch.float64)


def bilinear_kernel_available(weight: Tensor) -> bool:
    """Whether :func:`bilinear_kernel` runs for ``weight``: float32/float64 on CUDA (or on the
    CPU under Triton's interpreter)."""
    return weight.dtype in _FLOAT_DTYPES and triton_available(weight.device)


if triton is not None:

    def _forward_kernel(
        w_ptr, p_ptr, out_ptr,
        ROWS, K, EPS,
        L: tl.constexpr, S0: tl.constexpr, S1: tl.constexpr, S2: tl.constexpr,
        NORMALIZE: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_CELLS: tl.constexpr,
    ):  # fmt: skip
        """out[b, cell] = sum_k w[b, k] * prod_a c_a / norm; the last L of the three axes
        (sizes S0, S1, S2) are learnable, the others have size 1."""
        rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        cells = tl.program_id(1) * BLOCK_CELLS + tl.arange(0, BLOCK_CELLS)
        rows_ok = rows < ROWS
        cells_ok = cells < S0 * S1 * S2
        x0 = (cells // (S1 * S2))[None, :]
        x1 = ((cells // S2) % S1)[None, :]
        x2 = (cells % S2)[None, :]
        first = w_ptr + rows * K  # element 0 of each row
        acc = tl.full([BLOCK_ROWS, BLOCK_CELLS], 0.0, dtype=w_ptr.dtype.element_ty)
        for k in range(K):
            w = tl.load(first + k, mask=rows_ok, other=0.0)
            value = w[:, None] + acc * 0.0
            mass = w * 0.0 + 1.0
            for a in tl.static_range(3 - L, 3):
                size = S0 if a == 0 else (S1 if a == 1 else S2)
                x = x0 if a == 0 else (x1 if a == 1 else x2)
                p = tl.load(p_ptr + ((a - 3 + L) * ROWS + rows) * K + k, mask=rows_ok, other=0.0)
                p = p + size // 2
                toward_centre = tl.where(p > size // 2, tl.ceil(p) - 1, tl.floor(p))
                away = tl.where(p > size // 2, tl.floor(p), tl.ceil(p) - 1)  # wholly outside
                base = tl.where((p > -1) & (p < size), toward_centre, away)
                frac = p - base
                corner = tl.where(x == base[:, None], 1 - frac[:, None], 0.0)
                corner = tl.where(x == base[:, None] + 1, frac[:, None], corner)
                value = value * corner
                if NORMALIZE:
                    low = tl.where((base >= 0) & (base < size), 1 - frac, 0.0)
                    high = tl.where((base + 1 >= 0) & (base + 1 < size), frac, 0.0)
                    mass = mass * (low + high)
            if NORMALIZE:
                value = value / (mass + EPS)[:, None]
            acc += value
        tl.store(
            out_ptr + rows.to(tl.int64)[:, None] * (S0 * S1 * S2) + cells[None, :],  # >= 2^31
            acc,
            mask=rows_ok[:, None] & cells_ok[None, :],
        )

    def _backward_kernel(
        grad_ptr, w_ptr, p_ptr, dw_ptr, dp_ptr,
        ROWS, K, EPS,
        L: tl.constexpr, S0: tl.constexpr, S1: tl.constexpr, S2: tl.constexpr,
        NORMALIZE: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """dw[b, k] and dP[a, b, k] from the kernel gradient at each element's corner cells."""
        pairs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # flattened (row, element)
        ok = pairs < ROWS * K
        rows = pairs // K
        row_start = rows.to(tl.int64) * (S0 * S1 * S2)  # a dense kernel may pass 2^31 cells
        w = tl.load(w_ptr + pairs, mask=ok, other=0.0)
        zero = w * 0.0
        # Per axis: base cell, fraction, in-grid mass and its derivative; padded axes sit at 0.
        base0 = zero
        frac0 = zero
        mass0 = zero + 1.0
        slope0 = zero
        base1 = zero
        frac1 = zero
        mass1 = zero + 1.0
        slope1 = zero
        base2 = zero
        frac2 = zero
        mass2 = zero + 1.0
        slope2 = zero
        for a in tl.static_range(3 - L, 3):
            size = S0 if a == 0 else (S1 if a == 1 else S2)
            p = tl.load(p_ptr + (a - 3 + L) * ROWS * K + pairs, mask=ok, other=0.0) + size // 2
            toward_centre = tl.where(p > size // 2, tl.ceil(p) - 1, tl.floor(p))
            away = tl.where(p > size // 2, tl.floor(p), tl.ceil(p) - 1)  # wholly outside
            base = tl.where((p > -1) & (p < size), toward_centre, away)
            frac = p - base
            low_in = (base >= 0) & (base < size)
            high_in = (base + 1 >= 0) & (base + 1 < size)
            mass = tl.where(low_in, 1 - frac, 0.0) + tl.where(high_in, frac, 0.0)
            slope = tl.where(high_in, 1.0, 0.0) - tl.where(low_in, 1.0, 0.0)
            if a == 0:
                base0, frac0, mass0, slope0 = base, frac, mass, slope
            elif a == 1:
                base1, frac1, mass1, slope1 = base, frac, mass, slope
            else:
                base2, frac2, mass2, slope2 = base, frac, mass, slope
        # Over the 2^3 corners (those of padded axes fall outside the grid, gradient 0):
        # g = sum dK c0 c1 c2, h_a = sum dK dc_a prod_(a' != a) c_a'.
        g = zero
        h0 = zero
        h1 = zero
        h2 = zero
        for corner in tl.static_range(8):
            e0 = corner // 4
            e1 = (corner // 2) % 2
            e2 = corner % 2
            i0 = base0 + e0
            i1 = base1 + e1
            i2 = base2 + e2
            inside = (i0 >= 0) & (i0 < S0) & (i1 >= 0) & (i1 < S1) & (i2 >= 0) & (i2 < S2)
            cell = (i0 * (S1 * S2) + i1 * S2 + i2).to(tl.int32)
            dk = tl.load(grad_ptr + row_start + cell, mask=ok & inside, other=0.0)
            c0 = frac0 if e0 == 1 else 1 - frac0
            c1 = frac1 if e1 == 1 else 1 - frac1
            c2 = frac2 if e2 == 1 else 1 - frac2
            d0 = 1.0 if e0 == 1 else -1.0
            d1 = 1.0 if e1 == 1 else -1.0
            d2 = 1.0 if e2 == 1 else -1.0
            g += dk * c0 * c1 * c2
            h0 += dk * d0 * c1 * c2
            h1 += dk * c0 * d1 * c2
            h2 += dk * c0 * c1 * d2
        norm = mass0 * mass1 * mass2 + EPS if NORMALIZE else zero + 1.0
        tl.store(dw_ptr + pairs, g / norm, mask=ok)
        for a in tl.static_range(3 - L, 3):
            h = h0 if a == 0 else (h1 if a == 1 else h2)
            dp = w * h / norm
            if NORMALIZE:
                # d norm / d p_a = slope_a * prod_(a' != a) mass_a'
                others = mass1 * mass2 if a == 0 else (mass0 * mass2 if a == 1 else mass0 * mass1)
                slope = slope0 if a == 0 else (slope1 if a == 1 else slope2)
                dp = dp - w * g * slope * others / (norm * norm)
            tl.store(dp_ptr + (a - 3 + L) * ROWS * K + pairs, dp, mask=ok)


@functools.cache
def _kernels(interpret: bool) -> dict[str, object]:
    """The two kernels, interpreted or compiled (see :mod:`dcls.algorithms.triton`)."""
    if interpret:
        from triton.runtime.interpreter import InterpretedFunction

        return {
            "forward": InterpretedFunction(_forward_kernel),
            "backward": InterpretedFunction(_backward_kernel),
        }
    jit = triton.runtime.jit.JITFunction
    return {"forward": jit(_forward_kernel), "backward": jit(_backward_kernel)}


def _padded_sizes(sizes: list[int]) -> list[int]:
    return [1] * (3 - len(sizes)) + list(sizes)


def _interpret(device: torch.device) -> bool:
    return device.type != "cuda"


@torch.library.custom_op("dcls::bilinear_kernel", mutates_args=())
def _forward_op(weight: Tensor, P: Tensor, sizes: list[int], normalize: bool, eps: float) -> Tensor:
    """``(B, prod(sizes))`` kernel from ``weight (B, K)`` and ``P (L, B, K)``."""
    rows, count = weight.shape
    cells = 1
    for s in sizes:
        cells *= s
    out = weight.new_empty(rows, cells)
    if out.numel():
        s0, s1, s2 = _padded_sizes(sizes)
        blocks = _FORWARD_BLOCKS

        def grid(meta: dict) -> tuple[int, int]:
            return triton.cdiv(rows, meta["BLOCK_ROWS"]), triton.cdiv(cells, meta["BLOCK_CELLS"])

        with _on_device(weight):
            _kernels(_interpret(weight.device))["forward"][grid](
                weight, P, out, rows, count, eps,
                L=len(sizes), S0=s0, S1=s1, S2=s2, NORMALIZE=normalize, **blocks,
            )  # fmt: skip
    return out


@_forward_op.register_fake
def _(weight, P, sizes, normalize, eps):
    cells = 1
    for s in sizes:
        cells *= s
    return weight.new_empty(weight.shape[0], cells)


@torch.library.custom_op("dcls::bilinear_kernel_backward", mutates_args=())
def _backward_op(
    grad: Tensor, weight: Tensor, P: Tensor, sizes: list[int], normalize: bool, eps: float
) -> tuple[Tensor, Tensor]:
    """``(d weight, d P)`` from the kernel gradient ``(B, prod(sizes))``."""
    rows, count = weight.shape
    grad_weight, grad_p = torch.empty_like(weight), torch.empty_like(P)
    if weight.numel():
        s0, s1, s2 = _padded_sizes(sizes)
        grid = (triton.cdiv(rows * count, _BACKWARD_BLOCK),)
        with _on_device(weight):
            _kernels(_interpret(weight.device))["backward"][grid](
                grad.contiguous(), weight, P, grad_weight, grad_p, rows, count, eps,
                L=len(sizes), S0=s0, S1=s1, S2=s2, NORMALIZE=normalize, BLOCK=_BACKWARD_BLOCK,
            )  # fmt: skip
    return grad_weight, grad_p


@_backward_op.register_fake
def _(grad, weight, P, sizes, normalize, eps):
    return torch.empty_like(weight), torch.empty_like(P)


def _setup_context(ctx, inputs, output) -> None:
    weight, P, sizes, normalize, eps = inputs
    ctx.save_for_backward(weight, P)
    ctx.sizes, ctx.normalize, ctx.eps = sizes, normalize, eps


def _backward(ctx, grad: Tensor):
    weight, P = ctx.saved_tensors
    grad_weight, grad_p = _backward_op(grad, weight, P, ctx.sizes, ctx.normalize, ctx.eps)
    return grad_weight, grad_p, None, None, None


def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        "the Triton bilinear kernel construction is not twice differentiable; set "
        "dcls.triton_construct.ENABLED = False to build the kernel with torch operations"
    )


_forward_op.register_autograd(_backward, setup_context=_setup_context)
_backward_op.register_autograd(_no_double_backward)


def bilinear_kernel(
    weight: Tensor, P: Tensor, sizes: list[int], normalize: bool, eps: float
) -> Tensor:
    """The bilinear DCLS kernel of every row, as ``dcls.functional``'s torch construction.

    Args:
        weight: element weights, float32 or float64.
        P: positions (position 0 is the grid cell ``size // 2``), ``weight``'s dtype.
        sizes: the grid size along each of the ``L`` learnable axes (1 to 3).
        normalize: divide each element by its in-grid interpolation mass plus ``eps``.
        eps: see ``normalize``.

    Returns:
        The kernel, row-major over the grid.

    Shape:
        weight ``(B, K)``; P ``(L, B, K)``; output ``(B, prod(sizes))``.

    Raises:
        ValueError: for shapes that do not fit, 0 or more than 3 axes, a dtype other than
            float32/float64, mismatched devices, or a device Triton cannot run on.
    """
    if not 1 <= len(sizes) <= 3 or P.dim() != 3 or tuple(P.shape) != (len(sizes), *weight.shape):
        raise ValueError(
            f"bilinear_kernel takes weight (B, K), P (L, B, K) and L = 1 to 3 sizes, got weight "
            f"{tuple(weight.shape)}, P {tuple(P.shape)}, sizes {list(sizes)}"
        )
    if weight.dtype not in _FLOAT_DTYPES or P.dtype != weight.dtype:
        raise ValueError(
            f"bilinear_kernel needs float32 or float64 weight and P of one dtype, got "
            f"{weight.dtype} and {P.dtype}"
        )
    if P.device != weight.device or not (
        torch.compiler.is_compiling() or bilinear_kernel_available(weight)
    ):
        raise ValueError(
            f"bilinear_kernel runs on CUDA, or on the CPU under TRITON_INTERPRET=1, with weight "
            f"and P on one device; got {weight.device} and {P.device}"
        )
    return _forward_op(weight.contiguous(), P.contiguous(), list(sizes), normalize, eps)
