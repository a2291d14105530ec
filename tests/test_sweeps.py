"""Hydra multiruns of train.py: folders named by overrides, the sweep summary, the paper's table
reproduced by one command (at the embedded default's scale), and the submitit launcher."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.evaluation.sweeps import RUN_COLUMNS, summarize_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data=fake",
    "model.model_name=test_convnext_dcls",
    "trainer.epochs=1",
    "optimizer.base_batch_size=8",
    "logger=none",
]


def _train(args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args, f"paths.log_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def _sweep_dir(tmp_path: Path) -> Path:
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    return sweep


@pytest.mark.slow
def test_a_sweep_over_a_key_names_its_folders_and_summarises_them(tmp_path):
    _train(["-m", *TINY, "optimizer.positions.lr_scale=1,5"], tmp_path)
    sweep = _sweep_dir(tmp_path)
    runs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert len(runs) == 2 and all(name.startswith("data=fake,") for name in runs)
    assert [r.split("optimizer.positions.lr_scale=")[1].split(",")[0] for r in runs] == ["1", "5"]
    for run in runs:
        assert json.loads((sweep / run / "results.json").read_text())["epochs"] == 1
    summary = (sweep / "sweep_summary.md").read_text()
    assert all(f"| {run} | " in summary for run in runs)
    # two rows in the table: a hyperparameter sweep's runs are not merged as seeds
    assert summary.count("| test_convnext_dcls (") == 2


@pytest.mark.slow
def test_the_paper_table_in_one_command_at_the_embedded_default_scale(tmp_path):
    """``python train.py -m paper=digits``: baseline, DCLS and DC x 2 seeds, each run's result
    file, the sweep summary with seeds aggregated, and make_tables.py on the sweep folder."""
    _train(["-m", "paper=digits", "trainer.epochs=1", "logger=none"], tmp_path, timeout=1200)
    sweep = _sweep_dir(tmp_path)
    runs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert len(runs) == 6 and all("paper=" not in run for run in runs)
    assert "experiment=convnext_atto_dcls_digits,logger=none,seed=1,trainer.epochs=1" in runs
    summary = (sweep / "sweep_summary.md").read_text()
    tail = " (trainer.epochs=1)"  # the overrides the sweep's rows share (not the logger's)
    rows = {
        line.split(" | ")[0].removeprefix("| ").removesuffix(tail): line
        for line in summary.splitlines()
        if line.startswith("| convnext_atto")
    }
    assert set(rows) >= {"convnext_atto", "convnext_atto_dcls", "convnext_atto_dc"}
    assert all("(n=2)" in rows[name] for name in ("convnext_atto", "convnext_atto_dcls"))
    top1 = {}
    for run in runs:
        result = json.loads((sweep / run / "eval_results.json").read_text())
        name = result["name"].removesuffix(tail)
        top1.setdefault(name, []).append(result["sets"]["val"]["top1"])
    assert all(len(values) == 2 for values in top1.values())
    mean = {name: sum(values) / 2 for name, values in top1.items()}
    delta = mean["convnext_atto_dcls"] - mean["convnext_atto"]
    assert f"| {mean['convnext_atto_dcls']:.2f} ± " in rows["convnext_atto_dcls"]
    assert f"| {delta:+.2f} |" in rows["convnext_atto_dcls"]
    tables = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_tables.py"), str(sweep)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert tables.returncode == 0 and rows["convnext_atto_dcls"] in tables.stdout


def test_a_single_runs_overrides_name_its_row_as_a_sweep_jobs_do(tmp_path):
    """A smoke run (fake data, one epoch) is not one more result of the model's row, which the
    real run's result would then be replaced by or averaged with: its row is named by what it
    changes; where it writes and what it logs do not count."""
    _train([*TINY, "run_name=smoke"], tmp_path)
    result = json.loads((tmp_path / "train" / "smoke" / "eval_results.json").read_text())
    swept = "data=fake,model.model_name=test_convnext_dcls,optimizer.base_batch_size=8"
    assert result["name"] == f"test_convnext_dcls ({swept},trainer.epochs=1)"


def test_train_py_pickles_as_a_submitit_job():
    """Submitit pickles train.py's task function by value (the script runs as ``__main__``), and
    with it whatever the script defines: ``loaders.classes`` written in a ``train`` defined there
    made cloudpickle take ``torch.classes`` along, which does not pickle (every Slurm sweep
    failed at submission). The run lives in ``engine.training.run``, pickled by reference. The
    slow test below submits a sweep."""
    import runpy

    import cloudpickle

    namespace = runpy.run_path(str(ROOT / "train.py"), run_name="train_as_a_script")
    pickled = cloudpickle.dumps(namespace["main"])
    assert b"engine.training.run" in pickled  # a reference to the run, not its code
    assert b"validate_train_config" not in pickled


@pytest.mark.slow
def test_the_submitit_launcher_runs_a_sweep(tmp_path):
    """``-m hydra/launcher=submitit_local``: the path ``launcher=slurm`` takes, on this machine."""
    _train(["-m", *TINY, "seed=0,1", "hydra/launcher=submitit_local"], tmp_path)
    sweep = _sweep_dir(tmp_path)
    runs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name != ".submitit")
    assert [r.split("seed=")[1].split(",")[0] for r in runs] == ["0", "1"]
    for run in runs:
        assert (sweep / run / "checkpoints" / "last.pt").is_file()
    assert "(n=2)" in (sweep / "sweep_summary.md").read_text()  # the two seeds, one row


def test_the_runs_table_orders_numbers_by_value(tmp_path):
    for scale, top1 in ((1, 90.0), (10, 92.0), (5, 91.0)):
        run = tmp_path / f"optimizer.positions.lr_scale={scale}"
        run.mkdir()
        (run / "results.json").write_text(json.dumps({"top1": top1}))
    text = summarize_sweep(tmp_path).read_text()
    rows = [line for line in text.splitlines() if line.startswith("| optimizer")]
    assert [row.split("|")[1].strip()[-2:].lstrip("=") for row in rows] == ["1", "5", "10"]


@pytest.mark.slow
def test_a_job_with_bad_input_fails_alone_and_the_summary_keeps_the_others(tmp_path):
    """``-m trainer.update_freq=100,1``: 100 exceeds the batches of an epoch (a one-line config
    error in that job); the other job still trains, and the summary lists both."""
    sweep_args = ["-m", *TINY, "trainer.update_freq=100,1", f"paths.log_dir={tmp_path}"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *sweep_args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1  # Hydra reports the failed job at the end, in one line
    error = "trainer.update_freq=100 is invalid: it exceeds the 8 batches of an epoch"
    assert error in output and "Traceback" not in output
    # Hydra's line naming the job's overrides, the error, Hydra's hint about HYDRA_FULL_ERROR
    job, line, _ = [line for line in result.stderr.splitlines() if line.strip()][-3:]
    assert "Error executing job" in job and "'trainer.update_freq=100'" in job
    assert line.endswith(error)
    sweep = _sweep_dir(tmp_path)
    (good,) = [p for p in sweep.iterdir() if "update_freq=1," in p.name + ","]
    assert json.loads((good / "results.json").read_text())["epochs"] == 1
    summary = (sweep / "sweep_summary.md").read_text()
    bad_row = next(line for line in summary.splitlines() if "update_freq=100" in line)
    assert f"| {good.name} | " in summary and bad_row.count("| - ") == len(RUN_COLUMNS)


@pytest.mark.slow
def test_a_relaunched_sweep_resumes_each_job_from_its_folder(tmp_path):
    """The same ``-m`` command in the same sweep folder: a finished job reports its results
    without training, and a job stopped after its first epoch (its epoch-1 checkpoint back in
    place, no results) trains only its second."""
    sweep = tmp_path / "train" / "multiruns" / "sweep"
    command = ["-m", *TINY, "trainer.epochs=2", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    _train(command, tmp_path)
    finished, stopped = sorted(p for p in sweep.iterdir() if p.is_dir())
    results = json.loads((finished / "results.json").read_text())
    checkpoints = stopped / "checkpoints"
    (checkpoints / "last.previous.pt").replace(checkpoints / "last.pt")  # the epoch-1 one
    uninterrupted = json.loads((stopped / "results.json").read_text())
    (stopped / "results.json").unlink()
    output = _train(command, tmp_path)
    log = output.stdout + output.stderr
    assert json.loads((finished / "results.json").read_text()) == results  # not trained again
    assert "the run had finished all 2 epochs" in (finished / "train.log").read_text()
    stopped_log = (stopped / "train.log").read_text()
    assert "after epoch 1 and update 8" in stopped_log and "epoch 2/2" in stopped_log
    assert "epoch 1/2" not in stopped_log.split("after epoch 1 and update 8")[1]  # only epoch 2 ran
    resumed = json.loads((stopped / "results.json").read_text())
    assert resumed["epochs"] == 2
    assert resumed["val_loss"] == pytest.approx(uninterrupted["val_loss"], rel=1e-6)  # exact resume
    assert "Traceback" not in log
