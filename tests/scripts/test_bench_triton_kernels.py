"""scripts/bench_triton_kernels.py under Triton's interpreter: the ops it times compute what the
dense convolution computes, and it prints one row per shape and op."""

import re
from pathlib import Path

import pytest
import torch

from dcls.algorithms import triton as dw_triton

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
pytestmark = pytest.mark.skipif(dw_triton.triton is None, reason="triton is not installed")


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    import bench_triton_kernels

    return bench_triton_kernels


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_timed_triton_ops_equal_the_dense_ones(bench, channels_last):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 3, 8, 8, device=device).contiguous(memory_format=fmt)
    weight = torch.randn(3, 1, 5, 5, device=device)
    grad = torch.randn_like(x)
    ours, dense = bench._triton_ops(x, weight, grad), bench._dense_ops(x, weight, grad)
    assert set(ours) == set(dense) == set(bench.OPS)
    for op, index in (("forward", None), ("input grad", 0), ("kernel grad", 1)):
        expected = dense[op]() if index is None else dense[op]()[index]
        torch.testing.assert_close(ours[op](), expected, rtol=1e-4, atol=1e-4)


def test_prints_a_row_per_shape_and_op(bench, capsys):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    argv = ["--device", device, "--dtype", "fp32", "--shapes", "2x6", "3x5", "--size", "5"]
    assert bench.main([*argv, "--batch", "1", "--repeats", "1", "--calls", "1"]) == 0
    out = capsys.readouterr().out
    header = "| C | HxW | op | dense 7x7 ms | dense 5x5 ms | Triton 5x5 ms | Triton/dense 7x7 |"
    assert header in out
    number = r"\d+\.\d+"
    for channels, size in ((2, 6), (3, 5)):
        for op in bench.OPS:
            row = rf"\| {channels} \| {size}x{size} \| {op} \| {number} \| {number} \| {number} "
            assert re.search(rf"{row}\| {number} \|", out), (channels, size, op)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--shapes", "96by56"], "a shape is CHANNELSxSIZE"),
        (["--shapes", "0x56"], "must be >= 1"),
    ],
)
def test_bad_shapes_are_refused_with_the_format(bench, argv, match, capsys):
    with pytest.raises(SystemExit):
        bench.main(argv)
    assert match in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--device", "cpu", "--size", "4"], "--size must be odd"),
        (["--repeats", "0"], "argument --repeats: expected an integer >= 1, got '0'"),
    ],
)
def test_bad_arguments_exit_2_naming_them(bench, argv, match, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2 and match in capsys.readouterr().err
