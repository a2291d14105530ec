"""Mixed precision: the ``amp`` config values, their dtypes, and the one autocast context.

``trainer.amp``, ``eval.py amp=`` and ``throughput.amp``, and the benchmark scripts' ``--amp``,
all take the same names: ``null`` (float32), ``bf16`` or ``fp16``.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["AMP_CHOICES", "AMP_DTYPES", "amp_device_note", "amp_dtype", "autocast_context"]

AMP_DTYPES: dict[str | None, torch.dtype | None] = {
    None: None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
AMP_CHOICES = tuple(AMP_DTYPES)


def amp_dtype(name: str | None, key: str = "amp") -> torch.dtype | None:
    """The autocast dtype of an ``amp`` value (``None`` for float32).

    Raises:
        ValueError: on a name that is not one of :data:`AMP_CHOICES`, naming ``key``.
    """
    if name not in AMP_DTYPES:
        raise ValueError(f"{key}={name!r} is invalid: expected one of null, 'bf16', 'fp16'")
    return AMP_DTYPES[name]


def amp_device_note(name: str | None, device: torch.device, key: str = "amp") -> str | None:
    """Why ``fp16`` on a CPU is a poor choice (``None`` for any other pair): it runs, through
    CPU autocast and a GradScaler, but slower than ``bf16``, the CPU's mixed precision."""
    if name == "fp16" and device.type == "cpu":
        return (
            f"{key}='fp16' on the CPU runs float16 through CPU autocast and a GradScaler, which "
            f"is slower than {key}=bf16 (the CPU's mixed precision) on most CPUs; fp16 is for CUDA"
        )
    return None


def autocast_context(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``, or nothing when ``dtype`` is ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
