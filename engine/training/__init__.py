"""Training: the epoch loop (:mod:`.loop`), the optimizer with DCLS position groups
(:mod:`.optim`), the learning-rate and DCLS schedules (:mod:`.schedules`), metric loggers
(:mod:`.loggers`) and preemption signals (:mod:`.preemption`)."""

__all__ = ["loggers", "loop", "optim", "preemption", "schedules"]
