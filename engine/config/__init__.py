"""Configs: the checks of ``train.yaml`` (:mod:`.training`) and ``eval.yaml`` (:mod:`.evaluation`),
the command line checked before Hydra runs (:mod:`.command_line`), the entry points' handling of
bad input after it (:mod:`.entry`), and the one-line errors all entry points report with exit
status 2 (:mod:`.checks`).

Importing this package registers the resolvers the configs use: ``${cwd:}``, the project root (the
folder a command runs from; unlike ``${hydra:runtime.cwd}`` it also resolves where Hydra has not
set its runtime config yet, such as a multirun's sweep folder), and ``${job_folder:name,num}``,
a sweep job's folder (``configs/hydra/default.yaml``).
"""

import os

from omegaconf import OmegaConf

from engine.config.checks import ConfigError, InputError, resolve_device
from engine.config.command_line import check_command_line, exit_on_bad_command_line
from engine.config.entry import (
    check_input_size,
    cli_number,
    command_line_override,
    instantiate_model,
    job_folder,
    job_overrides,
    model_label,
    multirun_overrides,
    run_entry_point,
)
from engine.config.evaluation import validate_eval_config
from engine.config.training import resolve_update_freq, validate_train_config

if not OmegaConf.has_resolver("cwd"):
    OmegaConf.register_new_resolver("cwd", os.getcwd)
if not OmegaConf.has_resolver("job_folder"):
    OmegaConf.register_new_resolver("job_folder", job_folder)

__all__ = [
    "ConfigError",
    "InputError",
    "check_command_line",
    "check_input_size",
    "cli_number",
    "command_line_override",
    "exit_on_bad_command_line",
    "instantiate_model",
    "job_folder",
    "job_overrides",
    "model_label",
    "multirun_overrides",
    "resolve_device",
    "resolve_update_freq",
    "run_entry_point",
    "validate_eval_config",
    "validate_train_config",
]
