"""Non-finite losses and gradients: the update is skipped and logged; N in a row stop the run."""

import logging

import pytest
import torch
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import dcls
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
    assert any(  # epochs counted from 1, as the progress lines
        "skipped update at epoch 1, step 2: non-finite loss" in r.message for r in caplog.records
    )


def test_the_mean_loss_is_over_the_finite_batches_only():
    torch.manual_seed(0)  # the model: with it, counting the NaN batch changes the mean by > 0.1%
    state = _state(_PoisonedLoss({2}))
    for group in state.optimizer.param_groups:  # lr 0: the model stays as it is, so the
        group["lr"] = group["initial_lr"] = 0.0  # batch losses can be computed afterwards
    state.scheduler = CosineLRScheduler(state.optimizer, t_initial=BATCHES, t_in_epochs=False)
    metrics = train_one_epoch(state, _loader(), BATCHES)
    with torch.no_grad():
        losses = [nn.functional.cross_entropy(state.model(x), y) for x, y in _loader()]
    expected = torch.stack(losses[:2] + losses[3:]).mean().item()  # batch 2 was NaN
    assert metrics["train_loss"] == pytest.approx(expected, rel=1e-6)
    assert metrics["train_loss"] != pytest.approx(torch.stack(losses).mean().item(), rel=1e-3)


class _DclsThenLinear(nn.Module):
    """A Dcls1d over the 4 features (one position set outside its kernel), then a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.dcls = dcls.Dcls1d(1, 1, 2, dilated_kernel_size=5, padding=2, version="bilinear")
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dcls(x.unsqueeze(1)).flatten(1))


class _EnoughUpdatesError(Exception):
    """Stops an epoch from a callback: two updates are enough."""


def test_a_skipped_update_runs_no_clamp_and_no_ema_update():
    model = _DclsThenLinear()
    with torch.no_grad():
        model.dcls.P[0, 0, 0, 0] = 10.0  # outside the kernel: the next clamp moves it to 2
    state = _state(_PoisonedLoss({0}))
    state.model = model
    state.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state.scheduler = CosineLRScheduler(state.optimizer, t_initial=BATCHES, t_in_epochs=False)
    state.ema = ModelEmaV3(model, decay=0.5)
    initial_ema = {k: v.clone() for k, v in state.ema.module.state_dict().items()}
    seen = []

    def after_update(s: TrainState) -> None:
        ema = s.ema.module.state_dict()
        unchanged = all(torch.equal(ema[k], v) for k, v in initial_ema.items())
        seen.append((s.model.dcls.P[0, 0, 0, 0].item(), unchanged))
        if len(seen) == 2:
            raise _EnoughUpdatesError

    with pytest.raises(_EnoughUpdatesError):
        train_one_epoch(state, _loader(), BATCHES, after_update)
    assert seen[0] == (10.0, True)  # the poisoned update: no clamp, no EMA update
    assert seen[1] == (2.0, False)  # the next one clamps and updates the EMA


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
