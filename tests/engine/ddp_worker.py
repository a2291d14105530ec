"""Run by test_distributed.py under ``torchrun``: a short training, then each rank saves its
final weights to ``<out>/rank<r>.pt`` so that the test can compare the ranks."""

import os
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from engine.config import instantiate_model
from engine.training import run as train_run


def main(config_path: str, out_dir: str) -> None:
    cfg = OmegaConf.load(config_path)
    built = []

    def instantiate_and_keep(config):
        built.append(instantiate_model(config))
        return built[-1]

    train_run.instantiate_model = instantiate_and_keep  # the model object the ranks train
    train_run.train(cfg, run_dir=Path(out_dir) / "run")
    torch.save(built[0].state_dict(), Path(out_dir) / f"rank{os.environ.get('RANK', '0')}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
