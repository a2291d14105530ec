"""Pictures: what a DCLS model learned as plain arrays (:mod:`.positions`, no matplotlib),
matplotlib figures of them (:mod:`.plots`, the ``viz`` extra), and the per-epoch snapshots and
W&B media of a training run (:mod:`.media`)."""

__all__ = ["media", "plots", "positions"]
