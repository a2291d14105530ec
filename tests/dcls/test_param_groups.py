"""dcls.param_groups: positions in their own groups, composable with timm."""

import pytest
import torch
from timm.optim import create_optimizer_v2, param_groups_layer_decay
from timm.scheduler import create_scheduler_v2
from torch import nn

import dcls


class _Net(nn.Sequential):
    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's hook for layer-wise decay: stem, one block, head."""
        return {"stem": r"^0", "blocks": [(r"^1", None)]}


def _model():
    return _Net(
        nn.Conv2d(3, 8, 3, padding=1),
        dcls.Dcls2d(8, 8, 4, dilated_kernel_size=7, padding=3, groups=8, version="gauss"),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 2),
    )


def test_groups_split_decay_positions_and_sigmas():
    model = _model()
    groups = {
        g["name"]: g
        for g in dcls.param_groups(model, weight_decay=0.05, positions_lr_scale=5.0, lr=1e-3)
    }
    assert set(groups) == {"decay", "decay_positions", "no_decay", "decay_sigmas"}
    assert groups["decay_positions"]["params"] == [model[1].P]
    assert groups["decay_sigmas"]["params"] == [model[1].SIG]
    assert groups["decay_positions"]["weight_decay"] == 0.0
    assert groups["decay_positions"]["lr_scale"] == 5.0
    assert groups["decay_positions"]["lr"] == pytest.approx(5e-3)
    assert {id(p) for p in groups["decay"]["params"]} == {
        id(model[0].weight),
        id(model[1].weight),
        id(model[3].weight),
    }
    n_params = sum(len(g["params"]) for g in groups.values())
    assert n_params == len(list(model.parameters()))
    text = dcls.describe_param_groups(model, list(groups.values()))
    assert '"1.P"' in text


def test_position_scale_survives_layer_decay_and_timm_scheduler():
    model = _model()
    base = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.5)
    groups = dcls.param_groups(model, base_groups=base, positions_lr_scale=5.0)
    optimizer = create_optimizer_v2(groups, opt="adamw", lr=1e-3, weight_decay=0.05)
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=10, warmup_epochs=0)
    scheduler.step(3)
    layer_of_dcls = next(
        g for g in optimizer.param_groups if any(p is model[1].weight for p in g["params"])
    )
    positions = next(g for g in optimizer.param_groups if any(p is model[1].P for p in g["params"]))
    assert positions["weight_decay"] == 0.0
    assert positions["lr"] == pytest.approx(5.0 * layer_of_dcls["lr"])
    assert layer_of_dcls["lr_scale"] < 1.0  # layer decay did apply


def test_shared_positions_of_a_converted_timm_model_take_their_first_layers_scale():
    """A stock timm model converted with shared positions: timm's group matcher does not know
    ``stages.N.dcls_positions``, which fell in the top group (the head's scale, 15x stage 0's
    under layer decay 0.8); each set now takes the scale of the first block using it."""
    import timm

    model = dcls.convert(
        timm.create_model("convnext_atto"),
        kernel_count=5,
        dilated_kernel_size=9,
        share_key=lambda name: name.split(".blocks.")[0],
    )
    base = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.8)
    groups = dcls.param_groups(model, base_groups=base, positions_lr_scale=5.0)
    n_params = sum(len(g["params"]) for g in groups)
    assert n_params == len([p for p in model.parameters() if p.requires_grad])
    for stage in model.stages:
        positions = stage.dcls_positions.P
        first_weight = stage.blocks[0].conv_dw.weight
        home = next(g for g in groups if any(p is positions for p in g["params"]))
        layer = next(g for g in groups if any(p is first_weight for p in g["params"]))
        assert home["lr_scale"] == pytest.approx(5.0 * layer["lr_scale"])
        assert home["weight_decay"] == 0.0
    first = next(
        g for g in groups if any(p is model.stages[0].dcls_positions.P for p in g["params"])
    )
    assert first["lr_scale"] < 1.0  # stage 0's, not the head's 5.0


def test_position_scale_survives_torch_schedulers():
    model = _model()
    optimizer = torch.optim.AdamW(dcls.param_groups(model, lr=1e-3), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["decay_positions"] == pytest.approx(5.0 * lrs["decay"])
