"""Metric loggers: CSV history, W&B offline, and failures that never stop training."""

import csv
import logging

import pytest
from omegaconf import OmegaConf

from engine.config import ConfigError, validate_train_config
from engine.training.loggers import (
    CsvLogger,
    LoggerGroup,
    MetricLogger,
    WandbLogger,
    build_logger,
    wandb_run_id,
)
from tests.conftest import compose_train


def test_csv_logger_appends_and_keeps_history_on_resume(tmp_path):
    logger = CsvLogger(tmp_path)
    logger.log({"loss": 1.0, "epoch": 1}, step=1)
    logger.log({"loss": 0.5, "val_top1": 90.5, "epoch": 2}, step=2)
    resumed = CsvLogger(tmp_path)
    resumed.log({"loss": 0.25, "epoch": 3}, step=3)
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # whole numbers stay whole in the rows read back after the resume, as in the new one
    assert [(r["step"], r["epoch"]) for r in rows] == [("1", "1"), ("2", "2"), ("3", "3")]
    assert rows[1]["val_top1"] == "90.5" and rows[2]["val_top1"] == ""


def test_csv_logger_of_a_resumed_run_drops_the_rows_after_its_checkpoint(tmp_path):
    """A run killed between logging epoch 2 (step 16) and checkpointing it resumes from step 8,
    trains epoch 2 again and logs it anew: one row per step, the new one."""
    killed = CsvLogger(tmp_path)
    killed.log({"loss": 1.0}, step=8)
    killed.log({"loss": 0.9}, step=16)
    resumed = CsvLogger(tmp_path, resume_step=8)
    resumed.log({"loss": 0.8}, step=16)
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["loss"]) for r in rows] == [("8", "1"), ("16", "0.8")]


def test_media_stay_out_of_the_csv_and_old_files_with_them_resume(tmp_path):
    # W&B media went to the CSV as object reprs; a resumed run then failed to read the file
    # ("could not convert string to float"), and so did plot_run.py.
    from engine.pictures.plots import read_metrics

    class Image:  # a wandb.Image stand-in
        pass

    logger = CsvLogger(tmp_path)
    logger.log({"loss": 1.0, "epoch": 1}, step=1)
    logger.log({"kernels/stage0": Image()}, step=1)  # media only: no new row, no column
    logger.log({"loss": 0.5, "epoch": 2, "kernels/stage0": Image()}, step=2)
    with open(tmp_path / "metrics.csv", newline="") as f:
        assert csv.DictReader(f).fieldnames == ["step", "loss", "epoch"]
    broken = tmp_path / "old"  # a file written before: the reprs are in it
    broken.mkdir()
    (broken / "metrics.csv").write_text(
        "step,loss,epoch,kernels/stage0\n1,1,1,<wandb.Image object at 0x7f>\n2,0.5,2,\n"
    )
    resumed = CsvLogger(broken, resume_step=2)
    assert resumed.rows == [
        {"step": 1, "loss": 1, "epoch": 1},
        {"step": 2, "loss": 0.5, "epoch": 2},
    ]
    assert list(read_metrics(broken)["loss"]) == [1.0, 0.5]


def test_a_step_logged_again_is_one_row_with_the_known_values(tmp_path):
    """A run resumed from a checkpoint at its epoch's last update logs that epoch again with
    nothing trained (NaN training means): the row keeps the first values where the second has
    none, and takes the new validation."""
    logger = CsvLogger(tmp_path)
    logger.log({"train_loss": 1.5, "val_top1": 60.0}, step=22)
    resumed = CsvLogger(tmp_path, resume_step=22)
    resumed.log({"train_loss": float("nan"), "val_top1": 61.0}, step=22)
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["train_loss"], r["val_top1"]) for r in rows] == [("22", "1.5", "61")]


def test_failing_logger_warns_once_and_goes_on(tmp_path, caplog):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    logger = CsvLogger(not_a_folder)
    with caplog.at_level(logging.WARNING):
        logger.log({"loss": 1.0}, step=1)
        logger.log({"loss": 0.5}, step=2)
        logger.finish()
    warnings = [r for r in caplog.records if "disabled for this run" in r.message]
    assert len(warnings) == 1 and logger.failed


def test_wandb_offline_needs_no_network(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = OmegaConf.create({"wandb": {"project": "test", "mode": "offline"}})
    logger = build_logger(cfg, tmp_path, {"model": "x"})
    logger.log({"loss": 1.0}, step=1)
    logger.finish()
    assert not logger.failed
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_none_logger_is_a_no_op(tmp_path):
    logger = build_logger(OmegaConf.create({"csv": None, "wandb": None}), tmp_path, {})
    assert type(logger) is MetricLogger
    logger.log({"loss": 1.0}, step=1)
    assert not list(tmp_path.iterdir())


def test_full_disk_csv_warns_once_and_training_goes_on(tmp_path, monkeypatch, caplog):
    logger = CsvLogger(tmp_path)
    logger.log({"loss": 1.0}, step=1)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("builtins.open", disk_full)
    with caplog.at_level(logging.WARNING):
        logger.log({"loss": 0.5}, step=2)
        logger.log({"loss": 0.25}, step=3)
        logger.finish()
    warnings = [r for r in caplog.records if "No space left on device" in r.message]
    assert len(warnings) == 1 and logger.failed
    monkeypatch.undo()
    with open(tmp_path / "metrics.csv", newline="") as f:
        assert [r["loss"] for r in csv.DictReader(f)] == ["1"]  # the good history survives


def test_wandb_init_failure_warns_once_and_logging_is_a_no_op(tmp_path, monkeypatch, caplog):
    import wandb

    def no_network(*args, **kwargs):
        raise wandb.errors.CommError("Network error: could not reach api.wandb.ai")

    monkeypatch.setattr(wandb, "init", no_network)
    cfg = OmegaConf.create({"wandb": {"project": "test", "mode": "online"}})
    with caplog.at_level(logging.WARNING):
        logger = build_logger(cfg, tmp_path, {})
        logger.log({"loss": 1.0}, step=1)
        logger.finish()
    assert logger.failed and logger.run is None
    assert len([r for r in caplog.records if "could not reach" in r.message]) == 1


def test_requeued_job_resumes_the_same_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "my_run"
    cfg = OmegaConf.create({"wandb": {"project": "test", "mode": "offline"}})
    ids = []
    for step in (1, 2):  # the first job, then the requeued one in the same folder
        logger = build_logger(cfg, run_dir, {})
        ids.append(logger.run.id)
        logger.log({"loss": 1.0 / step}, step=step)
        logger.finish()
    assert ids == ["my_run", "my_run"]
    assert list((run_dir / "wandb").glob("offline-run-*-my_run"))  # synced as one run id


def test_a_run_started_over_in_its_folder_is_another_wandb_run(tmp_path, monkeypatch):
    """After resume=never set the earlier run aside, the same folder's id resumed the earlier
    W&B run (appending steps that start again at 1); a requeue of the new run keeps its id."""
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "my_run"
    cfg = OmegaConf.create({"wandb": {"project": "test", "mode": "offline"}})
    ids = []
    for earlier_runs in (0, 1, 1):  # the first run; started over; the new run requeued
        if earlier_runs:
            (run_dir / ".earlier" / "2026-12-01_10-00-00").mkdir(parents=True, exist_ok=True)
        logger = build_logger(cfg, run_dir, {})
        ids.append(logger.run.id)
        logger.finish()
    assert ids == ["my_run", "my_run-2", "my_run-2"]


def test_a_sweep_jobs_wandb_run_id_names_its_sweep(tmp_path, monkeypatch):
    """Sweep job folders are named by overrides alone (``seed=0``), the same in every sweep: the
    dated sweep folder goes into the id, so a new sweep does not append to an old one's runs."""
    import engine.training.loggers as loggers

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(loggers, "multirun_overrides", lambda: ["seed=0"])
    cfg = OmegaConf.create({"wandb": {"project": "test", "mode": "offline"}})
    ids = []
    for sweep in ("2026-11-30_10-00-00", "2026-12-01_10-00-00"):
        logger = build_logger(cfg, tmp_path / sweep / "seed=0", {})
        ids.append(logger.run.id)
        logger.finish()
    assert ids == ["2026-11-30_10-00-00-seed=0", "2026-12-01_10-00-00-seed=0"]


def test_logger_wandb_writes_the_csv_too(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_train(tmp_path, ["logger=wandb"])
    logger = build_logger(cfg.logger, tmp_path, {})
    assert isinstance(logger, LoggerGroup)
    assert [type(x) for x in logger.loggers] == [CsvLogger, WandbLogger]
    logger.log({"loss": 1.0}, step=1)
    logger.finish()
    with open(tmp_path / "metrics.csv", newline="") as f:
        assert [r["loss"] for r in csv.DictReader(f)] == ["1"]  # plot_run.py can draw it
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_logger_wandb_kwargs_reach_wandb_init(tmp_path, monkeypatch):
    """A cluster user's entity, group and tags (WandbLogger took **kwargs; nothing passed any)."""
    import wandb

    calls = []

    def init(entity=None, tags=None, **kwargs):  # (the config check reads its keywords)
        calls.append({"entity": entity, "tags": tags, **kwargs})

    monkeypatch.setattr(wandb, "init", init)
    overrides = [
        "logger=wandb",
        "+logger.wandb.kwargs.entity=lab",
        "+logger.wandb.kwargs.tags=[dcls,tiny]",
    ]
    cfg = compose_train(tmp_path, overrides)
    validate_train_config(cfg)
    build_logger(cfg.logger, tmp_path, {})
    assert calls[0]["entity"] == "lab" and calls[0]["tags"] == ["dcls", "tiny"]
    assert type(calls[0]["tags"]) is list  # a plain list, not an OmegaConf ListConfig


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+logger.wandb.kwargs.project=x",
            r"kwargs\.project='x' is invalid: logger\.wandb\.project sets",
        ),
        ("+logger.wandb.kwargs.id=x", r"kwargs\.id='x' is invalid: logger\.wandb\.run_id sets it"),
        (
            "+logger.wandb.kwargs.entitty=lab",
            r"kwargs\.entitty='lab' is invalid: not a keyword of wandb\.init; close matches: "
            r"entity",
        ),
    ],
)
def test_a_wandb_keyword_set_elsewhere_or_unknown_is_refused(tmp_path, override, message):
    cfg = compose_train(tmp_path, ["logger=wandb", override])
    with pytest.raises(ConfigError, match=message):
        validate_train_config(cfg)


def test_wandb_run_ids_from_sweep_folder_names():
    assert wandb_run_id("my_run") == "my_run"
    swept = "experiment=convnext_tiny_dcls_in1k,seed=0"  # W&B refuses the comma
    assert wandb_run_id(swept) == "experiment=convnext_tiny_dcls_in1k-seed=0"
    assert wandb_run_id("a/b:c#d") == "a-b-c-d"
    long_a, long_b = "x" * 80 + "a", "x" * 80 + "b"
    assert len(wandb_run_id(long_a)) == 64 and wandb_run_id(long_a) != wandb_run_id(long_b)
