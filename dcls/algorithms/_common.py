"""Helpers shared by the algorithms: autocast state and casts, zero padding as (before, after)
pairs, and channels-last memory formats. The padding helpers are TorchScript-compatible."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from dcls._utils import _as_int

__all__ = [
    "autocast_cast",
    "autocast_enabled",
    "channels_last_format",
    "pad_argument",
    "pad_pairs",
    "to_channels_last",
]


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (never for types without autocast, e.g. the
    "meta" device used to count FLOPs).

    Under ``torch.compile`` the device is a real one, and ``torch.amp.is_autocast_available`` is
    skipped: Dynamo cannot trace it in torch 2.11 (a graph break), and ``fullgraph=True`` fails.
    """
    if torch.compiler.is_compiling():
        return torch.is_autocast_enabled(device_type)
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def autocast_cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` as autocast casts ``F.conv``'s operands to ``dtype``: floating tensors except
    float64, which autocast leaves alone."""
    return t.to(dtype) if t.is_floating_point() and t.dtype != torch.float64 else t


def channels_last_format(dim: int) -> torch.memory_format | None:
    """The channels-last memory format of ``dim``-D tensors (4-D and 5-D), else ``None``."""
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(dim)


def functorch_active() -> bool:
    """Whether a ``torch.func`` transform (``grad``, ``vmap``, ...) is running."""
    peek = getattr(torch._C._functorch, "peek_interpreter_stack", None)
    return peek is not None and peek() is not None


def forward_ad_active() -> bool:
    """Whether forward-mode AD may be asked for: a ``torch.autograd.forward_ad.dual_level``
    or a ``torch.func`` transform (``jvp``) is running."""
    return torch.autograd.forward_ad._current_level >= 0 or functorch_active()


def to_channels_last(t: Tensor) -> Tensor:
    """``t`` in channels-last memory format where one exists (4-D/5-D), else unchanged; unchanged
    under ``torch.func`` transforms too (``vmap`` cannot change a memory format)."""
    if not torch.jit.is_scripting():  # noqa: SIM102  (TorchScript skips this block only as is)
        if functorch_active():
            return t
    if t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if t.dim() == 5:
        return t.contiguous(memory_format=torch.channels_last_3d)
    return t


def pad_pairs(padding: str | list[int], kernel_sizes: list[int]) -> list[tuple[int, int]]:
    """(before, after) zero padding per spatial axis, as ``F.conv`` applies it."""
    pairs: list[tuple[int, int]] = []
    for d, k in enumerate(kernel_sizes):
        if isinstance(padding, str):
            pairs.append(((k - 1) // 2, k - 1 - (k - 1) // 2) if padding == "same" else (0, 0))
        else:
            pairs.append((padding[d], padding[d]))
    return pairs


def checked_pad_pairs(
    padding: str | int | Sequence[int], input_sizes: Sequence[int], kernel_sizes: Sequence[int]
) -> list[tuple[int, int]]:
    """:func:`pad_pairs` for a padding given as ``F.conv`` takes it (``"same"``, ``"valid"``,
    an int or one int per axis, all >= 0), checked, for the algorithms that pad themselves.

    Raises:
        ValueError: on another padding, or one that leaves no output (a kernel larger than the
            padded input: ``F.conv`` refuses it).
    """
    n = len(kernel_sizes)
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same', 'valid' or ints, got {padding!r}")
        pairs = pad_pairs(padding, list(kernel_sizes))
    else:
        single = _as_int(padding)
        values = (single,) * n if single is not None else padding
        values = tuple(map(_as_int, values)) if isinstance(values, Sequence) else ()
        if len(values) != n or not all(p is not None and p >= 0 for p in values):
            raise ValueError(
                f"padding must be 'same', 'valid', an int >= 0 or {n} ints >= 0, got {padding!r}"
            )
        pairs = [(p, p) for p in values]
    out_sizes = [
        s + a + b - k + 1 for s, (a, b), k in zip(input_sizes, pairs, kernel_sizes, strict=True)
    ]
    if any(o < 1 for o in out_sizes):
        raise ValueError(
            f"padding {padding!r} leaves no output for input sizes {tuple(input_sizes)} and "
            f"kernel sizes {tuple(kernel_sizes)} (output sizes {tuple(out_sizes)})"
        )
    return pairs


def pad_argument(pairs: list[tuple[int, int]]) -> list[int]:
    """``F.pad``'s argument (last axis first) for (before, after) pairs in axis order."""
    argument: list[int] = []
    for d in range(len(pairs) - 1, -1, -1):
        argument.append(pairs[d][0])
        argument.append(pairs[d][1])
    return argument
