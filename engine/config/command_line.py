"""The command line, checked before Hydra runs.

Hydra reports a mistyped config group option or key with a long message and exit status 1. The
entry points call :func:`exit_on_bad_command_line` first, which checks every override against the
config tree (ours and the folders ``--config-dir`` or ``hydra.searchpath`` add) and, on a
mistake, logs one line with the close matches and exits with status 2, the project's status for
bad input. Each value must also be of its key's kind, as the default shows it
(:func:`_check_value_kind`: a text where true/false or a number belongs would otherwise run, or
fail later with a traceback), and ``+key`` may add keys only inside a free-form mapping (an empty
one in the defaults, such as ``optimizer.kwargs``, or a ``_target_``'s arguments, such as
``model``): the code reads no other new key. Sweeps (``-m key=a,b``) are checked value by value
(intervals, sampled by a sweeper, are not). ``~key`` deletes only config groups and keys of
free-form mappings (the code reads every other key). Overrides that force (``++key``), Hydra's
own ``hydra.*`` keys and command lines with other Hydra flags (``--info``, ...) are left to
Hydra.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Sweep, ValueType
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from engine.config.checks import ConfigError, close_matches, is_number
from engine.config.entry import EXIT_BAD_INPUT, MULTIRUN_FLAGS, command_line_override
from engine.config.training import resolve_update_freq

__all__ = ["CONFIG_DIR_FLAGS", "check_command_line", "exit_on_bad_command_line"]


# Sweeps whose values are not listed on the command line: globs match what exists, intervals
# are sampled by a sweeper (Optuna, ...).
_UNLISTED_SWEEPS = (ValueType.GLOB_CHOICE_SWEEP, ValueType.INTERVAL_SWEEP)


def _values(override: Override, parsed: bool = False) -> list[Any]:
    """The values an override sets: one, or each of a choice/range sweep's; a sweep's as text,
    or with ``parsed`` as Hydra will set them (``1`` an int, ``true`` a bool)."""
    if override.value_type in _UNLISTED_SWEEPS:
        return []
    if override.is_sweep_override():
        values = override.sweep_iterator() if parsed else override.sweep_string_iterator()
        return list(values)
    return [override.value()]


def _group_options(config_dirs: Sequence[Path], group: str) -> list[str]:
    return sorted({p.stem for d in config_dirs for p in (d / group).glob("*.yaml")})


CONFIG_DIR_FLAGS = ("--config-dir", "-cd")
# Hydra's flags that print the config instead of running (``--cfg job``): the overrides are
# checked all the same.
PRINT_FLAGS = ("--cfg", "-c", "--resolve")
_FLAGS_WITH_VALUES = (*CONFIG_DIR_FLAGS, "--cfg", "-c")


def _split_arguments(args: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """Split a command line into its flags (``-m``, ``--cfg``, ...), the folders given by
    ``--config-dir``/``-cd`` (``-cd dir`` or ``-cd=dir``, in order) and the override texts."""
    flags: list[str] = []
    config_dirs: list[str] = []
    texts: list[str] = []
    remaining = iter(args)
    for arg in remaining:
        name, has_value, value = arg.partition("=")
        if name in _FLAGS_WITH_VALUES:
            flags.append(name)
            given = value if has_value else next(remaining, None)
            if name in CONFIG_DIR_FLAGS and given is not None:
                config_dirs.append(given)
        elif arg.startswith("-"):
            flags.append(arg)
        else:
            texts.append(arg)
    return flags, config_dirs, texts


def _search_path(config_dirs: Sequence[str], overrides: Sequence[Override]) -> list[str]:
    """The config folders that ``--config-dir``/``-cd`` and ``hydra.searchpath=[...]`` add, as
    ``hydra.searchpath`` entries (``file://<absolute path>``, or a package's ``pkg://...``)."""
    found = list(config_dirs[-1:])  # (given twice, Hydra keeps the last)
    for override in overrides:
        if override.key_or_group == "hydra.searchpath" and isinstance(override.value(), list):
            found += [str(entry) for entry in override.value()]
    return [e if "://" in e else f"file://{Path(e).resolve()}" for e in found]


def _is_free_form(node: DictConfig) -> bool:
    """Whether ``+key`` may add keys to ``node``: an empty mapping in the defaults (``kwargs:
    {}``), or the arguments of a ``_target_`` (``model``: every key goes to timm's builder)."""
    return len(node) == 0 or "_target_" in node


def _free_form_mappings(node: DictConfig, prefix: str = "") -> list[str]:
    """The keys of the mappings where ``+key`` may add keys (:func:`_is_free_form`)."""
    found = []
    for name in node:  # the keys; no interpolation resolved
        child = node._get_node(name)
        key = f"{prefix}{name}"
        if isinstance(child, DictConfig) and not child._is_none():
            found += [key] if _is_free_form(child) else _free_form_mappings(child, key + ".")
    return found


def _options_setting(config_dirs: Sequence[Path], dotted: str) -> list[str]:
    """``group=option`` for each option of the group ``dotted`` starts with whose file gives the
    rest of ``dotted`` a value (``logger.wandb`` -> ``logger=wandb``)."""
    group, _, rest = dotted.partition(".")
    found = []
    for path in sorted({p for d in config_dirs for p in (d / group).glob("*.yaml")}):
        try:
            if rest and OmegaConf.select(OmegaConf.load(path), rest) is not None:
                found.append(f"{group}={path.stem}")
        except OmegaConfBaseException:
            continue
    return found


def _check_key(
    cfg: DictConfig, key: str, adding: bool = False, config_dirs: Sequence[Path] = ()
) -> None:
    """Raise a ConfigError if ``key`` is not in ``cfg`` (with close matches); with ``adding``
    (``+key``), unless its deepest existing parent is a free-form mapping; or if a parent is
    null (naming the group options that set it, searched in ``config_dirs``)."""
    node: Any = cfg
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if node._is_none() and depth < len(parts):
            parent = ".".join(parts[:depth])
            setting = _options_setting(config_dirs, parent)
            hint = f"; {' or '.join(setting)} sets it" if setting else ""
            raise ConfigError(
                f"{'+' if adding else ''}{key} is invalid: {parent} is null with this "
                f"config's choices{hint}"
            )
        if not isinstance(node, DictConfig):
            return  # inside a list or a leaf: Hydra decides
        names = list(node.keys())  # keys() resolves no interpolation
        if part not in names:
            parent = ".".join(parts[:depth])
            free_form = depth > 0 and _is_free_form(node)
            if adding and free_form:
                return  # a key of a free-form mapping
            siblings = [f"{parent}.{k}" if parent else str(k) for k in names]
            where = f"no key {part!r} in {parent}" if parent else "no such top-level key"
            hint = close_matches(key, siblings)
            free = ", ".join(_free_form_mappings(cfg)) or "none in this config"
            how = (
                f"to add it to this free-form mapping: +{key}=..."
                if free_form
                else f"new keys (+key=...) go only inside the free-form mappings ({free})"
            )
            raise ConfigError(
                f"{'+' if adding else ''}{key} is invalid: {where}{'; ' + hint if hint else ''}; "
                + how
            )
        node = node._get_node(part)


_KIND_EXPECTED = {
    "bool": "expected true or false",
    "number": "expected a finite number",
    "list": "expected a list, e.g. [{value}]",
    "mapping": "expected a mapping, e.g. {{key:value}}",
}


def _kind(default: Any) -> str | None:
    """What a key takes, from its default: None (a text or null default) for anything."""
    if isinstance(default, bool):
        return "bool"
    if is_number(default):
        return "number"
    if isinstance(default, ListConfig | list):
        return "list"
    if isinstance(default, DictConfig | dict):
        return "mapping"
    return None


def _check_value_kind(cfg: DictConfig, key: str, value: Any) -> None:
    """Raise a ConfigError if ``value`` is not of the kind of ``key``'s default. Null (but for a
    true/false key, where it would read as false), an interpolation, and a list where a number
    is the default (one value per axis) pass: the entry point's own checks decide those."""
    if isinstance(value, Sweep) or (isinstance(value, str) and "${" in value):
        return  # (a sweep inside a sweep: Hydra expands it, or says it cannot)
    try:
        default = OmegaConf.select(cfg, key, throw_on_missing=False)
    except OmegaConfBaseException:
        return  # an interpolation that resolves only in the run
    kind = _kind(default)
    if value is None:
        if kind == "bool":  # (trainer.preemption.enabled=null turned the handling off)
            raise ConfigError(f"{key}=None is invalid: {_KIND_EXPECTED['bool']}")
        return
    fits = {
        None: True,
        "bool": isinstance(value, bool),
        "number": is_number(value) or isinstance(value, list),
        "list": isinstance(value, list),
        "mapping": isinstance(value, dict),
    }[kind]
    if not fits:
        example = value if isinstance(value, str | int | float) else "a,b"
        expected = _KIND_EXPECTED[kind].format(value=example)
        if kind == "number" and isinstance(default, int) and not isinstance(default, bool):
            expected += f", like its default {default}"  # (an integer: epochs, a batch size)
        raise ConfigError(f"{key}={value!r} is invalid: {expected}")
    if kind == "mapping" and (new := [k for k in value if k not in default]):
        if not _is_free_form(default):
            _check_key(cfg, f"{key}.{new[0]}")  # raises: no such key (close matches)
        adds = " ".join(f"'+{key}.{k}={_override_text(value[k])}'" for k in new)
        raise ConfigError(
            f"{key}={_override_text(value)} is invalid: setting a mapping cannot add keys to it "
            f"(Hydra's struct mode: {', '.join(map(str, new))} not in {key}); add them with {adds}"
        )


def _override_text(value: Any) -> str:
    """``value`` as a command-line override writes it: ``[0.9,0.95]``, ``{a:1}``, ``true``."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_override_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(map(_override_text, value)) + "]"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


# launcher options and the command each submits jobs with
LAUNCHER_COMMANDS = {"slurm": "sbatch"}


def _check_launcher_command(group: str, option: str, multirun: bool) -> None:
    command = LAUNCHER_COMMANDS.get(option) if group == "launcher" else None
    if command is not None and not multirun:  # Hydra launches only multiruns
        raise ConfigError(
            f"launcher={option} is invalid without -m: Hydra submits multiruns only, and "
            f"this run would start here; add -m to submit it with {command}"
        )
    if command is not None and shutil.which(command) is None:
        raise ConfigError(
            f"launcher={option} is invalid here: {command} is not on PATH; run it on the "
            "cluster's login node, or try the sweep on this machine with "
            "hydra/launcher=submitit_local (or without launcher=)"
        )


def _check_swept_keys_name_folders(config_dir: Path, overrides: Sequence[Override]) -> None:
    """A sweep over a key that job folder names leave out (where data lives) would put its jobs
    in one folder, each resuming the one before: refused."""
    hydra_config = OmegaConf.load(config_dir / "hydra" / "default.yaml")
    excluded = OmegaConf.select(hydra_config, "job.config.override_dirname.exclude_keys") or []
    for override in overrides:
        key = override.key_or_group
        if override.is_sweep_override() and key in excluded and not (config_dir / key).is_dir():
            raise ConfigError(
                f"{override.input_line} is invalid: {key} is left out of job folder names "
                "(hydra.job.config.override_dirname.exclude_keys), so the jobs would share one "
                "folder; run one sweep per value"
            )


# Top-level keys and groups whose overrides leave the batch and the process count alone (their
# groups write only under their own key): jobs differing only in them share one batch check.
_BATCH_INDEPENDENT_KEYS = ("model", "optimizer", "scheduler", "logger", "seed", "name", "run_name")


def _check_submitted_batches(
    config_dir: Path, config_name: str, search_path: Sequence[str], overrides: Sequence[Override]
) -> None:
    """Each job of a sweep that a submitit launcher (``launcher=slurm``) submits must have an
    effective batch its process count (``hydra.launcher.nodes x tasks_per_node``) divides:
    checked here, at submission, rather than when the job starts, maybe hours later. The jobs
    are the basic sweeper's: ``hydra.sweeper.params`` (``paper=...`` sets them), then the
    command line's overrides."""
    searched = [f"hydra.searchpath=[{','.join(search_path)}]"] if search_path else []
    try:
        jobs = BasicSweeper.split_arguments(list(overrides), None)[0]
        with initialize_config_dir(str(config_dir), version_base="1.3"):
            first = compose(config_name, [*searched, *jobs[0]], return_hydra_config=True)
        params = first.hydra.sweeper.get("params") or {}
        if params:
            texts = [f"{k}={v}" for k, v in params.items()] + [o.input_line for o in overrides]
            overrides = OverridesParser.create().parse_overrides(texts)
            jobs = BasicSweeper.split_arguments(list(overrides), None)[0]
    except (HydraException, OmegaConfBaseException):
        return  # Hydra reports it; or a sweep the basic sweeper cannot list (an interval)
    distinct = {}
    for job in jobs:
        relevant = tuple(
            o
            for o in job
            if o.lstrip("+~").split("=")[0].split(".")[0] not in _BATCH_INDEPENDENT_KEYS
        )
        distinct.setdefault(relevant, job)
    swept_keys = {o.get_key_element() for o in overrides if o.is_sweep_override()}
    with initialize_config_dir(str(config_dir), version_base="1.3"):
        for relevant, job in distinct.items():
            try:
                cfg = compose(config_name, [*searched, *job], return_hydra_config=True)
            except (HydraException, OmegaConfBaseException):
                return  # Hydra reports it
            launcher = cfg.hydra.launcher
            if "nodes" not in launcher or "tasks_per_node" not in launcher or "trainer" not in cfg:
                return  # not a submitit launcher, or not a training config
            nodes, tasks = launcher.nodes, launcher.tasks_per_node
            try:
                resolve_update_freq(cfg, nodes * tasks)
            except ConfigError as error:
                swept = [o for o in relevant if o.split("=", 1)[0] in swept_keys]
                job_text = f" ({' '.join(swept)})" if swept else ""
                raise ConfigError(
                    f"{error}; the submitted job{job_text} has hydra.launcher.nodes x "
                    f"tasks_per_node = {nodes} x {tasks} processes"
                ) from None


def _parse_error(parser: OverridesParser, texts: Sequence[str], error: HydraException) -> str:
    """The override that does not parse, with Hydra's reason; for a plain value that holds
    Hydra's grammar (a sweep job's folder, ``experiment=x,seed=1``), its quoted form."""
    for text in texts:
        try:
            parser.parse_overrides([text])
        except HydraException as own:
            message = f"{text} is invalid: {str(own).splitlines()[0]}"
            key, equals, value = text.partition("=")
            if equals and value and value[0] not in "'\"[{":
                message += (
                    "; a value with Hydra's special characters (a sweep job's folder has = and ,) "
                    f"is quoted: {command_line_override(key, value)}"
                )
            return message
    return f"{' '.join(texts)} is invalid: {str(error).splitlines()[0]}"


def check_command_line(config_dir: Path, config_name: str, argv: Sequence[str]) -> None:
    """Check the overrides in ``argv`` against ``config_dir/config_name.yaml`` and its groups.

    Raises:
        ConfigError: for an override that does not parse, a group option that does not exist
            (with close matches) or a key that does not exist (with close matches).
    """
    flags, given_config_dirs, texts = _split_arguments(argv)
    if any(f not in (*MULTIRUN_FLAGS, *CONFIG_DIR_FLAGS, *PRINT_FLAGS) for f in flags):
        return  # --help, --info, --package, ...: Hydra's business
    parser = OverridesParser.create()
    try:
        overrides = parser.parse_overrides(texts)
    except HydraException as error:
        raise ConfigError(_parse_error(parser, texts, error)) from None
    search_path = _search_path(given_config_dirs, overrides)
    folders = [Path(e.removeprefix("file://")) for e in search_path if e.startswith("file://")]
    config_dirs = [config_dir, *folders]
    in_packages = len(folders) < len(search_path)  # (pkg://: groups and options not listed here)
    multirun = any(f in MULTIRUN_FLAGS for f in flags)
    printing = any(f in PRINT_FLAGS for f in flags)
    if multirun:
        _check_swept_keys_name_folders(config_dir, overrides)
    checked = [
        o
        for o in overrides
        if not o.is_force_add() and not o.key_or_group.startswith("hydra") and o.package is None
    ]
    group_choices: list[str] = []
    keys: list[Override] = []
    for override in checked:
        group = override.key_or_group
        if not any((d / group).is_dir() for d in config_dirs):
            keys.append(override)
            continue
        options = _group_options(config_dirs, group)
        if override.is_delete():  # ~group: Hydra drops it (a choice of it as well: a traceback)
            if any(o.key_or_group == group and not o.is_delete() for o in checked):
                raise ConfigError(f"~{group} is invalid: {group}= is given too; give one of them")
            if not all(_is_global_package(config_dirs, group, option) for option in options):
                # (its options fill cfg.<group>, which the code reads: a traceback)
                raise ConfigError(
                    f"~{group} is invalid: the run reads the {group} config; choose another "
                    f"with {group}=<option> (one of {', '.join(options)}) instead of deleting it"
                )
            continue
        if any(v is None or v == "null" for v in _values(override)):  # Hydra: a traceback
            raise ConfigError(
                f"{group}=null is invalid: a config group takes one of its options "
                f"({', '.join(options)}); to choose none, leave {group}= out, or delete it "
                f"with ~{group}"
            )
        values = list(_values(override))
        for value in values:
            if str(value) not in options and not in_packages:
                hint = close_matches(str(value), options)
                raise ConfigError(
                    f"{group}={value} is invalid: no {group}/{value}.yaml in "
                    f"{', '.join(map(str, config_dirs))}; "
                    f"expected one of {', '.join(options)}{'; ' + hint if hint else ''}"
                )
        for value in values if not printing else ():  # (--cfg launches nothing)
            _check_launcher_command(group, str(value), multirun)
        if values:
            group_choices.append(f"{'+' if override.is_add() else ''}{group}={values[0]}")
    if keys or group_choices:
        _check_keys(config_dirs, config_name, search_path, group_choices, keys, in_packages)
    if multirun and not printing:
        _check_submitted_batches(config_dir, config_name, search_path, overrides)


def _is_global_package(config_dirs: Sequence[Path], group: str, option: str) -> bool:
    """Whether ``group/option.yaml`` declares ``# @package _global_`` (``+group=option`` then
    adds it where it belongs)."""
    for folder in config_dirs:
        path = folder / group / f"{option}.yaml"
        if path.is_file():
            return "@package _global_" in path.read_text().split("\n", 1)[0]
    return False


OPTIONAL_ENTRIES = ("logger",)  # mappings whose entries the code reads only where present


def _check_deletable(cfg: DictConfig, key: str) -> None:
    """``~key`` may delete only a key of a free-form mapping (a builder's argument, a keyword of
    ``optimizer.kwargs``): the code reads every other key (it was a traceback: ``Key 'ema' is not
    in struct``)."""
    parent_key = key.rpartition(".")[0]
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    optional = parent_key in OPTIONAL_ENTRIES  # (logger=wandb ~logger.csv: W&B alone)
    if not (isinstance(parent, DictConfig) and parent_key and (_is_free_form(parent) or optional)):
        raise ConfigError(
            f"~{key} is invalid: the code reads {key}; give it another value instead of deleting "
            f"it ({key}=null where null turns it off; ~ deletes config groups, the entries of "
            f"{', '.join(OPTIONAL_ENTRIES)} and keys of free-form mappings such as "
            "optimizer.kwargs)"
        )


def _check_keys(
    config_dirs: Sequence[Path],
    config_name: str,
    search_path: Sequence[str],
    group_choices: Sequence[str],
    keys: Sequence[Override],
    in_packages: bool,
) -> None:
    """Check that the group options compose (a group that only other configs include, such as
    ``recipe``, cannot be chosen on its own) and that each override of ``keys`` names a key of
    the config (with the group options chosen) and gives a value of its kind."""
    try:
        with initialize_config_dir(str(config_dirs[0]), version_base="1.3"):
            searched = [f"hydra.searchpath=[{','.join(search_path)}]"] if search_path else []
            cfg = compose(config_name, overrides=[*searched, *group_choices])
    except HydraException as error:
        not_chosen = re.search(
            r"Could not override '([^']+)'. No match in the defaults", str(error)
        )
        if not_chosen is None:
            return  # a problem of the configs themselves: Hydra reports it in full
        group = not_chosen.group(1)
        given = [c for c in group_choices if c.split("=", 1)[0].lstrip("+") == group]
        if not given:
            return  # a config file's own override: Hydra names the file
        option = given[0].split("=", 1)[1]
        add = (
            f", or add it with +{group}={option}"
            if _is_global_package(config_dirs, group, option)
            else ""
        )
        raise ConfigError(
            f"{given[0]} is invalid: {group} is not in {config_name}.yaml's defaults list with "
            "these options, only included by other configs (as experiment=... includes a "
            f"recipe, and each model= option its model/base); choose one of those{add}"
        ) from None
    for override in keys:
        if in_packages and override.key_or_group.split(".")[0] not in cfg:
            continue  # maybe a group of a package's configs
        _check_key(cfg, override.key_or_group, override.is_add(), config_dirs)
        if override.is_delete():
            _check_deletable(cfg, override.key_or_group)
            continue
        if not override.is_add():
            for value in _values(override, parsed=True):
                _check_value_kind(cfg, override.key_or_group, value)


def exit_on_bad_command_line(config_dir: Path, config_name: str, argv: Sequence[str]) -> None:
    """:func:`check_command_line`, turning a :class:`ConfigError` into one logged line and exit
    status 2."""
    try:
        check_command_line(config_dir, config_name, argv)
    except ConfigError as error:
        logging.basicConfig(format="[%(name)s][%(levelname)s] - %(message)s")
        logging.getLogger(config_name).error("config error: %s", error)
        sys.exit(EXIT_BAD_INPUT)
