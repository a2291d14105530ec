"""Unreadable images in an image folder: skipped (logged with the path, counted) or fatal."""

import logging
from pathlib import Path

import pytest
import torch
from PIL import Image
from timm.data import ImageNetInfo

from engine.data.datasets import build_loaders
from engine.data.image_folder import BadImageError
from engine.distributed import DistInfo
from tests.conftest import compose_train

CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def _folder_with_a_truncated_jpeg(root: Path) -> Path:
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (48, 40), (i * 60, 90, 30)).save(root / split / c / f"{i}.JPEG")
    bad = root / "train" / "b" / "1.JPEG"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    return bad


def _cfg(tmp_path: Path, policy: str):
    cfg = compose_train(tmp_path, ["experiment=convnext_tiny_dcls_in1k"])
    cfg.data.root, cfg.data.on_bad_image = str(tmp_path / "imagenet"), policy
    cfg.data.batch_size, cfg.data.image_size = 2, 32
    cfg.data.auto_augment = None  # about files, not augmentation
    return cfg


def test_truncated_image_is_skipped_logged_with_its_path_and_counted(tmp_path, caplog):
    bad = _folder_with_a_truncated_jpeg(tmp_path / "imagenet")
    loaders = build_loaders(_cfg(tmp_path, "skip").data, CPU, 0)
    with caplog.at_level(logging.WARNING):
        batches = list(loaders.train)
    assert len(batches) == 3 and all(images.shape[0] == 2 for images, _ in batches)
    assert loaders.train.dataset.bad_images == [str(bad)]
    assert any(str(bad) in r.message and "1 skipped" in r.message for r in caplog.records)


def test_truncated_image_fails_the_run_when_asked(tmp_path):
    bad = _folder_with_a_truncated_jpeg(tmp_path / "imagenet")
    loaders = build_loaders(_cfg(tmp_path, "fail").data, CPU, 0)
    with pytest.raises(BadImageError, match=rf"cannot read {bad} \(data.on_bad_image=fail"):
        list(loaders.train)


def test_class_folders_without_images_fail_at_start_up(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "imagenet" / split / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"imagenet/train is missing or empty; expected .*<class"):
        build_loaders(_cfg(tmp_path, "skip").data, CPU, 0)


def test_labels_come_from_the_sorted_class_folder_names(tmp_path):
    """Folders created out of order: each image's label is its folder's rank among the sorted
    names (ImageNet's class index when the folders are its 1000 WNIDs), in both splits."""
    wnids = ["n04589890", "n01440764", "n02102040", "n01443537"]  # creation order
    for split in ("train", "val"):
        for code, wnid in enumerate(wnids):
            (tmp_path / "imagenet" / split / wnid).mkdir(parents=True)
            Image.new("RGB", (40, 40), (code * 60, 0, 0)).save(
                tmp_path / "imagenet" / split / wnid / f"{code}.JPEG"
            )
    cfg = _cfg(tmp_path, "fail")
    loaders = build_loaders(cfg.data, CPU, 0)
    expected = {wnid: sorted(wnids).index(wnid) for wnid in wnids}
    for dataset in (loaders.train.dataset, loaders.val.dataset):
        labels = {
            Path(dataset.filename(i, absolute=True)).parent.name: dataset[i][1]
            for i in range(len(dataset))
        }
        assert labels == expected
    # with all 1000 WNID folders, the sorted ranks are timm's ImageNet class indices (eval.py's)
    names = list(ImageNetInfo().label_names())
    assert len(names) == 1000 and names == sorted(names)
