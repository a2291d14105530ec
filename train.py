"""Train a classifier: ``python train.py [experiment=NAME] [group=option] [key=value ...]``.

With no arguments it trains the embedded default (ConvNeXt-atto-dcls on scikit-learn's digits,
a few minutes on a laptop CPU). ``torchrun --nproc_per_node=N train.py ...`` trains with DDP;
``python train.py -m key=a,b`` sweeps. See ``configs/train.yaml`` for every knob.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from engine.config import exit_on_bad_command_line, run_entry_point
from engine.distributed import DistributedFaultError, describe_fault, is_distributed
from engine.training import preemption
from engine.training.run import train

_logger = logging.getLogger("train")

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float:
    """Entry point; returns the reported validation top-1 for Hydra sweepers.

    Exit status: 2 with one log line on bad input (config value, file, folder);
    ``trainer.preemption.exit_code`` (75) after a preemption signal and its checkpoint; 130
    after Ctrl-C (its checkpoint written) and at once on a second Ctrl-C; 1 on other errors. A
    failed collective names the ranks that stopped answering (``DistributedFaultError``).
    """
    handling = cfg.trainer.preemption
    signals = handling.signals if handling.enabled else []

    def run() -> float:
        with preemption.PreemptionHandler(signals, handling.exit_code):
            try:
                return train(cfg, HydraConfig.get().runtime.output_dir)["top1"]
            except RuntimeError as error:
                if isinstance(error, DistributedFaultError) or not is_distributed():
                    raise
                timeout = cfg.trainer.dist_timeout_s
                raise DistributedFaultError(describe_fault(error, timeout)) from error

    try:
        return run_entry_point(run, _logger)
    except preemption.Preempted as preempted:
        preempted.exit()


if __name__ == "__main__":
    exit_on_bad_command_line(CONFIG_DIR, "train", sys.argv[1:])
    main()
