"""scripts/bench_models.py on the tiny test ConvNeXt pair, and scripts/gpu_check.sh's CPU checks."""

import re
import shlex
import subprocess
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


@pytest.mark.slow
def test_prints_the_ratio_table_for_the_pair(bench_models, capsys):
    argv = ["--models", "test_convnext", "--batch", "2", "--img-size", "32", "--repeats", "1"]
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
        # Times print to 0.1 ms and the ratio (of the unrounded times) to 0.01: the ratio must
        # lie in the interval the rounded times allow.
        half_ms, half_ratio = 0.05, 0.005
        lowest = (ours - half_ms) / (baseline + half_ms) - half_ratio
        highest = (ours + half_ms) / max(baseline - half_ms, 1e-9) + half_ratio
        assert lowest <= ratio <= highest, (ratio, ours, baseline)


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


def test_gpu_check_script_parses_and_its_steps_are_accepted(bench_models):
    script = SCRIPTS / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    import bench_layers

    text = script.read_text()
    variables = dict(re.findall(r'^(LAYERS|MODELS)="([^"]+)"', text, flags=re.MULTILINE))
    steps = re.findall(r"^step \$(LAYERS|MODELS)(.*)$", text, flags=re.MULTILINE)
    assert len(steps) >= 4
    parsers = {"bench_layers.py": bench_layers, "bench_models.py": bench_models}
    for name, extra in steps:
        path, *args = shlex.split(variables[name].replace("$BATCH", "64") + extra)
        parsed = parsers[Path(path).name].build_parser().parse_args(args)  # exits on a bad flag
        assert parsed.device == "cuda"
    assert any("--amp" in extra and "--channels-last" in extra for _, extra in steps)
