"""eval.py on tiny sets in each set's real folder layout, scored by a classifier whose
predictions are known (tests/eval_helpers.py), against values computed by hand here."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import dcls
from engine.checkpoint.models import CheckpointMismatchError
from engine.config import ConfigError, InputError
from engine.data.eval_sets import imagenet_subset_indices
from engine.evaluation import run as eval_run
from engine.evaluation.corruptions import (
    ALEXNET_ERRORS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    SEVERITIES,
)
from tests.eval_helpers import (
    IMG,
    ROOT,
    WNIDS,
    LabelReader,
    colour_of,
    compose_eval,
    expected_accuracy,
    in1k_samples,
    ranked,
    run_eval,
    save_stub_checkpoint,
    write_folder,
    write_image,
)


@pytest.fixture
def stub_checkpoint(tmp_path: Path) -> Path:
    return save_stub_checkpoint(tmp_path / "stub" / "last.pt", offset=0)


def test_imagenet_val_top1_top5_match_hand_computation(tmp_path, stub_checkpoint):
    samples = in1k_samples()
    write_folder(tmp_path / "in1k", samples)
    result = run_eval(
        tmp_path, [f"checkpoint={stub_checkpoint}", f"roots.in1k={tmp_path / 'in1k'}"]
    )
    top1, top5 = expected_accuracy(samples, label_of=WNIDS.index)
    assert (top1, top5) == (pytest.approx(100 * 2 / 7), pytest.approx(100 * 4 / 7))
    assert result["sets"]["in1k"]["top1"] == pytest.approx(top1)
    assert result["sets"]["in1k"]["top5"] == pytest.approx(top5)
    assert result["sets"]["in1k"]["count"] == 7
    saved = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert saved["sets"]["in1k"]["top1"] == pytest.approx(top1)
    assert saved["weights"] == "model" and saved["name"] == "LabelReader [last.pt]"
    assert "released" not in saved


def test_the_authors_released_file_is_reported_against_their_numbers(tmp_path, caplog):
    """eval.py on a file named as the authors' released ConvNeXt-B-dcls EMA weights prints their
    README's top-1/top-5 next to what it measured."""
    samples = in1k_samples()
    write_folder(tmp_path / "in1k", samples)
    released = save_stub_checkpoint(tmp_path / "convnext_dcls_base_1k_224_ema.pth", offset=0)
    with caplog.at_level(logging.INFO):
        result = run_eval(tmp_path, [f"checkpoint={released}", f"roots.in1k={tmp_path / 'in1k'}"])
    top1, top5 = expected_accuracy(samples, label_of=WNIDS.index)
    check = result["released"]
    assert (check["expected_top1"], check["expected_top5"]) == (84.094, 96.958)
    assert check["top1_diff"] == pytest.approx(top1 - 84.094)
    assert check["top5_diff"] == pytest.approx(top5 - 96.958)
    assert "convnext_dcls_base_1k_224_ema.pth is the authors' released file" in caplog.text


def test_imagenet_v2_folders_are_class_numbers_not_sorted_text(tmp_path, stub_checkpoint):
    # sorted as text, "10" < "2" < "999": a positional mapping would mislabel every image
    samples = [("2", 2), ("10", 10), ("999", 999), ("10", 11)]
    write_folder(tmp_path / "v2", samples, suffix=".jpeg")
    result = run_eval(
        tmp_path,
        [f"checkpoint={stub_checkpoint}", "sets=[in_v2]", f"roots.in_v2={tmp_path / 'v2'}"],
    )
    assert result["sets"]["in_v2"]["top1"] == pytest.approx(75.0)
    assert result["sets"]["in_v2"]["top5"] == pytest.approx(75.0)  # 10 is never after 11


def test_imagenet_v2_in_its_older_wnid_folders_reads_the_same_labels(tmp_path, stub_checkpoint):
    # (copies with wnid-named class folders were refused as not class folders)
    samples = [("2", 2), ("10", 10), ("999", 999), ("10", 11)]
    write_folder(tmp_path / "v2", [(WNIDS[int(folder)], code) for folder, code in samples])
    result = run_eval(
        tmp_path,
        [f"checkpoint={stub_checkpoint}", "sets=[in_v2]", f"roots.in_v2={tmp_path / 'v2'}"],
    )
    assert result["sets"]["in_v2"]["top1"] == pytest.approx(75.0)
    assert result["sets"]["in_v2"]["classes"] == 3


def test_a_set_with_fewer_classes_than_the_benchmark_is_scored_with_a_warning(
    tmp_path, stub_checkpoint, caplog
):
    # (4 of ImageNet-A's 200 classes were scored as the benchmark, without a word)
    subset = imagenet_subset_indices("imagenet_a")
    samples = [(WNIDS[subset[i]], subset[i]) for i in range(4)]
    write_folder(tmp_path / "a", samples)
    caplog.set_level(logging.WARNING)
    result = run_eval(
        tmp_path, [f"checkpoint={stub_checkpoint}", "sets=[in_a]", f"roots.in_a={tmp_path}/a"]
    )
    assert result["sets"]["in_a"]["classes"] == 4
    assert f"ImageNet-A: {tmp_path}/a has images of 4 of the set's 200 classes" in caplog.text
    caplog.clear()
    every = [(WNIDS[i], i) for i in subset]
    write_folder(tmp_path / "all", every, size=4)
    result = run_eval(
        tmp_path, [f"checkpoint={stub_checkpoint}", "sets=[in_a]", f"roots.in_a={tmp_path}/all"]
    )
    assert result["sets"]["in_a"]["classes"] == 200 and "not the benchmark" not in caplog.text


@pytest.mark.parametrize(("set_name", "needed"), [("in1k", 1000), ("in_a", 989)])
def test_a_model_with_fewer_outputs_than_the_labels_need_is_one_line(tmp_path, set_name, needed):
    # (in1k was an IndexError, in_a a RuntimeError from the loss)
    checkpoint = save_stub_checkpoint(tmp_path / "ten" / "last.pt", num_classes=10)
    subset = imagenet_subset_indices("imagenet_a")
    samples = in1k_samples() if set_name == "in1k" else [(WNIDS[subset[0]], 0)]
    write_folder(tmp_path / "set", samples)
    assert max(subset) + 1 == 989
    with pytest.raises(
        InputError,
        match=rf"the model has 10 outputs, but this set's labels need at least {needed}: it was "
        r"trained on other classes; evaluate the split it was trained for \(eval\.py sets=",
    ):
        run_eval(
            tmp_path,
            [f"checkpoint={checkpoint}", f"sets=[{set_name}]", f"roots.{set_name}={tmp_path}/set"],
        )


@pytest.mark.parametrize("set_name", ["in1k", "in_c", "corrupt"])
def test_a_model_trained_on_other_class_folders_is_refused_for_the_imagenet_sets(
    tmp_path, set_name
):
    # a 1000-way model trained on 2 class folders: its label 1 is n01443537, not ImageNet's
    # class 1 by chance only; an ImageNet-100 folder's label 1 would be another wnid
    checkpoint = save_stub_checkpoint(
        tmp_path / "two" / "last.pt", classes=["n01440764", "n01530575"]
    )
    with pytest.raises(
        ConfigError,
        match=rf"sets=\[{set_name}\] is invalid for this model: it was trained on 2 class "
        r"folders \(n01440764, n01530575\), labelled in their own order, not on ImageNet-1k's "
        r"1000 wnids.*sets=\[val\]",
    ):
        run_eval(tmp_path, [f"checkpoint={checkpoint}", f"sets=[{set_name}]"])
    imagenet = save_stub_checkpoint(tmp_path / "all" / "last.pt", classes=list(WNIDS))
    write_folder(tmp_path / "val", in1k_samples())
    result = run_eval(tmp_path, [f"checkpoint={imagenet}", f"roots.in1k={tmp_path / 'val'}"])
    assert result["sets"]["in1k"]["count"] == 7


def test_sketch_uses_the_imagenet_layout(tmp_path, stub_checkpoint):
    samples = in1k_samples()[:4]
    write_folder(tmp_path / "sketch", samples)
    result = run_eval(
        tmp_path,
        [f"checkpoint={stub_checkpoint}", "sets=[in_sketch]", f"roots.in_sketch={tmp_path}/sketch"],
    )
    top1, top5 = expected_accuracy(samples, label_of=WNIDS.index)
    assert result["sets"]["in_sketch"]["top1"] == pytest.approx(top1)
    assert result["sets"]["in_sketch"]["top5"] == pytest.approx(top5)


@pytest.mark.parametrize("set_name,subset_name", [("in_a", "imagenet_a"), ("in_r", "imagenet_r")])
def test_200_class_sets_score_only_their_classes(tmp_path, stub_checkpoint, set_name, subset_name):
    subset = imagenet_subset_indices(subset_name)
    assert len(subset) == 200 and subset == sorted(subset)
    first, middle = subset[0], subset[120]
    outside = next(i for i in range(middle, 1000) if i not in subset)  # not one of the 200
    samples = [
        (WNIDS[first], first),  # right
        (WNIDS[middle], outside),  # predicted class is masked out: the next subset class wins
        (WNIDS[middle], middle - 1),
        (WNIDS[first], subset[199] + 1),  # wraps around to the first subset class
    ]
    write_folder(tmp_path / set_name, samples, suffix=".jpg")
    (tmp_path / set_name / "README.txt").write_text("not a class folder")
    result = run_eval(
        tmp_path,
        [
            f"checkpoint={stub_checkpoint}",
            f"sets=[{set_name}]",
            f"roots.{set_name}={tmp_path / set_name}",
        ],
    )
    top1, top5 = expected_accuracy(
        samples, subset=subset, label_of=lambda w: subset.index(WNIDS.index(w))
    )
    # without the mask the 2nd and 4th images would be wrong: the mask is what is tested
    unmasked_top1, _ = expected_accuracy(samples, label_of=lambda w: WNIDS.index(w))
    assert unmasked_top1 < top1
    assert result["sets"][set_name]["top1"] == pytest.approx(top1)
    assert result["sets"][set_name]["top5"] == pytest.approx(top5)


def _corruption_code(index: int, severity: int, image: int, label: int) -> int:
    """Right for the first ``(index + severity) % 3`` of 2 images, else wrong."""
    return label if image < (index + severity) % 3 else (label + 7) % 1000


def test_imagenet_c_errors_ce_and_mce_match_hand_computation(tmp_path, stub_checkpoint, caplog):
    label = 42
    names = CORRUPTIONS + EXTRA_CORRUPTIONS
    for i, corruption in enumerate(names):
        for severity in range(1, 6):
            codes = [_corruption_code(i, severity, image, label) for image in range(2)]
            folder = tmp_path / "in_c" / corruption / str(severity)
            write_folder(folder, [(WNIDS[label], code) for code in codes])
    caplog.set_level(logging.WARNING)
    result = run_eval(
        tmp_path, [f"checkpoint={stub_checkpoint}", "sets=[in_c]", f"roots.in_c={tmp_path}/in_c"]
    )
    # one class of the 1000: one warning for the set (it was one per folder, 95) and its count
    assert caplog.text.count("its numbers are not the benchmark's") == 1
    assert result["sets"]["in_c"]["classes"] == 1 == result["sets"]["in_c_extra"]["classes"]

    def by_hand(corruptions, offset):
        ce = {}
        for i, corruption in enumerate(corruptions):
            errors = [
                100 * (1 - min((i + offset + s) % 3, 2) / 2) for s in range(1, 6)
            ]  # error of each severity, in percent
            ce[corruption] = 100 * sum(errors) / (100 * 5 * ALEXNET_ERRORS[corruption])
        return ce

    expected = by_hand(CORRUPTIONS, 0)
    in_c = result["sets"]["in_c"]
    assert in_c["ce"] == pytest.approx(expected)
    assert in_c["mce"] == pytest.approx(sum(expected.values()) / 15)
    extra = result["sets"]["in_c_extra"]
    assert extra["ce"] == pytest.approx(by_hand(EXTRA_CORRUPTIONS, len(CORRUPTIONS)))
    assert in_c["errors"]["gaussian_noise"][1] == pytest.approx(50.0)  # (0 + 1) % 3 = 1 of 2


def test_on_the_fly_corruption_equals_corrupting_by_hand(tmp_path, stub_checkpoint):
    import io

    from imagecorruptions import corrupt
    from PIL import Image

    samples = in1k_samples()[:4]
    write_folder(tmp_path / "val", samples, suffix=".png", size=300)  # lossless: stays solid
    overrides = [
        f"checkpoint={stub_checkpoint}",
        "sets=[corrupt]",
        f"roots.in1k={tmp_path / 'val'}",
        "corruptions.names=[brightness,contrast]",
        "corruptions.extra=[]",
        "corruptions.severities=[3,5]",
        "transform.img_size=32",
    ]
    result = run_eval(tmp_path, overrides)["sets"]["corrupt"]
    model = LabelReader()
    for corruption in ("brightness", "contrast"):
        for severity in (3, 5):
            wrong = 0
            for folder, code in samples:
                # as ImageNet-C was made: resize 256 and crop 224 (a solid image stays solid),
                # corrupt, save as JPEG at quality 85; resizing to 32 keeps it solid
                solid = np.full((224, 224, 3), colour_of(code), dtype=np.uint8)
                corrupted = corrupt(solid, corruption_name=corruption, severity=severity)
                saved = io.BytesIO()
                Image.fromarray(np.uint8(corrupted)).save(saved, format="JPEG", quality=85)
                pixels = np.asarray(Image.open(saved).convert("RGB"))
                tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None] / 255
                logits = model((tensor - model.mean) / model.std)
                wrong += logits.argmax(1).item() != WNIDS.index(folder)
            assert result["errors"][corruption][severity] == pytest.approx(100 * wrong / 4)
    assert result["mce"] is None  # two severities only: no AlexNet normalisation
    clean_wrong = sum(ranked(code)[0] != WNIDS.index(folder) for folder, code in samples)
    assert result["errors"]["brightness"][5] != 100 * clean_wrong / 4  # the corruption acted


def test_on_the_fly_images_are_made_as_imagenet_c_files_were():
    # (they were corrupted after the model's own resize and crop, e.g. bicubic at crop 0.95,
    # and never saved as JPEG, so their errors were not comparable to AlexNet's)
    from PIL import Image
    from timm.data import create_transform
    from torchvision.transforms import functional as TF

    from engine.evaluation.corruptions import CorruptImage, JpegRoundTrip, corrupted_transform

    eval_transform = create_transform(224, crop_pct=0.95, interpolation="bicubic")
    made = corrupted_transform(eval_transform, CorruptImage("brightness", 1), 224)
    names = [type(step).__name__ for step in made.transforms]
    assert names[:4] == ["Resize", "CenterCrop", "CorruptImage", "JpegRoundTrip"]
    assert made.transforms[0].size == 256 and made.transforms[1].size == (224, 224)
    assert "Resize" not in names[4:]  # at 224: no second resize
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), np.uint8))
    expected = JpegRoundTrip(85)(
        CorruptImage("brightness", 1)(TF.center_crop(TF.resize(image, 256), 224))
    )
    tensor = made(image)
    assert tensor.shape == (3, 224, 224)
    reference = eval_transform.transforms[-2:]  # ToTensor, Normalize
    assert torch.equal(tensor, reference[1](reference[0](expected)))


def _eval_command(
    tmp_path: Path, overrides: list[str], nproc: int = 1, img_size: int = IMG
) -> list[str]:
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    common = [
        "device=cpu",
        "num_workers=0",
        f"paths.root_dir={tmp_path}",
        f"transform.img_size={img_size}",
    ]
    return [*launcher, str(ROOT / "eval.py"), *common, *overrides]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.mark.slow
def test_two_processes_count_every_image_once(tmp_path, stub_checkpoint):
    samples = in1k_samples()  # 7 images: shards of 4 and 3, no padding
    write_folder(tmp_path / "in1k", samples)
    common = [f"checkpoint={stub_checkpoint}", f"roots.in1k={tmp_path / 'in1k'}", "batch_size=2"]
    for nproc in (1, 2):
        _run(_eval_command(tmp_path, [*common, f"hydra.run.dir={tmp_path}/np{nproc}"], nproc))
    single = json.loads((tmp_path / "np1" / "eval_results.json").read_text())
    double = json.loads((tmp_path / "np2" / "eval_results.json").read_text())
    assert double["world_size"] == 2 and single["world_size"] == 1
    assert double["sets"]["in1k"]["count"] == single["sets"]["in1k"]["count"] == 7
    top1, top5 = expected_accuracy(samples, label_of=WNIDS.index)
    for result in (single, double):
        assert result["sets"]["in1k"]["top1"] == pytest.approx(top1)
        assert result["sets"]["in1k"]["top5"] == pytest.approx(top5)


def test_throughput_command_prints_the_ratio_to_the_baseline(tmp_path):
    overrides = [
        "checkpoint=null",
        "model.name=test_convnext_dcls",
        "sets=[throughput]",
        "throughput.batch_size=2",
        "throughput.warmup=1",
        "throughput.steps=1",
        "throughput.rounds=1",
        f"hydra.run.dir={tmp_path}/throughput",
    ]
    result = _run(_eval_command(tmp_path, overrides, img_size=32))  # ConvNeXt's stride is 32
    output = result.stdout + result.stderr
    assert "throughput test_convnext_dcls / test_convnext (time per image, same run)" in output
    assert "inference images/s" in output  # the Markdown table
    assert "amp=auto: float32 (no training config)" in output  # (not "the checkpoint's")
    saved = json.loads((tmp_path / "throughput" / "eval_results.json").read_text())
    throughput = saved["sets"]["throughput"]
    assert throughput["baseline"] == "test_convnext"
    for mode in ("inference", "train"):
        ratio = throughput["baseline_images_per_s"][mode] / throughput["images_per_s"][mode]
        assert throughput["ratio"][mode] == pytest.approx(ratio)
    assert saved["params"] == sum(
        p.numel() for p in timm.create_model("test_convnext_dcls").parameters()
    )


def test_missing_folder_names_the_path_and_the_layout(tmp_path, stub_checkpoint):
    with pytest.raises(FileNotFoundError, match=r"ImageNet-A: folder .*nowhere does not exist"):
        run_eval(
            tmp_path,
            [f"checkpoint={stub_checkpoint}", "sets=[in_a]", f"roots.in_a={tmp_path}/nowhere"],
        )


def test_a_folder_that_is_not_a_class_names_it_and_the_layout(tmp_path, stub_checkpoint):
    write_folder(tmp_path / "val", [("cats", 1)])
    with pytest.raises(ValueError, match=r"val/cats is not a class folder .*<root>/<wnid"):
        run_eval(tmp_path, [f"checkpoint={stub_checkpoint}", f"roots.in1k={tmp_path / 'val'}"])
    imagenet_c = tmp_path / "in_c" / "gaussian_noise" / "1"
    write_folder(imagenet_c, [(WNIDS[0], 0)])
    with pytest.raises(
        FileNotFoundError,
        match=r"missing folders .*gaussian_noise/2, .*shot_noise/1, .* \(94 in all\); expected",
    ):
        run_eval(
            tmp_path,
            [f"checkpoint={stub_checkpoint}", "sets=[in_c]", f"roots.in_c={tmp_path / 'in_c'}"],
        )


def test_the_two_usual_unpacking_mistakes_are_named(tmp_path, stub_checkpoint):
    # ImageNet's raw val archive: 50,000 images in one folder, not yet sorted by wnid
    write_image(tmp_path / "raw" / "ILSVRC2012_val_00000001.JPEG", 1)
    with pytest.raises(ValueError, match=r"no images under .*raw \(its images lie in it directly"):
        run_eval(tmp_path, [f"checkpoint={stub_checkpoint}", f"roots.in1k={tmp_path / 'raw'}"])
    # ImageNet-C's archives (noise.tar, ...) each extracted into a folder of its own
    noise = tmp_path / "in_c" / "noise" / "gaussian_noise"
    for severity in SEVERITIES:
        write_folder(noise / str(severity), [(WNIDS[0], 0)])
    with pytest.raises(
        FileNotFoundError,
        match=r"corruption folders were found one level down, in .*in_c/noise: extract every",
    ):
        run_eval(
            tmp_path,
            [f"checkpoint={stub_checkpoint}", "sets=[in_c]", f"roots.in_c={tmp_path / 'in_c'}"],
        )


def test_imagenet_c_without_the_extra_corruptions_says_how_to_leave_them_out(
    tmp_path, stub_checkpoint
):
    for corruption in CORRUPTIONS:  # the 15 benchmark ones only, as often downloaded
        for severity in SEVERITIES:
            write_folder(tmp_path / "in_c" / corruption / str(severity), [(WNIDS[0], 0)])
    with pytest.raises(FileNotFoundError, match=r"speckle_noise/1.*corruptions\.extra=\[\]"):
        run_eval(
            tmp_path,
            [f"checkpoint={stub_checkpoint}", "sets=[in_c]", f"roots.in_c={tmp_path / 'in_c'}"],
        )


def test_unknown_set_and_amp_are_refused(tmp_path, stub_checkpoint):
    with pytest.raises(
        ConfigError, match=r"sets='imagenet' is invalid: expected names from \['in1k'"
    ):
        run_eval(tmp_path, [f"checkpoint={stub_checkpoint}", "sets=[imagenet]"])
    with pytest.raises(
        ConfigError, match=r"amp='fp8' is invalid: expected auto \(the checkpoint's\), null"
    ):
        run_eval(tmp_path, [f"checkpoint={stub_checkpoint}", "amp=fp8"])
    with pytest.raises(ConfigError, match=r"weights='emma' is invalid: .*close matches: ema"):
        run_eval(tmp_path, [f"checkpoint={stub_checkpoint}", "weights=emma"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["transform.crop_pct=abc"], r"transform\.crop_pct='abc' is invalid: expected null"),
        (["transform.interpolation=bicubik"], r"interpolation='bicubik' .*close matches: bicubic"),
        (["sets=in1k"], r"sets='in1k' is invalid: expected a non-empty list, e\.g\. sets=\[in1k\]"),
        (["sets=[]"], r"sets=\[\] is invalid: expected a non-empty list"),
        (["sets=[throughput]", "throughput.steps=0"], r"throughput\.steps=0 is invalid"),
        (
            ["sets=[throughput]", "throughput.baseline=convnext_tinny"],
            r"throughput\.baseline='convnext_tinny' .*close matches: convnext_tiny",
        ),
        (
            ["sets=[corrupt]", "corruptions.names=[gaussian_nois]"],
            r"corruptions\.names='gaussian_nois' .*close matches: gaussian_noise",
        ),
        (["sets=[in_c]", "corruptions.severities=[0]"], r"corruptions\.severities=0 is invalid"),
        (["transform.mean=abc"], r"transform\.mean='abc' is invalid: expected null .* 3 numbers"),
        (["transform.std=[0,0,0]"], r"transform\.std=\[0, 0, 0\] is invalid: .* 3 numbers > 0"),
        (["transform.mean=[0.5,0.5]"], r"transform\.mean=\[0\.5, 0\.5\] is invalid"),
        (["sets=[throughput]", "throughput.img_size=0"], r"throughput\.img_size=0 is invalid"),
    ],
)
def test_bad_eval_values_are_one_line_config_errors(tmp_path, stub_checkpoint, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run_eval(tmp_path, [f"checkpoint={stub_checkpoint}", *overrides])


def test_a_checkpoint_of_another_architecture_lists_the_keys(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18").state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match=r"\d+ missing \(.*\d+ unexpected \("):
        run_eval(tmp_path, [f"checkpoint={path}", "model.name=test_convnext_dcls"])


def test_checkpoint_without_config_asks_for_a_model_name(tmp_path):
    path = tmp_path / "bare.pth"
    torch.save(timm.create_model("test_convnext").state_dict(), path)
    with pytest.raises(ValueError, match=r"carries no model config .*model\.name=<timm model"):
        run_eval(tmp_path, [f"checkpoint={path}"])


def test_checkpoint_is_required(tmp_path):
    with pytest.raises(ConfigError, match=r"checkpoint='\?\?\?' is invalid: required"):
        run_eval(tmp_path, [])


def test_log_lines_name_each_set(tmp_path, stub_checkpoint, caplog):
    write_folder(tmp_path / "in1k", in1k_samples())
    with caplog.at_level(logging.INFO):
        run_eval(tmp_path, [f"checkpoint={stub_checkpoint}", f"roots.in1k={tmp_path / 'in1k'}"])
    assert "| ImageNet-1k | top-1 / top-5 | 28.57 / 57.14 |" in caplog.text


def test_preprocessing_follows_the_training_config_unless_overridden(tmp_path):
    checkpoint = save_stub_checkpoint(tmp_path / "stub" / "last.pt")
    saved = torch.load(checkpoint, weights_only=True)
    saved["config"]["data"] = {"image_size": 24, "crop_pct": 1.0, "interpolation": "bilinear"}
    torch.save(saved, checkpoint)
    write_folder(tmp_path / "in1k", in1k_samples())
    overrides = [f"checkpoint={checkpoint}", f"roots.in1k={tmp_path / 'in1k'}"]
    cfg = compose_eval(tmp_path, overrides)
    cfg.transform.img_size = None  # compose_eval's default for the stub sets
    used = eval_run.evaluate_checkpoint(cfg, run_dir=tmp_path / "a")["data_config"]
    assert used["input_size"] == [3, 24, 24] and used["crop_pct"] == 1.0
    assert used["interpolation"] == "bilinear"
    cfg.transform.crop_pct = 0.5
    used = eval_run.evaluate_checkpoint(cfg, run_dir=tmp_path / "b")["data_config"]
    assert used["input_size"] == [3, 24, 24] and used["crop_pct"] == 0.5


def test_throughput_leaves_the_evaluated_weights_alone(tmp_path):
    from engine.evaluation.throughput import evaluate_throughput

    model = timm.create_model("test_resnet").eval()  # batch norm: training steps would move it
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = {"baseline": None, "batch_size": 2, "warmup": 1, "steps": 1, "rounds": 1, "train": True}
    result = evaluate_throughput(model, "test_resnet", cfg, 32, torch.device("cpu"), None, False)
    assert result["images_per_s"]["train"] > 0 and result["baseline"] is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_model_with_its_baselines_name_is_timed_against_the_baseline(monkeypatch):
    # (both were timed under one key: the model's numbers were the baseline's, ratio 1.000x)
    from engine.evaluation import throughput

    timed = []
    monkeypatch.setattr(
        throughput,
        "measure_throughput",
        lambda named, spec, **_: timed.append(named) or {k: 1.0 for k in named},
    )
    model = dcls.convert(
        timm.create_model("test_resnet"), 2, 5, filter_fn=lambda n, m: n == "layer1.0.conv2"
    )
    cfg = {"baseline": "test_resnet", "batch_size": 2, "warmup": 1, "steps": 1, "rounds": 1}
    result = throughput.evaluate_throughput(
        model, "test_resnet", {**cfg, "train": False}, 32, torch.device("cpu"), None, False
    )
    (named,) = timed
    assert len(named) == 2 and result["ratio"] == {"inference": 1.0}
    kinds = [any(isinstance(m, dcls.Dcls2d) for m in net.modules()) for net in named.values()]
    assert sorted(kinds) == [False, True]


def test_a_bad_config_value_exits_2_with_one_line(tmp_path, stub_checkpoint):
    command = _eval_command(
        tmp_path, [f"checkpoint={stub_checkpoint}", "sets=[imagenet]", f"hydra.run.dir={tmp_path}"]
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 2
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "sets='imagenet' is invalid" in errors[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("amp", [None, "bf16"])
def test_val_set_reproduces_the_training_runs_top1(fast_train_cfg, tmp_path, caplog, amp):
    """``sets=[val]`` with eval.py's defaults gives training's numbers: the same weights (the
    EMA), split, preprocessing and precision (``amp=auto``: the training's autocast)."""
    from engine.training import run as train_run

    fast_train_cfg.trainer.epochs = 1
    fast_train_cfg.trainer.amp = amp
    fast_train_cfg.trainer.ema.decay = 0.5  # EMA and raw weights differ after 8 updates
    results = train_run.train(fast_train_cfg, run_dir=tmp_path / "run")
    assert results["val_loss"] != pytest.approx(results["val_ema_loss"], rel=1e-4)
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    with caplog.at_level(logging.INFO):
        overrides = [f"checkpoint={checkpoint}", "sets=[val]", "transform.img_size=32"]
        evaluated = run_eval(tmp_path, overrides)  # (the stub sets elsewhere here are 16x16)
        raw = run_eval(tmp_path, [*overrides, "weights=model"], run="raw")
    assert evaluated["weights"] == results["weights"] == "ema" and raw["weights"] == "model"
    assert evaluated["sets"]["val"]["top1"] == results["top1"] == results["val_ema_top1"]
    # the losses tell the two sets of weights apart (one epoch on fake data: top-1s may tie)
    assert evaluated["sets"]["val"]["loss"] == pytest.approx(results["val_ema_loss"], rel=1e-6)
    assert raw["sets"]["val"]["loss"] == pytest.approx(results["val_loss"], rel=1e-6)
    assert raw["sets"]["val"]["top1"] == results["val_top1"]
    assert evaluated["sets"]["val"]["count"] == 32 and evaluated["sets"]["val"]["data"] == "fake"
    assert evaluated["amp"] == raw["amp"] == amp
    assert "| validation split (data=fake) | top-1 / top-5 |" in caplog.text


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("convnext_tiny_dcls", None),
        ("convnext_tiny.fb_in1k", None),  # a pretrained tag
        ("hf-hub:timm/convnext_tiny.fb_in1k", None),  # a source timm resolves when it builds
        ("convnext_tinny_dcls", r"timm model name; close matches: convnext_tiny_dcls"),
        ("timm/convnext_tiny", r"Use 'hf-hub:timm/convnext_tiny'"),
    ],
)
def test_model_name_is_checked_before_anything_is_loaded(tmp_path, name, error):
    from engine.config import validate_eval_config

    overrides = ["checkpoint=null", "sets=[throughput]", f"model.name={name}"]
    cfg = compose_eval(tmp_path, overrides)
    if error is None:
        validate_eval_config(cfg, eval_run.SETS)
    else:
        with pytest.raises(ConfigError, match=rf"model\.name='{name}' is invalid: .*{error}"):
            validate_eval_config(cfg, eval_run.SETS)


def test_a_transform_with_sets_val_is_warned_about(tmp_path, stub_checkpoint, caplog):
    # sets=[val] rebuilds the training run's split with its data config: transform.* is unused.
    caplog.set_level(logging.WARNING)  # (another test module leaves the root logger at ERROR)
    from engine.config import validate_eval_config

    base = [f"checkpoint={stub_checkpoint}", "sets=[val]"]
    cfg = compose_eval(tmp_path, base)
    cfg.transform.img_size = None  # (the helper sets the tests' size)
    validate_eval_config(cfg, eval_run.SETS)
    assert "transform.*" not in caplog.text
    cfg.transform.crop_pct = 0.9
    validate_eval_config(cfg, eval_run.SETS)
    assert "transform.* applies to the image-folder sets" in caplog.text
