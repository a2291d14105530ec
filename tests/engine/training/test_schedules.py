"""The learning-rate schedule and the DCLS schedule of the ImageNet recipe against the authors'.

The authors' schedule is re-implemented from ConvNeXt-dcls ``utils.cosine_scheduler`` (aad45f3,
L455-472), called as their ``main.py`` does (L363-366: lr 4e-3, min_lr 1e-6, 300 epochs,
20 warm-up epochs, ``start_warmup_value`` left at 0).
"""

import logging
import math

import numpy as np
import pytest
import timm
import torch

import dcls
import models  # noqa: F401  (registers the DCLS variants)
from engine.config import ConfigError
from engine.training.schedules import DclsSchedule, build_scheduler
from tests.conftest import compose_train

UPDATES_PER_EPOCH = 1281167 // 4096  # 312, the authors' num_training_steps_per_epoch


def authors_cosine_scheduler(
    base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0
):
    """ConvNeXt-dcls ``utils.cosine_scheduler`` as quoted (``warmup_steps`` left at -1)."""
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = np.array(
        [
            final_value
            + 0.5 * (base_value - final_value) * (1 + math.cos(math.pi * i / (len(iters))))
            for i in iters
        ]
    )
    schedule = np.concatenate((warmup_schedule, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


def _recipe_scheduler(tmp_path, experiment="convnext_tiny_dcls_in1k"):
    cfg = compose_train(tmp_path, [f"experiment={experiment}"])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optimizer.lr)
    scheduler = build_scheduler(optimizer, cfg.scheduler, cfg.trainer.epochs, UPDATES_PER_EPOCH)
    return cfg, optimizer, scheduler


def _lr_at(optimizer, scheduler, update: int) -> float:
    scheduler.step_update(update)
    return optimizer.param_groups[0]["lr"]


def test_recipe_lr_at_epochs_0_10_20_21_300_is_the_authors(tmp_path):
    cfg, optimizer, scheduler = _recipe_scheduler(tmp_path)
    base, final = cfg.optimizer.lr, cfg.scheduler.min_lr
    assert (base, final, cfg.trainer.epochs) == (4e-3, 1e-6, 300)
    authors = authors_cosine_scheduler(base, final, 300, UPDATES_PER_EPOCH, warmup_epochs=20)
    warmup_updates = 20 * UPDATES_PER_EPOCH
    # Warm-up: theirs is linspace(0, base, W) = base * t / (W - 1), timm's base * t / W: they
    # differ by less than one update's increment.
    one_update = base / warmup_updates
    assert _lr_at(optimizer, scheduler, 0) == 0.0 == authors[0]
    at_10 = _lr_at(optimizer, scheduler, 10 * UPDATES_PER_EPOCH)
    assert at_10 == pytest.approx(authors[10 * UPDATES_PER_EPOCH], abs=one_update)
    assert at_10 == pytest.approx(base / 2, rel=1e-3)
    # From the first update after the warm-up, the same cosine over the remaining 280 epochs.
    assert _lr_at(optimizer, scheduler, warmup_updates) == pytest.approx(base, rel=1e-12)
    assert authors[warmup_updates] == pytest.approx(base, rel=1e-12)
    at_21 = _lr_at(optimizer, scheduler, 21 * UPDATES_PER_EPOCH)
    assert at_21 == pytest.approx(authors[21 * UPDATES_PER_EPOCH], rel=1e-12)
    assert at_21 < base
    last = 300 * UPDATES_PER_EPOCH - 1
    assert _lr_at(optimizer, scheduler, last) == pytest.approx(authors[last], rel=1e-9)
    assert _lr_at(optimizer, scheduler, 300 * UPDATES_PER_EPOCH) == final  # the run has ended


def test_recipe_lr_follows_the_authors_at_every_update(tmp_path):
    _, optimizer, scheduler = _recipe_scheduler(tmp_path)
    authors = authors_cosine_scheduler(4e-3, 1e-6, 300, UPDATES_PER_EPOCH, warmup_epochs=20)
    warmup_updates = 20 * UPDATES_PER_EPOCH
    for update in range(0, 300 * UPDATES_PER_EPOCH, 37):
        lr = _lr_at(optimizer, scheduler, update)
        if update < warmup_updates:
            assert lr == pytest.approx(authors[update] * (warmup_updates - 1) / warmup_updates)
        else:
            assert lr == pytest.approx(authors[update], rel=1e-9)


@pytest.mark.parametrize("experiment", ["resnet50_dcls_in1k", "convnext_base_in1k"])
def test_every_imagenet_experiment_has_the_authors_schedule(tmp_path, experiment):
    cfg, optimizer, scheduler = _recipe_scheduler(tmp_path, experiment)
    assert scheduler.get_cycle_length() == 300 * UPDATES_PER_EPOCH
    assert _lr_at(optimizer, scheduler, 20 * UPDATES_PER_EPOCH) == pytest.approx(cfg.optimizer.lr)


@pytest.mark.parametrize("warmup_prefix", [False, True])
def test_the_schedule_lasts_the_run_with_or_without_warmup_prefix(tmp_path, warmup_prefix):
    """The digits default keeps timm's schedule (cosine over all epochs, the warm-up inside it);
    with the prefix the cosine starts after the warm-up. Either way the run is ``epochs`` long."""
    cfg = compose_train(tmp_path)
    assert cfg.scheduler.warmup_prefix is False  # the embedded default: unchanged
    cfg.scheduler.warmup_prefix = warmup_prefix
    epochs, per_epoch = cfg.trainer.epochs, 10
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, cfg.scheduler, epochs, per_epoch)
    assert scheduler.get_cycle_length() == epochs * per_epoch
    assert _lr_at(optimizer, scheduler, epochs * per_epoch - 1) > cfg.scheduler.min_lr
    assert _lr_at(optimizer, scheduler, epochs * per_epoch) == cfg.scheduler.min_lr
    warmup_end = cfg.scheduler.warmup_epochs * per_epoch
    peak = _lr_at(optimizer, scheduler, warmup_end)
    assert (peak == 1.0) == warmup_prefix  # inside the cosine, already decayed a little


def test_a_warmup_prefix_as_long_as_the_run_is_refused(tmp_path):
    cfg = compose_train(tmp_path, ["scheduler.warmup_prefix=true", "scheduler.warmup_epochs=15"])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=r"scheduler\.warmup_epochs=15 leaves no epoch"):
        build_scheduler(optimizer, cfg.scheduler, 15, 10)


@pytest.mark.parametrize(
    ("sched", "kwargs", "decays_at"),
    [
        ("step", ["+scheduler.kwargs.decay_epochs=4", "+scheduler.kwargs.decay_rate=0.5"], [4, 8]),
        ("multistep", ["+scheduler.kwargs.decay_milestones=[3,7]"], [3, 7]),
    ],
)
def test_step_schedules_decay_where_scheduler_kwargs_say(tmp_path, sched, kwargs, decays_at):
    """``step`` and ``multistep`` took timm's defaults (decay at epoch 90 / 90, 180, 270), so
    they never decayed in a shorter run; their keywords come through ``scheduler.kwargs``, in
    epochs, for a schedule stepped per update."""
    overrides = [f"scheduler.sched={sched}", "scheduler.warmup_epochs=0", *kwargs]
    cfg = compose_train(tmp_path, overrides)
    per_epoch = 10
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, cfg.scheduler, 12, per_epoch)
    lrs = [_lr_at(optimizer, scheduler, epoch * per_epoch) for epoch in range(12)]
    rate = 0.5 if sched == "step" else 0.1
    first, second = decays_at
    expected = [1.0] * first + [rate] * (second - first) + [rate**2] * (12 - second)
    assert lrs == pytest.approx(expected)
    middle_before = first * per_epoch - per_epoch // 2  # per update: not an epoch early
    assert _lr_at(optimizer, scheduler, middle_before) == 1.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+scheduler.kwargs.min_lr=0.1",
            r"scheduler\.kwargs\.min_lr=0\.1 is invalid: scheduler\.min_lr sets it",
        ),
        (
            "+scheduler.kwargs.num_epochs=5",
            r"scheduler\.kwargs\.num_epochs=5 is invalid: trainer\.epochs sets it",
        ),
        (
            "+scheduler.kwargs.decay_epoch=5",
            r"scheduler\.kwargs\.decay_epoch=5 is invalid: timm\.scheduler\.create_scheduler_v2 "
            r"does not take it \(.*unexpected keyword argument 'decay_epoch'\)",
        ),
    ],
)
def test_a_scheduler_keyword_set_elsewhere_or_unknown_is_one_config_error(
    tmp_path, override, message
):
    cfg = compose_train(tmp_path, [override])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ConfigError, match=message):
        build_scheduler(optimizer, cfg.scheduler, 15, 10)


def _recipe_dcls_schedule(tmp_path) -> DclsSchedule:
    cfg = compose_train(tmp_path, ["experiment=convnext_tiny_dcls_in1k"])
    return DclsSchedule(cfg.trainer)


def test_recipe_repulsive_loss_is_on_with_weight_1_after_epoch_20(tmp_path):
    """The authors' ``loss + loss_rep ** 2 if epoch > 20`` with a 0-based epoch."""
    schedule = _recipe_dcls_schedule(tmp_path)
    model = timm.create_model("test_convnext_dcls", num_classes=3)
    schedule.prepare(model)
    weights = {epoch: schedule.repulsive_weight_at(epoch) for epoch in (0, 19, 20, 21, 299)}
    assert weights == {0: 0.0, 19: 0.0, 20: 0.0, 21: 1.0, 299: 1.0}
    expected = dcls.repulsive_loss(model, min_distance=1.0, formula="authors")
    assert schedule.repulsive_loss(model).item() == pytest.approx(expected.item())
    assert expected.item() > 0  # positions start within a cell of each other


@pytest.mark.parametrize("name", ["convnext_atto", "convnext_atto_dc", "resnet50_dc"])
def test_repulsive_loss_is_off_for_models_without_positions(tmp_path, caplog, name):
    schedule = _recipe_dcls_schedule(tmp_path)
    with torch.device("meta"):
        model = timm.create_model(name, num_classes=3)
    with caplog.at_level(logging.INFO, logger="engine.training.schedules"):
        schedule.prepare(model)
    assert schedule.repulsive_weight_at(21) == 0.0
    assert "repulsive_loss is off" in caplog.text
    assert schedule.start_epoch(model, 21).repulsive_weight == 0.0  # not computed, not logged


def test_a_minimum_lr_above_the_peak_is_warned_about(tmp_path, caplog):
    # The peak is the optimizer's lr, scaled to the batch: min_lr=1 made the lr climb to 1,
    # silently. A warning, not an error: a batch-1 debug run scales the peak below 1e-6.
    caplog.set_level(logging.WARNING)  # (another test module leaves the root logger at ERROR)
    cfg = compose_train(tmp_path, ["scheduler.min_lr=0.5"])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.25)
    build_scheduler(optimizer, cfg.scheduler, 15, 10)
    assert "scheduler.min_lr=0.5 is above the peak learning rate 0.25" in caplog.text
    caplog.clear()
    cfg.scheduler.min_lr = 0.25  # a constant schedule
    build_scheduler(optimizer, cfg.scheduler, 15, 10)
    assert "min_lr" not in caplog.text


def test_a_repulsive_loss_starting_after_the_run_is_warned_about_for_dcls_models(tmp_path, caplog):
    caplog.set_level(logging.WARNING)  # (another test module leaves the root logger at ERROR)
    cfg = compose_train(tmp_path, ["trainer.repulsive_loss.weight=1", "trainer.epochs=3"])
    DclsSchedule(cfg.trainer).prepare(timm.create_model("test_convnext_dcls", num_classes=3))
    assert "repulsive_loss.weight=1 never applies: start_epoch=21 is at or after" in caplog.text
    caplog.clear()  # a baseline: the loss is off anyway, one info line says so
    DclsSchedule(cfg.trainer).prepare(timm.create_model("test_convnext", num_classes=3))
    assert "never applies" not in caplog.text


@pytest.mark.parametrize(
    "name", ["test_convnext_dcls", "test_convnext"], ids=["bilinear", "baseline"]
)
def test_a_width_schedule_for_a_model_without_widths_is_refused(tmp_path, name):
    # It did nothing, while the metrics logged a scheduled sigma.
    cfg = compose_train(tmp_path, ["trainer.sigma_schedule.enabled=true"])
    with pytest.raises(ConfigError, match=r"sigma_schedule\.enabled=true is invalid: the model"):
        DclsSchedule(cfg.trainer).prepare(timm.create_model(name, num_classes=3))
    gauss = timm.create_model("test_convnext_dcls", num_classes=3, version="gauss")
    DclsSchedule(cfg.trainer).prepare(gauss)
    assert not any(s.requires_grad for s in dcls.sigma_parameters(gauss))
