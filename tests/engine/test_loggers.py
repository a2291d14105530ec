"""Metric loggers: CSV history, W&B offline, and failures that never stop training."""

import csv
import logging

from omegaconf import OmegaConf

from engine.loggers import CsvLogger, MetricLogger, build_logger


def test_csv_logger_appends_and_keeps_history_on_resume(tmp_path):
    logger = CsvLogger(tmp_path)
    logger.log({"loss": 1.0}, step=1)
    logger.log({"loss": 0.5, "val_top1": 90.0}, step=2)
    resumed = CsvLogger(tmp_path)
    resumed.log({"loss": 0.25}, step=3)
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1.0", "2.0", "3.0"]
    assert rows[1]["val_top1"] == "90.0" and rows[2]["val_top1"] == ""


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
    cfg = OmegaConf.create({"kind": "wandb", "project": "test", "mode": "offline"})
    logger = build_logger(cfg, tmp_path, {"model": "x"})
    logger.log({"loss": 1.0}, step=1)
    logger.finish()
    assert not logger.failed
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_none_logger_is_a_no_op(tmp_path):
    logger = build_logger(OmegaConf.create({"kind": "none"}), tmp_path, {})
    assert type(logger) is MetricLogger
    logger.log({"loss": 1.0}, step=1)
    assert not list(tmp_path.iterdir())
