"""An ImageNet-style folder whose unreadable images are skipped (logged, counted) or fail the run.

In a folder of 1.28M JPEGs a few may be truncated or not images at all. timm's ``ImageDataset``
retries the next index with a warning that gives neither the path nor a running count, and cannot
be told to stop. :class:`CheckedImageFolder` does what ``data.on_bad_image`` says:

- ``skip``: log a warning with the file's path and this process's running count, and return the
  next readable image instead (batches keep their size; every rank keeps the same step count);
- ``fail``: raise :class:`BadImageError` naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PIL import Image
from timm.data import ImageDataset

from engine.errors import InputError

__all__ = ["BAD_IMAGE_ERRORS", "BadImageError", "CheckedImageFolder", "check_image_folder"]

_logger = logging.getLogger(__name__)

# What PIL raises on a truncated, corrupt or non-image file (UnidentifiedImageError is an OSError).
BAD_IMAGE_ERRORS = (OSError, SyntaxError, Image.DecompressionBombError)
MAX_CONSECUTIVE_BAD = 50  # a run this long means the folder, not a file, is broken: stop


class BadImageError(RuntimeError):
    """An image that cannot be decoded (``on_bad_image="fail"``) or too many in a row."""


def check_image_folder(split_dir: Path, layout: str) -> None:
    """Fail early, naming the path and ``layout``, if ``split_dir`` has no class folder with files.

    Raises:
        InputError: if ``split_dir`` is missing, empty, or its class folders hold no files.
    """
    has_files = split_dir.is_dir() and any(
        f.is_file() for d in split_dir.iterdir() if d.is_dir() for f in d.iterdir()
    )
    if not has_files:
        found = "no such folder" if not split_dir.is_dir() else "no <class>/<file> inside"
        raise InputError(f"data.root: {split_dir} is missing or empty; expected {layout} ({found})")


class CheckedImageFolder(ImageDataset):
    """timm's ``ImageDataset`` over ``root/<class>/<image>`` with a bad-image policy.

    Args:
        root: the split folder (``<data.root>/train``).
        on_bad_image: ``"skip"`` or ``"fail"``.
        **kwargs: ``ImageDataset`` arguments (``transform``, ...).

    Attributes:
        bad_images: paths skipped so far by this process (each DataLoader worker has its own).
    """

    def __init__(self, root: str, on_bad_image: str = "skip", **kwargs: Any) -> None:
        if on_bad_image not in ("skip", "fail"):
            raise ValueError(f"data.on_bad_image must be 'skip' or 'fail', got {on_bad_image!r}")
        super().__init__(root, **kwargs)
        self.on_bad_image = on_bad_image
        self.bad_images: list[str] = []

    def _decode(self, index: int) -> tuple[Image.Image, Any]:
        image, target, *_ = self.reader[index]
        image = Image.open(image)
        return (image.convert(self.input_img_mode) if self.input_img_mode else image), target

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """The transformed image and class index at ``index`` (or the next readable one)."""
        for _ in range(MAX_CONSECUTIVE_BAD):
            try:
                image, target = self._decode(index)
                break
            except BAD_IMAGE_ERRORS as error:
                path = self.filename(index, absolute=True)
                if self.on_bad_image == "fail":
                    raise BadImageError(
                        f"cannot read {path} (data.on_bad_image=fail; 'skip' goes on): {error}"
                    ) from error
                self.bad_images.append(path)
                _logger.warning(
                    "skipped unreadable image %s (%d skipped so far in this process): %s",
                    path,
                    len(self.bad_images),
                    error,
                )
                index = (index + 1) % len(self)
        else:
            raise BadImageError(
                f"{MAX_CONSECUTIVE_BAD} unreadable images in a row up to {self.bad_images[-1]}: "
                "is the dataset folder readable?"
            )
        if self.transform is not None:
            image = self.transform(image)
        return image, -1 if target is None else target
