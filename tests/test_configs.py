"""Every experiment composes and instantiates: model, optimizer groups, loaders."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

import models  # noqa: F401  (registers the DCLS variants: the test must not rely on test order)
from engine.data.datasets import build_loaders
from engine.distributed import DistInfo
from engine.training.optim import build_optimizer
from tests.conftest import CONFIG_DIR, compose_train

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def _tiny_image_folder(root: Path) -> None:
    for split in ("train", "val"):
        for c in ("n01440764", "n01443537"):
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 30), (i * 90, 40, 200)).save(root / split / c / f"{i}.JPEG")


def test_every_paper_row_has_an_experiment():
    for model in ("convnext_tiny", "convnext_small", "convnext_base", "resnet50"):
        for variant in ("", "_dcls", "_dc"):
            assert f"{model}{variant}_in1k" in EXPERIMENTS


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(experiment, tmp_path):
    cfg = compose_train(tmp_path, [f"experiment={experiment}"])
    if cfg.data.kind == "folder":
        _tiny_image_folder(tmp_path / "imagenet")
        cfg.data.root = str(tmp_path / "imagenet")
        cfg.data.batch_size = 2
    with torch.device("meta"):
        model = instantiate(cfg.model)
    assert model.num_classes == cfg.data.num_classes
    effective = cfg.data.batch_size * cfg.trainer.update_freq
    optimizer = build_optimizer(model, cfg.optimizer, effective)
    names = [g["name"] for g in optimizer.param_groups]
    assert ("_dcls" in cfg.model.model_name) == any("positions" in n for n in names)
    loaders = build_loaders(cfg.data, CPU, cfg.seed)
    images, _ = next(iter(loaders.train))
    assert images.shape[1:] == (3, cfg.data.image_size, cfg.data.image_size)


def test_model_convnext_dcls_is_the_headline_model(tmp_path):
    cfg = compose_train(tmp_path, ["model=convnext_dcls"])
    assert cfg.model.model_name == "convnext_tiny_dcls" and cfg.model.drop_path_rate == 0.1


def test_missing_imagenet_folder_names_the_path_and_layout(tmp_path):
    cfg = compose_train(tmp_path, ["experiment=convnext_tiny_dcls_in1k"])
    with pytest.raises(ValueError, match=r"imagenet/train is missing or empty; expected"):
        build_loaders(cfg.data, CPU, 0)


def test_slurm_launcher_composes(tmp_path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="train",
            return_hydra_config=True,
            overrides=["launcher=slurm", "experiment=convnext_tiny_dcls_in1k"],
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.nodes * launcher.tasks_per_node * cfg.data.batch_size == 4096
    assert launcher.signal_delay_s > 0 and launcher.max_num_timeout > 0
