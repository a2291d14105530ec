"""Everything around the DCLS layers that trains and evaluates an ImageNet classifier.

By job:

- :mod:`engine.training`: the loop, optimizer, DCLS schedules, loggers, preemption;
- :mod:`engine.evaluation`: accuracy, ImageNet-C, throughput, result files;
- :mod:`engine.pictures`: position sets as arrays, their history, plots, W&B media.

Shared by the three:

- :mod:`engine.data`: datasets, samplers, the evaluation sets' folder layouts;
- :mod:`engine.checkpoint`: checkpoint files, training state, models rebuilt from checkpoints;
- :mod:`engine.config`: config checks and the entry points' handling of bad input;
- :mod:`engine.errors`: the one-line errors themselves (a leaf: anything may import it);
- :mod:`engine.amp`: mixed-precision names and the autocast context;
- :mod:`engine.distributed`: process groups, collectives, fault reports.

Imports run down: ``train.py``, ``eval.py`` and ``scripts/`` use the job packages (training
validates with evaluation's accuracy loop and writes its result files), which use the shared
modules, which use ``models`` and ``dcls``.
"""

__all__ = [
    "amp",
    "checkpoint",
    "config",
    "data",
    "distributed",
    "errors",
    "evaluation",
    "pictures",
    "training",
]
