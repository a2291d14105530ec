"""Training: the epoch loop (:mod:`.loop`), the optimizer with DCLS position groups
(:mod:`.optim`), the learning-rate and DCLS schedules (:mod:`.schedules`), the weights' EMA
(:mod:`.ema`), the loss and its Mixup/CutMix (:mod:`.losses`), metric loggers (:mod:`.loggers`),
preemption signals (:mod:`.preemption`), when the loop writes its checkpoints
(:mod:`.checkpointer`), what a finished run writes (:mod:`.results`), and the run itself
(:mod:`.run`, ``train.py``'s task)."""

__all__ = [
    "checkpointer",
    "ema",
    "loggers",
    "loop",
    "losses",
    "optim",
    "preemption",
    "results",
    "run",
    "schedules",
]
