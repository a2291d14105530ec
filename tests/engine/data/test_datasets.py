"""engine.data.datasets: timm's RandAugment in the ImageNet recipe survives Pillow 13's posterize
check."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.auto_augment import AugmentOp, RandAugment

from engine.data.datasets import build_loaders, digits_split, use_compatible_posterize
from engine.distributed import DistInfo
from tests.conftest import compose_train

CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def _photo() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(1, 256, (24, 20, 3), dtype=np.uint8))


def test_posterize_increasing_at_magnitude_10_keeps_0_bits_a_black_image():
    use_compatible_posterize()
    op = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)  # 4 - int(10 / 10 * 4) bits
    assert not np.asarray(op(_photo())).any()
    kept = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=5)(_photo())  # 2 bits kept
    assert np.array_equal(np.asarray(kept), np.asarray(_photo()) & 0b11000000)


def test_the_imagenet_recipe_transform_uses_it(tmp_path: Path):
    root = tmp_path / "imagenet"
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            _photo().save(root / split / c / "0.png")
    cfg = compose_train(tmp_path, ["experiment=convnext_tiny_dcls_in1k"])
    assert "inc1" in cfg.data.auto_augment  # the recipe's RandAugment asks for up to 0 bits
    cfg.data.root, cfg.data.batch_size, cfg.data.image_size = str(root), 2, 32
    transform = build_loaders(cfg.data, CPU, 0).train.dataset.transform
    rand_augment = next(t for t in transform.transforms if isinstance(t, RandAugment))
    posterize = next(op for op in rand_augment.ops if op.name == "PosterizeIncreasing")
    posterize.prob, posterize.magnitude, posterize.magnitude_std = 1.0, 10, 0
    assert not np.asarray(posterize(_photo())).any()


def _imagenet_like(tmp_path: Path) -> Path:
    root = tmp_path / "imagenet"
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            _photo().save(root / split / c / "0.png")
    return root


def test_the_imagenet_recipe_erases_with_per_pixel_noise(tmp_path: Path):
    """--reprob 0.25 --remode pixel --recount 1 (ConvNeXt-dcls main.py L115-119)."""
    from timm.data.random_erasing import RandomErasing

    cfg = compose_train(tmp_path, ["experiment=convnext_tiny_dcls_in1k"])
    cfg.data.root, cfg.data.batch_size, cfg.data.image_size = str(_imagenet_like(tmp_path)), 2, 32
    loaders = build_loaders(cfg.data, CPU, 0)
    erasing = [
        t for t in loaders.train.dataset.transform.transforms if isinstance(t, RandomErasing)
    ]
    assert len(erasing) == 1
    assert (erasing[0].probability, erasing[0].mode, erasing[0].max_count) == (0.25, "pixel", 1)
    assert not any(isinstance(t, RandomErasing) for t in loaders.val.dataset.transform.transforms)


def test_the_validation_split_needs_no_training_only_key(tmp_path: Path):
    """eval.py sets=[val] rebuilds the split from a checkpoint's data config, which may predate
    the augmentation keys."""
    from omegaconf import OmegaConf

    from engine.data.datasets import DATASETS

    cfg = compose_train(tmp_path, ["experiment=convnext_tiny_dcls_in1k"])
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data |= {"root": str(_imagenet_like(tmp_path)), "image_size": 32}
    for key in ("auto_augment", "color_jitter", "re_prob", "re_mode", "re_count"):
        del data[key]
    assert len(DATASETS["folder"](OmegaConf.create(data), "val")) == 2


def test_the_digits_split_is_disjoint_complete_and_stratified():
    from sklearn.datasets import load_digits

    labels = torch.as_tensor(load_digits().target)
    train, val = digits_split(labels, 0.2, seed=0)
    assert not set(train.tolist()) & set(val.tolist())  # no validation digit is trained on
    assert sorted(train.tolist() + val.tolist()) == list(range(len(labels)))  # 1797 in all
    for digit in range(10):  # each class splits 80/20 on its own
        count = int((labels == digit).sum())
        assert int((labels[val] == digit).sum()) == round(0.2 * count)
    other_train, _ = digits_split(labels, 0.2, seed=1)
    assert not torch.equal(train, other_train)  # the seed chooses the validation digits
    assert torch.equal(digits_split(labels, 0.2, seed=0)[0], train)  # and fixes them


def test_the_digits_loaders_hold_the_split(tmp_path: Path):
    from sklearn.datasets import load_digits

    labels = torch.as_tensor(load_digits().target)
    counts = [int((labels == d).sum()) for d in range(10)]
    expected_val = sum(round(0.2 * c) for c in counts)  # 359 with scikit-learn's class counts
    cfg = compose_train(tmp_path, ["data=digits", "data.val_fraction=0.2"])
    loaders = build_loaders(cfg.data, CPU, 0)
    assert len(loaders.val.dataset) == expected_val
    assert len(loaders.train.dataset) == len(labels) - expected_val


def test_starting_an_epoch_leaves_the_global_rng_alone(tmp_path: Path):
    # A resumed run starts its loaders once more than the run it continues: a draw from the
    # global RNG there would shift the model's drop path and the main process's augmentations.
    cfg = compose_train(tmp_path, ["data=fake"])
    loaders = build_loaders(cfg.data, CPU, 0)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    iter(loaders.train), iter(loaders.val)
    assert torch.equal(torch.get_rng_state(), state)


def test_each_rank_seeds_its_loader_workers_differently(tmp_path: Path):
    # The same base seed on every rank would give every rank's workers the same augmentations.
    cfg = compose_train(tmp_path, ["data=fake"])

    def base_seeds(rank: int) -> tuple[int, int]:
        loaders = build_loaders(cfg.data, DistInfo(rank, 2, rank, torch.device("cpu")), 0)
        return iter(loaders.train)._base_seed, iter(loaders.val)._base_seed

    assert base_seeds(0) == base_seeds(0)  # reproducible
    assert len({*base_seeds(0), *base_seeds(1)}) == 4


def test_fewer_classes_than_the_dataset_has_are_refused(tmp_path: Path):
    # The model's num_classes outputs must cover the labels ("Target 9 is out of bounds" before).
    from omegaconf import OmegaConf

    from engine.config import ConfigError
    from engine.data.datasets import DATASETS

    cfg = compose_train(tmp_path, ["data.num_classes=5"])
    with pytest.raises(ConfigError, match=r"num_classes=5 is invalid: the digits dataset has"):
        DATASETS["digits"](cfg.data, "train")
    folder = compose_train(tmp_path, ["experiment=convnext_tiny_dcls_in1k", "data.num_classes=1"])
    data = OmegaConf.to_container(folder.data, resolve=True)
    data |= {"root": str(_imagenet_like(tmp_path)), "image_size": 32}
    with pytest.raises(ConfigError, match=r"data\.num_classes=1 is invalid: .*val has 2 classes"):
        DATASETS["folder"](OmegaConf.create(data), "val")


def test_splits_with_different_class_folders_are_refused_naming_them(tmp_path: Path):
    # (each split labels its folders in its own sorted order: a val/ without class "a" gave its
    # "b" images label 0, and the run reported a wrong top-1 every epoch without a word)
    from engine.config import InputError

    cfg = compose_train(tmp_path, ["experiment=convnext_tiny_dcls_in1k"])
    root = _imagenet_like(tmp_path)
    cfg.data.root, cfg.data.batch_size, cfg.data.image_size = str(root), 2, 32
    (root / "val" / "a" / "0.png").unlink()
    (root / "val" / "a").rmdir()
    (root / "val" / "c").mkdir()
    _photo().save(root / "val" / "c" / "0.png")
    with pytest.raises(
        InputError,
        match=r"its train/ and val/ folders hold different classes \(only in train/: a; only in "
        r"val/: c\), so the labels of the two splits would not match",
    ):
        build_loaders(cfg.data, CPU, 0)
