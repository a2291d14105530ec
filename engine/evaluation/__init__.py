"""Evaluation: the accuracy loop shared with training (:mod:`.accuracy`), ImageNet-C
(:mod:`.corruptions`), parameters, MACs and throughput (:mod:`.throughput`), the sets ``eval.py``
runs (:mod:`.sets`), result files (:mod:`.results`), the paper's tables from them
(:mod:`.tables`) with the paper's own numbers (:mod:`.paper`), and a sweep's summary
(:mod:`.sweeps`)."""

__all__ = ["accuracy", "corruptions", "paper", "results", "sets", "sweeps", "tables", "throughput"]
