"""Training: the epoch loop (:mod:`.loop`), the optimizer with DCLS position groups
(:mod:`.optim`), the learning-rate and DCLS schedules (:mod:`.schedules`), the weights' EMA
(:mod:`.ema`), the loss and its Mixup/CutMix (:mod:`.losses`), metric loggers (:mod:`.loggers`),
preemption signals (:mod:`.preemption`), when the loop writes its checkpoints
(:mod:`.checkpointer`) and what a finished run writes (:mod:`.results`)."""

__all__ = [
    "checkpointer",
    "ema",
    "loggers",
    "loop",
    "losses",
    "optim",
    "preemption",
    "results",
    "schedules",
]
