"""scripts/export_digits.py writes the default's validation split as an ImageNet-style folder."""

import importlib.util
from argparse import Namespace

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data.datasets import DATASETS
from tests.eval_helpers import ROOT, WNIDS

spec = importlib.util.spec_from_file_location(
    "export_digits", ROOT / "scripts" / "export_digits.py"
)
export_digits = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export_digits)


def test_val_folder_holds_the_default_split_under_the_first_ten_wnids(tmp_path):
    assert export_digits.main([str(tmp_path)]) == 0
    config = Namespace(image_size=32, val_fraction=0.2, split_seed=0, max_shift=0, num_classes=10)
    dataset = DATASETS["digits"](config, "val")
    folders = sorted(p.name for p in (tmp_path / "val").iterdir())
    assert folders == sorted(WNIDS[:10])
    files = sorted((tmp_path / "val").rglob("*.png"), key=lambda p: p.name)
    assert len(files) == len(dataset) == 359
    for path in files[::50]:
        index = int(path.stem)
        image, label = dataset[index]
        assert path.parent.name == WNIDS[label]
        pixels = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1) / 255
        torch.testing.assert_close(pixels, image * 0.5 + 0.5, atol=1 / 255, rtol=0)


def test_imagenet_c_tree_holds_every_corruption_and_severity_in_eval_layout(tmp_path, monkeypatch):
    """``--imagenet-c`` on three digits, with a stand-in for the (slow) corruption library: one
    folder per corruption and severity in ImageNet-C's layout, which eval.py's reader accepts,
    each image corrupted with its own corruption, severity and the seed."""
    from engine.evaluation.corruptions import (
        CORRUPTIONS,
        EXTRA_CORRUPTIONS,
        SEVERITIES,
        imagenet_c_folder,
    )

    digits = [(Image.new("RGB", (32, 32), (d * 20, 0, 0)), d) for d in (0, 3, 7)]
    monkeypatch.setattr(export_digits, "digits_val_images", lambda: digits)
    calls = []

    class Recording:
        def __init__(self, corruption, severity, seed):
            calls.append((corruption, severity, seed))
            self.shade = 100 + 5 * severity

        def __call__(self, image):
            return Image.new("RGB", image.size, (image.getpixel((0, 0))[0], self.shade, 0))

    monkeypatch.setattr(export_digits, "CorruptImage", Recording)
    assert export_digits.main([str(tmp_path), "--imagenet-c", "--seed", "4"]) == 0
    names = CORRUPTIONS + EXTRA_CORRUPTIONS
    assert sorted(calls) == sorted((c, s, 4) for c in names for s in SEVERITIES)
    read = imagenet_c_folder(tmp_path / "imagenet-c", np.asarray, names, SEVERITIES)
    for corruption in names:
        for severity in SEVERITIES:
            dataset = read(corruption, severity)
            samples = sorted((int(image[0, 0, 0]), label) for image, label in dataset)
            assert samples == [(0, 0), (60, 3), (140, 7)]  # every digit, under its class
            assert {int(image[0, 0, 1]) for image, _ in dataset} == {100 + 5 * severity}


def test_a_file_as_the_output_folder_is_one_input_error(tmp_path):
    # (a NotADirectoryError traceback)
    from engine.config import InputError

    target = tmp_path / "a_file"
    target.write_text("")
    with pytest.raises(InputError, match=r"out='.*a_file' is invalid: it is a file; expected a"):
        export_digits.main([str(target)])


def test_non_finite_pixels_of_the_corruption_library_are_warned_about(caplog):
    # spatter at 32x32: imagecorruptions divides by zero for some images, which become black
    import numpy as np

    from engine.evaluation.corruptions import CorruptImage

    corrupt = CorruptImage("spatter", 1, 0)
    caplog.set_level("WARNING")
    black = sum(
        np.asarray(corrupt(image)).max() == 0 for image, _ in export_digits.digits_val_images()
    )
    warned = [r for r in caplog.records if "made non-finite pixels of a 32x32 image" in r.message]
    assert black > 0 and len(warned) == black
