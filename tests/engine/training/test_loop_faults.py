"""Non-finite losses and gradients: the update is skipped and logged; N in a row stop the run."""

import logging

import pytest
import torch
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from engine.training.loop import TrainState, train_one_epoch

BATCHES = 6


class _PoisonedLoss(nn.Module):
    """Cross-entropy whose value is NaN on the chosen calls (0-based)."""

    def __init__(self, poisoned: set[int]) -> None:
        super().__init__()
        self.poisoned, self.calls = poisoned, 0

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = nn.functional.cross_entropy(logits, targets)
        if self.calls in self.poisoned:
            loss = loss * float("nan")
        self.calls += 1
        return loss


def _state(criterion: nn.Module, max_bad_steps: int = 3, **kwargs) -> TrainState:
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = CosineLRScheduler(optimizer, t_initial=BATCHES, t_in_epochs=False)
    return TrainState(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        criterion=criterion,
        device=torch.device("cpu"),
        max_bad_steps=max_bad_steps,
        log_every=100,
        **kwargs,
    )


def _loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(BATCHES * 2, 4, generator=generator), torch.arange(12) % 3)
    return DataLoader(data, batch_size=2)


def test_nan_loss_skips_the_update_but_advances_the_schedule(caplog):
    state = _state(_PoisonedLoss({2}))
    weights = []
    with caplog.at_level(logging.WARNING):
        metrics = train_one_epoch(
            state, _loader(), BATCHES, lambda s: weights.append(s.model.weight.clone())
        )
    assert metrics["skipped_updates"] == 1 and metrics["updates"] == BATCHES
    assert state.step == BATCHES and state.bad_steps == 0
    assert torch.equal(weights[2], weights[1])  # the poisoned update changed nothing
    assert not torch.equal(weights[3], weights[2])  # the next one trains again
    assert all(torch.isfinite(w).all() for w in weights)
    assert metrics["train_loss"] == metrics["train_loss"]  # the mean excludes the NaN
    assert any(
        "skipped update at epoch 0, step 2: non-finite loss" in r.message for r in caplog.records
    )


def test_nan_gradients_with_a_finite_loss_are_skipped():
    state = _state(nn.CrossEntropyLoss())
    calls = {"n": 0}

    def poison_on_second_backward(grad: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return grad * float("nan") if calls["n"] == 2 else grad

    state.model.weight.register_hook(poison_on_second_backward)
    metrics = train_one_epoch(state, _loader(), BATCHES)
    assert metrics["skipped_updates"] == 1
    assert torch.isfinite(state.model.weight).all()


def test_consecutive_bad_updates_stop_the_run_with_a_clear_message():
    state = _state(_PoisonedLoss({1, 2, 3}), max_bad_steps=3)
    with pytest.raises(
        FloatingPointError, match=r"3 consecutive updates .*trainer\.max_bad_steps=3"
    ):
        train_one_epoch(state, _loader(), BATCHES)
    assert state.step == 3  # updates 1 and 2 skipped; the third bad one stops the run


def test_a_good_update_resets_the_count():
    state = _state(_PoisonedLoss({0, 1, 3, 4}), max_bad_steps=3)
    metrics = train_one_epoch(state, _loader(), BATCHES)
    assert metrics["skipped_updates"] == 4


def test_fp16_scaler_path_skips_a_nan_loss_and_keeps_working():
    state = _state(_PoisonedLoss({2}), scaler=torch.amp.GradScaler("cpu"))
    metrics = train_one_epoch(state, _loader(), BATCHES)
    assert metrics["skipped_updates"] == 1 and torch.isfinite(state.model.weight).all()
