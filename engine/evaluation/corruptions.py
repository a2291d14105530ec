"""ImageNet-C: corruption names, AlexNet's published errors, CE and mCE, and the corrupted sets.

Hendrycks & Dietterich (ICLR 2019, arXiv 1903.12261) normalise a model's error on each
corruption by AlexNet's: ``CE_c = sum_s E_{s,c} / sum_s E^{AlexNet}_{s,c}`` over the five
severities ``s``, and ``mCE`` is the mean of ``CE_c`` over the 15 benchmark corruptions (in
percent). The 4 "extra" (held-out) corruptions are reported separately.

A corrupted set is either a folder of the published ImageNet-C (``<root>/<corruption>/<1..5>/``)
or any ImageNet-style validation folder corrupted on the fly by the ``imagecorruptions`` library
(:class:`CorruptImage`), each image made as ImageNet-C's files were (``make_imagenet_c.py``:
``Resize(256)``, ``CenterCrop(224)``, the corruption, saved as JPEG at quality 85), so that its
errors may be normalised by AlexNet's. The published files are already resized and cropped to
224x224, so they skip the eval transform's resize and crop (:func:`imagenet_c_transform`), as
Hendrycks' ``test.py`` does; the on-the-fly images too.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from math import fsum
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from engine.data.eval_sets import EVAL_SETS, LabeledImageFolder
from engine.evaluation.accuracy import EvalContext

__all__ = [
    "ALEXNET_ERRORS",
    "CORRUPTIONS",
    "EXTRA_CORRUPTIONS",
    "SEVERITIES",
    "CorruptImage",
    "corrupted_folder",
    "corrupted_transform",
    "corruption_summary",
    "evaluate_corruptions",
    "imagenet_c_folder",
    "imagenet_c_transform",
]

IMAGENET_C_SIZE = 224  # its images: validation images resized to 256 and centre-cropped to 224
IMAGENET_C_RESIZE = 256
IMAGENET_C_JPEG_QUALITY = 85  # how its files were saved

_logger = logging.getLogger(__name__)

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
        5-severity averages); ``mce`` is the benchmark's, so ``None`` unless ``errors`` holds
        exactly the 15 benchmark corruptions of :data:`CORRUPTIONS`, each with a CE (the 4
        extra corruptions are never part of it).
    """
    mean_errors = {name: fsum(by_sev.values()) / len(by_sev) for name, by_sev in errors.items()}
    ce = {  # percent errors over fractions: CE in percent
        name: fsum(by_sev.values()) / (len(SEVERITIES) * ALEXNET_ERRORS[name])
        for name, by_sev in errors.items()
        if name in ALEXNET_ERRORS and sorted(by_sev) == list(SEVERITIES)
    }
    complete = set(errors) == set(CORRUPTIONS) and set(ce) == set(CORRUPTIONS)
    return {
        "errors": {name: dict(by_sev) for name, by_sev in errors.items()},
        "mean_errors": mean_errors,
        "ce": ce,
        "mce": fsum(ce.values()) / len(ce) if complete else None,
        "mean_error": fsum(mean_errors.values()) / len(mean_errors) if errors else None,
    }


class CorruptImage:
    """A transform applying one ImageNet-C corruption with the ``imagecorruptions`` library.

    The corruption's randomness is seeded from ``seed`` and the image content, so a corrupted
    set is the same in every run and on every rank.

    Args:
        corruption: one of ``imagecorruptions.get_corruption_names("all")``.
        severity: 1..5.
        seed: base seed.
    """

    def __init__(self, corruption: str, severity: int, seed: int = 0) -> None:
        try:
            from imagecorruptions import corrupt, get_corruption_names
        except ImportError as error:  # pragma: no cover - in the dev and eval extras
            raise ImportError(
                "on-the-fly corruptions need imagecorruptions: pip install -e '.[eval]'"
            ) from error
        names = get_corruption_names("all")
        if corruption not in names:
            raise ValueError(f"corruption must be one of {names}, got {corruption!r}")
        if severity not in (1, 2, 3, 4, 5):
            raise ValueError(f"severity must be 1..5, got {severity!r}")
        self.corruption, self.severity, self.seed, self._corrupt = (
            corruption,
            severity,
            seed,
            corrupt,
        )

    def __call__(self, image: Image.Image) -> Image.Image:
        array = np.asarray(image.convert("RGB"))
        content_seed = int(np.frombuffer(array.tobytes()[:4096], dtype=np.uint8).sum())
        state = np.random.get_state()
        np.random.seed((self.seed * 1_000_003 + content_seed * 31 + self.severity) % 2**32)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RuntimeWarning)
                corrupted = self._corrupt(
                    array, corruption_name=self.corruption, severity=self.severity
                )
        finally:
            np.random.set_state(state)
        if any("invalid value" in str(w.message) for w in caught):  # NaN cast to uint8: 0
            _logger.warning(
                "%s at severity %d made non-finite pixels of a %dx%d image (the imagecorruptions "
                "library; they become 0, black)",
                self.corruption,
                self.severity,
                *array.shape[:2],
            )
        return Image.fromarray(np.clip(corrupted, 0, 255).astype(np.uint8))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.corruption!r}, severity={self.severity})"


def _tensor_step(transform: T.Compose) -> int:
    """Where ``transform`` (timm's eval transform) turns the PIL image into a tensor."""
    steps = transform.transforms
    position = next((i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__), None)
    if position is None:
        raise ValueError(f"no ToTensor step in the eval transform {transform}")
    return position


def imagenet_c_transform(transform: T.Compose, input_size: int) -> T.Compose:
    """``transform`` for ImageNet-C's files, already 224x224: without the resize and crop (a
    second ``Resize(256)`` + ``CenterCrop(224)`` would zoom them 1.14x and cut their border);
    resized to ``input_size`` where the model takes another size."""
    steps = list(transform.transforms)
    position = _tensor_step(transform)
    resize = [t for t in steps[:position] if isinstance(t, T.Resize)]
    interpolation = resize[0].interpolation if resize else T.InterpolationMode.BICUBIC
    if input_size == IMAGENET_C_SIZE:
        return T.Compose(steps[position:])
    return T.Compose([T.Resize((input_size, input_size), interpolation), *steps[position:]])


class JpegRoundTrip:
    """Save a PIL image as JPEG and read it back, as ImageNet-C's files were saved."""

    def __init__(self, quality: int = IMAGENET_C_JPEG_QUALITY) -> None:
        self.quality = quality

    def __call__(self, image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=self.quality, optimize=True)
        buffer.seek(0)
        with Image.open(buffer) as saved:
            return saved.convert("RGB")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(quality={self.quality})"


def corrupted_transform(
    transform: T.Compose, corruption: CorruptImage, input_size: int
) -> T.Compose:
    """A validation image made as ImageNet-C's files were (``Resize(256)``, ``CenterCrop(224)``,
    ``corruption``, JPEG at quality 85), then read as eval.py reads those files
    (:func:`imagenet_c_transform` of the eval ``transform``, at ``input_size``)."""
    made = [
        T.Resize(IMAGENET_C_RESIZE),
        T.CenterCrop(IMAGENET_C_SIZE),
        corruption,
        JpegRoundTrip(IMAGENET_C_JPEG_QUALITY),
    ]
    return T.Compose([*made, *imagenet_c_transform(transform, input_size).transforms])


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

    Args:
        transform: applied as it is: for the eval transform, see :func:`imagenet_c_transform`.

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
        extra_only = all(Path(m).parent.name in EXTRA_CORRUPTIONS for m in missing)
        hint = "; corruptions.extra=[] leaves out the 4 held-out corruptions" if extra_only else ""
        nested = sorted({str(p.parent) for c in corruptions for p in Path(root).glob(f"*/{c}")})
        if nested:
            hint += (
                f"; corruption folders were found one level down, in {', '.join(nested)}: "
                "extract every archive into one folder (or move the corruption folders up) and "
                "point roots.in_c at it"
            )
        raise FileNotFoundError(
            f"{spec.title}: missing folders {shown}; expected {spec.layout}{hint}"
        )

    def dataset_for(corruption: str, severity: int) -> Dataset:
        folder = Path(root) / corruption / str(severity)
        return LabeledImageFolder(folder, spec, transform, warn_incomplete=False)

    return dataset_for


def corrupted_folder(
    root: str | Path, transform: T.Compose, seed: int, input_size: int
) -> Callable[[str, int], Dataset]:
    """``(corruption, severity) -> root`` (an ImageNet-1k val folder) corrupted on the fly
    (:func:`corrupted_transform`)."""

    def dataset_for(corruption: str, severity: int) -> Dataset:
        made = corrupted_transform(transform, CorruptImage(corruption, severity, seed), input_size)
        return LabeledImageFolder(root, EVAL_SETS["in1k"], made, warn_incomplete=False)

    return dataset_for
