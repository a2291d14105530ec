"""The preemption handler: a flag only, then checkpoint, then submitit's requeue (or exit 75)."""

import os
import signal
import types

import pytest
import torch
from submitit.core.job_environment import SignalHandler
from submitit.core.utils import DelayedSubmission

from engine.training import preemption

CPU = torch.device("cpu")


class _Job:
    """Stands for hydra-submitit-launcher's launcher: callable, and checkpointable."""

    def __call__(self) -> None: ...

    def checkpoint(self) -> DelayedSubmission:
        return DelayedSubmission(self)


class _SlurmEnvironment:
    global_rank = 0

    def __init__(self) -> None:
        self.requeued: list[int] = []

    def _requeue(self, countdown: int) -> None:  # scontrol requeue <job id>
        self.requeued.append(countdown)


def test_submitit_requeues_only_after_our_checkpoint(tmp_path):
    delayed = DelayedSubmission(_Job())
    delayed.set_timeout(60, 3)
    environment = _SlurmEnvironment()
    paths = types.SimpleNamespace(submitted_pickle=tmp_path / "submitted.pkl")
    submitit_handler = SignalHandler(environment, paths, delayed).checkpoint_and_try_requeue
    original = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        with preemption.PreemptionHandler(["SIGUSR2"], 75):
            assert not preemption.signal_received()
            os.kill(os.getpid(), signal.SIGUSR2)
            assert preemption.signal_received()
            assert environment.requeued == []  # nothing happens until the checkpoint is written
            preempted = preemption.preempted(step=12)
        assert signal.getsignal(signal.SIGUSR2) is submitit_handler  # handlers restored
        with pytest.raises(SystemExit) as exited:
            preempted.exit()
        assert environment.requeued == [3] and paths.submitted_pickle.is_file()
        assert exited.value.code == -1  # submitit's own exit after its requeue
    finally:
        signal.signal(signal.SIGUSR2, original)


def test_without_a_previous_handler_exit_code_is_the_configured_one():
    with preemption.PreemptionHandler(["SIGUSR1"], 75):
        os.kill(os.getpid(), signal.SIGUSR1)
        assert preemption.signal_received()
        preempted = preemption.preempted(step=3)
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    assert not preemption.signal_received()  # no handler installed any more
    with pytest.raises(SystemExit) as exited:
        preempted.exit()
    assert exited.value.code == 75
