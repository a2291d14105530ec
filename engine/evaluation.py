"""What ``eval.py`` runs: accuracy on the ImageNet-1k family, ImageNet-C mCE, and throughput.

Each function returns plain dicts (what goes into the result JSON); ``results_markdown`` turns a
result into the table ``eval.py`` prints. Evaluation shards are not padded and counts are summed
across ranks, so ``torchrun`` gives the numbers of one process.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import create_transform, resolve_data_config
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from engine.data import ResumableSampler
from engine.distributed import DistInfo
from engine.eval_data import EVAL_SETS, CorruptImage, LabeledImageFolder
from engine.loop import evaluate
from engine.profiling import measure_throughput
from engine.robustness import corruption_summary

__all__ = [
    "EvalContext",
    "baseline_name",
    "corrupted_folder",
    "corrupted_transform",
    "eval_transform",
    "evaluate_corruptions",
    "evaluate_folder",
    "evaluate_throughput",
    "imagenet_c_folder",
    "results_markdown",
]

_logger = logging.getLogger(__name__)

TRANSFORM_KEYS = ("img_size", "crop_pct", "interpolation", "mean", "std")


class EvalContext:
    """The model and the settings every set is evaluated with.

    Args:
        model: in eval mode, already on ``dist_info.device``.
        dist_info: this process's rank, world size and device.
        batch_size, num_workers: per-process loader settings.
        amp_dtype: autocast dtype or ``None``.
        channels_last: feed images in channels-last memory format.
    """

    def __init__(
        self,
        model: nn.Module,
        dist_info: DistInfo,
        batch_size: int,
        num_workers: int,
        amp_dtype: torch.dtype | None = None,
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.model, self.dist_info = model, dist_info
        self.batch_size, self.num_workers = batch_size, num_workers
        self.amp_dtype, self.channels_last = amp_dtype, channels_last

    def loader(self, dataset: Dataset) -> DataLoader:
        sampler = ResumableSampler(
            len(dataset), self.dist_info.rank, self.dist_info.world_size, shuffle=False, pad=False
        )
        return DataLoader(
            dataset,
            self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.dist_info.device.type == "cuda",
        )

    def accuracy(self, dataset: Dataset, class_subset: Sequence[int] | None = None) -> dict:
        return evaluate(
            self.model,
            self.loader(dataset),
            self.dist_info.device,
            self.amp_dtype,
            self.channels_last,
            class_subset,
        )


def eval_transform(model: nn.Module, overrides: Mapping[str, Any]) -> tuple[Callable, dict]:
    """timm's eval transform from the model's pretrained cfg, with non-null ``overrides``
    (``img_size``, ``crop_pct``, ``interpolation``, ``mean``, ``std``) applied.

    Returns:
        The transform and the resolved data config (``input_size``, ``crop_pct``, ...).
    """
    unknown = sorted(set(overrides) - set(TRANSFORM_KEYS))
    if unknown:
        raise ValueError(f"transform: unknown keys {unknown}; allowed: {list(TRANSFORM_KEYS)}")
    args = {k: v for k, v in overrides.items() if v is not None}
    if "mean" in args:
        args["mean"] = tuple(args["mean"])
    if "std" in args:
        args["std"] = tuple(args["std"])
    config = resolve_data_config(args, model=model)
    return create_transform(**config, is_training=False), config


def corrupted_transform(transform: T.Compose, corruption: CorruptImage) -> T.Compose:
    """``transform`` with ``corruption`` applied to the resized, cropped PIL image (as
    ImageNet-C was made: resize, centre-crop, corrupt), before tensor conversion."""
    steps = list(transform.transforms)
    position = next((i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__), None)
    if position is None:
        raise ValueError(f"no ToTensor step in the eval transform {transform}")
    return T.Compose([*steps[:position], corruption, *steps[position:]])


def evaluate_folder(context: EvalContext, set_name: str, root: str | Path, transform) -> dict:
    """Top-1/top-5 of one folder set (``in1k``, ``in_v2``, ``in_sketch``, ``in_a``, ``in_r``)."""
    spec = EVAL_SETS[set_name]
    dataset = LabeledImageFolder(root, spec, transform)
    result = context.accuracy(dataset, spec.class_subset)
    _logger.info("%s: top-1 %.2f  top-5 %.2f  (%d images)", spec.title, *_accuracy(result))
    return {"root": str(root), **result}


def _accuracy(result: Mapping[str, float]) -> tuple[float, float, int]:
    return result["top1"], result["top5"], int(result["count"])


def evaluate_corruptions(
    context: EvalContext,
    corruptions: Sequence[str],
    severities: Sequence[int],
    dataset_for: Callable[[str, int], Dataset],
) -> dict:
    """Top-1 error per corruption and severity, then CE and mCE (``corruption_summary``).

    Args:
        dataset_for: ``(corruption, severity) -> dataset``: a folder of ImageNet-C, or a
            validation folder corrupted on the fly.
    """
    errors: dict[str, dict[int, float]] = {}
    for corruption in corruptions:
        errors[corruption] = {}
        for severity in severities:
            result = context.accuracy(dataset_for(corruption, severity))
            errors[corruption][severity] = 100.0 - result["top1"]
        _logger.info(
            "%s: error %s",
            corruption,
            " ".join(f"{errors[corruption][s]:.2f}" for s in severities),
        )
    return corruption_summary(errors)


def imagenet_c_folder(
    root: str | Path, transform: Callable, corruptions: Sequence[str], severities: Sequence[int]
) -> Callable[[str, int], Dataset]:
    """``(corruption, severity) -> LabeledImageFolder(<root>/<corruption>/<severity>)``.

    Raises:
        FileNotFoundError: before anything is evaluated, naming every missing folder.
    """
    spec = EVAL_SETS["in_c"]
    missing = [
        str(Path(root) / c / str(s))
        for c in corruptions
        for s in severities
        if not (Path(root) / c / str(s)).is_dir()
    ]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f", ... ({len(missing)} in all)" if len(missing) > 5 else ""
        )
        raise FileNotFoundError(f"{spec.title}: missing folders {shown}; expected {spec.layout}")

    def dataset_for(corruption: str, severity: int) -> Dataset:
        return LabeledImageFolder(Path(root) / corruption / str(severity), spec, transform)

    return dataset_for


def corrupted_folder(
    root: str | Path, transform: T.Compose, seed: int
) -> Callable[[str, int], Dataset]:
    """``(corruption, severity) -> root`` (an ImageNet-1k val folder) corrupted on the fly."""

    def dataset_for(corruption: str, severity: int) -> Dataset:
        corrupt = CorruptImage(corruption, severity, seed)
        return LabeledImageFolder(root, EVAL_SETS["in1k"], corrupted_transform(transform, corrupt))

    return dataset_for


def baseline_name(model_name: str, baseline: str | None) -> str | None:
    """The model a DCLS variant is compared with: ``auto`` drops a ``_dcls``/``_dc`` suffix
    (``None`` when the model is not a variant); otherwise ``baseline`` itself."""
    if baseline != "auto":
        return baseline
    for suffix in ("_dcls", "_dc"):
        if model_name.endswith(suffix):
            return model_name.removesuffix(suffix)
    return None


def evaluate_throughput(
    model: nn.Module,
    model_name: str,
    cfg: Mapping[str, Any],
    resolution: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
) -> dict:
    """Images/s of ``model`` and of its baseline measured in the same run, and their ratios.

    A copy of ``model`` is timed, so its weights and batch-norm statistics are left as they were.

    ``cfg`` holds ``baseline`` (``auto``, a timm name or null), ``batch_size``, ``warmup``,
    ``steps``, ``rounds``, ``train`` (also time training steps).
    """
    named = {model_name: copy.deepcopy(model)}  # training steps must not touch the weights
    baseline = baseline_name(model_name, cfg["baseline"])
    if baseline is not None:
        if not timm.is_model(baseline):
            raise ValueError(f"throughput.baseline: {baseline!r} is not a timm model name")
        num_classes = getattr(model, "num_classes", 1000)
        named[baseline] = timm.create_model(baseline, num_classes=num_classes)
    timing = {
        "batch_size": cfg["batch_size"],
        "resolution": resolution,
        "device": device,
        "amp_dtype": amp_dtype,
        "channels_last": channels_last,
        "warmup": cfg["warmup"],
        "steps": cfg["steps"],
        "rounds": cfg["rounds"],
    }
    modes = ("inference", "train") if cfg["train"] else ("inference",)
    measured = {mode: measure_throughput(named, **timing, train=mode == "train") for mode in modes}
    result: dict[str, Any] = {
        "batch_size": cfg["batch_size"],
        "resolution": resolution,
        "device": str(device),
        "amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else None,
        "channels_last": channels_last,
        "images_per_s": {mode: measured[mode][model_name] for mode in modes},
        "baseline": baseline,
    }
    if baseline is not None:
        result["baseline_images_per_s"] = {mode: measured[mode][baseline] for mode in modes}
        result["ratio"] = {  # time per image of the model over its baseline's
            mode: measured[mode][baseline] / measured[mode][model_name] for mode in modes
        }
        _logger.info(
            "throughput %s / %s (time per image, same run): %s",
            model_name,
            baseline,
            "  ".join(f"{mode} {ratio:.3f}x" for mode, ratio in result["ratio"].items()),
        )
    return result


def results_markdown(results: Mapping[str, Any]) -> str:
    """One Markdown table of a result file's numbers: one row per set (and per corruption)."""
    rows = [
        "| set | metric | value |",
        "| --- | --- | --- |",
        f"| model | params (M) / GMACs | {results['params'] / 1e6:.2f} / {results['gmacs']:.2f} |",
    ]
    for name, result in results["sets"].items():
        if name == "throughput":
            for mode, rate in result["images_per_s"].items():
                line = f"| throughput | {mode} images/s | {rate:.1f}"
                if result["baseline"] is not None:
                    ratio = result["ratio"][mode]
                    line += f" ({result['baseline']}: {result['baseline_images_per_s'][mode]:.1f};"
                    line += f" time ratio {ratio:.3f}x)"
                rows.append(line + " |")
        elif "errors" in result:
            title = {"in_c": "ImageNet-C", "in_c_extra": "ImageNet-C extra"}.get(name, name)
            for corruption, error in result["mean_errors"].items():
                ce = result["ce"].get(corruption)
                ce_text = f" (CE {ce:.2f})" if ce is not None else ""
                rows.append(f"| {title} | {corruption} error | {error:.2f}{ce_text} |")
            if result["mce"] is not None:
                rows.append(f"| {title} | mCE | {result['mce']:.2f} |")
            rows.append(f"| {title} | mean error | {result['mean_error']:.2f} |")
        else:
            title = EVAL_SETS[name].title
            rows.append(
                f"| {title} | top-1 / top-5 | {result['top1']:.2f} / {result['top5']:.2f} |"
            )
    return "\n".join(rows)
