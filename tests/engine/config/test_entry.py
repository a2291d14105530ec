"""Bad input at the entry points: one line naming the value and what is allowed, exit status 2,
close matches for mistyped group options and keys, no traceback."""

import logging
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from engine.config import (
    ConfigError,
    check_command_line,
    cli_number,
    command_line_override,
    job_folder,
    validate_train_config,
)
from tests.conftest import CONFIG_DIR, compose_train

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = Path(CONFIG_DIR)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["model=convnext_tinny_dcls"],
            r"model=convnext_tinny_dcls is invalid: no model/.*close matches: convnext_tiny_dcls",
        ),
        (
            ["-m", "experiment=convnext_tiny_in1k,convnext_tiny_dcls_in1kk"],
            r"close matches: convnext_tiny_dcls_in1k",
        ),
        (
            ["trainer.epoch=3"],
            r"trainer\.epoch is invalid: no key 'epoch' in trainer; close matches: trainer\.epochs",
        ),
        (["optimizer.positions.lr_scal=5"], r"close matches: optimizer\.positions\.lr_scale"),
        (
            ["-m", "optimizer.positions.lr_sclae=1,5"],
            r"close matches: optimizer\.positions\.lr_scale",
        ),
        (["seeed=1"], r"seeed is invalid: no such top-level key; close matches: seed"),
        # +key adds only inside a free-form mapping: the code reads no other new key.
        (
            ["+trainer.epocs=3"],
            r"\+trainer\.epocs is invalid: no key 'epocs' in trainer; close "
            r"matches: trainer\.epochs.*free-form mappings "
            r"\(model, optimizer\.kwargs, scheduler\.kwargs\)",
        ),
        (["+foo=1"], r"\+foo is invalid: no such top-level key"),
        # A value of another kind than its key's default: text where true/false belongs would
        # count as true; text for a number fails later with a traceback.
        (["trainer.ema.enabled=flase"], r"trainer\.ema\.enabled='flase' is invalid: expected true"),
        (["trainer.compile=no"], r"trainer\.compile='no' is invalid: expected true or false"),
        (  # null read as false: a SIGTERM then killed the run without its checkpoint
            ["trainer.preemption.enabled=null"],
            r"trainer\.preemption\.enabled=None is invalid: expected true or false",
        ),
        (  # a traceback: "Key 'ema' is not in struct"
            ["~trainer.ema"],
            r"~trainer\.ema is invalid: the code reads trainer\.ema; give it another value",
        ),
        (["~run_name"], r"~run_name is invalid: the code reads run_name"),
        (["~logger", "logger=csv"], r"~logger is invalid: logger= is given too"),
        (  # a group the run reads (tracebacks: "Key 'logger' is not in struct", exit status 1)
            ["~logger"],
            r"~logger is invalid: the run reads the logger config; choose another with "
            r"logger=<option> \(one of csv, none, wandb\)",
        ),
        (["~data"], r"~data is invalid: the run reads the data config; .*one of digits, fake"),
        (["~paths"], r"~paths is invalid: the run reads the paths config"),
        (  # Hydra's traceback: "Config group override must be a string or a list"
            ["experiment=null"],
            r"experiment=null is invalid: a config group takes one of its options .*~experiment",
        ),
        (["-m", "trainer.compile=true,flase"], r"trainer\.compile='flase' is invalid"),
        (["seed=abc"], r"seed='abc' is invalid: expected a finite number, like its default 0"),
        (["trainer.epochs=abc"], r"trainer\.epochs='abc' is invalid: expected a .*default 15"),
        (["optimizer.lr=nan"], r"optimizer\.lr=nan is invalid: expected a finite number"),
        (["-m", "seed=0,abc"], r"seed='abc' is invalid: expected a finite number"),
        (["model.drop_path_rate=abc"], r"model\.drop_path_rate='abc' is invalid: expected a fin"),
        (["trainer.preemption.signals=SIGTERM"], r"signals='SIGTERM' is invalid: expected a list"),
        (["optimizer.kwargs=abc"], r"optimizer\.kwargs='abc' is invalid: expected a mapping"),
        (  # new keys in a mapping: Hydra's "Key 'betas' is not in struct" (four lines, exit 1)
            ["optimizer.kwargs={betas:[0.9,0.95]}"],
            r"optimizer\.kwargs=\{betas:\[0\.9,0\.95\]\} is invalid: setting a mapping cannot "
            r"add keys.*add them with '\+optimizer\.kwargs\.betas=\[0\.9,0\.95\]'",
        ),
        (["trainer.epochs=="], r"is invalid"),
        (  # the jobs of a sweep over where the data lives would share one folder
            ["-m", "paths.data_dir=/data/a,/data/b", "seed=0,1"],
            r"paths\.data_dir=/data/a,/data/b is invalid: paths\.data_dir is left out of job",
        ),
    ],
)
def test_mistyped_overrides_name_the_close_matches(argv, message):
    with pytest.raises(ConfigError, match=message):
        check_command_line(CONFIGS, "train", argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["model=convnext_tiny_dcls", "trainer.epochs=3"],
        ["-m", "optimizer.positions.lr_scale=1,5,10", "experiment=convnext_tiny_in1k"],
        ["++seed=3", "~debug"],  # forcing is Hydra's business, and deleting an optional group
        ["~model.drop_path_rate", "~experiment"],  # a builder's argument: its own default
        ["logger=wandb", "~logger.csv"],  # W&B alone: each logger entry is optional
        ["+optimizer.kwargs.betas=[0.9,0.99]"],  # a key of a free-form mapping
        ["optimizer.positions={lr_scale:3,weight_decay:0.0}"],  # a mapping of keys it has
        ["+model.drop_rate=0.1", "experiment=convnext_tiny_dcls_in1k"],  # timm's builder's
        ["-m", "optimizer.lr=interval(0.001,0.01)"],  # sampled by a sweeper
        ["model.dilated_kernel_size=[17,17]", "optimizer.lr=1", "-m", "seed=range(0,3)"],
        ["trainer.compile=true", "trainer.ema.enabled=False", "trainer.clip_grad=null"],
        ["hydra.sweep.dir=/tmp/x", "hydra/launcher=submitit_local"],
        ["experiment=convnext_tiny_dcls_in1k", "trainer.update_freq=2"],  # keys an experiment has
        ["logger=wandb", "logger.wandb.mode=disabled"],  # keys a group option brings
        ["--cfg", "job"],  # other Hydra flags: left to Hydra
        ["-m", "paths.data_dir=/data", "seed=0,1"],  # one data folder for the whole sweep
        ["-m", "paper=convnext_tiny,convnext_small"],  # a group left out of names: its jobs differ
    ],
)
def test_valid_overrides_pass(argv):
    check_command_line(CONFIGS, "train", argv)


def test_free_form_keys_without_a_plus_are_told_to_take_one():
    with pytest.raises(ConfigError, match=r"add it to this free-form mapping: \+optimizer\.kw"):
        check_command_line(CONFIGS, "train", ["optimizer.kwargs.eps=1e-6"])
    with pytest.raises(ConfigError, match=r"close matches: model\.drop_path_rate.*\+model\.drop"):
        check_command_line(CONFIGS, "train", ["model.drop_path_rat=0.1"])


@pytest.mark.parametrize("how", ["--config-dir", "-cd", "--config-dir=", "hydra.searchpath"])
def test_config_folders_of_ones_own_are_searched_and_checked(tmp_path, how):
    # A model of one's own in a config folder beside ours: its group option is found, and the
    # other overrides are still checked (--config-dir used to switch every check off).
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "my_r18.yaml").write_text(
        "_target_: timm.create_model\nmodel_name: resnet18\n"
    )
    flags = {
        "--config-dir": ["--config-dir", str(tmp_path)],
        "-cd": ["-cd", str(tmp_path)],
        "--config-dir=": [f"--config-dir={tmp_path}"],
        "hydra.searchpath": [f"hydra.searchpath=[file://{tmp_path}]"],
    }[how]
    check_command_line(CONFIGS, "train", [*flags, "model=my_r18", "trainer.epochs=1"])
    with pytest.raises(ConfigError, match=r"no model/my_r1\.yaml in .*close matches: my_r18"):
        check_command_line(CONFIGS, "train", [*flags, "model=my_r1"])
    with pytest.raises(ConfigError, match=r"trainer\.epoch is invalid: .*trainer\.epochs"):
        check_command_line(CONFIGS, "train", [*flags, "model=my_r18", "trainer.epoch=1"])


def test_a_second_config_dir_replaces_the_first_and_packages_keep_the_key_checks(tmp_path):
    for name in ("first", "second"):
        (tmp_path / name / "model").mkdir(parents=True)
        (tmp_path / name / "model" / f"net_{name}.yaml").write_text("_target_: x.build\n")
    both = ["-cd", str(tmp_path / "first"), "-cd", str(tmp_path / "second")]
    check_command_line(CONFIGS, "train", [*both, "model=net_second"])
    with pytest.raises(ConfigError, match=r"no model/net_first\.yaml"):  # Hydra keeps the last
        check_command_line(CONFIGS, "train", [*both, "model=net_first"])
    package = ["hydra.searchpath=[pkg://hydra.conf]"]  # options not listed here: not checked,
    check_command_line(CONFIGS, "train", [*package, "model=in_the_package"])
    with pytest.raises(ConfigError, match=r"close matches: trainer\.epochs"):  # keys still are
        check_command_line(CONFIGS, "train", [*package, "trainer.epochz=3"])


def test_a_mapping_with_a_key_it_cannot_take_names_the_key():
    # (the hint said '+trainer.ema.foo=1', which is refused: trainer.ema is not free-form)
    with pytest.raises(ConfigError, match=r"trainer\.ema\.foo is invalid: no key 'foo' in trai"):
        check_command_line(CONFIGS, "train", ["trainer.ema={enabled:true,foo:1}"])


def test_slurm_without_sbatch_is_one_line_and_with_it_passes(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    argv = ["-m", "launcher=slurm", "experiment=convnext_tiny_dcls_in1k"]
    with pytest.raises(ConfigError, match=r"launcher=slurm is invalid here: sbatch is not on PATH"):
        check_command_line(CONFIGS, "train", argv)
    sbatch = tmp_path / "sbatch"
    sbatch.write_text("#!/bin/sh\n")
    sbatch.chmod(0o755)
    check_command_line(CONFIGS, "train", argv)
    # without -m the run would start on this (login) node
    with pytest.raises(ConfigError, match=r"launcher=slurm is invalid without -m: .*add -m"):
        check_command_line(CONFIGS, "train", argv[1:])


def test_eval_command_line_is_checked_against_eval_yaml():
    check_command_line(CONFIGS, "eval", ["checkpoint=x.pt", "sets=[in1k]", "roots.in1k=/d"])
    with pytest.raises(ConfigError, match=r"close matches: roots\.in_c"):
        check_command_line(CONFIGS, "eval", ["roots.in_cc=/d"])
    check_command_line(CONFIGS, "eval", ["+model.kwargs.version=v0"])  # README's example
    with pytest.raises(ConfigError, match=r"throughput\.train='flase' is invalid: expected true"):
        check_command_line(CONFIGS, "eval", ["throughput.train=flase"])
    with pytest.raises(
        ConfigError, match=r"sets='in1k' is invalid: expected a list, e\.g\. \[in1k\]"
    ):
        check_command_line(CONFIGS, "eval", ["sets=in1k"])


def _run(script: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args, f"paths.log_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("train.py", ["model=convnext_tinny_dcls"], "close matches: convnext_tiny_dcls"),
        ("train.py", ["trainer.epoch=3"], "close matches: trainer.epochs"),
        ("train.py", ["trainer.epochs=0"], "trainer.epochs=0 is invalid: expected an integer >= 1"),
        ("train.py", ["data.batch_size=2000"], "data.batch_size=2000 is invalid: it exceeds the"),
        ("eval.py", ["checkpoint=/nowhere/last.pt"], "checkpoint='/nowhere/last.pt' is invalid"),
        ("eval.py", [], "checkpoint='???' is invalid: required"),
        (
            "eval.py",
            ["checkpoint=null", "model.name=convnext_tinny_dcls", "sets=[throughput]"],
            "model.name='convnext_tinny_dcls' is invalid: expected null (the checkpoint's) or a "
            "timm model name; close matches: convnext_tiny_dcls",
        ),
    ],
)
def test_entry_points_exit_2_with_one_line(tmp_path, script, args, expected):
    assert expected in _one_error_line(_run(script, args, tmp_path))


def test_an_empty_dataset_folder_is_one_line(tmp_path):
    (tmp_path / "imagenet" / "train").mkdir(parents=True)  # there, but no class folder inside
    args = ["data=imagenet", f"data.root={tmp_path / 'imagenet'}", "trainer.device=cpu"]
    line = _one_error_line(_run("train.py", args, tmp_path))
    assert f"data.root: {tmp_path / 'imagenet' / 'train'} is missing or empty" in line


def test_a_truncated_checkpoint_is_one_line(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"model": {"w": torch.randn(100, 100)}}, path)
    path.write_bytes(path.read_bytes()[:2000])  # a copy cut short
    line = _one_error_line(_run("eval.py", [f"checkpoint={path}"], tmp_path))
    assert f"checkpoint {path} cannot be read: it is truncated, damaged or not a checkpoint" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without GPU")
def test_cuda_without_a_gpu_is_a_config_error(tmp_path):
    cfg = compose_train(tmp_path, ["data=fake"])
    cfg.trainer.device = "cuda"
    expected = r"trainer\.device='cuda' is invalid: no CUDA device .*use trainer\.device=cpu"
    with pytest.raises(ConfigError, match=expected):
        validate_train_config(cfg)


def test_fp16_on_the_cpu_is_explained(tmp_path, caplog):
    cfg = compose_train(tmp_path, ["data=fake", "trainer.amp=fp16"])  # compose_train: device cpu
    with caplog.at_level(logging.WARNING):
        validate_train_config(cfg)
    assert "trainer.amp='fp16' on the CPU runs float16" in caplog.text
    assert "slower than trainer.amp=bf16" in caplog.text


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("scripts/make_tables.py", ["/nowhere/results"], "no result file or folder at /nowhere"),
        (
            "scripts/plot_kernels.py",
            ["/nowhere/last.pt"],
            "checkpoint: no file at /nowhere/last.pt",
        ),
        # (it said "no metrics.csv in /nowhere/run (train with logger=csv)")
        ("scripts/plot_run.py", ["/nowhere/run"], "no run folder at /nowhere/run"),
    ],
)
def test_scripts_report_bad_input_in_one_line(tmp_path, script, args, expected):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert expected in result.stdout + result.stderr


@pytest.mark.parametrize(
    "path",
    [
        "logs/train/run/checkpoints/last.pt",  # stays as it is
        "logs/multiruns/2026-11-30/experiment=convnext_atto_dc_digits,seed=0/checkpoints/last.pt",
        '/data/my runs/it\'s [v2] $HOME \\ "x"/last.pt',
    ],
)
def test_a_printed_override_reads_back_as_its_value_in_the_shell_and_in_hydra(path):
    """The ``eval.py checkpoint=...`` command a sweep job prints must run: its folder's ``=``
    and ``,`` are Hydra syntax unless quoted."""
    word = command_line_override("checkpoint", path)
    (argument,) = shlex.split(word)  # one shell word
    override = OverridesParser.create().parse_override(argument)
    assert override.key_or_group == "checkpoint" and override.value() == path
    if path.startswith("logs/train"):
        assert word == f"checkpoint={path}"  # nothing to quote: printed as it is


def test_an_unquoted_sweep_job_folder_is_named_alone_with_its_quoted_form():
    """``checkpoint=<sweep>/experiment=x,seed=1/...`` unquoted: Hydra's error named the whole
    command line as one override and did not say that the value needed quoting."""
    path = "logs/train/multiruns/s/experiment=convnext_atto_dcls_digits,seed=1/checkpoints/last.pt"
    with pytest.raises(ConfigError) as error:
        check_command_line(CONFIGS, "eval", [f"checkpoint={path}", "sets=[val]"])
    message = str(error.value)
    assert message.startswith(f"checkpoint={path} is invalid: ") and "sets=[val]" not in message
    assert message.endswith(f"is quoted: {command_line_override('checkpoint', path)}")
    with pytest.raises(ConfigError, match=r"^sets=\[val is invalid: [^;]*$"):  # no hint there
        check_command_line(CONFIGS, "eval", ["checkpoint=x", "sets=[val"])


def test_a_sweep_job_without_a_named_override_gets_a_folder_of_its_own():
    """``-m paths.data_dir=/x``: no override names the job, which would write into the sweep
    folder itself (beside the other jobs'); it gets ``job<N>``."""
    hydra_config = OmegaConf.load(CONFIGS / "hydra" / "default.yaml")
    jobs = [{"override_dirname": name, "num": num} for num, name in enumerate(["", "seed=1"])]
    folders = []
    for job in jobs:
        cfg = OmegaConf.create({"sweep": hydra_config.sweep, "hydra": {"job": job}, "now": {}})
        folders.append(OmegaConf.select(cfg, "sweep.subdir"))
    assert folders == ["job0", "seed=1"]


def test_job_folders_stay_one_folder_within_the_file_systems_limit():
    assert job_folder("checkpoint=logs/train/a/last.pt,seed=1", 0) == (
        "checkpoint=logs_train_a_last.pt,seed=1"  # a path value makes no nested folders
    )
    long_a, long_b = "optimizer.lr=" + "1" * 300, "optimizer.lr=" + "1" * 299 + "2"
    assert len(job_folder(long_a, 0).encode()) == 255
    assert job_folder(long_a, 0) != job_folder(long_b, 0)  # cut, and told apart by a hash


@pytest.mark.parametrize(
    ("kind", "minimum", "strict", "text", "error"),
    [
        (int, 1, False, "0", "expected an integer >= 1, got '0'"),
        (int, 0, False, "x", "expected an integer >= 0, got 'x'"),
        (float, 0, True, "0", "expected a number > 0, got '0'"),
        (float, 0, True, "-1.5", "expected a number > 0, got '-1.5'"),
    ],
)
def test_script_numbers_are_refused_below_their_minimum(kind, minimum, strict, text, error):
    import argparse

    parse = cli_number(kind, minimum, strict)
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(error)):
        parse(text)
    assert parse(str(minimum + 1)) == minimum + 1


def test_a_submitted_job_whose_processes_do_not_divide_the_batch_is_refused_at_submission(
    tmp_path, monkeypatch
):
    # (it was refused when the job started on the cluster, after its wait in the queue)
    sbatch = tmp_path / "sbatch"
    sbatch.write_text("#!/bin/sh\n")
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    argv = ["-m", "launcher=slurm", "experiment=convnext_tiny_dcls_in1k"]
    check_command_line(CONFIGS, "train", [*argv, "hydra.launcher.nodes=2", "seed=1,2"])
    with pytest.raises(
        ConfigError,
        match=r"effective_batch_size=4096 is invalid: not a multiple of data\.batch_size x "
        r"processes = 128 x 24 = 3072; .* job \(hydra\.launcher\.nodes=3\) has "
        r"hydra\.launcher\.nodes x tasks_per_node = 3 x 8 processes",
    ):
        check_command_line(CONFIGS, "train", [*argv, "hydra.launcher.nodes=2,3", "seed=1,2"])
    with pytest.raises(ConfigError, match=r"= 96 x 32 = 3072; .* submitted job has"):
        check_command_line(CONFIGS, "train", [*argv, "data.batch_size=96"])
    # the sweep a paper= config defines (hydra.sweeper.params), as the README submits it
    paper = ["-m", "launcher=slurm", "paper=convnext_tiny"]
    check_command_line(CONFIGS, "train", paper)
    with pytest.raises(ConfigError, match=r"128 x 24 = 3072; .* job \(experiment=convnext_tiny_i"):
        check_command_line(CONFIGS, "train", [*paper, "hydra.launcher.nodes=3"])


def test_a_key_under_a_null_mapping_names_the_option_that_sets_it():
    # (Hydra's "Key 'mode' is not in struct", whose +key hint then failed in another way)
    for argv in (["logger.wandb.mode=offline"], ["+logger.wandb.mode=offline"]):
        with pytest.raises(
            ConfigError,
            match=r"logger\.wandb\.mode is invalid: logger\.wandb is null with this config's "
            r"choices; logger=wandb sets it",
        ):
            check_command_line(CONFIGS, "train", argv)
    check_command_line(CONFIGS, "train", ["logger=wandb", "logger.wandb.mode=online"])


def test_printing_the_config_checks_the_overrides_too():
    # (--cfg job skipped every check: Hydra's error, whose +key hint the project refuses)
    for flags in (["--cfg", "job"], ["-c", "all", "--resolve"]):
        argv = [*flags, "trainer.epoch=3"]
        with pytest.raises(ConfigError, match=r"trainer\.epoch is invalid: no key 'epoch'"):
            check_command_line(CONFIGS, "train", argv)
    check_command_line(CONFIGS, "train", ["--cfg", "job", "launcher=slurm"])  # launches nothing


@pytest.mark.parametrize("choice", ["recipe=convnext_in1k", "model/base=dcls"])
def test_a_group_only_other_configs_include_is_one_line(choice):
    # (--help lists them; choosing one was Hydra's "Could not override", exit 1)
    with pytest.raises(
        ConfigError,
        match=rf"{choice} is invalid: .* is not in train\.yaml's defaults list with these "
        r"options, only included by other configs",
    ):
        check_command_line(CONFIGS, "train", [choice])
    check_command_line(CONFIGS, "train", ["experiment=convnext_tiny_dcls_in1k"])


def test_a_failing_override_inside_a_config_file_is_left_to_hydra(tmp_path):
    # (a StopIteration traceback: no command-line option to name; Hydra names the file)
    (tmp_path / "experiment").mkdir()
    bad = "# @package _global_\ndefaults:\n  - override /recipe: convnext_in1k\n"
    (tmp_path / "experiment" / "bad.yaml").write_text(bad)
    check_command_line(CONFIGS, "train", ["--config-dir", str(tmp_path), "experiment=bad"])
    # a _global_ option can be added: the hint says how (model/base's cannot)
    with pytest.raises(ConfigError, match=r"choose one of those, or add it with \+recipe=conv"):
        check_command_line(CONFIGS, "train", ["recipe=convnext_in1k"])
