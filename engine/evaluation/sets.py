"""The sets ``eval.py`` evaluates, one runner each, looked up by name in :data:`SET_RUNNERS`.

A runner takes the :class:`EvalJob` (the model, where it came from, the eval config and the
transform) and returns ``{result key: result}``; ``eval.py`` merges them into the result file.

- ``in1k``, ``in_v2``, ``in_sketch``, ``in_a``, ``in_r``: a folder in the set's published layout
  (``roots.<set>``), top-1/top-5;
- ``val``: the checkpoint's own validation split, built from its training config's ``data``
  group exactly as training built it (digits, fake data, or its ImageNet folder);
- ``in_c``: ImageNet-C folders, per-corruption errors, CE and mCE (and the 4 extra corruptions);
- ``corrupt``: any ImageNet-style folder corrupted on the fly;
- ``throughput``: images/s against the baseline, in the same run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from timm.data import ImageNetInfo

from engine.amp import amp_dtype
from engine.checkpoint.models import LoadedModel
from engine.data.datasets import BUILTIN_KINDS, DATASETS
from engine.data.eval_sets import (
    EVAL_SETS,
    IMAGENET_CLASSES,
    LabeledImageFolder,
    warn_if_incomplete,
)
from engine.errors import ConfigError, fail
from engine.evaluation.accuracy import EvalContext
from engine.evaluation.corruptions import (
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    SEVERITIES,
    corrupted_folder,
    evaluate_corruptions,
    imagenet_c_folder,
    imagenet_c_transform,
)
from engine.evaluation.throughput import evaluate_throughput

__all__ = ["SETS", "SET_RUNNERS", "EvalJob", "run_sets"]

_logger = logging.getLogger(__name__)


@dataclass
class EvalJob:
    """What every set runner reads.

    Attributes:
        cfg: the ``eval.yaml`` config.
        loaded: the model (on its device) and where it came from.
        context: loader settings and the accuracy loop.
        transform: the eval transform (timm's, from the resolved data config).
        resolution: the evaluation resolution.
    """

    cfg: DictConfig
    loaded: LoadedModel
    context: EvalContext
    transform: Callable
    resolution: int

    @property
    def device(self) -> torch.device:
        return self.context.dist_info.device


def _training_data_kind(loaded: LoadedModel) -> str | None:
    return (loaded.training_config.get("data") or {}).get("kind")


def _check_imagenet_labels(job: EvalJob, name: str) -> None:
    """The ImageNet sets label images by ImageNet-1k's class indices: a model trained on class
    folders other than the 1000 wnids (labelled in their own order) is refused in one line. (A
    model with fewer outputs than a set's labels need is refused by the accuracy loop.)"""
    classes = job.loaded.classes
    if classes is not None and list(classes) != ImageNetInfo().label_names():
        shown = ", ".join(classes[:3]) + (", ..." if len(classes) > 3 else "")
        raise ConfigError(
            f"sets=[{name}] is invalid for this model: it was trained on {len(classes)} class "
            f"folders ({shown}), labelled in their own order, not on ImageNet-1k's "
            f"{IMAGENET_CLASSES} wnids, so its outputs do not mean {name}'s classes; evaluate "
            "the split it was trained for with sets=[val]"
        )


def _folder_runner(name: str) -> Callable[[EvalJob], dict[str, Any]]:
    spec = EVAL_SETS[name]

    def run(job: EvalJob) -> dict[str, Any]:
        _check_imagenet_labels(job, name)
        root = Path(str(job.cfg.roots[name]))
        kind = _training_data_kind(job.loaded)
        if not root.is_dir() and kind in BUILTIN_KINDS:
            raise ConfigError(
                f"roots.{name}={str(root)!r} is invalid: no such folder, and this checkpoint was "
                f"trained on data={kind}; evaluate its own validation split with sets=[val], or "
                f"write ImageNet-style folders with scripts/export_digits.py OUT and set "
                f"roots.{name}=OUT/val"
            )
        dataset = LabeledImageFolder(root, spec, job.transform)
        result = job.context.accuracy(dataset, spec.class_subset)
        _logger.info(
            "%s: top-1 %.2f  top-5 %.2f  (%d images of %d classes)",
            spec.title,
            result["top1"],
            result["top5"],
            int(result["count"]),
            dataset.class_count,
        )
        return {name: {"root": str(root), "classes": dataset.class_count, **result}}

    return run


def _validation_split(job: EvalJob) -> dict[str, Any]:
    data = job.loaded.training_config.get("data")
    if not data:
        raise ConfigError(
            "sets=[val] is invalid for this checkpoint: it carries no training config (not "
            "written by train.py); evaluate folders with sets=[in1k] roots.in1k=<folder>"
        )
    data_cfg = OmegaConf.create(data)
    dataset = DATASETS[data_cfg.kind](data_cfg, "val")
    result = job.context.accuracy(dataset)
    name = str(data_cfg.get("name", data_cfg.kind))  # (the tables' name of it too)
    _logger.info(
        "validation split of data=%s: top-1 %.2f  top-5 %.2f  (%d images)",
        name,
        result["top1"],
        result["top5"],
        int(result["count"]),
    )
    return {"val": {"data": name, **result}}


def _corruption_groups(
    job: EvalJob, prefix: str, dataset_for: Callable, extra: dict[str, Any]
) -> dict[str, Any]:
    """``{prefix}``: the benchmark corruptions (``corruptions.names``: CE and mCE), and
    ``{prefix}_extra``: the held-out ones (``corruptions.extra``), reported apart."""
    c = job.cfg.corruptions
    groups = {prefix: c.names, f"{prefix}_extra": c.extra}
    return {
        key: extra | evaluate_corruptions(job.context, names, c.severities, dataset_for)
        for key, names in groups.items()
        if names
    }


def _check_corruptions(c: DictConfig) -> None:
    """``corruptions.names``, ``.extra`` and ``.severities`` name ImageNet-C's corruptions."""
    for key, allowed in (("names", CORRUPTIONS), ("extra", EXTRA_CORRUPTIONS)):
        for name in c[key]:
            if name not in allowed:
                expected = f"expected names from {list(allowed)}"
                fail(f"corruptions.{key}", name, expected, near=[*CORRUPTIONS, *EXTRA_CORRUPTIONS])
    for severity in c.severities:
        if severity not in SEVERITIES:
            fail("corruptions.severities", severity, f"expected values from {list(SEVERITIES)}")


def _corrupted_set_classes(
    spec_name: str, root: Any, dataset_for: Callable, c: DictConfig
) -> int | None:
    """The classes of a corrupted set's first folder (every folder lists the same), with one
    warning for the set when they are fewer than its benchmark's (not one per folder)."""
    names = [*c.names, *c.extra]
    if not names or not c.severities:
        return None
    classes = dataset_for(names[0], c.severities[0]).class_count
    warn_if_incomplete(EVAL_SETS[spec_name], root, classes)
    return classes


def _imagenet_c(job: EvalJob) -> dict[str, Any]:
    _check_imagenet_labels(job, "in_c")
    c = job.cfg.corruptions
    _check_corruptions(c)
    transform = imagenet_c_transform(job.transform, job.resolution)
    names = [*c.names, *c.extra]
    dataset_for = imagenet_c_folder(job.cfg.roots.in_c, transform, names, c.severities)
    classes = _corrupted_set_classes("in_c", job.cfg.roots.in_c, dataset_for, c)
    return _corruption_groups(job, "in_c", dataset_for, {"classes": classes})


def _corrupt(job: EvalJob) -> dict[str, Any]:
    _check_imagenet_labels(job, "corrupt")
    c = job.cfg.corruptions
    _check_corruptions(c)
    dataset_for = corrupted_folder(c.root, job.transform, c.seed, job.resolution)
    classes = _corrupted_set_classes("in1k", c.root, dataset_for, c)
    return _corruption_groups(
        job, "corrupt", dataset_for, {"root": str(c.root), "classes": classes}
    )


def throughput_amp(name: str | None, device: torch.device) -> str | None:
    """``throughput.amp``'s value for ``device``: ``auto`` is bf16 on CUDA, float32 elsewhere
    (timm's benchmark)."""
    if name == "auto":
        return "bf16" if device.type == "cuda" else None
    return name


def _throughput(job: EvalJob) -> dict[str, Any]:
    cfg = OmegaConf.to_container(job.cfg.throughput, resolve=True)
    amp = throughput_amp(cfg["amp"], job.device)
    return {
        "throughput": evaluate_throughput(
            job.loaded.model,
            job.loaded.name,
            cfg,
            cfg["img_size"] or job.resolution,
            job.device,
            amp_dtype(amp, "throughput.amp"),
            cfg["channels_last"],
        )
    }


SET_RUNNERS: dict[str, Callable[[EvalJob], dict[str, Any]]] = {
    **{name: _folder_runner(name) for name in EVAL_SETS if name != "in_c"},
    "val": _validation_split,
    "in_c": _imagenet_c,
    "corrupt": _corrupt,
    "throughput": _throughput,
}
SETS = tuple(SET_RUNNERS)


def run_sets(job: EvalJob, names: Sequence[str]) -> dict[str, Any]:
    """Every set of ``names`` in order: ``{result key: result}``."""
    results: dict[str, Any] = {}
    for name in names:
        results |= SET_RUNNERS[name](job)
    return results
