"""The errors that every entry point reports in one line with exit status 2, and the hint for a
mistyped name. A leaf module: anything may import it without importing the configs' checks."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, NoReturn

__all__ = ["CLOSE_MATCHES", "ConfigError", "InputError", "close_matches", "fail"]

CLOSE_MATCHES = 3  # suggestions for a mistyped name


class InputError(ValueError):
    """Bad input from the user (a config value, a file, a folder): the entry points print its
    one-line message and exit with status 2, without a traceback."""


class ConfigError(InputError):
    """An invalid config value; the message is one line: key, value, what is allowed."""


def fail(
    key: str, value: Any, allowed: str, near: Iterable[str] | None = None, no_match: str = ""
) -> NoReturn:
    """Raise the :class:`ConfigError` ``"key=value is invalid: allowed"``, followed by the
    :func:`close_matches` of ``value`` among ``near`` (or ``no_match`` where none is close)."""
    hint = (close_matches(str(value), near) if near is not None else "") or no_match
    raise ConfigError(f"{key}={value!r} is invalid: {allowed}" + (f"; {hint}" if hint else ""))


def close_matches(name: str, candidates: Iterable[str]) -> str:
    """``"close matches: a, b"`` for a mistyped ``name``, or ``""``."""
    close = difflib.get_close_matches(str(name), list(candidates), n=CLOSE_MATCHES, cutoff=0.6)
    return f"close matches: {', '.join(close)}" if close else ""
