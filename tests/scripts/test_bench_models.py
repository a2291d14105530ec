"""scripts/bench_models.py on the tiny test ConvNeXt pair, and scripts/gpu_check.sh's CPU checks."""

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import timm
import torch
from hydra import compose, initialize_config_dir

import dcls
from tests.conftest import CONFIG_DIR

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture
def bench_models(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))  # the scripts import each other, as when run
    import bench_models

    return bench_models


@pytest.mark.slow
def test_prints_the_ratio_table_for_the_pair(bench_models, capsys):
    argv = ["--models", "test_convnext", "--batch", "2", "--img-size", "32", "--repeats", "1"]
    assert bench_models.main([*argv, "--conv-algorithms", "fft", "split"]) == 0
    out = capsys.readouterr().out
    assert "| pair | mode | model | ms/step | img/s | vs baseline |" in out
    assert "nan" not in out  # (CPU: no peak memory, printed as -; it was nan)
    number = r"(\d+\.\d+)"
    memory = r"(?:-|\d+\.\d+) \| (?:-|\d+\.\d+) \|"
    for mode in ("train", "infer"):
        rows = {}
        for label in (
            "test_convnext",
            "test_convnext_dcls (dcls fft)",
            "test_convnext_dcls (dcls split)",
        ):
            cells = rf"\| {re.escape(label)} \| {number} \| (\d+) \| {number} \| {memory}"
            row = re.search(rf"\| test_convnext \| {mode} {cells}", out)
            assert row is not None, (label, out)
            rows[label] = (float(row[1]), float(row[3]))
        baseline_ms = rows["test_convnext"][0]
        assert baseline_ms > 0 and rows["test_convnext"][1] == 1.0
        for ms, ratio in list(rows.values())[1:]:
            # times print to 0.1 ms and the ratio (of the unrounded times) to 0.01: the ratio must
            # lie in the interval the rounded times allow
            lowest = (ms - 0.05) / (baseline_ms + 0.05) - 0.005
            highest = (ms + 0.05) / max(baseline_ms - 0.05, 1e-9) + 0.005
            assert lowest <= ratio <= highest, (ratio, ms, baseline_ms)


def test_profiles_show_each_models_own_ops(bench_models, tmp_path):
    out = tmp_path / "profiles" / "train.md"
    argv = ["--models", "test_convnext", "--batch", "2", "--img-size", "32", "--repeats", "1"]
    argv += ["--modes", "train", "--conv-algorithms", "direct", "--no-authors"]
    argv += ["--profile-out", str(out), "--profile-steps", "1", "--profile-rows", "500"]
    assert bench_models.main(argv) == 0
    sections = out.read_text().split("## train: ")[1:]
    tables = {section.split("\n", 1)[0]: section for section in sections}
    assert list(tables) == ["test_convnext", "test_convnext_dcls (dcls direct)"]
    for table in tables.values():
        assert re.search(r"per step under the profiler, wall \d+\.\d ms, host in operators", table)
        assert "Self CPU time total" in table
    # the DCLS layers' kernel construction shows in their model's profile only
    construction = r"aten::(scatter_add|bmm)"
    assert re.search(construction, tables["test_convnext_dcls (dcls direct)"])
    assert not re.search(construction, tables["test_convnext"])


def test_compiled_models_are_timed_and_dcls_takes_its_static_choice(bench_models, capsys):
    """``--compile eager`` (Dynamo's tracing without inductor's code generation, fast on a CPU):
    both models are compiled, and the DCLS layers under Dynamo run no "auto" trial."""
    dcls.algorithms.clear_auto_cache()
    argv = ["--models", "test_convnext", "--batch", "2", "--img-size", "32", "--repeats", "1"]
    argv += ["--modes", "infer", "--conv-algorithms", "auto", "--no-authors"]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    assert bench_models.main([*argv, "--compile", "eager"]) == 0
    out = capsys.readouterr().out
    assert "torch.compile (eager)" in out and "auto chose" not in out
    assert "| test_convnext | infer | test_convnext_dcls (dcls auto) |" in out
    assert dcls.algorithms.auto_cache() == {}  # no trial: the static choice under compile
    frames = torch._dynamo.utils.counters["frames"]
    assert frames["ok"] >= 2  # each model's forward went through Dynamo


def test_a_profiler_that_fails_keeps_the_table(bench_models, tmp_path, monkeypatch, capsys):
    def no_cupti(*args, **kwargs):
        raise RuntimeError("CUPTI not found")

    monkeypatch.setattr(bench_models, "profile_steps", no_cupti)
    argv = ["--models", "test_convnext", "--batch", "2", "--img-size", "32", "--repeats", "1"]
    argv += ["--modes", "infer", "--conv-algorithms", "direct", "--no-authors"]
    assert bench_models.main([*argv, "--profile-out", str(tmp_path / "p.md")]) == 0
    assert "| test_convnext | infer | test_convnext_dcls (dcls direct) |" in capsys.readouterr().out
    assert "## infer" not in (tmp_path / "p.md").read_text()


def test_authors_layers_are_swapped_in(bench_models):
    authors_cls = bench_models.load_authors()
    assert authors_cls is not None, "the authors' package (dev extra: dcls==0.1.1) is missing"
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
    import bench_triton_kernels

    text = script.read_text().replace("\\\n", " ")  # join continued lines
    variables = dict(re.findall(r'^(\w+)="([^"$]+)"$', text, flags=re.MULTILINE))
    steps = [shlex.split(line)[1:] for line in text.splitlines() if line.startswith("step ")]
    assert len(steps) >= 5
    # Each step's own limit; together under 8 minutes (of the device tool's 15, with the start).
    assert sum(int(step[1]) for step in steps) <= 480
    steps = [step[2:] for step in steps]
    parsers = {
        "bench_layers.py": bench_layers,
        "bench_models.py": bench_models,
        "bench_triton_kernels.py": bench_triton_kernels,
    }
    benchmarks = evals = 0
    for command in steps:
        words = shlex.split(" ".join(variables.get(w.lstrip("$"), w) for w in command))
        assert words[0] == "$PY"
        if words[1] == "-m":  # the CUDA tests
            assert words[2] == "pytest"
            assert all((SCRIPTS.parent / w).is_file() for w in words if w.startswith("tests/"))
            continue
        if words[1] == "eval.py":  # Hydra overrides: they must compose
            with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
                cfg = compose(config_name="eval", overrides=words[2:])
            assert cfg.device == "cuda" and list(cfg.sets) == ["throughput"]
            assert cfg.checkpoint is None and cfg.model.name == "convnext_tiny_dcls"
            evals += 1
            continue
        parsed = parsers[Path(words[1]).name].build_parser().parse_args(words[2:])  # bad flag: exit
        assert parsed.device == "cuda"
        benchmarks += 1
    assert benchmarks >= 4 and evals == 1
    assert "triton" in text and "--amp bf16 --channels-last" in text


def test_gpu_check_without_cuda_still_writes_its_results_file(tmp_path):
    hidden = {"CUDA_VISIBLE_DEVICES": "", "OUT": str(tmp_path)}  # (no GPU, also on a GPU machine)
    run = subprocess.run(
        ["bash", str(SCRIPTS / "gpu_check.sh")],
        env={**os.environ, **hidden, "GPU_CHECK_SITE": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = (tmp_path / "gpu_benchmarks.md").read_text()
    assert run.returncode == 1 and results.startswith("# GPU check, ")
    assert "torch " in results and results.rstrip().endswith("No CUDA device: nothing measured.")


def _step_function() -> str:
    """gpu_check.sh's ``step`` function and the allotment it counts."""
    text = (SCRIPTS / "gpu_check.sh").read_text()
    return re.search(r"^ALLOTTED=0.*?^}$", text, flags=re.DOTALL | re.MULTILINE).group(0)


def test_gpu_check_steps_pass_their_unused_seconds_on(tmp_path):
    """The steps' limits add up from the script's start: 2 s of set-up come off a 5 s first step;
    ``sleep 3`` finishes in a 2 s step on what the first step left; a step past its limit is
    stopped, and the whole script ends within the sum of the limits (bash counts whole seconds:
    +-1)."""
    function = _step_function()
    script = f"""
        OUT_DIR={tmp_path}; RESULTS={tmp_path}/results.md
        {function}
        sleep 2
        step quick 5 true
        step slow 2 sleep 3
        step late 1 sleep 30
        echo "end $SECONDS"
    """
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    results = (tmp_path / "results.md").read_text()
    steps = [tuple(map(int, m)) for m in re.findall(r"\(exit (\d+), (\d+) s of (\d+)\)", results)]
    (quick, _, quick_limit), (slow, slow_s, slow_limit), (late, late_s, late_limit) = steps
    assert (quick, slow, late) == (0, 0, 124)  # `sleep 3` would not fit its own 2 s
    assert quick_limit <= 5 - 2 and slow_limit >= slow_s >= 3
    assert late_s >= late_limit >= 1
    assert int(run.stdout.split()[-1]) <= 5 + 2 + 1 + 1


def test_gpu_check_a_step_past_the_allotment_still_gets_a_second(tmp_path):
    function = _step_function()
    script = f"""
        OUT_DIR={tmp_path}; RESULTS={tmp_path}/results.md
        {function}
        sleep 3
        step over 1 sleep 30
    """
    subprocess.run(["bash", "-c", script], check=True)
    assert re.search(r"\(exit 124, [12] s of 1\)", (tmp_path / "results.md").read_text())


def test_bench_layers_times_the_triton_sparsity_options_on_spread_positions(
    bench_models, monkeypatch
):
    """``--triton-taps --spread-positions`` (a gpu_check step): each variant computes the layer's
    output and gradients, on positions spread over the grid, and gets a time."""
    import bench_layers

    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    flags = ["--size", "7", "--batch", "1", "--repeats", "1", "--conv-algorithms", "direct"]
    args = bench_layers.build_parser().parse_args([*flags, "--triton-taps", "--spread-positions"])
    layer = dcls.Dcls2d(4, 4, 3, dilated_kernel_size=7, padding=3, groups=4)
    bench_layers.spread_positions_(layer)
    assert layer.P.abs().amax() > 1.5  # N(0, 0.5) would keep them near the centre
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    expected = layer(x)
    expected.sum().backward()
    grads = [t.grad.clone() for t in (x, layer.weight, layer.P)]
    for flags in bench_layers.TAP_VARIANTS.values():
        for t in (x, layer.weight, layer.P):
            t.grad = None
        out = bench_layers._triton_with_taps(layer, x, **flags)
        torch.testing.assert_close(out, expected)
        out.sum().backward()
        for grad, t in zip(grads, (x, layer.weight, layer.P), strict=True):
            torch.testing.assert_close(t.grad, grad)
    timed = bench_layers.bench_shape(None, 4, 6, 3, "bilinear", args)
    assert all(timed[f"layer_{name}"] > 0 for name in bench_layers.TAP_VARIANTS)
