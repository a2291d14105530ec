"""Real processes under real faults: SIGKILL at random moments (mid-epoch, mid-checkpoint-write)
and preemption signals, each followed by ``resume=auto``; the final weights must equal an
uninterrupted run's bitwise (deterministic mode)."""

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).with_name("fault_runner.py")
UPDATES_PER_EPOCH = 8  # fake data: 64 images, batch 8
TINY = [
    "data=fake",
    "model=convnext_atto_dcls",
    "model.model_name=test_convnext_dcls",
    "trainer.epochs=2",
    "trainer.log_every=1",
    "trainer.device=cpu",
    "trainer.deterministic=true",
    "trainer.ema.enabled=true",
    "scheduler.warmup_epochs=1",
    "optimizer.base_batch_size=8",
    "logger=none",
    "run_name=run",
]
# Drawn from the global torch RNG at every step: a resume must continue its stream exactly.
# (Not in TINY: tests/engine/test_distributed_faults.py compares 2 ranks with 1 process, which
# draw different masks.)
DROP_PATH = ["model.drop_path_rate=0.2"]
DEADLINE_S = 120


def _env(**faults: float) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return env | {f"FAULT_{k.upper()}": str(v) for k, v in faults.items()}


def _start(log_dir: Path, extra: list[str], **faults: float) -> subprocess.Popen:
    command = [sys.executable, str(RUNNER), *TINY, *DROP_PATH, f"paths.log_dir={log_dir}", *extra]
    return subprocess.Popen(
        command, env=_env(**faults), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _wait_for(condition, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the run ended before {what}:\n{process.stdout.read()[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _logged_step(run_dir: Path, offset: int) -> int:
    """The last optimizer step that train.log reports after byte ``offset`` (0 if none)."""
    log = run_dir / "train.log"
    text = log.read_text()[offset:] if log.is_file() else ""
    steps = re.findall(r"epoch \d+/\d+ step (\d+)  loss", text)
    return int(steps[-1]) if steps else 0


def _log_size(run_dir: Path) -> int:
    log = run_dir / "train.log"
    return log.stat().st_size if log.is_file() else 0


def _checkpoint(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def _assert_bitwise_equal(expected: dict, actual: dict) -> None:
    for entry in ("model", "ema"):
        assert expected[entry].keys() == actual[entry].keys()
        different = [
            k for k in expected[entry] if not torch.equal(expected[entry][k], actual[entry][k])
        ]
        assert not different, f"{entry}: {different[:5]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """An uninterrupted ``python train.py`` run's final checkpoint."""
    log_dir = tmp_path_factory.mktemp("reference")
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *TINY, *DROP_PATH, f"paths.log_dir={log_dir}"],
        env=_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return _checkpoint(log_dir / "train" / "run")


@pytest.mark.slow
def test_sigkill_mid_epoch_and_mid_checkpoint_write_then_resume_bitwise(tmp_path, reference):
    rng = random.Random(7)
    run_dir = tmp_path / "train" / "run"
    every = ["trainer.checkpoint_every=1"]

    # 1. SIGKILL mid-epoch, at a random update of the first epoch
    kill_at = rng.randrange(2, UPDATES_PER_EPOCH - 2)
    process = _start(tmp_path, every, step_delay_s=0.1)
    _wait_for(lambda: _logged_step(run_dir, 0) >= kill_at, process, f"step {kill_at}")
    process.kill()
    process.wait()
    first = _checkpoint(run_dir)
    assert first["epoch"] == 0 and 0 < first["batch_in_epoch"] < UPDATES_PER_EPOCH

    # 2. SIGKILL while a checkpoint is being written, at a random update of the second epoch
    kill_at = rng.randrange(UPDATES_PER_EPOCH + 1, 2 * UPDATES_PER_EPOCH - 1)
    offset = _log_size(run_dir)
    process = _start(tmp_path, every, fsync_delay_s=0.3)
    tmp_file = run_dir / "checkpoints" / ".last.pt.tmp"
    _wait_for(
        lambda: _logged_step(run_dir, offset) >= kill_at and tmp_file.exists(),
        process,
        f"a checkpoint write after step {kill_at}",
    )
    process.kill()
    process.wait()
    assert tmp_file.exists()  # it died mid-write ...
    second = _checkpoint(run_dir)  # ... and the previous checkpoint is intact
    assert second["step"] >= kill_at - 1 and second["epoch"] == 1

    # 3. resume=auto to the end
    process = _start(tmp_path, every)
    assert process.wait(timeout=DEADLINE_S) == 0, process.stdout.read()[-3000:]
    assert not tmp_file.exists()
    _assert_bitwise_equal(reference, _checkpoint(run_dir))


@pytest.mark.slow
def test_preemption_signals_checkpoint_the_step_and_exit_for_requeue(tmp_path, reference):
    run_dir = tmp_path / "train" / "run"
    never = ["trainer.checkpoint_every=0"]  # only the epoch ends and the signals checkpoint
    signals = (
        (signal.SIGTERM, 3, 75),  # EX_TEMPFAIL: requeue me
        (signal.SIGINT, 5, 130),  # Ctrl-C: checkpoint, then the shell's status for Ctrl-C
        (signal.SIGUSR1, UPDATES_PER_EPOCH + 3, 75),
    )
    for signum, signal_at, status in signals:
        offset = _log_size(run_dir)
        process = _start(tmp_path, never, step_delay_s=0.1)
        _wait_for(lambda: _logged_step(run_dir, offset) >= signal_at, process, f"step {signal_at}")  # noqa: B023
        seen = _logged_step(run_dir, offset)
        process.send_signal(signum)
        assert process.wait(timeout=DEADLINE_S) == status
        output = process.stdout.read().decode()
        saved = _checkpoint(run_dir)
        # the checkpoint holds the step that was running when the signal came, mid-epoch
        assert saved["step"] in (seen, seen + 1) and saved["batch_in_epoch"] % UPDATES_PER_EPOCH
        assert f"{signum.name} received: checkpoint at step {saved['step']} written" in output
        assert "Traceback" not in output
    process = _start(tmp_path, never)
    assert process.wait(timeout=DEADLINE_S) == 0, process.stdout.read()[-3000:]
    _assert_bitwise_equal(reference, _checkpoint(run_dir))


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_in_one_line(tmp_path):
    run_dir = tmp_path / "train" / "run"
    process = _start(tmp_path, ["trainer.checkpoint_every=0"], step_delay_s=1.0)
    _wait_for(lambda: _logged_step(run_dir, 0) >= 2, process, "step 2")
    process.send_signal(signal.SIGINT)
    time.sleep(0.1)  # mid-step: the first Ctrl-C waits for the step's end, the second does not
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=DEADLINE_S) == 130
    output = process.stdout.read().decode()
    assert "interrupted (Ctrl-C)" in output and "Traceback" not in output
    assert "checkpoint at step" not in output
