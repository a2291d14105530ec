"""Datasets and loaders: ImageNet-style folders through timm, scikit-learn's digits, fake images.

``build_loaders(cfg, dist_info)`` returns train/val loaders whose samplers shard across ranks,
reshuffle per epoch from ``(seed, epoch)``, and can start mid-epoch (for resuming). Evaluation
shards are not padded, so distributed evaluation counts every sample exactly once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from engine.data.samplers import ResumableSampler
from engine.distributed import DistInfo
from engine.errors import ConfigError, InputError

__all__ = [
    "BUILTIN_KINDS",
    "BUILTIN_TRANSFORMS",
    "DATASETS",
    "Loaders",
    "build_loaders",
    "digits_split",
    "usable_workers",
    "use_compatible_posterize",
]

_logger = logging.getLogger(__name__)

_DIGITS_MEAN = _DIGITS_STD = 0.5  # maps the digits' [0, 1] intensities to [-1, 1]
# How the built-in kinds make their images, in eval.py's transform terms (the data config
# records it for eval.py, which reads exported copies of them from folders; it cannot change it).
BUILTIN_TRANSFORMS: dict[str, dict[str, Any]] = {
    "digits": {
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "mean": [_DIGITS_MEAN] * 3,
        "std": [_DIGITS_STD] * 3,
    },
    "fake": {"interpolation": "bilinear", "crop_pct": 1.0, "mean": [0.0] * 3, "std": [1.0] * 3},
}


class TensorImages(Dataset):
    """Images held in memory as a tensor ``(N, C, H, W)`` with labels ``(N,)``."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


def _random_shift(max_shift: int, fill: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Shift an image by up to ``max_shift`` pixels along each axis; uncovered pixels get
    ``fill`` (the background's value)."""

    def shift(image: torch.Tensor) -> torch.Tensor:
        padded = F.pad(image, (max_shift,) * 4, value=fill)
        dy, dx = torch.randint(0, 2 * max_shift + 1, (2,)).tolist()
        return padded[:, dy : dy + image.shape[1], dx : dx + image.shape[2]]

    return shift


def digits_split(
    labels: torch.Tensor, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed, class-stratified split of the digits' ``labels``: (train_idx, val_idx)."""
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in labels.unique():
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_val = round(len(members) * val_fraction)
        val.append(members[:n_val])
        train.append(members[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def _check_class_count(cfg: Any, classes: int, what: str) -> None:
    """``cfg.num_classes`` (the model's outputs) covers the dataset's labels."""
    if cfg.num_classes < classes:
        raise ConfigError(
            f"data.num_classes={cfg.num_classes} is invalid: {what} has {classes} classes; "
            f"expected at least {classes}"
        )


def _class_names(dataset: Dataset) -> list[str] | None:
    """A folder dataset's class folder names in label order (``None`` for other datasets)."""
    reader = getattr(dataset, "reader", None)
    mapping = getattr(reader, "class_to_idx", None)
    return None if mapping is None else sorted(mapping, key=mapping.get)


def _check_same_classes(cfg: Any, train_set: Dataset, val_set: Dataset) -> None:
    """Each split labels its class folders in its own sorted order: they must hold the same
    classes, or every validation label after the first difference would be another class."""
    train_classes, val_classes = _class_names(train_set), _class_names(val_set)
    if train_classes is None or val_classes is None or train_classes == val_classes:
        return

    def some(names: set[str]) -> str:
        shown = sorted(names)[:5]
        return ", ".join(shown) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")

    only_train, only_val = (
        set(train_classes) - set(val_classes),
        set(val_classes) - set(train_classes),
    )
    differences = [
        f"only in {cfg.train_split}/: {some(only_train)}" if only_train else "",
        f"only in {cfg.val_split}/: {some(only_val)}" if only_val else "",
    ]
    raise InputError(
        f"data.root={str(cfg.root)!r}: its {cfg.train_split}/ and {cfg.val_split}/ folders hold "
        f"different classes ({'; '.join(d for d in differences if d)}), so the labels of the two "
        "splits would not match; give both the same class folders"
    )


def _digits(cfg: Any, split: str) -> Dataset:
    """scikit-learn's 8x8 digits (shipped in its package), upscaled to ``cfg.image_size``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=cfg.image_size, mode="bilinear", align_corners=False)
    images = ((images - _DIGITS_MEAN) / _DIGITS_STD).expand(-1, 3, -1, -1).contiguous()
    labels = torch.as_tensor(digits.target)
    _check_class_count(cfg, len(digits.target_names), "the digits dataset")
    train_idx, val_idx = digits_split(labels, cfg.val_fraction, cfg.split_seed)
    idx = train_idx if split == "train" else val_idx
    background = (0.0 - _DIGITS_MEAN) / _DIGITS_STD  # the digits' blank ink, normalised
    use_shift = split == "train" and cfg.max_shift > 0
    shift = _random_shift(cfg.max_shift, background) if use_shift else None
    return TensorImages(images[idx], labels[idx], shift)


def _fake(cfg: Any, split: str) -> Dataset:
    """Deterministic random images (torchvision's FakeData), for tests and smoke runs."""
    from torchvision.datasets import FakeData
    from torchvision.transforms import v2

    size = cfg.train_size if split == "train" else cfg.val_size
    transform = v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)])
    return FakeData(
        size,
        (3, cfg.image_size, cfg.image_size),
        cfg.num_classes,
        transform,
        random_offset=0 if split == "train" else cfg.train_size,
    )


def _posterize(img: Any, bits_to_keep: int, **_: Any) -> Any:
    """timm's ``posterize`` for every Pillow: 0 bits gives the black image older Pillows returned.

    RandAugment's ``PosterizeIncreasing`` asks for ``4 - int(magnitude / 10 * 4)`` bits, i.e. 0 at
    magnitude 10, which ``rand-m9-mstd0.5-inc1`` samples; Pillow 13's ``ImageOps.posterize``
    raises ``ValueError`` for 0 bits, which would stop an ImageNet run in its first epoch.
    """
    from PIL import ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point(lambda _: 0)
    return ImageOps.posterize(img, bits_to_keep)


def use_compatible_posterize() -> None:
    """Make timm's RandAugment/AutoAugment posterize ops accept 0 bits (see :func:`_posterize`).

    timm binds an op's function from ``NAME_TO_OP`` when the op is built, so this runs before the
    transforms are created.
    """
    from timm.data import auto_augment

    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        auto_augment.NAME_TO_OP[name] = _posterize


def _folder(cfg: Any, split: str) -> Dataset:
    """An ImageNet-style folder (``root/<split>/<class>/*.JPEG``) with timm's transforms; unreadable
    images are skipped or fail the run (``cfg.on_bad_image``)."""
    from timm.data import create_transform

    from engine.data.image_folder import CheckedImageFolder, check_image_folder

    root = Path(cfg.root)
    split_dir = root / (cfg.train_split if split == "train" else cfg.val_split)
    check_image_folder(
        split_dir,
        f"an ImageNet-style folder {root}/{{{cfg.train_split},{cfg.val_split}}}/<class name>/"
        "<image files>",
    )
    use_compatible_posterize()
    training = split == "train"
    # Training-only keys are not read for the validation split, so that eval.py sets=[val] also
    # rebuilds it from the data config of a checkpoint written before a key existed.
    augmentation = (
        dict(
            auto_augment=cfg.auto_augment,
            color_jitter=cfg.color_jitter,
            re_prob=cfg.re_prob,
            re_mode=cfg.re_mode,
            re_count=cfg.re_count,
        )
        if training
        else {}
    )
    transform = create_transform(
        cfg.image_size,
        is_training=training,
        **augmentation,
        interpolation=cfg.interpolation,
        crop_pct=cfg.crop_pct,
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
    )
    dataset = CheckedImageFolder(str(split_dir), cfg.on_bad_image, transform=transform)
    _check_class_count(cfg, len(dataset.reader.class_to_idx), str(split_dir))
    return dataset


DATASETS: dict[str, Callable[[Any, str], Dataset]] = {
    "digits": _digits,
    "fake": _fake,
    "folder": _folder,
}
BUILTIN_KINDS = ("digits", "fake")  # made in memory: no folder to evaluate them from


def usable_workers(requested: int) -> int:
    """``requested`` loader workers, at most one per CPU this process may run on (more only
    contend, and PyTorch warns about them); logs when it lowers the number."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    usable = min(requested, cpus or 1)
    if usable < requested:
        _logger.info(
            "num_workers=%d lowered to %d: this process has %d CPUs", requested, usable, cpus
        )
    return usable


@dataclass
class Loaders:
    """Train and validation loaders with the samplers that drive them.

    Attributes:
        classes: a folder dataset's class folder names in label order (``None`` for the
            datasets made in memory); checkpoints keep them, so that ``eval.py`` can tell whether
            the labels are ImageNet-1k's.
    """

    train: DataLoader
    val: DataLoader
    train_sampler: ResumableSampler
    steps_per_epoch: int
    classes: list[str] | None = None


def _loader_generator(seed: int, rank: int, loader: int) -> torch.Generator:
    """A loader's own RNG (its workers' base seeds), independent per run seed, rank and loader."""
    (derived,) = np.random.SeedSequence([seed, rank, loader]).generate_state(1)
    return torch.Generator().manual_seed(int(derived))


def build_loaders(cfg: Any, dist_info: DistInfo, seed: int) -> Loaders:
    """Build both loaders from the ``data`` config group.

    ``cfg.batch_size`` is per process; the effective batch is
    ``batch_size * world_size * trainer.update_freq``.

    Raises:
        ConfigError: on an unknown ``cfg.kind`` or a dataset smaller than one batch per rank.
    """
    if cfg.kind not in DATASETS:
        raise ConfigError(f"data.kind={cfg.kind!r} is invalid: expected one of {sorted(DATASETS)}")
    train_set, val_set = DATASETS[cfg.kind](cfg, "train"), DATASETS[cfg.kind](cfg, "val")
    _check_same_classes(cfg, train_set, val_set)
    rank, world = dist_info.rank, dist_info.world_size
    train_sampler = ResumableSampler(len(train_set), rank, world, shuffle=True, seed=seed)
    val_sampler = ResumableSampler(len(val_set), rank, world, shuffle=False, pad=False)
    steps = len(train_sampler) // cfg.batch_size
    if steps < 1:
        raise ConfigError(
            f"data.batch_size={cfg.batch_size} is invalid: it exceeds the {len(train_sampler)} "
            f"training images of each of the {world} processes"
        )
    workers = usable_workers(cfg.num_workers)
    common = {
        "num_workers": workers,
        "pin_memory": dist_info.device.type == "cuda",
        "persistent_workers": workers > 0,
    }
    # Each loader draws its workers' base seed from its own generator, at every `iter`: from the
    # global RNG, a resumed run's extra `iter` would shift every later draw of the model's
    # (drop path) and the main process's augmentations, and the run off its trajectory. One
    # stream per rank, so that the ranks' workers augment differently.
    train = DataLoader(
        train_set, cfg.batch_size, sampler=train_sampler, drop_last=True,
        generator=_loader_generator(seed, rank, 0), **common,
    )  # fmt: skip
    val = DataLoader(
        val_set, cfg.eval_batch_size, sampler=val_sampler,
        generator=_loader_generator(seed, rank, 1), **common,
    )  # fmt: skip
    _logger.info(
        "data %s: %d train / %d val images, %d steps per epoch per process",
        cfg.kind,
        len(train_set),
        len(val_set),
        steps,
    )
    return Loaders(train, val, train_sampler, steps, _class_names(train_set))
