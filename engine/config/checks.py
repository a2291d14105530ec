"""The small checks both configs use, raising the one-line errors of :mod:`engine.errors`
(re-exported here)."""

from __future__ import annotations

import logging
import math
import re
import signal
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from engine.amp import AMP_CHOICES, amp_device_note
from engine.distributed import DEVICES, resolve_device
from engine.errors import CLOSE_MATCHES, ConfigError, InputError, close_matches, fail

__all__ = [
    "CLOSE_MATCHES",
    "DEVICES",
    "INTERPOLATIONS",
    "REFUSED_ARGUMENT",
    "ConfigError",
    "InputError",
    "call_with_config_kwargs",
    "check_amp_and_device",
    "check_image_transform",
    "check_signal_names",
    "close_matches",
    "fail",
    "int_at_least",
    "is_int",
    "is_number",
    "number_at_least",
    "one_of",
    "resolve_device",
]

_logger = logging.getLogger(__name__)


def _key(prefix: str | None, key: str) -> str:
    """``prefix.key``, or ``key`` for a top-level key (``prefix`` None)."""
    return f"{prefix}.{key}" if prefix else key


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool): ``nan`` and ``inf`` are no setting's value."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def int_at_least(
    cfg: Any, prefix: str | None, key: str, minimum: int, null: str | None = None
) -> None:
    """``cfg[key]`` is an integer >= ``minimum``; with ``null`` (what null means), or null."""
    _at_least(cfg, prefix, key, minimum, null, is_int, "an integer")


def number_at_least(
    cfg: Any, prefix: str | None, key: str, minimum: float, null: str | None = None
) -> None:
    """``cfg[key]`` is a number >= ``minimum``; with ``null`` (what null means), or null."""
    _at_least(cfg, prefix, key, minimum, null, is_number, "a number")


def _at_least(
    cfg: Any,
    prefix: str | None,
    key: str,
    minimum: float,
    null: str | None,
    is_kind: Callable[[Any], bool],
    kind: str,
) -> None:
    value = cfg.get(key)
    if value is None and null is not None:
        return
    if not is_kind(value) or value < minimum:
        allowed = f"{kind} >= {minimum}"
        fail(
            _key(prefix, key),
            value,
            f"expected null ({null}) or {allowed}" if null else f"expected {allowed}",
        )


def one_of(cfg: Any, prefix: str | None, key: str, choices: tuple) -> None:
    value = cfg.get(key)
    if value not in choices:
        expected = f"expected one of {', '.join(map(repr, choices))}"
        fail(_key(prefix, key), value, expected, near=[c for c in choices if isinstance(c, str)])


# Python's message for a keyword a call's signature refuses
REFUSED_ARGUMENT = re.compile(
    r"(?:unexpected keyword argument|multiple values for argument) '(\w+)'"
)


def call_with_config_kwargs(
    factory: Callable[..., Any],
    fixed: Mapping[str, Any],
    kwargs: Mapping[str, Any] | None,
    key: str,
    set_by: Mapping[str, str],
    what: str,
    *args: Any,
) -> Any:
    """``factory(*args, **fixed, **kwargs)``, where ``kwargs`` are the free keywords of the config
    key ``key`` (``optimizer.kwargs``): a keyword that ``fixed`` already passes, or one the factory
    refuses, is a :class:`ConfigError` naming ``key.<name>`` (it was a TypeError traceback).

    Args:
        set_by: for each keyword of ``fixed``, the config key that sets it (for the message).
        what: the factory in words, for the message (``"the adamw optimizer"``).
    """
    if isinstance(kwargs, DictConfig):
        kwargs = OmegaConf.to_container(kwargs, resolve=True)  # lists as lists
    if not isinstance(kwargs, Mapping | None):
        fail(key, kwargs, "expected a mapping of keyword: value, like {}")
    kwargs = dict(kwargs or {})
    for name, value in kwargs.items():
        if name in fixed:
            setter = set_by.get(name, "the training loop")
            fail(f"{key}.{name}", value, f"{setter} sets it; set that key instead")
    try:
        return factory(*args, **fixed, **kwargs)
    except TypeError as error:  # a keyword the factory, or what it builds, does not take
        refused = REFUSED_ARGUMENT.search(str(error))
        if refused is None or refused[1] not in kwargs:
            raise
        fail(f"{key}.{refused[1]}", kwargs[refused[1]], f"{what} does not take it ({error})")


INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")  # timm's


def check_image_transform(cfg: Any, prefix: str, null: str | None = None) -> None:
    """``interpolation``, ``crop_pct``, ``mean`` and ``std`` of ``cfg`` make an evaluation
    transform: a timm interpolation, a crop in (0, 1], three numbers per RGB statistic (``std``
    > 0); with ``null`` (what null means), null too."""
    allow_null = f"null ({null}) or " if null else ""
    crop = cfg.get("crop_pct")
    if not (crop is None and null) and not (is_number(crop) and 0 < crop <= 1):
        fail(f"{prefix}.crop_pct", crop, f"expected {allow_null}a number in (0, 1]")
    interpolation = cfg.get("interpolation")
    if not (interpolation is None and null) and interpolation not in INTERPOLATIONS:
        allowed = f"expected {allow_null}one of {', '.join(INTERPOLATIONS)}"
        fail(f"{prefix}.interpolation", interpolation, allowed, near=INTERPOLATIONS)
    for key in ("mean", "std"):
        value = cfg.get(key)
        if value is None and null:
            continue
        if (
            isinstance(value, str)
            or not hasattr(value, "__len__")
            or len(value) != 3
            or not all(is_number(v) and (key == "mean" or v > 0) for v in value)
        ):
            positive = " > 0" if key == "std" else ""
            fail(
                f"{prefix}.{key}",
                value,
                f"expected {allow_null}3 numbers{positive}, one per RGB channel",
            )


UNCATCHABLE_SIGNALS = ("SIGKILL", "SIGSTOP")


def check_signal_names(names: Iterable[str], key: str = "trainer.preemption.signals") -> None:
    """Every name is a signal of this platform (``SIGTERM``, ``SIGUSR1``, ``SIGINT``, ...) that
    a process can handle."""
    for name in names:
        if not str(name).startswith("SIG") or not hasattr(signal, str(name)):
            fail(key, name, "expected signal names like SIGTERM, SIGUSR1, SIGINT")
        if str(name) in UNCATCHABLE_SIGNALS:
            fail(key, name, "SIGKILL and SIGSTOP cannot be caught; expected e.g. SIGTERM, SIGUSR1")


def check_amp_and_device(amp: Any, device: Any, prefix: str | None) -> None:
    """``device`` is one of :data:`DEVICES` and present; ``amp`` is known (``fp16`` on a CPU is
    allowed, with a warning saying why ``bf16`` is better there).

    Args:
        prefix: the config group holding both keys (``trainer``), or ``None`` at the top level.
    """
    key = f"{prefix}." if prefix else ""
    if device not in DEVICES:
        fail(f"{key}device", device, f"expected one of {', '.join(map(repr, DEVICES))}")
    if device == "cuda" and not torch.cuda.is_available():
        fail(
            f"{key}device",
            device,
            f"no CUDA device is visible; use {key}device=cpu or {key}device=auto",
        )
    if amp not in AMP_CHOICES:
        fail(f"{key}amp", amp, "expected one of null (float32), 'bf16', 'fp16'")
    note = amp_device_note(amp, resolve_device(device), f"{key}amp")
    if note is not None:
        _logger.warning("%s", note)
