"""When the training loop writes its checkpoint: every ``trainer.checkpoint_every`` updates,
after every epoch, and before a preemption exit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from engine import checkpoint as ckpt
from engine.distributed import all_gather_objects, barrier
from engine.training import preemption
from engine.training.loop import TrainState, epoch_totals

__all__ = ["Checkpointer"]


class Checkpointer:
    """Writes ``state`` and ``model`` to ``directory/last.pt`` (the previous one kept).

    Args:
        every: updates between checkpoints within an epoch (0: only after each epoch).
        extra: more entries of every checkpoint (the training folder's class names).
        is_main: whether this process writes the file (rank 0); every rank takes part in
            :meth:`save`, which gathers each rank's random-number states.
    """

    def __init__(
        self,
        state: TrainState,
        model: nn.Module,
        cfg: Any,
        directory: Path,
        every: int,
        extra: dict[str, Any],
        is_main: bool,
    ) -> None:
        self.state, self.model, self.cfg = state, model, cfg
        self.directory, self.every, self.extra, self.is_main = directory, every, extra, is_main

    def save(self) -> None:
        """Write the checkpoint; on every rank at once (collectives: the RNG states, the
        unfinished epoch's metric sums); no rank returns before the file is on disk."""
        rng = all_gather_objects(ckpt.capture_rng())
        totals = epoch_totals(self.state)
        if self.is_main:
            written = ckpt.training_state(self.state, self.model, self.cfg, rng, totals)
            ckpt.save_checkpoint(written | self.extra, self.directory, keep_previous=True)
        barrier()  # no rank leaves (a preemption exit) before the checkpoint is on disk

    def on_update(self, state: TrainState, saved: bool = False) -> None:
        """After each optimizer update (the loop's hook): save every ``every`` updates, and
        on a preemption signal save (unless ``saved`` just now) and raise :class:`Preempted`."""
        if self.every and state.step % self.every == 0 and not saved:
            self.save()
            saved = True
        if state.should_stop():  # a signal on some rank: checkpoint this step, then exit
            if not saved:
                self.save()
            raise preemption.preempted(state.step)
