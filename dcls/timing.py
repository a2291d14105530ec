"""Interleaved wall-clock timing (A, B, A, B, ...), shared by ``conv_algorithm="auto"``'s trial,
the benchmark scripts and ``eval.py``'s throughput measurement.

Timings on shared machines drift; interleaving the candidates round by round exposes them to the
same drift, and callers compare medians of the rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch

__all__ = ["synchronize", "time_interleaved"]


def synchronize(device: torch.device | None) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for elsewhere."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    runs: Mapping[str, Callable[[], None]],
    rounds: int,
    device: torch.device | None = None,
    calls: int = 1,
) -> dict[str, list[float]]:
    """Seconds taken by ``calls`` consecutive calls of each run, in ``rounds`` interleaved rounds.

    The device is synchronised before and after each timing, so queued CUDA work is counted where
    it was launched. No warm-up: callers run (or time) their warm-up first.

    Returns:
        ``{name: [seconds of round 0, round 1, ...]}``.
    """
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(calls):
                run()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return seconds
