"""Every experiment composes and instantiates: model, optimizer groups, loaders."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

import dcls
import models  # noqa: F401  (registers the DCLS variants: the test must not rely on test order)
from dcls._utils import position_limits as dcls_limits
from engine.config.training import resolve_update_freq, validate_train_config
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


@pytest.mark.parametrize(
    "overrides",
    [[f"experiment={e}"] for e in EXPERIMENTS]
    + [
        ["debug=default"],
        ["logger=none"],
        ["logger=wandb"],
        ["experiment=convnext_tiny_dcls_in1k", "debug=default"],
    ],
    ids=lambda o: ",".join(o),
)
def test_every_experiment_and_option_passes_validation(overrides, tmp_path):
    cfg = compose_train(tmp_path, overrides)
    if cfg.data.kind == "folder":
        _tiny_image_folder(tmp_path / "imagenet")
        cfg.data.root = str(tmp_path / "imagenet")
    validate_train_config(cfg)
    if "debug=default" in overrides:
        assert cfg.trainer.epochs == 1 and cfg.logger.csv is None and cfg.logger.wandb is None
        # a smoke run of an experiment: its own run folder (the experiment's fixed run name would
        # resume it), and no effective batch to reach with a small batch on one process
        assert cfg.run_name.startswith("debug_") and cfg.trainer.effective_batch_size is None


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
    processes = launcher.nodes * launcher.tasks_per_node
    assert processes * cfg.data.batch_size == 4096 and resolve_update_freq(cfg, processes) == 1
    cfg.hydra.launcher.nodes = 2  # half the GPUs: the same batch, two micro-batches per update
    assert resolve_update_freq(cfg, cfg.hydra.launcher.nodes * launcher.tasks_per_node) == 2
    assert launcher.signal_delay_s > 0 and launcher.max_num_timeout > 0


IN1K = [e for e in EXPERIMENTS if e.endswith("_in1k")]
DROP_PATH = {"tiny": 0.1, "small": 0.4, "base": 0.5}  # TRAINING.md L17, L52, L77


@pytest.mark.parametrize("experiment", IN1K)
def test_imagenet_experiments_resolve_to_the_authors_recipe(tmp_path, experiment):
    """Every value of configs/recipe/convnext_in1k.yaml and its sources, as each experiment
    resolves it (ConvNeXt-dcls main.py / engine.py / utils.py at aad45f3)."""
    cfg = compose_train(tmp_path, [f"experiment={experiment}"])
    opt, sched, trainer, data, model = (
        cfg.optimizer,
        cfg.scheduler,
        cfg.trainer,
        cfg.data,
        cfg.model,
    )
    assert (opt.opt, opt.lr, opt.base_batch_size, opt.weight_decay) == ("adamw", 4e-3, 4096, 0.05)
    assert opt.layer_decay is None
    assert (opt.positions.lr_scale, opt.positions.weight_decay) == (5.0, 0.0)
    assert trainer.effective_batch_size == 4096 and resolve_update_freq(cfg, 8) == 4  # 8 GPUs
    assert trainer.epochs == 300 and trainer.ema.enabled and trainer.ema.decay == 0.9999
    # lr: linear warm-up from 0 over 20 epochs, then cosine to 1e-6 over the remaining 280
    assert (sched.sched, sched.warmup_epochs, sched.warmup_prefix) == ("cosine", 20, True)
    assert (sched.warmup_lr, sched.min_lr) == (0.0, 1e-6)
    # augmentation
    assert (data.auto_augment, data.color_jitter) == ("rand-m9-mstd0.5-inc1", 0.4)
    assert (data.re_prob, data.re_mode, data.re_count) == (0.25, "pixel", 1)
    assert (data.mixup, data.cutmix, data.label_smoothing) == (0.8, 1.0, 0.1)
    assert (data.interpolation, data.crop_pct, data.image_size) == ("bicubic", 0.875, 224)
    repulsion = trainer.repulsive_loss
    if experiment == "resnet50_dcls_in1k":
        assert repulsion.weight == 0.0  # the fork's --use_loss_rep default
    else:  # (off by itself for models without positions: tests/engine/test_schedules.py)
        assert (repulsion.weight, repulsion.formula) == (1.0, "authors")
        assert (repulsion.start_epoch, repulsion.min_distance) == (21, 1.0)
    if experiment.startswith("convnext"):
        assert model.ls_init_value == 1e-6
        assert model.drop_path_rate == DROP_PATH[experiment.split("_")[1]]
    if experiment.startswith("convnext") and "_dcls" in experiment:
        assert (model.kernel_count, model.dilated_kernel_size) == (None, 17)  # 34 T, 40 S/B
        assert model.share_positions and dcls_limits(17) == (-8, 8)  # clamped to +-8
    if experiment == "resnet50_dcls_in1k":  # our iso-parameter default, not the fork's K=5
        assert (model.kernel_count, model.dilated_kernel_size) == (3, 7)
        assert not model.share_positions


def test_resnet50_dcls_in_the_authors_fork_setting_is_one_override_away(tmp_path):
    cfg = compose_train(
        tmp_path,
        [
            "experiment=resnet50_dcls_in1k",
            "model.kernel_count=5",
            "model.share_positions=true",
            "trainer.repulsive_loss.weight=1",
        ],
    )
    with torch.device("meta"):
        model = instantiate(cfg.model)
    sets = list(dcls.position_sets(model))
    assert len(sets) == 4 and all(s.P.shape[-1] == 5 and s.sizes == (7, 7) for s in sets)


def test_the_embedded_default_keeps_its_recipe(tmp_path):
    """The digits default (README's 99.44%) does not take the ImageNet recipe's changes."""
    cfg = compose_train(tmp_path)
    assert cfg.trainer.repulsive_loss.weight == 0.0
    assert (cfg.scheduler.warmup_prefix, cfg.scheduler.warmup_lr) == (False, 1e-6)
    assert (cfg.scheduler.warmup_epochs, cfg.trainer.epochs) == (1, 15)
