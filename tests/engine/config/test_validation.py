"""Config validation: one-line messages naming key, value and what is allowed; exit status 2."""

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.config import ConfigError, validate_train_config
from tests.conftest import compose_train

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.model_name=convnext_tiny_dlcs"],
            r"model\.model_name='convnext_tiny_dlcs' is invalid: not a registered timm model; "
            r"close matches: convnext_tiny_dcls",
        ),
        (["model.kernel_count=0"], r"kernel_count=0 is invalid: expected null .* an integer >= 1"),
        (
            ["model=convnext_dcls", "model.version=bilinaer"],
            r"model\.version='bilinaer' is invalid: expected one of bilinear, .*v1.*; "
            r"close matches: bilinear",
        ),
        (
            ["model=convnext_dcls", "model.conv_algorithm=trition"],
            r"model\.conv_algorithm='trition' is invalid: expected one of .*auto; "
            r"close matches: triton",
        ),
        (["model.dilated_kernel_size=0"], r"model\.dilated_kernel_size=0 is invalid"),
        (
            ["model.kernel_count=26", "model.dilated_kernel_size=5"],
            r"model\.dilated_kernel_size=5 is invalid: its 25 cells cannot hold "
            r"model\.kernel_count=26 elements",
        ),
        (["optimizer.lr=-0.1"], r"optimizer\.lr=-0\.1 is invalid: expected a number >= 0"),
        (["data.batch_size=0"], r"data\.batch_size=0 is invalid: expected an integer >= 1"),
        (
            ["data.batch_size=7", "data.mixup=0.8"],
            r"data\.batch_size=7 is invalid: Mixup/CutMix need an even batch",
        ),
        (["trainer.update_freq=0"], r"trainer\.update_freq=0 is invalid"),
        (["trainer.effective_batch_size=0"], r"trainer\.effective_batch_size=0 is invalid"),
        (  # both: which one would count?
            ["trainer.effective_batch_size=128", "trainer.update_freq=2"],
            r"trainer\.update_freq=2 is invalid: trainer\.effective_batch_size=128 sets it",
        ),
        (
            ["trainer.amp=fp8"],
            r"trainer\.amp='fp8' is invalid: expected one of null \(float32\), 'bf16'",
        ),
        (["trainer.max_bad_steps=0"], r"trainer\.max_bad_steps=0 is invalid"),
        (
            ["trainer.ema.shared_positions=per_block"],
            r"trainer\.ema\.shared_positions='per_block' is invalid: expected one of 'once', "
            r"'per_layer'",
        ),
        (["trainer.preemption.signals=[SIGFOO]"], r"trainer\.preemption\.signals='SIGFOO'"),
        (
            ["optimizer.opt=adamww"],
            r"optimizer\.opt='adamww' is invalid: not a timm optim.*close matches: adamw",
        ),
        (["trainer.repulsive_loss.min_distance=0"], r"repulsive_loss\.min_distance=0 is invalid"),
        (
            ["trainer.repulsive_loss.formula=l2"],
            r"trainer\.repulsive_loss\.formula='l2' is invalid: expected one of 'authors', 'pairs'",
        ),
        (
            ["scheduler.warmup_prefix=true", "scheduler.warmup_epochs=15"],
            r"scheduler\.warmup_epochs=15 is invalid: with scheduler\.warmup_prefix=true, "
            r"expected fewer than trainer\.epochs=15",
        ),
        (["scheduler.warmup_prefix=maybe"], r"scheduler\.warmup_prefix='maybe' is invalid"),
        (
            ["experiment=convnext_tiny_dcls_in1k", "data.re_mode=pix"],
            r"data\.re_mode='pix' is invalid: expected one of 'const', 'rand', 'pixel'",
        ),
        (["data.val_fraction=1.0"], r"data\.val_fraction=1\.0 is invalid: expected a number in"),
        (["resume=/nope.pt"], r"resume='/nope\.pt' is invalid: expected 'auto', 'never' or"),
        # Values that used to give a traceback, or to run with a wrong setting:
        (["seed=-1"], r"seed=-1 is invalid: expected an integer in \[0, 2147483647\]"),
        (["seed=99999999999"], r"seed=99999999999 is invalid"),
        (["seed=null"], r"seed=None is invalid"),
        (["model.drop_path_rate=null"], r"model\.drop_path_rate=None is invalid"),
        (["optimizer.lr=inf"], r"optimizer\.lr=inf is invalid: expected a number >= 0"),
        (["optimizer.positions.weight_decay=-1"], r"positions\.weight_decay=-1 is invalid"),
        (
            ["optimizer.positions.sigmas_lr_scale=abc"],
            r"optimizer\.positions\.sigmas_lr_scale='abc' is invalid: expected null",
        ),
        (
            ["scheduler.sched=cosin"],
            r"scheduler\.sched='cosin' is invalid: expected one of timm's .*close matches: cosine",
        ),
        (  # (an IndexError from cross_entropy; 0.0: a model without classifier)
            ["model.num_classes=2"],
            r"model\.num_classes=2 is invalid: the data has data\.num_classes=10 classes",
        ),
        (["model.num_classes=0.0"], r"model\.num_classes=0\.0 is invalid"),
        (["run_name=''"], r"run_name='' is invalid: expected a folder name"),
        (["run_name=.."], r"run_name='\.\.' is invalid: expected a folder name"),
        (["run_name=/abs"], r"run_name='/abs' is invalid"),
        (["run_name=null"], r"run_name=None is invalid"),
        (["data.mixup_prob=2"], r"data\.mixup_prob=2 is invalid: expected a probability"),
        (["data.mixup_mode=pairs"], r"data\.mixup_mode='pairs' is invalid: .*close matches: pair"),
        # eval.py's transform for the run's checkpoints: read only there, with a traceback
        (["data.interpolation=bogus"], r"data\.interpolation='bogus' is invalid: expected one"),
        (["data.crop_pct=0"], r"data\.crop_pct=0 is invalid: expected a number in \(0, 1\]"),
        (["data.mean=[0.5]"], r"data\.mean=\[0\.5\] is invalid: expected 3 numbers"),
        (  # the digits are made scaled to [-1, 1]: training ignored it, eval.py did not
            ["data.std=[1,1,1]"],
            r"data\.std=\[1, 1, 1\] is invalid: the digits images are made with std "
            r"\[0\.5, 0\.5, 0\.5\]: this key records it for eval\.py and cannot change it",
        ),
        (
            ["data.kind=digit"],
            r"data\.kind='digit' is invalid: expected one of .*; close matches: digits",
        ),
        (  # timm's plateau schedule steps per epoch: an AssertionError in create_scheduler_v2
            ["scheduler.sched=plateau"],
            r"scheduler\.sched='plateau' is invalid: the schedules here are stepped per "
            r"optimizer update",
        ),
        (["trainer.preemption.signals=[SIGKILL]"], r"SIGKILL and SIGSTOP cannot be caught"),
        (["trainer.preemption.exit_code=2"], r"exit_code=2 is invalid: .* other than 0"),
        (["data.max_shift=-1"], r"data\.max_shift=-1 is invalid: expected an integer in \[0, 16\)"),
        (["data.max_shift=100"], r"data\.max_shift=100 is invalid"),
        (["data=fake", "data.val_size=0"], r"data\.val_size=0 is invalid: expected an integer"),
        (["trainer.position_history.every=-1"], r"position_history\.every=-1 is invalid"),
        (["trainer.position_history.max_out_channels=0"], r"max_out_channels=0 is invalid"),
        (["logger=wandb", "logger.wandb.mode=offlin"], r"logger\.wandb\.mode='offlin' is inval"),
        (["logger.csv.filename=null"], r"logger\.csv\.filename=None is invalid"),
        # data.kind on another group's keys: name the group (was: on_bad_image=None is invalid)
        (["data.kind=folder"], r"data\.kind='folder' is invalid: .*no root.*data=imagenet"),
        (["data.kind=fake"], r"data\.kind='fake' is invalid: .*no train_size, val_size.*data=fake"),
        (["data=fake", "data.kind=digits"], r"no val_fraction, split_seed, max_shift.*data=digits"),
    ],
)
def test_bad_value_names_key_value_and_what_is_allowed(tmp_path, overrides, message):
    cfg = compose_train(tmp_path, overrides)
    with pytest.raises(ConfigError, match=message) as raised:
        validate_train_config(cfg)
    assert "\n" not in str(raised.value)


def test_missing_dataset_folder_is_a_config_error(tmp_path):
    cfg = compose_train(tmp_path, ["experiment=convnext_tiny_dcls_in1k"])
    with pytest.raises(ConfigError, match=r"data\.root='.*imagenet' is invalid: no such folder"):
        validate_train_config(cfg)


def test_the_default_and_a_resnet_on_fake_data_validate(tmp_path):  # experiments: test_configs
    validate_train_config(compose_train(tmp_path))
    validate_train_config(compose_train(tmp_path, ["trainer.clip_grad=inf"]))  # log the norm
    validate_train_config(compose_train(tmp_path, ["data=fake", "model=resnet50_dcls"]))


def test_the_effective_batch_gives_update_freq_for_each_process_count(tmp_path):
    from engine.config import resolve_update_freq

    cfg = compose_train(tmp_path, ["trainer.update_freq=3"])  # digits: 64 per process
    assert resolve_update_freq(cfg, world_size=2) == 3  # no effective batch: as given
    cfg = compose_train(tmp_path, ["trainer.effective_batch_size=512"])
    assert [resolve_update_freq(cfg, n) for n in (1, 2, 8)] == [8, 4, 1]
    with pytest.raises(
        ConfigError,
        match=r"effective_batch_size=512 is invalid: not a multiple "
        r"of data\.batch_size x processes = 64 x 3 = 192",
    ):
        resolve_update_freq(cfg, 3)


def test_a_builder_of_ones_own_needs_no_timm_model_name(tmp_path):
    from engine.training.results import row_name

    cfg = compose_train(tmp_path, ["model=convnext_atto"])
    cfg.model = {"_target_": "mymodels.dcls_mobilenet", "num_classes": 10}
    validate_train_config(cfg)  # (was: model.model_name=None is not a registered timm model)
    assert row_name(cfg) == "dcls_mobilenet"  # its results' row: the builder's name
    cfg.model = {"_target_": "timm.create_model", "model_name": "convnext_atto"}
    assert row_name(cfg) == "convnext_atto"
    cfg.model.model_name = None
    with pytest.raises(ConfigError, match=r"model\.model_name=None is invalid: not a registered"):
        validate_train_config(cfg)


def test_entry_point_exits_2_with_one_line_and_no_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "model.kernel_count=0",
            f"paths.log_dir={tmp_path}",
            "logger=none",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-2000:]
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if "model.kernel_count=0 is invalid" in line]
    assert len(errors) == 1 and "[ERROR]" in errors[0]


@pytest.mark.parametrize(
    ("overrides", "warning"),
    [
        (["scheduler.warmup_epochs=100"], r"warmup_epochs=100 is longer than the 15-epoch run"),
        (["scheduler.warmup_epochs=15"], r"warmup_epochs=15 is as long as the 15-epoch run"),
    ],
)
def test_settings_that_never_apply_are_warned_about(tmp_path, overrides, warning, caplog):
    caplog.set_level(logging.WARNING)  # (another test module leaves the root logger at ERROR)
    validate_train_config(compose_train(tmp_path, overrides))
    assert re.search(warning, caplog.text)


def builder_with_a_missing_dependency():
    import an_optional_dependency

    return an_optional_dependency


def builder_offline(pretrained: bool = False):
    """A builder whose weights cannot be downloaded (huggingface_hub's LocalEntryNotFoundError,
    an OSError that does not say 'pretrained')."""
    if pretrained:
        raise OSError("An error happened while trying to locate the file on the Hub")
    return torch.nn.Linear(2, 2)


def test_weights_that_do_not_download_are_one_config_error_and_checked_once(monkeypatch):
    """Offline, the input-size check on the meta device downloaded the weights too (46 s of
    retries, twice), and the real build's OSError was a traceback."""
    from omegaconf import OmegaConf

    from engine.config import check_input_size, instantiate_model

    cfg = OmegaConf.create({"_target_": f"{__name__}.builder_offline", "pretrained": True})
    with pytest.raises(ConfigError, match=r"^model: An error happened while trying to locate"):
        instantiate_model(cfg)
    built = []
    monkeypatch.setattr(
        "engine.config.entry.instantiate_model", lambda c: built.append(c) or torch.nn.Identity()
    )
    check_input_size(cfg, 32, "data.image_size")
    assert [c.pretrained for c in built] == [False]


def test_a_model_value_its_builder_refuses_is_one_config_error():
    # The iso-parameter rule's 29 elements (atto) in a 3x3 kernel: refused by the builder, and
    # reported in one line instead of Hydra's four.
    from hydra.errors import InstantiationException
    from omegaconf import OmegaConf

    import models  # noqa: F401  (registers the DCLS variants)
    from engine.config import instantiate_model

    cfg = OmegaConf.create(
        {"_target_": "timm.create_model", "model_name": "convnext_atto_dcls", "num_classes": 3}
    )
    assert instantiate_model(cfg) is not None
    cfg.dilated_kernel_size = 3
    with pytest.raises(ConfigError, match=r"^model: dilated_kernel_size=3 is invalid: its 9 cells"):
        instantiate_model(cfg)
    cfg.dilated_kernel_size, cfg.bogus = 17, 1  # a key that timm's ConvNeXt does not take
    with pytest.raises(ConfigError, match=r"^model\.bogus is invalid: the builder does not take"):
        instantiate_model(cfg)
    # eval.py's model.kwargs are merged into the checkpoint's model config: named as given
    with pytest.raises(ConfigError, match=r"^model\.kwargs\.bogus is invalid: the builder"):
        instantiate_model(cfg, {"bogus": "model.kwargs."})
    del cfg.bogus
    cfg.pretrained = True  # no weights for a DCLS variant: Hydra's four lines (a RuntimeError)
    with pytest.raises(ConfigError, match=r"^model: No pretrained weights exist for convnext_at"):
        instantiate_model(cfg)
    with pytest.raises(ConfigError, match=r"^model\._target_='nomodule\.build' is invalid: it "):
        instantiate_model(OmegaConf.create({"_target_": "nomodule.build"}))
    # An ImportError inside a builder that imports is the builder's, with its traceback.
    builder = f"{__name__}.builder_with_a_missing_dependency"
    with pytest.raises(InstantiationException, match=r"No module named 'an_optional_dependency'"):
        instantiate_model(OmegaConf.create({"_target_": builder}))
    # A TypeError that names no config key keeps Hydra's report (could be a bug).
    with pytest.raises(InstantiationException, match=r"unsupported operand"):
        instantiate_model(OmegaConf.create({"_target_": "operator.add", "_args_": [1, "a"]}))
