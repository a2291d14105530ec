"""Two CPU processes (torchrun, gloo) against one process over the same global batch."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from engine.data.samplers import ResumableSampler

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def _run(cfg, out: Path, nproc: int) -> None:
    out.mkdir(parents=True)
    config_path = out / "config.yaml"
    OmegaConf.save(cfg, config_path, resolve=True)
    if nproc == 1:
        command = [sys.executable, str(WORKER), str(config_path), str(out)]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            str(WORKER),
            str(config_path),
            str(out),
        ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.slow
def test_two_ranks_match_one_process_over_the_same_global_batch(fast_train_cfg, tmp_path):
    fast_train_cfg.trainer.ema.enabled = False
    single = OmegaConf.merge(fast_train_cfg, {"data": {"batch_size": 16}})
    ddp = OmegaConf.merge(fast_train_cfg, {"data": {"batch_size": 8}})
    _run(single, tmp_path / "single", 1)
    _run(ddp, tmp_path / "ddp", 2)
    rank0 = torch.load(tmp_path / "ddp" / "rank0.pt")
    rank1 = torch.load(tmp_path / "ddp" / "rank1.pt")
    reference = torch.load(tmp_path / "single" / "rank0.pt")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # DDP keeps the ranks identical
    for key, value in reference.items():
        torch.testing.assert_close(rank0[key], value, rtol=1e-4, atol=1e-5)
    single_results = json.loads((tmp_path / "single" / "run" / "results.json").read_text())
    ddp_results = json.loads((tmp_path / "ddp" / "run" / "results.json").read_text())
    assert abs(single_results["val_loss"] - ddp_results["val_loss"]) < 1e-4
    # the training loss is averaged over both ranks' micro-batches
    assert abs(single_results["train_loss"] - ddp_results["train_loss"]) < 1e-4


def test_evaluation_shards_cover_every_sample_once():
    for length in (31, 32, 33):
        shards = [list(ResumableSampler(length, r, 4, shuffle=False, pad=False)) for r in range(4)]
        assert sorted(i for shard in shards for i in shard) == list(range(length))


@pytest.mark.parametrize("length", [30, 31, 32])
def test_training_shards_cover_the_data_reshuffle_and_resume_mid_epoch(length):
    shards = [ResumableSampler(length, r, 4, seed=3) for r in range(4)]
    for sampler in shards:
        sampler.set_epoch(2)
    epoch_2 = [list(s) for s in shards]
    per_rank = -(-length // 4)
    assert all(len(shard) == len(s) == per_rank for shard, s in zip(epoch_2, shards, strict=True))
    drawn = [i for shard in epoch_2 for i in shard]
    assert set(drawn) == set(range(length))  # every sample, on one rank or another
    assert max(Counter(drawn).values()) <= 2  # the padding repeats a few samples, once each
    for sampler in shards:
        sampler.set_epoch(3)
    assert [list(s) for s in shards] != epoch_2  # a new order each epoch
    shards[1].set_epoch(2, start=5)
    assert list(shards[1]) == epoch_2[1][5:]


def test_slurm_environment_is_exported_like_torchrun(monkeypatch):
    from engine.distributed import _export_slurm_environment

    # A private copy of the environment: what the export writes disappears after the test.
    monkeypatch.setattr(
        os,
        "environ",
        {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")},
    )
    slurm = {
        "SLURM_JOB_ID": "42",
        "SLURM_NTASKS": "16",
        "SLURM_PROCID": "9",
        "SLURM_LOCALID": "1",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NODEID": "1",
        "SUBMITIT_EXECUTOR": "slurm",
    }
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    _export_slurm_environment()
    assert (os.environ["WORLD_SIZE"], os.environ["RANK"], os.environ["LOCAL_RANK"]) == (
        "16",
        "9",
        "1",
    )
    assert os.environ["MASTER_ADDR"] == "gpu07"


def test_ranks_but_the_first_log_warnings_only(monkeypatch):
    """eval.py and train.py under torchrun: one copy of every info line (rank 0's)."""
    import logging

    from engine.distributed import init_distributed

    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.INFO)
    try:
        for rank, level in (("0", logging.INFO), ("1", logging.WARNING)):
            monkeypatch.setenv("RANK", rank)
            monkeypatch.setenv("WORLD_SIZE", "1")  # no process group to join
            assert init_distributed("cpu").rank == int(rank)
            assert root.level == level
    finally:
        root.setLevel(before)


def test_a_bad_device_is_named_without_a_config_key():
    # (eval.py's key is `device`, train.py's `trainer.device`: the entry points name them)
    from engine.distributed import init_distributed

    with pytest.raises(ValueError, match=r"^device must be one of 'auto', 'cpu', 'cuda', got 'tp"):
        init_distributed("tpu")
