"""scripts/triton_sass.py: the forward's configs compiled for sm_90 with Triton's ptxas (no GPU),
their SASS counted."""

from pathlib import Path

import pytest

from dcls.algorithms import triton as dw_triton

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
pytestmark = pytest.mark.skipif(dw_triton.triton is None, reason="triton is not installed")


@pytest.fixture
def sass(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import triton_sass

    # One FMA and one tensor-core config per layout: compiling every config takes a minute.
    for table in ("_CONV_CONFIGS", "_DOT_CONV_CONFIGS"):
        configs = getattr(dw_triton, table)
        monkeypatch.setattr(dw_triton, table, {layout: c[:1] for layout, c in configs.items()})
    return triton_sass


def test_rows_count_the_multiply_adds_of_each_path(sass):
    rows = sass.config_rows(kernel_size=5, dtype="bf16")
    assert [(r["layout"], r["path"]) for r in rows] == [
        ("NHWC", "FMA"), ("NHWC", "DOT"), ("NCHW", "FMA"), ("NCHW", "DOT"),
    ]  # fmt: skip
    for row in rows:
        meta, warps, _ = dw_triton._config_table("conv", row["layout"] == "NHWC", False, True)[
            0 if row["path"] == "FMA" else 1
        ]
        assert row["config"].startswith(row["path"])
        assert row["registers"] > 0 and row["local_bytes"] == 0
        useful = meta["BLOCK_H"] * meta["BLOCK_W"] * meta["BLOCK_C"] * 5 / (32 * warps)
        assert row["useful"] == useful
        assert 0 < row["loop"] < row["instructions"]  # the row loop, inside the kernel
        assert row["per_useful"] == pytest.approx(row["loop"] / useful)
        if row["path"] == "FMA":  # one FFMA per useful multiply-add of the unrolled row
            assert row["FFMA"] == useful and row["HMMA"] == 0
        else:
            assert row["FFMA"] == 0 and row["HMMA"] > 0


def test_main_prints_one_table_row_per_config(sass, caplog):
    caplog.set_level("INFO", logger="triton_sass")
    assert sass.main(["--kernel-size", "3"]) == 0
    table = [line for line in caplog.text.splitlines() if line.startswith("| N")]
    assert len(table) == 4
    for size in ("0", "33"):  # rows over 32 taps are not unrolled whole: no per-row count
        with pytest.raises(SystemExit):
            sass.main(["--kernel-size", size])


def test_the_loop_body_is_the_span_of_the_backward_branch(sass):
    text = "\n".join(
        [
            "        /*0000*/                   MOV R1, c[0x0][0x28] ;",
            "        /*0010*/                   IMAD R2, R3, R4, R5 ;",
            "        /*0020*/                   FFMA R6, R7, R8, R6 ;",
            "        /*0030*/               @P0 BRA 0x10 ;",
            "        /*0040*/                   EXIT ;",
            "        /*0050*/                   BRA 0x50;",  # the trailing self-loop: not a loop
        ]
    )
    assert sass.loop_body_instructions(text) == 3
