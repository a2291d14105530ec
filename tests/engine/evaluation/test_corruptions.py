"""CE and mCE normalisation by AlexNet's published errors."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from engine.evaluation.corruptions import (
    ALEXNET_ERRORS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    SEVERITIES,
    corruption_summary,
    imagenet_c_transform,
)


def test_errors_equal_to_alexnets_give_an_mce_of_exactly_100():
    errors = {c: {s: 100 * ALEXNET_ERRORS[c] for s in SEVERITIES} for c in CORRUPTIONS}
    summary = corruption_summary(errors)
    assert summary["mce"] == 100.0
    assert all(ce == pytest.approx(100.0, abs=1e-12) for ce in summary["ce"].values())


def test_ce_is_the_ratio_of_summed_errors():
    errors = {c: {s: 10.0 * s for s in SEVERITIES} for c in CORRUPTIONS}  # sum 150 -> mean 30
    summary = corruption_summary(errors)
    for corruption in CORRUPTIONS:
        assert summary["ce"][corruption] == pytest.approx(30.0 / ALEXNET_ERRORS[corruption])
        assert summary["mean_errors"][corruption] == pytest.approx(30.0)
    expected = sum(30.0 / ALEXNET_ERRORS[c] for c in CORRUPTIONS) / 15
    assert summary["mce"] == pytest.approx(expected)


def test_incomplete_severities_or_unknown_corruptions_have_no_mce():
    partial = corruption_summary({"fog": {1: 20.0, 2: 30.0}})
    assert partial["ce"] == {} and partial["mce"] is None and partial["mean_error"] == 25.0
    unknown = corruption_summary({"rain": {s: 20.0 for s in SEVERITIES}})
    assert unknown["mce"] is None


def test_the_tables_hold_15_benchmark_and_4_extra_corruptions():
    assert len(CORRUPTIONS) == 15 and len(EXTRA_CORRUPTIONS) == 4
    assert set(ALEXNET_ERRORS) == set(CORRUPTIONS) | set(EXTRA_CORRUPTIONS)
    # AlexNet's published errors per severity 1-5 (Hendrycks & Dietterich's README, "AlexNet
    # ImageNet-C Error"): the normaliser of each corruption is their mean
    for name, errors in PUBLISHED_ALEXNET_SEVERITY_ERRORS.items():
        assert ALEXNET_ERRORS[name] == pytest.approx(sum(errors) / 5, abs=1e-6), name
    assert set(PUBLISHED_ALEXNET_SEVERITY_ERRORS) == set(ALEXNET_ERRORS)


PUBLISHED_ALEXNET_SEVERITY_ERRORS = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.94870, 0.98720, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.58430, 0.70048, 0.82108, 0.89750, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.91870, 0.94952),
    "frost": (0.61390, 0.79734, 0.88790, 0.89942, 0.93430),
    "fog": (0.67474, 0.76050, 0.84378, 0.87260, 0.94500),
    "brightness": (0.45140, 0.48502, 0.54048, 0.62166, 0.72440),
    "contrast": (0.64548, 0.76150, 0.88874, 0.97760, 0.99270),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.54620, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
    "speckle_noise": (0.66192, 0.74440, 0.90246, 0.94548, 0.97268),
    "gaussian_blur": (0.54732, 0.70444, 0.82574, 0.89864, 0.95940),
    "spatter": (0.47196, 0.62194, 0.75052, 0.84132, 0.90182),
    "saturate": (0.59342, 0.65514, 0.51174, 0.70834, 0.82260),
}


def test_a_summary_over_all_19_corruptions_has_no_mce():
    """The unnormalised 19-corruption average of hendrycks/robustness's test.py is not mCE."""
    errors = {c: {s: 100 * ALEXNET_ERRORS[c] for s in SEVERITIES} for c in CORRUPTIONS}
    errors |= {c: {s: 50 * ALEXNET_ERRORS[c] for s in SEVERITIES} for c in EXTRA_CORRUPTIONS}
    summary = corruption_summary(errors)
    assert summary["mce"] is None
    assert len(summary["ce"]) == 19 and len(summary["mean_errors"]) == 19


class _Folder(tuple):
    """Stands for a corrupted folder of all 1000 classes."""

    class_count = 1000


class _AlexNetLikeContext:
    """Top-1 such that every benchmark corruption has a CE of 100 and every extra one 50."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def accuracy(self, dataset: tuple[str, int]) -> dict[str, float]:
        corruption, _ = dataset
        self.seen.append(dataset)
        scale = 100 if corruption in CORRUPTIONS else 50
        return {"top1": 100 - scale * ALEXNET_ERRORS[corruption]}


def test_corrupt_set_gives_mce_over_the_15_and_the_4_extra_apart(tmp_path, monkeypatch):
    """eval.py sets=[corrupt]: ``corrupt`` holds the 15 benchmark corruptions and their mCE,
    ``corrupt_extra`` the 4 held-out ones, with no mCE (issue row 8)."""
    from engine.evaluation import sets
    from tests.eval_helpers import compose_eval

    cfg = compose_eval(tmp_path, ["checkpoint=unused.pt", "sets=[corrupt]"])
    monkeypatch.setattr(
        sets, "corrupted_folder", lambda root, transform, seed, size: lambda c, s: _Folder((c, s))
    )
    context = _AlexNetLikeContext()
    loaded = SimpleNamespace(model=torch.nn.Identity(), classes=None)  # (no labels to check)
    job = sets.EvalJob(cfg=cfg, loaded=loaded, context=context, transform=None, resolution=224)
    results = sets.run_sets(job, ["corrupt"])
    assert set(results) == {"corrupt", "corrupt_extra"}
    benchmark, extra = results["corrupt"], results["corrupt_extra"]
    assert set(benchmark["ce"]) == set(CORRUPTIONS) and len(CORRUPTIONS) == 15
    assert benchmark["mce"] == pytest.approx(100.0)  # (15 x 100 + 4 x 50) / 19 if all were in
    assert set(extra["ce"]) == set(EXTRA_CORRUPTIONS) and extra["mce"] is None
    assert extra["ce"] == pytest.approx(dict.fromkeys(EXTRA_CORRUPTIONS, 50.0))
    assert len(context.seen) == 19 * len(SEVERITIES)


def test_imagenet_c_files_skip_the_resize_and_crop_they_already_had():
    """ImageNet-C's 224x224 files, as Hendrycks' test.py reads them: tensor and normalise only
    (timm's eval transform would resize them to 256 and crop 224 again, a 1.14x zoom)."""
    import timm
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config({}, model=timm.create_model("test_convnext"))
    config["input_size"] = (3, 224, 224)
    transform = create_transform(**config, is_training=False)
    pixels = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    expected = T.Normalize(config["mean"], config["std"])(T.ToTensor()(image))
    torch.testing.assert_close(imagenet_c_transform(transform, 224)(image), expected)
    assert not torch.allclose(transform(image), expected)  # the double resize changes it
    bigger = imagenet_c_transform(transform, 288)(image)  # a model taking 288 x 288 inputs
    assert bigger.shape == (3, 288, 288)
