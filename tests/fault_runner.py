"""Runs ``train.py`` (its Hydra entry point, same arguments) with faults injected by environment
variables, for the fault tests that kill, signal or break real processes:

- ``FAULT_STEP_DELAY_S``: sleep after every optimizer update (kills land at a chosen step);
- ``FAULT_FSYNC_DELAY_S``: sleep in ``os.fsync`` of a regular file, i.e. while a checkpoint's
  temp file is on disk but not yet renamed (a kill then lands mid-write);
- ``FAULT_EXIT_AFTER_STEP`` with ``FAULT_EXIT_RANK``: that rank's process dies (``os._exit(1)``)
  after that update, without any cleanup (``FAULT_EXIT_RANK=all``: every rank);
- ``FAULT_HANG_AFTER_STEP`` with ``FAULT_EXIT_RANK``: that rank sleeps forever instead.
"""

import os
import runpy
import stat
import sys
import time
from pathlib import Path

import engine.training.loop

TRAIN = Path(__file__).resolve().parents[1] / "train.py"


def _inject() -> None:
    step_delay = float(os.environ.get("FAULT_STEP_DELAY_S", "0"))
    fsync_delay = float(os.environ.get("FAULT_FSYNC_DELAY_S", "0"))
    target = os.environ.get("FAULT_EXIT_RANK", "0")
    rank_hit = target in ("all", os.environ.get("RANK", "0"))
    exit_after = int(os.environ.get("FAULT_EXIT_AFTER_STEP", "0")) if rank_hit else 0
    hang_after = int(os.environ.get("FAULT_HANG_AFTER_STEP", "0")) if rank_hit else 0
    update = engine.training.loop._optimizer_update

    def faulty_update(state, *args, **kwargs):
        applied = update(state, *args, **kwargs)
        if exit_after and state.step >= exit_after:
            os._exit(1)
        while hang_after and state.step >= hang_after:
            time.sleep(1)
        time.sleep(step_delay)
        return applied

    engine.training.loop._optimizer_update = faulty_update
    if fsync_delay:
        fsync = os.fsync

        def slow_fsync(fd: int) -> None:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                time.sleep(fsync_delay)
            fsync(fd)

        os.fsync = slow_fsync


if __name__ == "__main__":
    _inject()
    sys.argv = [str(TRAIN), *sys.argv[1:]]
    runpy.run_path(str(TRAIN), run_name="__main__")
