"""scripts/bench_models.py on the tiny test ConvNeXt pair: the table and its ratio columns."""

import re
from pathlib import Path

import pytest
import timm
import torch

import dcls

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture
def bench_models(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))  # the scripts import each other, as when run
    import bench_models

    return bench_models


def test_prints_the_ratio_table_for_the_pair(bench_models, capsys):
    argv = ["--models", "test_convnext", "--batch", "2", "--img-size", "64", "--repeats", "1"]
    assert bench_models.main([*argv, "--conv-algorithm", "fft"]) == 0
    out = capsys.readouterr().out
    assert "| DCLS/baseline |" in out and "| DCLS/authors |" in out
    number = r"(\d+\.\d+|nan)"
    for mode in ("train", "infer"):
        row = re.search(
            rf"\| test_convnext_dcls / test_convnext \| {mode} \| {number} \| {number} \| {number} "
            rf"\| {number} \| {number} \| {number} \|",
            out,
        )
        assert row is not None, out
        baseline, ours, _, ratio = (float(row[i]) for i in range(1, 5))
        assert baseline > 0 and ours > 0
        assert ratio == pytest.approx(ours / baseline, rel=0.01, abs=0.01)


def test_authors_layers_are_swapped_in(bench_models):
    authors_cls = bench_models.load_authors()
    if authors_cls is None:
        pytest.skip("the authors' package (test dependency dcls==0.1.1) is not installed")
    model = timm.create_model("test_convnext_dcls", num_classes=10)
    count = sum(isinstance(m, dcls.Dcls2d) for m in model.modules())
    assert bench_models.swap_in_authors_layers(model, authors_cls, use_implicit_gemm=False) == count
    assert not any(isinstance(m, dcls.Dcls2d) for m in model.modules())
    assert sum(isinstance(m, authors_cls) for m in model.modules()) == count
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
