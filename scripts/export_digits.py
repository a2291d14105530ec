"""Write the embedded default's validation digits as ImageNet-style evaluation folders.

    python scripts/export_digits.py OUT_DIR [--imagenet-c]

``OUT_DIR/val/<wnid>/<n>.png``: the 359 held-out digits of ``data=digits`` (same split, 32x32),
digit ``d`` filed under ImageNet's ``d``-th wnid, so that ``eval.py`` can score a model trained by
the embedded default without any download. With ``--imagenet-c``, also
``OUT_DIR/imagenet-c/<corruption>/<severity>/<wnid>/<n>.png`` for the 19 ImageNet-C corruptions
x 5 severities, made with the ``imagecorruptions`` library. Evaluate them (the digits' transform
comes from the checkpoint's training config):

    python eval.py checkpoint=logs/train/<run>/checkpoints/last.pt sets=[in1k,in_c] \\
        roots.in1k=OUT_DIR/val roots.in_c=OUT_DIR/imagenet-c
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from timm.data import ImageNetInfo

from engine.config import InputError, run_entry_point
from engine.data.datasets import DATASETS
from engine.evaluation.corruptions import CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES, CorruptImage

_logger = logging.getLogger("export_digits")


def digits_val_images(image_size: int = 32, val_fraction: float = 0.2, seed: int = 0) -> list:
    """``[(PIL image, digit)]`` of the default's validation split, as ``data=digits`` makes it."""
    config = argparse.Namespace(
        image_size=image_size, val_fraction=val_fraction, split_seed=seed, max_shift=0,
        num_classes=10,
    )  # fmt: skip
    dataset = DATASETS["digits"](config, "val")
    out = []
    for index in range(len(dataset)):
        image, label = dataset[index]
        pixels = ((image.permute(1, 2, 0).numpy() * 0.5 + 0.5) * 255).round().clip(0, 255)
        out.append((Image.fromarray(pixels.astype(np.uint8)), int(label)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--imagenet-c", action="store_true", help="also write the corrupted tree")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random corruptions")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"out={str(args.out)!r} is invalid: it is a file; expected a folder")
    wnids = ImageNetInfo().label_names()
    images = digits_val_images()
    trees = {args.out / "val": None}
    if args.imagenet_c:
        for corruption in CORRUPTIONS + EXTRA_CORRUPTIONS:
            for severity in SEVERITIES:
                folder = args.out / "imagenet-c" / corruption / str(severity)
                trees[folder] = CorruptImage(corruption, severity, args.seed)
    for folder, corrupt in trees.items():
        for index, (image, digit) in enumerate(images):
            path = folder / wnids[digit] / f"{index:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            (image if corrupt is None else corrupt(image)).save(path)
    _logger.info(
        "%d images under %s: the %d digits in val/%s",
        len(trees) * len(images),
        args.out,
        len(images),
        f" and in {len(trees) - 1} imagenet-c/ folders" if len(trees) > 1 else "",
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main, _logger))
