"""Pictures of a run: scripts/plot_kernels.py, animate_positions.py, plot_run.py and W&B media.

One short CPU training (2 epochs of test_convnext_dcls on fake data) is shared by the module; each
script then draws from its checkpoint and run folder, and the numbers it draws are compared with
the checkpoint's tensors and the metrics file. W&B media are drawn from the trained model through
the same hook train.py calls, into an offline W&B run.
"""

import csv
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import dcls
import engine.pictures
import engine.pictures.media
from engine.checkpoint import load_checkpoint
from engine.checkpoint.models import load_model
from engine.config import InputError
from engine.pictures import plots
from engine.pictures.media import EpochMedia
from engine.pictures.positions import (
    grid_coordinates,
    load_history,
    position_snapshots,
    save_snapshot,
    set_pictures,
)
from engine.training import run as train_run
from engine.training.loggers import build_logger
from tests.conftest import compose_train

ROOT = Path(__file__).resolve().parents[2]
DPI = 40  # small pictures keep the tests fast
EPOCHS = 2
MAX_OUT_CHANNELS = 8
WANDB_FLUSH_S = 60  # W&B's service process writes the offline records asynchronously


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pictures")
    cfg = compose_train(
        tmp,
        [
            "data=fake",
            "model=convnext_atto_dcls",
            "model.model_name=test_convnext_dcls",
            f"trainer.epochs={EPOCHS}",
            "logger=csv",
            f"trainer.position_history.max_out_channels={MAX_OUT_CHANNELS}",
            "run_name=pictures",
            "scheduler.warmup_epochs=1",
            "optimizer.base_batch_size=8",
            "optimizer.positions.lr_scale=100",  # positions visibly move in 16 updates
            "trainer.ema.enabled=true",
            "trainer.ema.decay=0.5",
        ],
    )
    train_run.train(cfg, run_dir=tmp)
    return tmp


@pytest.fixture(scope="module")
def checkpoint(run_dir) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def _shared_positions(weights: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    suffix = ".dcls_positions.P"
    return {
        k.removeprefix(prefix).removesuffix(".P"): v
        for k, v in weights.items()
        if k.endswith(suffix)
    }


def test_snapshots_every_epoch_match_the_checkpoint(run_dir, checkpoint):
    history = load_history(run_dir)
    saved = _shared_positions(checkpoint["model"])
    assert history.epochs == list(range(EPOCHS + 1))  # 0 = the initialisation
    assert set(history.P) == set(saved) and len(saved) == 4  # one set per ConvNeXt stage
    for name, P in saved.items():
        assert history.P[name].shape == (EPOCHS + 1, *P[:, :MAX_OUT_CHANNELS].shape)
        assert torch.equal(history.P[name][-1], P[:, :MAX_OUT_CHANNELS])
        assert not torch.equal(history.P[name][0], history.P[name][-1])  # they moved
        assert history.sizes[name] == (17, 17)


@pytest.mark.parametrize("ema", [False, True])
def test_plot_kernels_writes_a_png_per_stage_of_the_checkpoint(run_dir, checkpoint, tmp_path, ema):
    argv = [str(run_dir / "checkpoints" / "last.pt"), "--out", str(tmp_path), "--channels", "3"]
    assert _script("plot_kernels").main([*argv, "--dpi", str(DPI)] + ["--ema"] * ema) == 0
    weights = checkpoint["ema"] if ema else checkpoint["model"]
    prefix = "module." if ema else ""
    saved = _shared_positions(weights, prefix)
    files = sorted(tmp_path.glob("*.png"))
    assert [f.name for f in files] == [f"kernels_{name}.png" for name in sorted(saved)]
    for path in files:
        assert Image.open(path).size == (12 * DPI, 5 * DPI) and path.stat().st_size > 1000

    model = load_model(run_dir / "checkpoints" / "last.pt", weights="ema" if ema else "model").model
    pictures = set_pictures(model, channels=3)
    assert [p.name for p in pictures] == list(saved)
    for picture in pictures:
        P = saved[picture.name]
        # every position of the stage, on the 17x17 grid (centre 8), equals the checkpoint's
        expected = torch.stack([P[0].flatten(), P[1].flatten()], 1).numpy() + 8
        np.testing.assert_array_equal(picture.points, expected)
        assert plots.position_histogram(picture.points, (17, 17)).sum() == P[0].numel()
        # the heat maps are the checkpoint's kernels, built by the layer library
        layer = picture.layer
        kernel = dcls.construct_kernel(
            weights[f"{prefix}{layer}.weight"], P, None, (17, 17), "bilinear"
        )
        np.testing.assert_allclose(picture.kernels, kernel[picture.channels, 0].numpy(), atol=1e-6)
        channels = list(picture.channels)
        assert len(channels) == 3 and channels[0] == 0 and channels[-1] == P.shape[1] - 1
        assert picture.dense_size == 7 and layer.endswith(".blocks.0.conv_dw")


def test_animate_positions_writes_one_gif_frame_per_snapshot(run_dir, checkpoint, tmp_path):
    out = tmp_path / "positions.gif"
    argv = [str(run_dir), "--out", str(out), "--dpi", str(DPI), "--panel", "2"]
    assert _script("animate_positions").main(argv) == 0
    with Image.open(out) as gif:
        assert gif.n_frames == EPOCHS + 1
        assert gif.size == (4 * 2 * DPI, 1 * 2 * DPI)  # four stages in a row of 2-inch panels
    frames = plots.animation_frames(load_history(run_dir), max_points=10**6)
    for name, P in _shared_positions(checkpoint["model"]).items():
        kept = P[:, :MAX_OUT_CHANNELS]
        np.testing.assert_array_equal(frames[name][-1], grid_coordinates(kept, (17, 17)))
    few = plots.animation_frames(load_history(run_dir), max_points=5)
    assert all(points.shape == (EPOCHS + 1, 5, 2) for points in few.values())


def test_animation_format_errors_name_the_file(run_dir, tmp_path):
    history = load_history(run_dir)
    with pytest.raises(InputError, match=r"\.gif or \.mp4, got 'positions\.png'"):
        plots.save_animation(history, tmp_path / "positions.png")
    if shutil.which("ffmpeg") is None:
        with pytest.raises(InputError, match="needs ffmpeg"):
            plots.save_animation(history, tmp_path / "positions.mp4")
    else:
        assert plots.save_animation(history, tmp_path / "p.mp4", dpi=DPI).stat().st_size > 0
    with pytest.raises(FileNotFoundError, match=r"no DCLS layer, or .*position_history\.every"):
        load_history(tmp_path)


def test_plot_run_draws_the_metrics_of_several_runs(run_dir, tmp_path):
    other = tmp_path / "other"  # a second run of a sweep, with fewer columns and a gap
    other.mkdir()
    (other / "metrics.csv").write_text("epoch,train_loss,val_top1,lr\n1,2.0,,0.1\n2,1.5,20,0.05\n")
    out = tmp_path / "curves.png"
    argv = [str(run_dir), str(other), "--out", str(out), "--dpi", str(DPI)]
    assert _script("plot_run").main(argv) == 0
    assert Image.open(out).size == (12 * DPI, 8 * DPI) and out.stat().st_size > 1000

    runs = {d.name: plots.read_metrics(d) for d in (run_dir, other)}
    figure = plots.run_figure(runs)
    figure.canvas.draw()
    for ax in figure.axes:  # whole epochs on the x axis (matplotlib's default gave 1.25, 1.5)
        shown = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert shown and all(t == int(t) for t in shown), shown
    drawn = {line.get_label(): line for ax in figure.axes for line in ax.lines}
    plotted = {column for columns in plots.RUN_PANELS.values() for column, _ in columns}
    expected = {
        f"{d.name}: {column}": [float(v) if v else np.nan for v in values]
        for d in (run_dir, other)
        for column, values in _raw_columns(d).items()
        if column in plotted
    }
    assert {"val_ema_top1", "lr_positions", "position_abs_mean"} <= set(_raw_columns(run_dir))
    assert set(drawn) == set(expected)
    for label, values in expected.items():
        np.testing.assert_array_equal(drawn[label].get_ydata(), values)
        np.testing.assert_array_equal(drawn[label].get_xdata(), [1.0, 2.0])


def _raw_columns(run_dir: Path) -> dict[str, list[str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: [r[k] for r in rows] for k in rows[0]}


def test_wandb_media_land_in_the_offline_run_folder(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = OmegaConf.create(
        {
            "trainer": {"epochs": EPOCHS},
            "logger": {
                "wandb": {
                    "project": "test",
                    "mode": "offline",
                    "media_every": 1,
                    "media_channels": 2,
                }
            },
        }
    )
    logger = build_logger(cfg.logger, tmp_path, {})
    media = EpochMedia(cfg, tmp_path, logger)
    model = load_model(run_dir / "checkpoints" / "last.pt", weights="model").model
    for epoch in range(1, EPOCHS + 1):
        logger.log({"loss": 1.0}, step=epoch)
        media.end(model, epoch, step=epoch)
    logger.finish()
    assert not logger.failed and media.media_every == 1
    (offline,) = (tmp_path / "wandb").glob("offline-run-*")
    images = sorted((offline / "files" / "media" / "images" / "kernels").glob("*.png"))
    assert len(images) == 4 * EPOCHS  # a picture per stage per epoch
    assert all(Image.open(p).size == (1200, 500) for p in images)
    # histograms are in the run's records (history and summary), which W&B's service process
    # may still be flushing: one count per grid row, as in the checkpoint
    P = model.stages[0].dcls_positions.P.detach()
    expected = np.histogram(P[0].flatten().numpy() + 8, bins=np.arange(18) - 0.5)[0].tolist()
    key = rb"positions/stages\.0\.dcls_positions/axis0\x12\x06values\x82\x01.(\[[\d,]+\])"
    deadline, logged = time.monotonic() + WANDB_FLUSH_S, []
    while len(logged) < EPOCHS and time.monotonic() < deadline:
        time.sleep(0.2)
        logged = re.findall(key, next(offline.glob("*.wandb")).read_bytes(), flags=re.DOTALL)
    assert len(logged) >= EPOCHS and all(json.loads(v) == expected for v in logged)


@pytest.mark.parametrize("script", ["plot_kernels", "animate_positions", "plot_run"])
def test_scripts_say_how_to_install_matplotlib(run_dir, tmp_path, monkeypatch, capsys, script):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    monkeypatch.delitem(sys.modules, "engine.pictures.plots")
    monkeypatch.delattr(engine.pictures, "plots")
    target = run_dir / "checkpoints" / "last.pt" if script == "plot_kernels" else run_dir
    assert _script(script).main([str(target), "--out", str(tmp_path / "x.gif")]) == 2
    assert 'pip install -e ".[viz]"' in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_plot_kernels_refuses_a_dense_size_below_1(capsys):
    # (--dense-size -3 drew the pictures and exited 0)
    with pytest.raises(SystemExit) as exited:
        _script("plot_kernels").main(["/no/run", "--dense-size", "-3"])
    assert exited.value.code == 2
    assert "--dense-size: expected an integer >= 1, got '-3'" in capsys.readouterr().err


def test_media_without_matplotlib_warn_and_training_goes_on(run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "engine.pictures.plots")
    monkeypatch.delattr(engine.pictures, "plots")
    cfg = OmegaConf.create({"trainer": {"epochs": 1}, "logger": {"wandb": {"media_every": 1}}})
    logged = []

    class Recorder:
        def log(self, metrics, step):
            logged.append(metrics)

    media = EpochMedia(cfg, run_dir / "unused", Recorder())
    model = load_model(run_dir / "checkpoints" / "last.pt", weights="model").model
    warnings = []  # recorded at the source: independent of how other tests configured logging
    monkeypatch.setattr(
        engine.pictures.media._logger, "warning", lambda msg, *a: warnings.append(msg % a)
    )
    media.end(model, epoch=1, step=1)
    media.end(model, epoch=1, step=1)
    assert not logged and media.media_every == 0
    assert len(warnings) == 1 and 'pip install -e ".[viz]"' in warnings[0]


def test_training_does_not_import_matplotlib():
    code = "import sys, train; print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


def test_the_outline_is_the_kernel_convert_replaced_whatever_the_layer_names(tmp_path):
    # (it was guessed from the name: any "conv_dw" got 7x7, any "conv2" 3x3, others none)
    model = torch.nn.Module()
    model.conv_dw = torch.nn.Conv2d(4, 4, 5, padding=2, groups=4)
    model.other = torch.nn.Conv2d(4, 4, (3, 5), padding=(1, 2), groups=4)
    dcls.convert(model, kernel_count=2, dilated_kernel_size=9)
    assert [p.dense_size for p in set_pictures(model, channels=1)] == [5, None]  # not square
    save_snapshot(model, tmp_path, epoch=0)
    assert load_history(tmp_path).dense_sizes == {"conv_dw": 5, "other": None}
    older = torch.load(tmp_path / "positions" / "epoch_0000.pt", weights_only=True)
    for entry in older["sets"].values():  # a snapshot written before the size was stored
        del entry["dense_size"]
    torch.save(older, tmp_path / "positions" / "epoch_0000.pt")
    assert load_history(tmp_path).dense_sizes == {"conv_dw": 7, "other": None}  # (the old guess)
    plain = dcls.Dcls2d(4, 4, kernel_count=2, dilated_kernel_size=9, padding=4, groups=4)
    assert set_pictures(torch.nn.Sequential(plain))[0].dense_size is None  # replaced nothing


def test_unshared_sets_are_per_layer_and_the_outline_can_be_given():
    model = dcls.convert(
        torch.nn.Sequential(
            torch.nn.Conv2d(4, 4, 3, padding=1, groups=4),
            torch.nn.Conv2d(4, 4, 3, padding=1, groups=4),
        ),
        kernel_count=2,
        dilated_kernel_size=5,
    )
    sets = position_snapshots(model)
    assert [(s.name, s.layers) for s in sets] == [("0", ["0"]), ("1", ["1"])]
    pictures = set_pictures(model, channels=10, dense_size=1)
    assert [p.dense_size for p in pictures] == [1, 1]
    pictures = set_pictures(model, channels=10)  # the 3x3s convert replaced
    assert [p.dense_size for p in pictures] == [3, 3]
    assert [list(p.channels) for p in pictures] == [[0, 1, 2, 3]] * 2  # all 4 when asked for 10
    with pytest.raises(ValueError, match="channels must be >= 1, got 0"):
        set_pictures(model, channels=0)
    with pytest.raises(InputError, match="no DCLS layer"):
        set_pictures(torch.nn.Conv2d(1, 1, 3))


@pytest.mark.parametrize("learnable_dims", [(1, 2), (0, 2)])
def test_a_3d_layer_learning_two_axes_is_drawn_along_them(learnable_dims, tmp_path):
    layer = dcls.Dcls3d(
        3,
        3,
        4,
        groups=3,
        dilated_kernel_size=(5, 3, 7),
        padding="same",
        learnable_dims=learnable_dims,
    )
    [picture] = set_pictures(torch.nn.Sequential(layer), channels=2)
    dense_axis = ({0, 1, 2} - set(learnable_dims)).pop()
    kernels = layer.construct_kernel().detach()[picture.channels, 0]
    middle = kernels.select(dense_axis + 1, kernels.shape[dense_axis + 1] // 2)
    assert picture.sizes == tuple(layer.dilated_kernel_size[d] for d in learnable_dims)
    np.testing.assert_array_equal(picture.kernels, middle.numpy())
    assert picture.kernels.shape == (2, *picture.sizes) and np.abs(picture.kernels).sum() > 0
    path = plots.save_figure(plots.kernel_figure(picture, (6.0, 3.0), DPI), tmp_path / "k.png")
    assert Image.open(path).size == (6 * DPI, 3 * DPI)


def test_negative_intervals_are_refused():
    cfg = OmegaConf.create({"trainer": {"epochs": 1, "position_history": {"every": -1}}})
    with pytest.raises(ValueError, match=r"position_history.every must be >= 0 \(0: off\), got -1"):
        EpochMedia(cfg, Path("unused"), None)


def test_a_resume_in_the_first_epoch_keeps_the_initial_snapshot(tmp_path):
    """epoch_0000.pt holds the positions at initialisation: a run resumed mid-epoch 1 (trained
    since) must not overwrite it."""
    import timm

    import models  # noqa: F401
    from engine.pictures.positions import HISTORY_DIR
    from engine.training.loggers import MetricLogger

    cfg = compose_train(tmp_path, ["trainer.position_history.every=1"])
    model = timm.create_model("test_convnext_dcls")
    media = EpochMedia(cfg, tmp_path, MetricLogger())
    media.start(model, 0)
    first = (tmp_path / HISTORY_DIR / "epoch_0000.pt").read_bytes()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    EpochMedia(cfg, tmp_path, MetricLogger()).start(model, 0)  # the resumed process
    assert (tmp_path / HISTORY_DIR / "epoch_0000.pt").read_bytes() == first


def test_the_picture_scripts_take_a_run_folder_and_name_a_missing_one(run_dir, tmp_path):
    # (plot_kernels said "no file at <run folder>"; animate_positions blamed the run's settings)
    argv = [str(run_dir), "--out", str(tmp_path), "--channels", "1", "--dpi", "20"]
    assert _script("plot_kernels").main(argv) == 0
    assert len(list(tmp_path.glob("kernels_*.png"))) == 4
    with pytest.raises(FileNotFoundError, match=r"^no run folder at .*nowhere$"):
        load_history(tmp_path / "nowhere")
