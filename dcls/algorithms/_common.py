"""Helpers shared by the algorithms: autocast state and casts, zero padding as (before, after)
pairs, and channels-last memory formats. The padding helpers are TorchScript-compatible."""

from __future__ import annotations

import torch
from torch import Tensor

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


def pad_argument(pairs: list[tuple[int, int]]) -> list[int]:
    """``F.pad``'s argument (last axis first) for (before, after) pairs in axis order."""
    argument: list[int] = []
    for d in range(len(pairs) - 1, -1, -1):
        argument.append(pairs[d][0])
        argument.append(pairs[d][1])
    return argument
