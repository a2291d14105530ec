"""ImageNet-C bookkeeping: corruption names, AlexNet's published errors, CE and mCE.

Hendrycks & Dietterich (ICLR 2019, arXiv 1903.12261) normalise a model's error on each
corruption by AlexNet's: ``CE_c = sum_s E_{s,c} / sum_s E^{AlexNet}_{s,c}`` over the five
severities ``s``, and ``mCE`` is the mean of ``CE_c`` over the 15 benchmark corruptions (in
percent). The 4 "extra" (held-out) corruptions are reported separately.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import fsum

__all__ = [
    "ALEXNET_ERRORS",
    "CORRUPTIONS",
    "EXTRA_CORRUPTIONS",
    "SEVERITIES",
    "corruption_summary",
]

CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
SEVERITIES = (1, 2, 3, 4, 5)

# AlexNet's top-1 error averaged over the 5 severities, as a fraction (the values of the
# ImageNet-C authors' evaluation code, used by every paper that reports mCE).
ALEXNET_ERRORS = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
    "speckle_noise": 0.845388,
    "gaussian_blur": 0.787108,
    "spatter": 0.717512,
    "saturate": 0.658248,
}


def corruption_summary(errors: Mapping[str, Mapping[int, float]]) -> dict[str, object]:
    """Per-corruption mean error, AlexNet-normalised CE and mCE from top-1 errors in percent.

    Args:
        errors: ``errors[corruption][severity]`` = top-1 error in percent.

    Returns:
        ``{"errors": ..., "mean_errors": {c: mean over severities}, "ce": {c: CE in percent},
        "mce": mean CE over the corruptions given, "mean_error": mean of the mean errors}``.
        CE is normalised only for corruptions covering all 5 severities (AlexNet's errors are
        5-severity averages); ``mce`` is ``None`` unless every corruption given has a CE.
    """
    mean_errors = {name: fsum(by_sev.values()) / len(by_sev) for name, by_sev in errors.items()}
    ce = {  # percent errors over fractions: CE in percent
        name: fsum(by_sev.values()) / (len(SEVERITIES) * ALEXNET_ERRORS[name])
        for name, by_sev in errors.items()
        if name in ALEXNET_ERRORS and sorted(by_sev) == list(SEVERITIES)
    }
    complete = bool(errors) and len(ce) == len(errors)
    return {
        "errors": {name: dict(by_sev) for name, by_sev in errors.items()},
        "mean_errors": mean_errors,
        "ce": ce,
        "mce": fsum(ce.values()) / len(ce) if complete else None,
        "mean_error": fsum(mean_errors.values()) / len(mean_errors) if errors else None,
    }
