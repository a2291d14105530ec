"""Training machinery: data, optimizer, loop, checkpoints, distributed setup and loggers."""

__all__ = ["checkpoint", "data", "distributed", "loggers", "loop", "optim"]
