"""The accuracy loop counts hits exactly, whatever the batch size."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from engine.evaluation.accuracy import evaluate


class _Lookup(nn.Module):
    """Returns the logits stored for each input index: a model with known predictions."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.logits[index.long()]


def test_top1_top5_and_loss_are_hand_computed_counts_for_any_batch_size():
    # 7 samples, 6 classes; the target's rank among the logits is 0,0,1,4,5,2,0 (0 = largest):
    # top-1 hits 3 of 7, top-5 hits 6 of 7 (rank 5 is the only miss).
    ranks = [0, 0, 1, 4, 5, 2, 0]
    order = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    logits = order.repeat(7, 1)
    targets = torch.tensor(ranks)  # class c has the (c)-th largest logit
    expected_loss = nn.functional.cross_entropy(logits, targets).item()
    for batch_size in (1, 2, 3, 7):
        loader = DataLoader(TensorDataset(torch.arange(7), targets), batch_size=batch_size)
        result = evaluate(_Lookup(logits), loader, torch.device("cpu"))
        assert result["count"] == 7
        assert result["top1"] == 100 * 3 / 7 and result["top5"] == 100 * 6 / 7
        assert abs(result["loss"] - expected_loss) < 1e-6


def test_fewer_classes_than_five_count_every_sample_in_top5():
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    targets = torch.tensor([0, 0, 1])
    loader = DataLoader(TensorDataset(torch.arange(3), targets), batch_size=2)
    result = evaluate(_Lookup(logits), loader, torch.device("cpu"))
    assert result["top1"] == 100 * 1 / 3 and result["top5"] == 100.0


def test_eval_preprocesses_as_training_validated_and_as_the_config_says(tmp_path):
    """One photo-like image through the training run's validation transform (a folder dataset)
    and through eval.py's transform built from that run's data config: the same tensor, equal to
    timm's transform with those values, and unlike the ImageNet defaults'."""
    import numpy as np
    import timm
    from omegaconf import OmegaConf
    from PIL import Image
    from timm.data import create_transform

    from engine.checkpoint.models import training_data_config
    from engine.data.datasets import DATASETS
    from engine.evaluation.accuracy import eval_transform
    from tests.conftest import compose_train

    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    for split in ("train", "val"):
        (tmp_path / "data" / split / "n01440764").mkdir(parents=True)
        Image.fromarray(pixels).save(tmp_path / "data" / split / "n01440764" / "a.png")
    values = {
        "image_size": 24,
        "crop_pct": 0.8,
        "interpolation": "bilinear",
        "mean": [0.1, 0.2, 0.3],
        "std": [0.5, 0.6, 0.7],
    }
    overrides = [f"data.{k}={v}" for k, v in values.items()]
    cfg = compose_train(tmp_path, ["data=imagenet", f"data.root={tmp_path / 'data'}", *overrides])
    validated = DATASETS["folder"](cfg.data, "val")[0][0]
    model = timm.create_model("test_convnext")
    config = training_data_config(OmegaConf.to_container(cfg, resolve=True))
    transform, _ = eval_transform(model, config)
    image = Image.open(tmp_path / "data" / "val" / "n01440764" / "a.png").convert("RGB")
    evaluated = transform(image)
    assert evaluated.shape == (3, 24, 24) and torch.equal(evaluated, validated)
    mean, std = tuple(values["mean"]), tuple(values["std"])
    reference = create_transform(
        24, crop_pct=0.8, interpolation="bilinear", mean=mean, std=std, is_training=False
    )
    torch.testing.assert_close(evaluated, reference(image), rtol=0, atol=0)
    defaults = create_transform(24, crop_pct=0.875, interpolation="bicubic", is_training=False)
    assert (evaluated - defaults(image)).abs().max() > 0.1
