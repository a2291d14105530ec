"""Evaluate a checkpoint: ``python eval.py checkpoint=PATH [sets=[...]] [key=value ...]``.

Sets: ``in1k`` (top-1/top-5), ``in_v2``, ``in_sketch``, ``in_a`` and ``in_r`` (200-class
logit masks), ``in_c`` (15 corruptions x 5 severities -> CE and mCE, plus the 4 extra ones),
``corrupt`` (any val folder corrupted on the fly), ``val`` (the checkpoint's own validation
split), ``throughput`` (images/s against the baseline in the same run). ``torchrun
--nproc_per_node=N eval.py ...`` shards every set. See ``configs/eval.yaml`` for every knob.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from engine.config import exit_on_bad_command_line, run_entry_point
from engine.evaluation.run import evaluate_checkpoint

_logger = logging.getLogger("eval")

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Entry point; exit status 2 with one log line on bad input (config value, file, folder)."""
    run_entry_point(lambda: evaluate_checkpoint(cfg, HydraConfig.get().runtime.output_dir), _logger)


if __name__ == "__main__":
    exit_on_bad_command_line(CONFIG_DIR, "eval", sys.argv[1:])
    main()
