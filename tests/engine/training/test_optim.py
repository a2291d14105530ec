"""Position groups in the real training setup: lr = schedule x 5, no weight decay, layer decay."""

import pytest
import timm
import torch
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3

import models  # noqa: F401
from engine.training.optim import build_optimizer, scaled_lr, schedule_lr
from tests.conftest import compose_train


@pytest.mark.parametrize("layer_decay", [None, 0.8])
def test_position_lr_is_five_times_the_schedule(tmp_path, layer_decay):
    cfg = compose_train(
        tmp_path,
        ["model.model_name=test_convnext_dcls", f"optimizer.layer_decay={layer_decay or 'null'}"],
    )
    model = timm.create_model("test_convnext_dcls", num_classes=10)
    optimizer = build_optimizer(model, cfg.optimizer, effective_batch_size=256)
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=10,
        warmup_epochs=2,
        warmup_lr=1e-6,
        min_lr=1e-6,
        step_on_epochs=False,
        updates_per_epoch=10,
    )
    shared = model.stages[1].dcls_positions.P
    for step in (0, 5, 20, 60, 99):
        scheduler.step_update(step)
        position_group = next(
            g for g in optimizer.param_groups if any(p is shared for p in g["params"])
        )
        # the group the stage's other parameters (same layer id) sit in
        weights_group = next(
            g
            for g in optimizer.param_groups
            if any(p is model.stages[1].blocks[0].conv_dw.weight for p in g["params"])
        )
        assert position_group["weight_decay"] == 0.0
        assert position_group["lr"] == pytest.approx(5.0 * weights_group["lr"])
        # the logged lr is the schedule's, whatever layer-wise decay does to the first group
        assert schedule_lr(optimizer) == pytest.approx(scheduler._get_lr(step)[0])
    if layer_decay:
        assert weights_group["lr_scale"] < 1.0 and optimizer.param_groups[0]["lr_scale"] < 1.0


def test_recipe_lr_scales_linearly_with_the_effective_batch(tmp_path):
    cfg = compose_train(tmp_path, ["experiment=convnext_tiny_dcls_in1k"])
    assert scaled_lr(cfg.optimizer, 4096) == pytest.approx(4e-3)
    assert scaled_lr(cfg.optimizer, 1024) == pytest.approx(1e-3)


def test_ema_counts_a_shared_position_once():
    model = timm.create_model("test_convnext_dcls", num_classes=10)
    ema = ModelEmaV3(model, decay=0.9)
    before = model.stages[0].dcls_positions.P.detach().clone()
    with torch.no_grad():
        model.stages[0].dcls_positions.P.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.module.stages[0].dcls_positions.P, before + 0.1)
    assert ema.module.stages[1].blocks[1].conv_dw.positions[0] is (
        ema.module.stages[1].dcls_positions.P
    )


def test_a_keyword_the_optimizer_does_not_take_is_one_config_error(tmp_path):
    # (it was a 28-line TypeError traceback from inside timm)
    from engine.config import ConfigError
    from tests.conftest import compose_train

    cfg = compose_train(tmp_path, ["+optimizer.kwargs.bettas=[0.9,0.95]"])
    with pytest.raises(
        ConfigError,
        match=r"optimizer\.kwargs\.bettas=\[0\.9, 0\.95\] is invalid: the adamw optimizer does "
        r"not take it \(.*unexpected keyword argument 'bettas'\)",
    ):
        build_optimizer(torch.nn.Linear(2, 2), cfg.optimizer, 64)
    cfg = compose_train(tmp_path, ["+optimizer.kwargs.lr=0.1"])  # given twice: name the key
    with pytest.raises(ConfigError, match=r"kwargs\.lr=0\.1 is invalid: optimizer\.lr sets it"):
        build_optimizer(torch.nn.Linear(2, 2), cfg.optimizer, 64)
