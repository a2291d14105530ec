"""Mixup/CutMix and the criterion from the data config."""

from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy

from engine.training.losses import build_criterion, build_mixup
from tests.conftest import compose_train


def test_the_recipes_mixup_is_the_authors():
    """ConvNeXt's main.py: --mixup 0.8 --cutmix 1.0 --mixup_prob 1.0 --mixup_switch_prob 0.5
    --mixup_mode batch --smoothing 0.1."""
    cfg = compose_train(None, ["experiment=convnext_tiny_dcls_in1k"])
    mixup = build_mixup(cfg.data)
    assert isinstance(mixup, Mixup)
    assert (mixup.mixup_alpha, mixup.cutmix_alpha, mixup.label_smoothing) == (0.8, 1.0, 0.1)
    assert (mixup.mix_prob, mixup.switch_prob, mixup.mode) == (1.0, 0.5, "batch")
    assert isinstance(build_criterion(cfg.data, mixup), SoftTargetCrossEntropy)


def test_mixup_probabilities_and_mode_are_config_keys():
    """They were timm's defaults, out of reach of a sweep."""
    overrides = [
        "data.mixup=0.2",
        "data.mixup_prob=0.5",
        "data.mixup_switch_prob=0.0",
        "data.mixup_mode=elem",
    ]
    mixup = build_mixup(compose_train(None, overrides).data)
    assert (mixup.mix_prob, mixup.switch_prob, mixup.mode) == (0.5, 0.0, "elem")
    assert build_mixup(compose_train(None).data) is None  # the digits default: no Mixup
