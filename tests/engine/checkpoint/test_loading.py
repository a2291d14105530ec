"""Checkpoints in each format a user brings to eval.py: ours, timm's, the authors' released."""

import pickle

import pytest
import timm
import torch
from timm.utils import ModelEmaV3

import dcls
from engine.checkpoint.models import CheckpointMismatchError, load_model
from tests.models.test_convnext import SIZES_TEST_DEPTHS, _to_authors_layout


def _perturbed(name: str, **kwargs) -> torch.nn.Module:
    model = timm.create_model(name, **kwargs).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    return model


def test_our_checkpoint_rebuilds_the_model_and_prefers_the_ema(tmp_path):
    model = _perturbed("test_convnext_dcls", num_classes=7)
    ema = ModelEmaV3(model)
    with torch.no_grad():
        for parameter in ema.module.parameters():
            parameter.add_(1.0)  # the EMA differs from the model
    config = {"_target_": "timm.create_model", "model_name": "test_convnext_dcls", "num_classes": 7}
    path = tmp_path / "last.pt"
    torch.save(
        {"model": model.state_dict(), "ema": ema.state_dict(), "config": {"model": config}}, path
    )
    x = torch.randn(2, 3, 32, 32)
    auto = load_model(path)
    assert auto.weights == "ema" and auto.name == "test_convnext_dcls"
    torch.testing.assert_close(auto.model(x), ema.module.eval()(x))
    plain = load_model(path, weights="model")
    torch.testing.assert_close(plain.model(x), model(x))


def tiny_builder(width: int = 3) -> torch.nn.Module:
    """A model of one's own, as a ``_target_`` (see README: a model of your own)."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, width))


def test_a_builder_of_ones_own_is_named_after_it_and_a_missing_one_is_one_line(tmp_path):
    from engine.config import ConfigError

    config = {"_target_": f"{__name__}.tiny_builder", "width": 5}
    path = tmp_path / "last.pt"
    torch.save({"model": tiny_builder(5).state_dict(), "config": {"model": config}}, path)
    loaded = load_model(path)
    assert loaded.name == "tiny_builder"  # as train.py's results name it (was "Sequential")
    config["_target_"] = "not_on_the_path.build"
    torch.save({"model": tiny_builder(5).state_dict(), "config": {"model": config}}, path)
    with pytest.raises(ConfigError, match=r"^model\._target_='not_on_the_path\.build' is inv"):
        load_model(path)  # (was Hydra's "Error locating target" in three lines, exit 1)


def test_a_timm_state_dict_loads_with_a_model_name(tmp_path):
    model = _perturbed("test_convnext")
    path = tmp_path / "timm.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    loaded = load_model(path, "test_convnext")
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded.model(x), model(x))
    with pytest.raises(ValueError, match="weights=ema but the checkpoint has no EMA weights"):
        load_model(path, "test_convnext", weights="ema")


def test_the_authors_released_layout_loads_through_the_family_filter(tmp_path):
    source = _perturbed("test_convnext_dcls", version="v0")
    with torch.no_grad():
        for module in source.modules():
            if isinstance(module, dcls.DclsPositions):
                module.P.uniform_(-8, 8)
    authors = _to_authors_layout(source.state_dict(), SIZES_TEST_DEPTHS)
    path = tmp_path / "convnext_dcls_authors.pth"
    torch.save({"model": authors}, path)
    loaded = load_model(path, "test_convnext_dcls", {"version": "v0"})
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded.model(x), source(x))


def test_shape_mismatch_is_listed(tmp_path):
    path = tmp_path / "ten_classes.pth"
    torch.save(timm.create_model("test_convnext", num_classes=10).state_dict(), path)
    with pytest.raises(
        CheckpointMismatchError, match=r"2 reshaped \(head\.fc\.weight \(10, \d+\) vs model \(1000,"
    ):
        load_model(path, "test_convnext")


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, path)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load .*could run code"):
        load_model(path, "test_convnext")


def test_bad_weights_choice_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"weights must be one of \['auto', 'ema', 'model'\]"):
        load_model(tmp_path / "x.pt", "test_convnext", weights="best")
    with pytest.raises(FileNotFoundError, match="checkpoint: no file at"):
        load_model(tmp_path / "x.pt", "test_convnext")
