"""Evaluation: the accuracy loop shared with training (:mod:`.accuracy`), ImageNet-C
(:mod:`.corruptions`), parameters, MACs and throughput (:mod:`.throughput`), the sets ``eval.py``
runs (:mod:`.sets`) and result files (:mod:`.results`)."""

__all__ = ["accuracy", "corruptions", "results", "sets", "throughput"]
