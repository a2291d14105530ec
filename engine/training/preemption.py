"""Preemption and Ctrl-C: turn SIGTERM/SIGUSR1/SIGUSR2/SIGINT into "checkpoint after this step,
then exit".

Ctrl-C (SIGINT) is handled like a preemption signal: the run checkpoints at the end of the
current update and exits with status 130 (what a shell reports for Ctrl-C); a second Ctrl-C
stops at once (``KeyboardInterrupt``, one log line, no checkpoint).

Slurm warns a job before its time limit (``--signal=USR1@120`` for a plain ``sbatch``; submitit,
which hydra-submitit-launcher uses, asks for ``USR2``) and sends SIGTERM on preemption.
``train.py``'s entry point installs a :class:`PreemptionHandler` (``trainer.preemption``) that only
records the signal. The loop reads :func:`signal_received` at each optimizer update and
combines it over the ranks in the update's one all-reduce (``TrainState.stop_requested``);
``train`` then saves a checkpoint and raises :class:`Preempted`; the entry point then calls
:meth:`Preempted.exit`, which

1. calls the handler that was installed before ours, if it is a Python function: under submitit
   that is ``SignalHandler.checkpoint_and_try_requeue`` (USR2), which runs ``scontrol requeue``
   and exits; the requeued job runs the same Hydra job again, i.e. the same ``run_name``, folder
   and W&B run id, and ``resume=auto`` continues from the checkpoint just written;
2. otherwise exits with ``exit_code`` (75, ``EX_TEMPFAIL``: "temporary failure, try again"), the
   status a wrapper script, torchrun's restarts or Slurm's ``RequeueExit`` can requeue on.

Chaining to submitit's own handler (instead of exiting with a code and hoping something requeues)
is what makes the requeue correct under hydra-submitit-launcher: submitit requeues from its signal
handler only; an exit status alone does not requeue a Slurm job.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from engine.config.checks import check_signal_names
from engine.config.entry import EXIT_INTERRUPTED

__all__ = ["Preempted", "PreemptionHandler", "preempted", "signal_received"]

_logger = logging.getLogger(__name__)

Handler = Callable[[int, Any], Any] | int | None
_active: PreemptionHandler | None = None  # the installed handler (one per process)


class Preempted(Exception):  # noqa: N818  (an event, not an error)
    """Raised by the loop once the checkpoint after a preemption signal is on disk."""

    def __init__(self, signum: int, step: int, previous: Handler, exit_code: int) -> None:
        super().__init__(f"preempted by {signal.Signals(signum).name} at step {step}")
        self.signum, self.step, self.previous, self.exit_code = signum, step, previous, exit_code

    def exit(self) -> NoReturn:
        """Hand over to the previous handler (submitit requeues), else exit with the code; after
        Ctrl-C, exit with status 130."""
        if self.signum == signal.SIGINT:
            _logger.warning(
                "interrupted: the checkpoint of step %d is written; run the same command (same "
                "run_name) to continue",
                self.step,
            )
            sys.exit(EXIT_INTERRUPTED)
        if callable(self.previous):
            self.previous(self.signum, None)
        sys.exit(self.exit_code)


class PreemptionHandler:
    """Records the configured signals; the loop polls :func:`signal_received` between steps.

    Args:
        signals: signal names, e.g. ``["SIGTERM", "SIGUSR1", "SIGUSR2"]``.
        exit_code: status of the process after the checkpoint (when no previous handler exits).

    Use as a context manager: the previous handlers come back on exit.
    """

    def __init__(self, signals: Sequence[str], exit_code: int) -> None:
        check_signal_names(signals)
        self.signums = [signal.Signals[name].value for name in signals]
        self.exit_code = exit_code
        self.received: int | None = None
        self.previous: dict[int, Handler] = {}

    def _record(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.received = signum  # only a flag: logging or I/O are unsafe in a signal handler

    def __enter__(self) -> PreemptionHandler:
        global _active
        if threading.current_thread() is not threading.main_thread():
            _logger.warning("not the main thread: preemption signals are not handled")
            return self
        for signum in self.signums:
            self.previous[signum] = signal.signal(signum, self._record)
        _active = self
        return self

    def __exit__(self, *exc: object) -> None:
        global _active
        for signum, previous in self.previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self.previous, _active = {}, None

    def preempted(self, step: int) -> Preempted:
        """The exception to raise once the checkpoint of ``step`` is written."""
        signum = self.received if self.received is not None else signal.SIGTERM
        name = signal.Signals(signum).name
        if self.received is None:
            _logger.warning("another rank was signalled: stopping at step %d", step)
        else:
            _logger.warning("%s received: checkpoint at step %d written, exiting", name, step)
        return Preempted(signum, step, self.previous.get(signum), self.exit_code)


def signal_received() -> bool:
    """Whether the installed handler (if any) received one of its signals in this process (no
    device work: the loop combines it over the ranks with its own all-reduce)."""
    return _active is not None and _active.received is not None


def preempted(step: int) -> Preempted:
    """The installed handler's :class:`Preempted` for ``step``.

    Raises:
        RuntimeError: if no handler is installed.
    """
    if _active is None:
        raise RuntimeError("no PreemptionHandler is installed")
    return _active.preempted(step)
