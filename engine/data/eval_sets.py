"""Evaluation sets in their published folder layouts, labelled in ImageNet-1k's class order.

Every set is read as ``<root>/<class folder>/<image files>``; what differs is how a class folder
maps to a label and which logits are scored:

==============  =======================================  ==============================
set             layout                                   labels / logits
==============  =======================================  ==============================
``in1k``        ``val/<wnid>/*.JPEG``                    wnid's index among the 1000
``in_v2``       ``<0..999>/*.jpeg`` (matched-frequency)  the folder's number (or wnid)
``in_sketch``   ``sketch/<wnid>/*.JPEG``                 wnid's index among the 1000
``in_a``        ``imagenet-a/<wnid>/*.jpg`` (200 wnids)  logits restricted to the 200
``in_r``        ``imagenet-r/<wnid>/*.jpg`` (200 wnids)  logits restricted to the 200
``in_c``        ``<corruption>/<1..5>/<wnid>/*.JPEG``    wnid's index among the 1000
==============  =======================================  ==============================

Labels come from the folder's *name* (never its position in a sorted listing), so a subset of
the class folders is labelled correctly and ImageNet-V2's numeric folders are not sorted as text
(copies with wnid-named class folders read too). A folder with fewer classes
than its set is scored with a warning: the number is then not the benchmark's. The 200-class masks
of ImageNet-A/R are the published index lists shipped with timm.
"""

from __future__ import annotations

import logging
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from timm.data import ImageNetInfo
from torch.utils.data import Dataset

from engine.data.image_folder import BAD_IMAGE_ERRORS
from engine.errors import InputError

__all__ = [
    "EVAL_SETS",
    "EvalSet",
    "LabeledImageFolder",
    "imagenet_subset_indices",
    "warn_if_incomplete",
]

_logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IMAGENET_CLASSES = 1000


def _timm_info_lines(name: str) -> list[str]:
    data = pkgutil.get_data("timm.data", f"_info/{name}")
    if data is None:  # pragma: no cover - timm ships these files
        raise FileNotFoundError(f"timm.data/_info/{name}")
    return data.decode().split()


def imagenet_subset_indices(subset: str) -> list[int]:
    """ImageNet-1k indices of the 200 classes of ``subset`` (``"imagenet_a"``/``"imagenet_r"``),
    in increasing order: the published masks applied to a 1000-way classifier's logits."""
    return [int(index) for index in _timm_info_lines(f"{subset}_indices.txt")]


@dataclass(frozen=True)
class EvalSet:
    """How to read one evaluation set.

    Attributes:
        name: config key (``sets=[...]``, ``roots.<name>``).
        title: the name tables print.
        layout: the expected folder layout, quoted in errors.
        class_subset: ImageNet-1k indices whose logits are scored (``None``: all 1000); labels
            are positions in this list.
    """

    name: str
    title: str
    layout: str
    class_subset: tuple[int, ...] | None = None

    @property
    def class_count(self) -> int:
        """How many classes the whole set has (1000, or 200 for ImageNet-A/R)."""
        return IMAGENET_CLASSES if self.class_subset is None else len(self.class_subset)

    def label_of(self) -> Callable[[str], int | None]:
        """Class folder name -> label (``None`` for a folder that is not a class of this set)."""
        wnids = ImageNetInfo().label_names()
        index = {wnid: i for i, wnid in enumerate(wnids)}
        if self.name == "in_v2":  # numbered folders; wnid-named ones in some copies
            return lambda f: int(f) if f.isdigit() and int(f) < IMAGENET_CLASSES else index.get(f)
        if self.class_subset is None:
            return index.get
        position = {imagenet: i for i, imagenet in enumerate(self.class_subset)}
        return lambda folder: position.get(index.get(folder, -1))


EVAL_SETS: dict[str, EvalSet] = {
    spec.name: spec
    for spec in (
        EvalSet("in1k", "ImageNet-1k", "<root>/<wnid, e.g. n01440764>/<images>"),
        EvalSet("in_v2", "ImageNet-V2", "<root>/<class number 0..999, or wnid>/<images>"),
        EvalSet("in_sketch", "ImageNet-Sketch", "<root>/<wnid>/<images>"),
        EvalSet(
            "in_a",
            "ImageNet-A",
            "<root>/<one of ImageNet-A's 200 wnids>/<images>",
            tuple(imagenet_subset_indices("imagenet_a")),
        ),
        EvalSet(
            "in_r",
            "ImageNet-R",
            "<root>/<one of ImageNet-R's 200 wnids>/<images>",
            tuple(imagenet_subset_indices("imagenet_r")),
        ),
        EvalSet("in_c", "ImageNet-C", "<root>/<corruption>/<severity 1..5>/<wnid>/<images>"),
    )
}


def warn_if_incomplete(spec: EvalSet, root: str | Path, class_count: int) -> None:
    """Warn when a folder of ``spec``'s set holds fewer classes than the set has."""
    if class_count < spec.class_count:
        _logger.warning(
            "%s: %s has images of %d of the set's %d classes: its numbers are not the benchmark's",
            spec.title,
            root,
            class_count,
            spec.class_count,
        )


class LabeledImageFolder(Dataset):
    """``root/<class folder>/<image>`` with labels from :meth:`EvalSet.label_of`.

    Files other than images and non-directories at the top level (e.g. ImageNet-A's
    ``README.txt``) are ignored; a class folder unknown to the set is an error, fewer class
    folders than the set has a warning (unless ``warn_incomplete`` is false: the caller warns
    once for a set made of many folders, such as ImageNet-C).

    Attributes:
        samples: ``(image path, label)`` pairs.
        class_count: how many classes have a folder with images.

    Raises:
        FileNotFoundError: ``root`` is missing.
        ValueError: a folder is not a class of the set, or there is no image at all; both
            messages name the folder and the expected layout.
    """

    def __init__(
        self,
        root: str | Path,
        spec: EvalSet,
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        warn_incomplete: bool = True,
    ) -> None:
        self.root, self.spec, self.transform = Path(root), spec, transform
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"{spec.title}: folder {self.root} does not exist; expected {spec.layout}"
            )
        label_of = spec.label_of()
        self.samples: list[tuple[Path, int]] = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            label = label_of(folder.name)
            if label is None:
                raise InputError(
                    f"{spec.title}: {folder} is not a class folder of this set; expected "
                    f"{spec.layout}"
                )
            self.samples += [
                (path, label)
                for path in sorted(folder.iterdir())
                if path.suffix.lower() in IMAGE_EXTENSIONS
            ]
        if not self.samples:
            loose = any(p.suffix.lower() in IMAGE_EXTENSIONS for p in self.root.iterdir())
            hint = (
                " (its images lie in it directly: ImageNet's raw val archive must first be sorted "
                "into one folder per wnid, e.g. with the valprep.sh script of PyTorch's ImageNet "
                "example)"
                if loose
                else ""
            )
            raise InputError(
                f"{spec.title}: no images under {self.root}{hint}; expected {spec.layout}"
            )
        self.class_count = len({label for _, label in self.samples})
        if warn_incomplete:
            warn_if_incomplete(spec, self.root, self.class_count)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except BAD_IMAGE_ERRORS as error:  # a benchmark's number needs all of its images
            raise InputError(
                f"{self.spec.title}: cannot read {path} ({type(error).__name__}: {error}); "
                "re-download the set (a number without this image is not the benchmark's)"
            ) from error
        if self.transform is not None:
            image = self.transform(image)
        return image, label
