"""A classifier whose predictions are known, and tiny evaluation sets in their real layouts.

Each test image is one solid colour that encodes the class the stub will predict first:
``red = 8 * (c // 32) + 4``, ``green = 8 * (c % 32) + 4`` (bin centres, so JPEG's +-2 levels on
flat colour cannot move a code). ``LabelReader`` decodes the colour and returns the logits
``-((j - c - offset) mod 1000)``: class ``c + offset`` first, then ``c + offset + 1``, ... So
top-k, and the best class inside a 200-class subset, can be computed by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, ImageNetInfo
from torch import nn

from engine.evaluation import run as eval_run

NUM_CLASSES = 1000
WNIDS = ImageNetInfo().label_names()
ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(ROOT / "configs")
IMG = 16  # evaluation resolution of the stub sets


def compose_eval(tmp_path: Path, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="eval", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.device = "cpu"
        cfg.num_workers = 0
        cfg.transform.img_size = cfg.transform.img_size or IMG
    return cfg


def run_eval(tmp_path: Path, overrides: list[str], run: str = "run") -> dict:
    cfg = compose_eval(tmp_path, overrides)
    return eval_run.evaluate_checkpoint(cfg, run_dir=tmp_path / run)


def expected_accuracy(samples, offset=0, subset=None, label_of=None) -> tuple[float, float]:
    """Top-1/top-5 in percent, by hand: ``samples`` are ``(folder, code)``."""
    top1 = top5 = 0
    for folder, code in samples:
        label = label_of(folder)
        predicted = ranked(code, offset, subset)
        top1 += predicted[0] == label
        top5 += label in predicted
    return 100 * top1 / len(samples), 100 * top5 / len(samples)


def in1k_samples() -> list[tuple[str, int]]:
    """Correct, top-5-only and wrong predictions; 7 images (odd, for the 2-rank test)."""
    index = {w: i for i, w in enumerate(WNIDS)}
    a, b, c = WNIDS[3], WNIDS[500], WNIDS[999]
    return [
        (a, index[a]),  # right
        (a, index[a] - 2),  # label is the 3rd guess
        (b, index[b]),
        (b, index[b] + 1),  # label is never ranked (it would be the 1000th)
        (b, 17),  # wrong
        (c, index[c] - 4),  # 5th guess
        (c, index[c] - 5),  # 6th guess: outside the top-5
    ]


def colour_of(code: int) -> tuple[int, int, int]:
    return 8 * (code // 32) + 4, 8 * (code % 32) + 4, 128


class LabelReader(nn.Module):
    """Reads the code of a solid-colour image and ranks the classes from it.

    Args:
        offset: added to the decoded code (two "models" that disagree by ``offset``).
    """

    def __init__(self, offset: int = 0, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.num_classes, self.offset = num_classes, offset
        self.register_buffer("mean", torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1))
        self.scale = nn.Parameter(torch.ones(()))  # something to save and load

    def codes(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` normalised images -> ``(N,)`` decoded codes."""
        pixels = (images * self.std + self.mean).mean(dim=(2, 3)) * 255
        red, green = (pixels[:, 0] // 8).long(), (pixels[:, 1] // 8).long()
        return 32 * red + green

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        first = self.codes(images.float()) + self.offset
        classes = torch.arange(self.num_classes, device=images.device)
        rank = (classes[None, :] - first[:, None]) % self.num_classes
        return -rank.float() * self.scale


def ranked(code: int, offset: int = 0, subset: Sequence[int] | None = None, k: int = 5) -> list:
    """What ``LabelReader(offset)`` ranks first for ``code``, restricted to ``subset``
    (returned as positions in ``subset``), computed by walking the classes by hand."""
    out, j = [], code + offset
    while len(out) < k:
        cls = j % NUM_CLASSES
        if subset is None:
            out.append(cls)
        elif cls in subset:
            out.append(list(subset).index(cls))
        j += 1
    return out


def write_image(path: Path, code: int, size: int = 20) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (size, size), colour_of(code))
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, format="JPEG", quality=95)
    else:
        image.save(path)


def write_folder(
    root: Path, samples: Iterable[tuple[str, int]], suffix: str = ".JPEG", size: int = 20
) -> None:
    """``root/<folder>/<i><suffix>``, ``size`` x ``size`` pixels, for each ``(folder, code)``."""
    for i, (folder, code) in enumerate(samples):
        write_image(root / folder / f"{i:04d}{suffix}", code, size)


def save_stub_checkpoint(
    path: Path, offset: int = 0, num_classes: int = NUM_CLASSES, classes: list[str] | None = None
) -> Path:
    """A checkpoint in train.py's format whose config rebuilds ``LabelReader(offset)``; with
    ``classes``, the class folders it was "trained" on."""
    model = LabelReader(offset, num_classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    target = {"_target_": f"{__name__}.LabelReader", "offset": offset, "num_classes": num_classes}
    torch.save(
        {
            "model": model.state_dict(),
            "ema": None,
            "config": {"model": target},
            "classes": classes,
        },
        path,
    )
    return path
