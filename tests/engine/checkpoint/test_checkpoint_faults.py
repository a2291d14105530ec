"""Checkpoints under faults: failed writes, NaN weights, pickled code, another architecture,
another world size."""

import pickle

import pytest
import timm
import torch

import engine.checkpoint as ckpt
import models  # noqa: F401  (registers the DCLS variants)
from engine.checkpoint.training import _resume_position
from engine.config import ConfigError


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "ema": None, "step": 1}


def test_failed_write_keeps_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    ckpt.save_checkpoint(_state(1.0), tmp_path)
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)  # half of the bytes are on disk, then the disk is "full"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        ckpt.save_checkpoint(_state(2.0), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert torch.equal(ckpt.load_checkpoint(tmp_path / "last.pt")["model"]["w"], torch.ones(3))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_never_replace_a_good_checkpoint(tmp_path, bad):
    ckpt.save_checkpoint(_state(1.0), tmp_path)
    with pytest.raises(FloatingPointError, match=r"1 weight tensors hold NaN/inf \(model\.w\)"):
        ckpt.save_checkpoint(_state(bad), tmp_path)
    assert torch.equal(ckpt.load_checkpoint(tmp_path / "last.pt")["model"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling would create the marker file


def test_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _RunsCode(str(marker))}, path)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load .*evil\.pt"):
        ckpt.load_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_of_another_architecture_lists_the_keys():
    source = timm.create_model("test_convnext_dcls", num_classes=10)
    target = timm.create_model("test_convnext_dcls", num_classes=10, kernel_count=3)
    with pytest.raises(ckpt.CheckpointMismatchError) as raised:
        ckpt.load_model_state(target, source.state_dict())
    message = str(raised.value)
    assert message.startswith("checkpoint does not fit DclsConvNeXt: 13 reshaped (")
    assert "stages.0.blocks.0.conv_dw.weight (24, 1, 26) vs model (24, 1, 3)" in message
    assert "\n" not in message
    other = timm.create_model("resnet18", num_classes=10)
    with pytest.raises(ckpt.CheckpointMismatchError, match=r"122 missing \(conv1.*; 105 unexp"):
        ckpt.load_model_state(other, source.state_dict())


def _checkpoint(batch_size: int, world_size: int, update_freq: int, batch_in_epoch: int) -> dict:
    return {
        "config": {"data": {"batch_size": batch_size}, "trainer": {"update_freq": update_freq}},
        "world_size": world_size,
        "batch_in_epoch": batch_in_epoch,
    }


def test_other_world_size_resumes_at_the_same_image_when_the_effective_batch_is_kept():
    # 2 ranks x 8 x 1, 3 updates done = 48 images; 1 process x 8 x update_freq 2: 6 micro-batches
    assert _resume_position(_checkpoint(8, 2, 1, 3), 8, 1, 2) == 6
    assert _resume_position(_checkpoint(8, 1, 2, 6), 8, 2, 1) == 3
    with pytest.raises(ConfigError, match=r"effective batch is 16 .*set trainer\.update_freq=2"):
        _resume_position(_checkpoint(8, 2, 1, 3), 8, 1, 1)


def test_a_resume_with_an_effective_batch_names_it_in_its_hint():
    # A run of trainer.effective_batch_size=16 on 2 ranks x 8 (update_freq 1, derived), resumed
    # by one process: update_freq 2 keeps it; a run set to 32 is told to set 16, not update_freq
    # (which the effective batch would override: the old hint repeated itself).
    trained = _checkpoint(8, 2, 1, 3)
    trained["config"]["trainer"]["effective_batch_size"] = 16
    assert _resume_position(trained, 8, 1, 2, effective_batch_size=16) == 6
    with pytest.raises(
        ConfigError,
        match=r"^trainer\.effective_batch_size=32 is invalid for this resume: the checkpoint's "
        r"effective batch is 16 .*; set trainer\.effective_batch_size=16 to keep it",
    ):
        _resume_position(trained, 8, 1, 4, effective_batch_size=32)


def _training_state(value: float) -> dict:
    return {
        "model": {"w": torch.full((3,), value)},
        "optimizer": {},
        "scheduler": {},
        "epoch": int(value),
        "step": int(value),
        "rng": {},
    }


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 3],  # a truncated copy
        lambda data: data[:100] + bytes(b ^ 0xFF for b in data[100:300]) + data[300:],  # bit rot
        lambda data: b"",  # an empty file
    ],
)
def test_resume_falls_back_to_the_previous_checkpoint_with_a_warning(tmp_path, caplog, damage):
    for value in (1.0, 2.0):
        ckpt.save_checkpoint(_training_state(value), tmp_path, keep_previous=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.previous.pt", "last.pt"]
    last = tmp_path / "last.pt"
    last.write_bytes(damage(last.read_bytes()))
    with caplog.at_level("WARNING"):
        checkpoint, path = ckpt.load_resumable(ckpt.latest_checkpoint(tmp_path))
    assert path == tmp_path / "last.previous.pt" and checkpoint["step"] == 1
    assert f"checkpoint {last} cannot be read" in caplog.text and "resuming from" in caplog.text


def test_neither_checkpoint_readable_is_one_error_naming_both(tmp_path):
    for value in (1.0, 2.0):
        ckpt.save_checkpoint(_training_state(value), tmp_path, keep_previous=True)
    for name in ("last.pt", "last.previous.pt"):
        (tmp_path / name).write_bytes(b"garbage")
    with pytest.raises(
        ckpt.CheckpointReadError, match=r"last\.pt .*last\.previous\.pt .*resume=never"
    ):
        ckpt.load_resumable(tmp_path / "last.pt")


def test_a_crash_between_the_two_renames_resumes_from_the_previous_one(tmp_path):
    ckpt.save_checkpoint(_training_state(1.0), tmp_path, keep_previous=True)
    (tmp_path / "last.pt").rename(tmp_path / "last.previous.pt")  # the first rename only
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "last.previous.pt"


def test_the_authors_training_checkpoint_with_argparse_args_loads(tmp_path):
    import argparse

    path = tmp_path / "checkpoint-best.pth"
    args = argparse.Namespace(model="convnext_tiny_dcls", lr=4e-3, drop_path=0.1)
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 299, "args": args}, path)
    loaded = ckpt.load_checkpoint(path)
    assert loaded["args"].model == "convnext_tiny_dcls" and loaded["epoch"] == 299


@pytest.mark.parametrize(
    "content",
    [b"hello world\n", b"[2026-11-30 06:13:27][train][INFO] - epoch 1/15\n", b"\x80\x02}q\x00."],
    ids=["text", "log", "pickle-not-zip"],
)
def test_a_file_that_is_not_a_checkpoint_is_one_error_without_unsafe_advice(tmp_path, content):
    path = tmp_path / "train.log"
    path.write_bytes(content)
    with pytest.raises(ckpt.CheckpointReadError, match="not a checkpoint") as error:
        ckpt.load_checkpoint(path)
    assert "weights_only" not in str(error.value) and "\n" not in str(error.value)
