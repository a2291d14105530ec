"""scripts/export_digits.py writes the default's validation split as an ImageNet-style folder."""

import importlib.util
from argparse import Namespace

import numpy as np
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
    config = Namespace(image_size=32, val_fraction=0.2, split_seed=0, max_shift=0)
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
