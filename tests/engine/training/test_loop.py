"""engine.training.loop.train_one_epoch: the training top-1 it reports, computed by hand."""

import copy
import math

import pytest
import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from timm.data import Mixup
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

import dcls
from engine.checkpoint import restore_training, training_state
from engine.training.loop import EPOCH_TOTALS, TrainState, epoch_totals, train_one_epoch
from engine.training.schedules import DclsSchedule

BATCHES, BATCH = 4, 4


def _state(model: nn.Module, **kwargs) -> TrainState:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the model stays as built
    return TrainState(
        model=model,
        optimizer=optimizer,
        scheduler=CosineLRScheduler(optimizer, t_initial=BATCHES, t_in_epochs=False),
        criterion=nn.CrossEntropyLoss(),
        device=torch.device("cpu"),
        log_every=100,
        **kwargs,
    )


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCHES * BATCH, 3, generator=generator)
    labels = torch.randint(0, 3, (BATCHES * BATCH,), generator=generator)
    return images, labels


def test_train_top1_is_the_share_of_arg_max_predictions_equal_to_the_label():
    images, labels = _data()
    model = nn.Linear(3, 3)
    expected = 100 * (model(images).argmax(1) == labels).double().mean().item()
    assert 0 < expected < 100  # neither bound: a wrong count could not pass by accident
    loader = DataLoader(TensorDataset(images, labels), batch_size=BATCH)
    metrics = train_one_epoch(_state(model), loader, BATCHES)
    assert metrics["train_top1"] == pytest.approx(expected)


def test_train_top1_with_mixup_scores_the_labels_before_mixing():
    images, labels = _data()
    model = nn.Linear(3, 3)
    with torch.no_grad():  # always predicts class 1, whatever the (mixed) image
        model.weight.zero_()
        model.bias.copy_(torch.tensor([0.0, 1.0, 0.0]))
    expected = 100 * (labels == 1).double().mean().item()
    mixup = Mixup(mixup_alpha=1.0, label_smoothing=0.0, num_classes=3)
    loader = DataLoader(TensorDataset(images, labels), batch_size=BATCH)
    metrics = train_one_epoch(_state(model, mixup=mixup), loader, BATCHES)
    assert metrics["train_top1"] == pytest.approx(expected)


def test_an_epoch_resumed_after_its_last_batch_reports_nan_not_zero():
    """A checkpoint taken at an epoch's last update (a preemption) without the epoch's totals
    (from before they were kept) resumes with nothing left to train in that epoch: its training
    means are unknown, not 0 (a fake row in metrics.csv)."""
    images, labels = _data()
    loader = DataLoader(TensorDataset(images, labels), batch_size=BATCH)
    state = _state(nn.Linear(3, 3), batch_in_epoch=BATCHES)
    metrics = train_one_epoch(state, loader, BATCHES)
    assert metrics["updates"] == 0
    assert all(math.isnan(metrics[k]) for k in ("train_loss", "train_top1", "images_per_s"))


class _PreemptedError(Exception):
    """Stands for a preemption signal: stops the epoch after an update."""


def _stop_after(updates: int):
    def on_update(state: TrainState) -> None:
        if state.step == updates:
            raise _PreemptedError

    return on_update


@pytest.mark.parametrize("stop_after", [2, BATCHES])  # mid-epoch, and at its last update
def test_a_resumed_epoch_reports_the_whole_epochs_metrics(stop_after):
    """A preempted epoch's checkpoint keeps its metric sums: the resumed epoch reports what the
    uninterrupted one does (not only the batches after the resume, nor NaN after the last)."""
    images, labels = _data()
    model = nn.Linear(3, 3)  # lr 0: the same model in both runs
    loader = DataLoader(TensorDataset(images, labels), batch_size=BATCH)
    expected = train_one_epoch(_state(model), loader, BATCHES)
    interrupted = _state(model)
    with pytest.raises(_PreemptedError):
        train_one_epoch(interrupted, loader, BATCHES, _stop_after(stop_after))
    checkpoint = training_state(
        interrupted, model, OmegaConf.create({}), epoch_totals=epoch_totals(interrupted)
    )
    for rank in (0, 1):  # the sums on rank 0 (the epoch's metrics add every rank's)
        resumed = _state(model)
        restore_training(resumed, model, checkpoint, rank=rank)
        assert resumed.batch_in_epoch == stop_after
        rest = DataLoader(TensorDataset(images[stop_after * BATCH :], labels[stop_after * BATCH :]),
                          batch_size=BATCH)  # fmt: skip
        metrics = train_one_epoch(resumed, rest, BATCHES)
        assert metrics["updates"] == expected["updates"] == BATCHES
        if rank == 0:
            for key in ("train_loss", "train_top1", "skipped_updates"):
                assert metrics[key] == pytest.approx(expected[key]), key
        else:
            assert (
                resumed.epoch_sums[EPOCH_TOTALS.index("images")] == (BATCHES - stop_after) * BATCH
            )
    assert epoch_totals(_state(model)) is None  # between epochs: nothing to keep


def test_the_ddp_and_compile_wrappers_are_seen_through(tmp_path):
    """``trainer.compile=true`` under DDP: the loop still finds DDP (for ``no_sync`` while
    accumulating) and the model itself (for the clamp, the EMA and the DCLS schedule)."""
    model = nn.Linear(3, 3)
    assert _state(torch.compile(model)).unwrapped is model and _state(model).ddp is None
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        ddp = DistributedDataParallel(model)
        state = _state(torch.compile(ddp))
        assert state.ddp is ddp and state.unwrapped is model
    finally:
        dist.destroy_process_group()


def test_the_repulsive_loss_is_computed_once_per_update_with_the_same_gradient():
    """With ``update_freq=2`` the penalty on the positions, which hold still until the update,
    is computed once per update; the update is what adding ``weight * repulsion`` to each
    micro-batch's loss gives (computed here by hand), and so is the reported loss."""
    torch.manual_seed(0)
    weight, update_freq, lr = 3.0, 2, 0.1
    model = nn.Sequential(
        dcls.Dcls2d(2, 2, kernel_count=4, dilated_kernel_size=5, padding=2, groups=2),
        nn.Flatten(),
        nn.Linear(2 * 6 * 6, 3),
    )
    images = torch.randn(BATCHES * BATCH, 2, 6, 6)
    labels = torch.randint(0, 3, (BATCHES * BATCH,))
    trainer = OmegaConf.create(
        {
            "epochs": 1,
            "repulsive_loss": {"weight": weight, "start_epoch": 0, "min_distance": 3.0,
                               "formula": "authors"},
            "sigma_schedule": {"enabled": False, "start": 0.0, "end": 0.0},
        }
    )  # fmt: skip
    schedule = DclsSchedule(trainer)
    calls = []
    repulsive_loss = schedule.repulsive_loss
    schedule.repulsive_loss = lambda m: calls.append(1) or repulsive_loss(m)
    reference = copy.deepcopy(model)
    # by hand: the first update's gradient, with the penalty in each micro-batch's loss
    losses = []
    for half in range(update_freq):
        batch = slice(half * BATCH, (half + 1) * BATCH)
        loss = nn.functional.cross_entropy(reference(images[batch]), labels[batch])
        loss = loss + weight * dcls.repulsive_loss(reference, 3.0, "authors")
        (loss / update_freq).backward()
        losses.append(loss.item())
    assert dcls.repulsive_loss(reference, 3.0, "authors").item() > 0  # the penalty acts
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter -= lr * parameter.grad
    dcls.clamp_(reference)

    state = _state(model, update_freq=update_freq, dcls_schedule=schedule)
    state.optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    state.scheduler = CosineLRScheduler(state.optimizer, t_initial=100, t_in_epochs=False)
    loader = DataLoader(TensorDataset(images, labels), batch_size=BATCH)
    with pytest.raises(_PreemptedError):
        train_one_epoch(state, loader, BATCHES // update_freq, _stop_after(1))
    assert len(calls) == 1  # once for the update's two micro-batches
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs)
    assert state.epoch_sums[0].item() == pytest.approx(sum(losses))
