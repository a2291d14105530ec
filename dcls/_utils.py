"""Helpers shared by the functional core and the modules: argument normalisation and checks."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch

__all__ = [
    "as_tuple",
    "check_floating_dtype",
    "check_positive_int",
    "normalize_learnable_dims",
    "position_limits",
]


def _as_int(value: object) -> int | None:
    """``value`` as a Python int if it is an integer (numpy's too, not a bool), else None."""
    # A type without __index__ is refused before operator.index: Dynamo 2.11 (the GPU image's
    # torch) cannot catch the TypeError it raises on a list, and fails the compiled layer.
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        return None
    try:
        return operator.index(value)
    except TypeError:  # a tensor that is not one integer
        return None


def as_tuple(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    """Turn an int or a sequence of ``n`` ints into a tuple of ``n`` ints (numpy integers are
    ints here, as for ``nn.Conv2d``).

    Raises:
        ValueError: if ``value`` is a sequence whose length is not ``n``, or holds a non-int.
    """
    single = _as_int(value)
    if single is not None:
        return (single,) * n
    try:
        values = () if isinstance(value, str) else tuple(value)
    except TypeError:  # not iterable
        values = ()
    ints = tuple(_as_int(v) for v in values)
    if len(ints) != n or any(v is None for v in ints):
        raise ValueError(
            f"{name} must be an int or a tuple of {n} ints (one per spatial dimension), "
            f"got {value!r}"
        )
    return ints


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` as an int if it is an integer >= 1, else raise a ValueError naming
    ``name``."""
    number = _as_int(value)
    if number is None or number < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return number


def normalize_learnable_dims(learnable_dims: Sequence[int] | None, n: int) -> tuple[int, ...]:
    """Validate the spatial dimensions along which positions are learned.

    Args:
        learnable_dims: indices into the ``n`` spatial dimensions (torch order, negative allowed),
            or ``None`` for all of them.
        n: number of spatial dimensions.

    Returns:
        The sorted, non-negative, unique indices.

    Raises:
        ValueError: if an index is out of range, repeated, or the set is empty.
    """
    if learnable_dims is None:
        return tuple(range(n))
    try:  # any iterable of ints (a numpy array too, as for the other arguments), not a string
        dims = () if isinstance(learnable_dims, str) else tuple(map(_as_int, learnable_dims))
    except TypeError:  # not iterable
        dims = ()
    if not dims or not all(d is not None and -n <= d < n for d in dims):
        raise ValueError(
            f"learnable_dims must be a non-empty tuple of spatial dimension indices in "
            f"[{-n}, {n - 1}], got {learnable_dims!r}"
        )
    normalized = tuple(sorted(d % n for d in dims))
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"learnable_dims must not repeat a dimension, got {learnable_dims!r}")
    return normalized


def check_floating_dtype(dtype: torch.dtype | None) -> None:
    """Raise a ValueError unless ``dtype`` is ``None`` or a real floating-point dtype (the
    interpolations clamp and round positions)."""
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be None or a real floating-point dtype, got {dtype!r}")


def position_limits(size: int) -> tuple[int, int]:
    """Lowest and highest position (relative to the kernel centre ``size // 2``) inside the grid.

    Position ``p`` sits at grid coordinate ``p + size // 2``; the grid runs from ``0`` to
    ``size - 1``. For odd sizes the limits are ``±(size // 2)`` as in the authors' package; for
    even sizes the upper limit is ``size // 2 - 1``, so that a clamped position can never leave
    the kernel (the authors' clamp allows ``+size // 2``, one cell outside: an all-zero kernel).
    """
    center = size // 2
    return -center, size - 1 - center
