"""engine.checkpoint.training: what a resume takes from the checkpoint, and what from the run."""

import logging
import random
import time

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from timm.scheduler import CosineLRScheduler
from torch import nn

from engine.checkpoint import capture_rng, restore_training, training_state
from engine.config import ConfigError
from engine.training.loop import TrainState

UPDATES = 10


def _state(weight_decay: float, t_initial: int) -> TrainState:
    torch.manual_seed(0)  # the same initial weights for every state
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=weight_decay)
    scheduler = CosineLRScheduler(optimizer, t_initial=t_initial, t_in_epochs=False)
    return TrainState(model, optimizer, scheduler, nn.MSELoss(), torch.device("cpu"))


def _trained_checkpoint(config: dict, rng: list | None = None) -> dict:
    state = _state(weight_decay=0.1, t_initial=UPDATES)
    for _ in range(3):
        state.model(torch.randn(4, 3)).square().sum().backward()
        state.optimizer.step()
        state.optimizer.zero_grad()
        state.step += 1
        state.scheduler.step_update(state.step)
    return training_state(state, state.model, OmegaConf.create(config), rng)


def test_resume_takes_the_moments_from_the_checkpoint_and_the_hyperparameters_from_the_run(
    caplog,
):
    old = {"optimizer": {"weight_decay": 0.1}, "trainer": {"epochs": 2}}
    new = {"optimizer": {"weight_decay": 0.05}, "trainer": {"epochs": 4}}
    checkpoint = _trained_checkpoint(old)
    state = _state(weight_decay=0.05, t_initial=2 * UPDATES)  # this run: longer, less decay
    with caplog.at_level(logging.WARNING):
        restore_training(state, state.model, checkpoint, config=new)

    saved = checkpoint["optimizer"]["state"][0]["exp_avg"]
    torch.testing.assert_close(state.optimizer.state_dict()["state"][0]["exp_avg"], saved)
    # the trained weights, not this run's fresh (same-seed) initial ones
    assert not torch.equal(checkpoint["model"]["weight"], _state(0.05, UPDATES).model.weight)
    assert torch.equal(state.model.weight, checkpoint["model"]["weight"])
    assert torch.equal(state.model.bias, checkpoint["model"]["bias"])
    group = state.optimizer.param_groups[0]
    assert group["weight_decay"] == 0.05  # load_state_dict alone would bring back 0.1
    expected_lr = CosineLRScheduler(
        torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1),
        t_initial=2 * UPDATES,
        t_in_epochs=False,
    )._get_lr(3)[0]
    assert group["lr"] == pytest.approx(expected_lr)  # step 3 of this run's 20-update cosine
    assert state.step == 3
    (warning,) = [r.message for r in caplog.records if "changed hyperparameters" in r.message]
    assert "optimizer.weight_decay 0.1 -> 0.05" in warning
    assert "trainer.epochs 2 -> 4" in warning


def test_an_unchanged_resume_logs_no_hyperparameter_change(caplog):
    config = {"optimizer": {"weight_decay": 0.1}, "scheduler": {"sched": "cosine"}}
    checkpoint = _trained_checkpoint(config)
    state = _state(weight_decay=0.1, t_initial=UPDATES)
    with caplog.at_level(logging.WARNING):
        restore_training(state, state.model, checkpoint, config=config)
    assert not [r for r in caplog.records if "changed hyperparameters" in r.message]


def test_a_checkpoint_of_other_model_or_data_settings_is_not_resumed(caplog):
    # (the experiments' fixed run names resumed a smoke run's checkpoint in the real run, with a
    # warning about the learning rate only)
    old = {
        "run_name": "convnext_tiny_dcls_in1k_seed0",
        "model": {"drop_path_rate": 0.1, "conv_algorithm": "auto"},
        "data": {"root": "/smoke", "image_size": 32, "mixup": 0.8, "train_split": "train"},
    }
    checkpoint = _trained_checkpoint(old)
    # where the data lies, its augmentation, how the convolution is computed: free (logged);
    # a key the checkpoint's config did not have yet: no change
    free = {"root": "/scratch", "mixup": 0.0, "train_split": "ILSVRC_train", "num_workers": 10}
    moved = old | {
        "data": old["data"] | free,
        "model": old["model"] | {"conv_algorithm": "fft", "position_init_std": 0.5},
    }
    caplog.set_level(logging.WARNING)
    restore_training(_state(0.1, UPDATES), _state(0.1, UPDATES).model, checkpoint, config=moved)
    assert "data.mixup 0.8 -> 0.0" in caplog.text and "position_init_std" not in caplog.text
    other = old | {"data": old["data"] | {"image_size": 224}, "model": {"drop_path_rate": 0.3}}
    state = _state(0.1, UPDATES)
    with pytest.raises(
        ConfigError,
        match=r"the checkpoint this run resumes \(run_name='convnext_tiny_dcls_in1k_seed0'\) "
        r"was trained with other model or data settings \(model\.drop_path_rate 0\.1 -> 0\.3; "
        r"data\.image_size 32 -> 224\); run it in another folder .* resume=never",
    ):
        restore_training(state, state.model, checkpoint, config=other)


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), torch.rand(()).item()


def _rng_of_seed(seed: int) -> tuple[dict, tuple[float, float, float]]:
    """Every RNG seeded with ``seed``: its captured state, and the draws that follow it."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    state = capture_rng()
    return state, _draws()


@pytest.mark.parametrize("rank", [0, 1])
def test_each_rank_resumes_with_its_own_rng_streams(rank):
    (state0, draws0), (state1, draws1) = _rng_of_seed(10), _rng_of_seed(11)
    checkpoint = _trained_checkpoint({}, rng=[state0, state1])
    state = _state(weight_decay=0.1, t_initial=UPDATES)
    restore_training(state, state.model, checkpoint, world_size=2, rank=rank)
    assert _draws() == (draws0, draws1)[rank]


def test_a_rank_the_checkpoint_has_no_rng_for_gets_fresh_streams_of_its_own():
    """A run checkpointed by 2 ranks, resumed by 4 (half the update_freq): ranks 2 and 3 get
    streams from (seed, rank, step), different from each other's, the same on every resume."""
    (state0, draws0), (state1, draws1) = _rng_of_seed(10), _rng_of_seed(11)
    checkpoint = _trained_checkpoint({}, rng=[state0, state1])

    def draws_of(rank: int) -> tuple[float, float, float]:
        state = _state(weight_decay=0.1, t_initial=UPDATES)
        restore_training(state, state.model, checkpoint, world_size=4, rank=rank, seed=7)
        return _draws()

    rank2, rank3 = draws_of(2), draws_of(3)
    assert len({rank2, rank3, draws0, draws1}) == 4
    assert draws_of(2) == rank2


def test_a_checkpoint_with_one_rng_state_still_resumes():
    """Checkpoints written before the states were kept per rank hold one dict."""
    saved, draws = _rng_of_seed(12)
    checkpoint = _trained_checkpoint({})
    checkpoint["rng"] = saved
    state = _state(weight_decay=0.1, t_initial=UPDATES)
    restore_training(state, state.model, checkpoint)
    assert _draws() == draws


def test_a_resumed_run_counts_the_training_time_before_its_checkpoint(monkeypatch):
    """results.json's wall_time_s (the sweep summary's minutes): every process of the run, not
    only the last one."""
    clock = {"now": 1000.0}
    monkeypatch.setattr(time, "perf_counter", lambda: clock["now"])
    first = _state(weight_decay=0.1, t_initial=UPDATES)  # its clock starts at 1000
    clock["now"] += 60.0  # trains a minute, then checkpoints
    checkpoint = training_state(first, first.model, OmegaConf.create({}))
    assert checkpoint["run_seconds"] == 60.0
    clock["now"] += 500.0  # killed; requeued later
    resumed = _state(weight_decay=0.1, t_initial=UPDATES)
    restore_training(resumed, resumed.model, checkpoint)
    clock["now"] += 30.0
    assert resumed.run_seconds() == 90.0  # not 30 (this process), nor 590 (the lost time too)
    del checkpoint["run_seconds"]  # a checkpoint from before the key: this process only
    older = _state(weight_decay=0.1, t_initial=UPDATES)
    restore_training(older, older.model, checkpoint)
    assert older.run_seconds() == 0.0
