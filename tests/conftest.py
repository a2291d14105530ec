"""Shared fixtures. The device comes from TORCH_DEVICE (default CPU), as in timm's tests; training
configs are composed from the real configs/ and cut down the way lightning-hydra-template does."""

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device(os.environ.get("TORCH_DEVICE", "cpu"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def compose_train(tmp_path: Path, overrides: list[str] = ()) -> DictConfig:
    """``configs/train.yaml`` with ``overrides``, on CPU, writing under ``tmp_path``."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.trainer.device = "cpu"
        cfg.data.num_workers = 0
    return cfg


@pytest.fixture
def fast_train_cfg(tmp_path: Path) -> DictConfig:
    """Two short epochs of test_convnext_dcls on fake data, no logger."""
    return compose_train(
        tmp_path,
        [
            "data=fake",
            "model=convnext_atto_dcls",
            "model.model_name=test_convnext_dcls",
            "trainer.epochs=2",
            "trainer.log_every=1",
            "logger=none",
            "run_name=test",
            "scheduler.warmup_epochs=1",
            "optimizer.base_batch_size=8",
            "trainer.ema.enabled=true",
        ],
    )
