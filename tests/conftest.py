"""Shared fixtures. The device comes from TORCH_DEVICE (default CPU), as in timm's tests; training
configs are composed from the real configs/ and cut down the way lightning-hydra-template does."""

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n N``), the cores are shared out among the N workers: each worker
    and the processes its tests start get their share of threads, not all (oversubscribed
    intra-op threads slow PyTorch many times over)."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = max(1, len(os.sched_getaffinity(0)) // int(workers))
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


# Workers of ``-n auto``: one per core, at most this many (each holds a few GiB).
MAX_XDIST_WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: the cores this process may run on (not the machine's), capped."""
    return min(len(os.sched_getaffinity(0)), MAX_XDIST_WORKERS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist, the slow tests first (in their order), so that they start early; a
    plain run keeps the files' order. (xdist's default ``load`` scheduling hands the first
    chunk, i.e. these, to the first worker; ``--dist worksteal`` would spread them.)"""
    if "PYTEST_XDIST_WORKER" in os.environ:  # (each worker collects; the scheduler splits)
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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
