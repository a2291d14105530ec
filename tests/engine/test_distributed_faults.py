"""Distributed faults with two gloo ranks: a dead or hung rank ends the run within a bounded
time, naming that rank; a run checkpointed by two ranks resumes in one process."""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.checkpoint import load_checkpoint
from tests.test_faults import RUNNER, TINY

ROOT = Path(__file__).resolve().parents[2]
DIST_TIMEOUT_S = 5
BOUND_S = 60  # far above the timeout plus the roll call, far below a hang


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ranks(log_dir: Path, extra: list[str], world: int, **faults: str) -> list[subprocess.Popen]:
    port = _free_port()
    processes = []
    for rank in range(world):
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        } | {f"FAULT_{k.upper()}": v for k, v in faults.items()}
        command = [sys.executable, str(RUNNER), *TINY, f"paths.log_dir={log_dir}", *extra]
        processes.append(
            subprocess.Popen(
                command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        )
    return processes


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["exit_after_step", "hang_after_step"])
def test_a_dead_or_hung_rank_ends_the_other_within_bounds_naming_it(tmp_path, fault):
    rank0, rank1 = _ranks(
        tmp_path,
        [f"trainer.dist_timeout_s={DIST_TIMEOUT_S}", "trainer.ema.enabled=false"],
        2,
        exit_rank="1",
        **{fault: "2"},
    )
    try:
        start = time.monotonic()
        code = rank0.wait(timeout=BOUND_S)
        elapsed = time.monotonic() - start
        output = rank0.stdout.read().decode()
    finally:
        for process in (rank0, rank1):
            process.kill()
            process.wait()
    assert code == 1
    assert elapsed < BOUND_S
    message = (
        "rank 0 of 2: a collective failed; rank(s) 1 died or hung "
        f"(trainer.dist_timeout_s={DIST_TIMEOUT_S}"
    )
    assert message in output, output[-3000:]


@pytest.mark.slow
def test_checkpoint_of_two_ranks_resumes_in_one_process_with_doubled_update_freq(tmp_path):
    """2 ranks x batch 8 x update_freq 1 = 1 process x batch 8 x update_freq 2 = 16."""
    two = ["trainer.checkpoint_every=1", "trainer.ema.enabled=false"]
    ranks = _ranks(tmp_path / "run", two, 2, exit_rank="all", exit_after_step="3")
    assert [p.wait(timeout=BOUND_S) for p in ranks] == [1, 1]  # both died after update 3
    checkpoint = load_checkpoint(tmp_path / "run" / "train" / "run" / "checkpoints" / "last.pt")
    assert (checkpoint["world_size"], checkpoint["step"], checkpoint["batch_in_epoch"]) == (2, 2, 2)
    rank0, rank1 = checkpoint["rng"]  # each rank's own streams (seed + rank), for its resume
    assert not torch.equal(rank0["torch"], rank1["torch"])
    assert not torch.equal(rank0["numpy"]["keys"], rank1["numpy"]["keys"])

    one = ["trainer.ema.enabled=false", "trainer.update_freq=2"]
    for log_dir in (tmp_path / "run", tmp_path / "reference"):  # resume; a one-process reference
        (process,) = _ranks(log_dir, one, 1)
        output = process.stdout.read().decode(errors="replace")
        assert process.wait(timeout=BOUND_S) == 0, output[-3000:]
        if log_dir.name == "run":  # the resume says where it continues, and in which layout
            assert re.search(
                r"resumed from .* after epoch 0 and update 2; epoch 1 continues after micro-batch "
                r"4 of 8 \(processes x update_freq: 1 x 2; the checkpoint's processes: 2\)",
                output,
            ), output[-3000:]
    resumed = load_checkpoint(tmp_path / "run" / "train" / "run" / "checkpoints" / "last.pt")
    reference = load_checkpoint(
        tmp_path / "reference" / "train" / "run" / "checkpoints" / "last.pt"
    )
    assert resumed["step"] == reference["step"] == 8  # 2 epochs x 64 images / 16
    for key, value in reference["model"].items():  # DDP's average vs accumulation: rounding only
        torch.testing.assert_close(resumed["model"][key], value, rtol=1e-4, atol=1e-5)
