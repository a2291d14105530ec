"""The robustness sets' folders: an unreadable image is one line naming it, from any worker."""

import logging

import pytest
import torch
from PIL import Image

from engine.config import run_entry_point
from engine.data.eval_sets import EVAL_SETS, LabeledImageFolder


@pytest.fixture
def sketch_folder(tmp_path):
    """ImageNet-Sketch's layout with one good and one unreadable image of class 0."""
    folder = tmp_path / "n01440764"
    folder.mkdir()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / "a_good.JPEG")
    (folder / "b_bad.JPEG").write_bytes(b"not an image")
    return tmp_path


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_image_stops_the_evaluation_in_one_line_naming_it(
    sketch_folder, workers, caplog
):
    dataset = LabeledImageFolder(sketch_folder, EVAL_SETS["in_sketch"], transform=lambda i: 0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=workers)
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exited:
        run_entry_point(lambda: list(loader), logging.getLogger("eval"))
    assert exited.value.code == 2
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert line.startswith("ImageNet-Sketch: cannot read ") and "b_bad.JPEG" in line
    assert "\n" not in line and "worker" not in line  # (was a worker's traceback)
