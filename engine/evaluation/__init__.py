"""Evaluation: the accuracy loop shared with training (:mod:`.accuracy`), ImageNet-C
(:mod:`.corruptions`), parameters, MACs and throughput (:mod:`.throughput`), the sets ``eval.py``
runs (:mod:`.sets`), result files (:mod:`.results`), the paper's tables from them
(:mod:`.tables`) with the paper's own numbers (:mod:`.paper`), a sweep's summary
(:mod:`.sweeps`), and one evaluation itself (:mod:`.run`, ``eval.py``'s task)."""

__all__ = [
    "accuracy",
    "corruptions",
    "paper",
    "results",
    "run",
    "sets",
    "sweeps",
    "tables",
    "throughput",
]
