"""The entry points' handling of bad input after Hydra has run, and what they share.

Bad input (:class:`InputError`: a config value, a checkpoint or a folder that is not what it
should be; or a missing file) ends a command with one logged line and exit status 2, never a
traceback (:func:`run_entry_point`); Ctrl-C that the command does not handle itself ends it with
one line and status 130. The ``model`` group is built by :func:`instantiate_model`, which reports
what is the config's fault in one line too. The command line itself is checked before Hydra runs,
in :mod:`engine.config.command_line`.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import shlex
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from omegaconf import OmegaConf

from engine.config.checks import REFUSED_ARGUMENT, ConfigError, InputError

__all__ = [
    "EXIT_BAD_INPUT",
    "MULTIRUN_FLAGS",
    "check_input_size",
    "cli_number",
    "command_line_override",
    "instantiate_model",
    "job_folder",
    "job_overrides",
    "model_label",
    "multirun_overrides",
    "run_entry_point",
]

_logger = logging.getLogger(__name__)

T = TypeVar("T")

MULTIRUN_FLAGS = ("-m", "--multirun")
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


_PLAIN_VALUE = re.compile(r"[\w./+-]+")  # taken as they are by Hydra and by the shell


def command_line_override(key: str, value: str) -> str:
    """``key=value`` as one shell word that Hydra reads back as ``value``: quoted where the value
    holds characters of Hydra's grammar or the shell's (a sweep job's folder name has ``=`` and
    ``,``, which an unquoted override rejects)."""
    if _PLAIN_VALUE.fullmatch(value):
        return f"{key}={value}"
    hydra_quoted = '"' + value.replace('"', '\\"') + '"'
    return shlex.quote(f"{key}={hydra_quoted}")


MAX_FOLDER_NAME_BYTES = 255  # what Linux file systems allow for one path component


def job_folder(overrides_name: str, num: int) -> str:
    """A sweep job's folder name (``configs/hydra/default.yaml``): its overrides, Hydra's
    ``override_dirname`` (``seed=1,trainer.epochs=30``), with ``/`` as ``_`` (a value that is a
    path would make nested folders); ``job<num>`` if no override names it; a name too long for
    the file system cut and made unique by a hash of the whole."""
    name = str(overrides_name).replace("/", "_") or f"job{num}"
    if len(name.encode()) <= MAX_FOLDER_NAME_BYTES:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:12]
    head = name.encode()[: MAX_FOLDER_NAME_BYTES - len(digest) - 1].decode(errors="ignore")
    return f"{head}-{digest}"


def cli_number(kind: type = int, minimum: float = 1, strict: bool = False) -> Callable[[str], Any]:
    """An argparse ``type`` for the scripts: ``kind(text)``, at least ``minimum`` (above it if
    ``strict``); otherwise argparse prints the usage and one error line and exits with status 2.
    """
    noun = "an integer" if kind is int else "a number"
    bound = f"> {minimum}" if strict else f">= {minimum}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"expected {noun} {bound}, got {text!r}")
        return value

    parse.__name__ = f"{noun} {bound}"  # what argparse names in its message
    return parse


def multirun_overrides() -> list[str] | None:
    """This job's command-line overrides when it is one job of a multirun, else ``None``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return job_overrides()


def job_overrides() -> list[str] | None:
    """This run's command-line overrides (``hydra.*`` ones apart), a single run's as a sweep
    job's; ``None`` outside a Hydra entry point (a config composed in Python)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def model_label(cfg: Any) -> str:
    """The name of the model that the ``model`` group ``cfg`` builds, for logs and results:
    timm's ``model_name``, or for a builder of one's own (another ``_target_``) its name."""
    return str(cfg.get("model_name") or str(cfg.get("_target_")).rsplit(".", 1)[-1])


# PyTorch's messages for a feature map smaller than a layer's kernel
_TOO_SMALL = re.compile(
    r"Kernel size can't be greater than actual input size|Output size is too small"
)


def check_input_size(cfg: Any, image_size: int, key: str) -> None:
    """Refuse an image size the model cannot take (a feature map smaller than a kernel: e.g.
    ConvNeXt below 32 pixels), found by a forward pass of the ``model`` group ``cfg`` on the meta
    device (no memory, no computation; a fraction of a second), instead of a traceback at the
    first training step.

    Raises:
        ConfigError: naming ``key`` (``data.image_size``) and the size the model needs.
    """
    import torch

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # the builder's log lines come with the real model
    try:
        with torch.device("meta"):  # (no weights to load: shapes are all it needs)
            model = instantiate_model(
                OmegaConf.merge(cfg, {"pretrained": False}) if cfg.get("pretrained") else cfg
            )
        with torch.no_grad():
            model.eval()(torch.empty(1, 3, image_size, image_size, device="meta"))
    except Exception as error:  # (a builder without meta support: not this check's business)
        if not (isinstance(error, RuntimeError) and _TOO_SMALL.search(str(error))):
            return  # not the size's fault: the real model reports it where it happens
        reason = str(error).strip().splitlines()[0]
        raise ConfigError(
            f"{key}={image_size} is invalid: too small for {model_label(cfg)}, a feature map "
            f"becomes smaller than a kernel ({reason}); expected a larger image size"
        ) from None
    finally:
        logging.disable(previous)


def instantiate_model(cfg: Any, key_prefix: Mapping[str, str] | None = None) -> Any:
    """``hydra.utils.instantiate(cfg)`` for the ``model`` group, with what is the config's fault
    in one line (:class:`ConfigError`; Hydra would print four, exit status 1): a ``_target_``
    that does not import, a ``model.*`` key that the builder (or one it passes it to) does not
    take, a ValueError of the builder (a ``model.*`` value it refuses), and pretrained weights
    that do not exist or cannot be downloaded. Other errors keep their traceback.

    Args:
        key_prefix: where the user set a key of ``cfg``, for the message (default ``model.``;
            eval.py's ``model.kwargs.`` keys are merged into the checkpoint's model config).
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(cfg)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ImportError) and str(error).startswith("Error locating target"):
            reason = str(cause.__cause__ or cause).strip().splitlines()[0]
            raise ConfigError(
                f"model._target_={cfg.get('_target_')!r} is invalid: it does not import "
                f"({reason}); is its module on PYTHONPATH?"
            ) from error
        refused = REFUSED_ARGUMENT.search(str(cause)) if isinstance(cause, TypeError) else None
        if refused and refused[1] in cfg:  # a key of the config (other names: maybe a bug)
            prefix = (key_prefix or {}).get(refused[1], "model.")
            raise ConfigError(
                f"{prefix}{refused[1]} is invalid: the builder does not take it ({cause})"
            ) from error
        if isinstance(cause, ValueError) or (
            isinstance(cause, RuntimeError | OSError)
            and ("pretrained" in str(cause).lower() or cfg.get("pretrained"))
        ):  # a value the builder refuses; pretrained weights that do not exist or download
            raise ConfigError(f"model: {str(cause).strip().splitlines()[0]}") from error
        raise


def run_entry_point(run: Callable[[], T], logger: logging.Logger) -> T:
    """``run()``, with bad input reported in one line (exit 2) and Ctrl-C in one line (exit 130).

    ``FileNotFoundError`` counts as bad input: every file or folder the project opens is named
    by the user (a checkpoint, a dataset root). In one job of a multirun the job fails after its
    line instead: the sweep's other jobs still run, and Hydra reports the first failed job when
    the sweep ends, in one line too (a ``CompactHydraException``: no traceback), with exit
    status 1.
    """
    try:
        return run()
    except (InputError, FileNotFoundError) as error:
        message = str(error).strip().splitlines()
        if message and message[0].startswith("Caught ") and "DataLoader worker" in message[0]:
            # re-raised from a loader worker: the first line names the worker, the last holds
            # the error ("engine.config.checks.InputError: <message>")
            message = [message[-1].split(": ", 1)[-1]]
        line = message[0] if message else type(error).__name__
        logger.error("%s", line)
        if multirun_overrides() is not None:  # Hydra names the job's overrides before the line
            from hydra.errors import CompactHydraException

            raise CompactHydraException(line) from error
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        logger.error("interrupted (Ctrl-C)")
        sys.exit(EXIT_INTERRUPTED)
