"""The numbers the DCLS paper and the authors' repository report: our targets, with sources.

Khalfaoui-Hassani, Pellegrini, Masquelier, "Dilated convolution with learnable spacings", ICLR
2023 (arXiv 2112.03740v4). ``scripts/make_tables.py`` prints each next to our measured value.

Sources, by the ``source`` key of each entry:

- ``readme``: the authors' K-H-Ismail/ConvNeXt-dcls README at aad45f3 (L68-75: ImageNet-1k
  top-1, params, FLOPs of the T/S/B rows and ConvNeXt's own baselines; L126-130: the released
  ConvNeXt-B-dcls EMA checkpoint evaluates to ``Acc@1 84.094 Acc@5 96.958``).
- ``paper-v4 (extracted)``: the paper's robustness and throughput tables as extracted by a
  third party (igm503/heedless-backbones, family_data/ConvNeXt-dcls.yml at af5346e, sourced to
  arXiv 2112.03740v4); not yet checked against the PDF. Its corruption column is ImageNet-C-bar
  (``dataset: ImageNet-C-bar`` there; ConvNeXt-T's own is 40.0, its C-bar error in the ConvNeXt
  paper, against 53.2 ImageNet-C mCE), a benchmark this project does not evaluate: it is recorded
  as ``in_c_bar_error`` and no table column compares it with our ImageNet-C numbers.

- ``readme-downstream``: the authors' ``semantic_segmentation/README.md`` L18-23 (UPerNet,
  ADE20K, 512x512, 160k iterations: mIoU single-scale / multi-scale) and
  ``object_detection/README.md`` L13-18 (Cascade Mask R-CNN 3x, COCO: box / mask AP) at aad45f3.
  This project trains no detector or segmenter: :data:`DOWNSTREAM` records them, no table uses
  them.

Not found (the paper's tables could not be read here): the ResNet-50 and dilated-convolution
(``_dc``) rows, with the ResNet-50 setting (K, sharing) and recipe behind them; ImageNet-V2; the
baselines' robustness and throughput as re-measured by the authors.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DOWNSTREAM", "PAPER", "RELEASED_CHECKPOINTS", "paper_value", "released_check"]

_README = "readme"
_EXTRACTED = "paper-v4 (extracted)"
_DOWNSTREAM = "readme-downstream"

# model name -> metric -> (value, source). Metrics: top1 (ImageNet-1k, 224), params_m, gmacs,
# in_a, in_r, in_sketch (top-1), in_c_bar_error (top-1 error on ImageNet-C-bar, not ImageNet-C),
# throughput (images/s on a V100, batch and precision not stated).
PAPER: dict[str, dict[str, tuple[float, str]]] = {
    "convnext_tiny": {"top1": (82.1, _README), "params_m": (28, _README), "gmacs": (4.5, _README)},
    "convnext_small": {"top1": (83.1, _README), "params_m": (50, _README), "gmacs": (8.7, _README)},
    "convnext_base": {"top1": (83.8, _README), "params_m": (89, _README), "gmacs": (15.4, _README)},
    "convnext_tiny_dcls": {
        "top1": (82.5, _README),
        "params_m": (28, _README),
        "gmacs": (5.0, _README),
        "in_a": (23.9, _EXTRACTED),
        "in_r": (47.8, _EXTRACTED),
        "in_sketch": (34.7, _EXTRACTED),
        "in_c_bar_error": (39.7, _EXTRACTED),
        "throughput": (725.3, _EXTRACTED),
    },
    "convnext_small_dcls": {
        "top1": (83.7, _README),
        "params_m": (50, _README),
        "gmacs": (9.5, _README),
        "in_a": (33.7, _EXTRACTED),
        "in_r": (50.4, _EXTRACTED),
        "in_sketch": (36.7, _EXTRACTED),
        "in_c_bar_error": (35.2, _EXTRACTED),
        "throughput": (433.4, _EXTRACTED),
    },
    "convnext_base_dcls": {
        "top1": (84.1, _README),
        "params_m": (89, _README),
        "gmacs": (16.5, _README),
        "in_a": (36.8, _EXTRACTED),
        "in_r": (52.6, _EXTRACTED),
        "in_sketch": (38.4, _EXTRACTED),
        "in_c_bar_error": (34.3, _EXTRACTED),
        "throughput": (285.4, _EXTRACTED),
    },
}

# Downstream results of the ImageNet-1k backbones, baselines (ConvNeXt's) included. Metrics:
# ade20k_miou_ss / ade20k_miou_ms (UPerNet), coco_box_ap / coco_mask_ap (Cascade Mask R-CNN 3x).
DOWNSTREAM: dict[str, dict[str, tuple[float, str]]] = {
    model: {
        "ade20k_miou_ss": (ss, _DOWNSTREAM),
        "ade20k_miou_ms": (ms, _DOWNSTREAM),
        "coco_box_ap": (box, _DOWNSTREAM),
        "coco_mask_ap": (mask, _DOWNSTREAM),
    }
    for model, (ss, ms, box, mask) in {
        "convnext_tiny": (46.0, 46.7, 50.4, 43.7),
        "convnext_tiny_dcls": (47.1, 47.1, 51.2, 44.5),
        "convnext_small": (48.7, 49.6, 51.9, 45.0),
        "convnext_small_dcls": (48.4, 49.0, 52.8, 45.6),
        "convnext_base": (49.1, 49.9, 52.7, 45.6),
        "convnext_base_dcls": (49.3, 49.6, 53.0, 46.0),
    }.items()
}

# What eval.py must print for the authors' released files (README L126-130); the file name is
# the one on Zenodo record 7112021.
RELEASED_CHECKPOINTS: dict[str, dict[str, Any]] = {
    "convnext_dcls_base_1k_224_ema.pth": {
        "model": "convnext_base_dcls",
        "kwargs": {"version": "v0"},
        "top1": 84.094,
        "top5": 96.958,
        "source": _README,
    },
}


def paper_value(model: str, metric: str) -> float | None:
    """The paper's value of ``metric`` for ``model`` (a timm name), or ``None``."""
    entry = PAPER.get(model, {}).get(metric)
    return None if entry is None else entry[0]


def released_check(checkpoint: str | None, in1k: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What the authors say ``eval.py`` must print for one of their released files, next to what
    it printed: ``{"file", "expected_top1", "expected_top5", "top1_diff", "top5_diff", "source"}``
    (differences in points, measured minus expected), or ``None`` when ``checkpoint`` is not a
    released file (by name) or ImageNet-1k was not evaluated.

    Args:
        checkpoint: the evaluated file's path.
        in1k: the ``in1k`` set's result (``top1``, ``top5``), or ``None``.
    """
    released = RELEASED_CHECKPOINTS.get(Path(checkpoint).name) if checkpoint else None
    if released is None or in1k is None:
        return None
    return {
        "file": Path(checkpoint).name,
        "expected_top1": released["top1"],
        "expected_top5": released["top5"],
        "top1_diff": in1k["top1"] - released["top1"],
        "top5_diff": in1k["top5"] - released["top5"],
        "source": released["source"],
    }
