"""The EMA: ``per_layer`` averages a shared position set once per layer using it, as the authors'
timm 0.3.2 ``ModelEma`` did; ``once`` is timm's ``ModelEmaV3``."""

import pytest
import timm
import torch

import dcls
import models  # noqa: F401  (registers the DCLS variants)
from engine.training.ema import build_ema

DECAY = 0.9
STEP = 100  # past ModelEmaV3's first two updates, which copy the model


def _moved_copy(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)


@pytest.mark.parametrize("mode", ["once", "per_layer"])
def test_shared_positions_are_averaged_once_or_once_per_layer(mode):
    model = timm.create_model("convnext_atto_dcls", num_classes=10)
    sets = list(dcls.position_sets(model))
    assert sorted(len(s.layers) for s in sets) == [2, 2, 2, 6]  # one shared set per stage
    ema = build_ema(model, DECAY, mode)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    _moved_copy(model)
    ema.update(model, step=STEP)
    after = ema.module.state_dict()
    for s in sets:
        layers = len(s.layers) if mode == "per_layer" else 1
        key = f"{s.name}.P"
        expected = DECAY**layers * before[key] + (1 - DECAY**layers) * model.state_dict()[key]
        torch.testing.assert_close(after[key], expected)
    other = "head.fc.weight"  # every other parameter: decay, in both modes
    expected = DECAY * before[other] + (1 - DECAY) * model.state_dict()[other]
    torch.testing.assert_close(after[other], expected)


def test_an_unknown_mode_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"shared_positions='twice' is invalid: expected one of"):
        build_ema(torch.nn.Linear(2, 2), DECAY, "twice")
