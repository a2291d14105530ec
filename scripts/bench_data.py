"""How many loader workers the ImageNet recipe needs to feed a GPU: images/s of one worker.

Writes ``--images`` synthetic JPEGs of ImageNet's typical size (500x375, quality 90) to a temporary
ImageNet-style folder, then times ``data=imagenet``'s training pipeline exactly as ``train.py``
builds it (``engine.data.datasets``: decode, RandomResizedCrop 224 bicubic, flip, RandAugment
rand-m9-mstd0.5-inc1, normalise, random erasing) in this one process, and the loader with
``--workers`` processes. Prints images/s and the workers a target rate needs at that speed.

    python scripts/bench_data.py --images 256 --workers 2 --target 3000
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

from engine.config import cli_number, run_entry_point
from engine.data.datasets import DATASETS

_logger = logging.getLogger("bench_data")

IMAGE_SIZE = (500, 375)  # ImageNet-1k's most common size
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "data" / "imagenet.yaml"


def write_folder(root: Path, count: int, seed: int = 0) -> None:
    """``count`` JPEGs of smooth random content in ``root/{train,val}/n01440764/``."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        folder = root / split / "n01440764"
        folder.mkdir(parents=True)
        for index in range(count if split == "train" else 1):
            low = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            image = Image.fromarray(low).resize(IMAGE_SIZE, Image.BICUBIC)
            image.save(folder / f"{index:05d}.JPEG", quality=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=cli_number(), default=256)
    parser.add_argument(
        "--workers", type=cli_number(int, 0), default=2, help="loader processes to time"
    )
    parser.add_argument("--batch", type=cli_number(), default=64)
    parser.add_argument(
        "--target", type=cli_number(float, 0, strict=True), default=3000.0, help="images/s to feed"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)  # as in a loader worker
    with tempfile.TemporaryDirectory() as tmp:
        write_folder(Path(tmp), args.images)
        cfg = OmegaConf.load(CONFIG)
        cfg.root = tmp
        dataset = DATASETS["folder"](cfg, "train")
        dataset[0]  # warm-up: imports, first decode
        start = time.perf_counter()
        for index in range(len(dataset)):
            dataset[index]
        one = len(dataset) / (time.perf_counter() - start)
        loader = DataLoader(dataset, args.batch, num_workers=args.workers, shuffle=True)
        start, seen = time.perf_counter(), 0
        for images, _ in loader:
            seen += len(images)
        many = seen / (time.perf_counter() - start)
    needed = math.ceil(args.target / one)
    sys.stdout.write(
        f"| pipeline | images/s | workers for {args.target:.0f} img/s |\n|---|---|---|\n"
        f"| one process (data=imagenet train transform) | {one:.1f} | {needed} |\n"
        f"| DataLoader, {args.workers} workers (incl. start-up) | {many:.1f} | - |\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main, _logger))
