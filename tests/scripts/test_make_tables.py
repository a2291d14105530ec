"""scripts/make_tables.py on result files written by real eval.py runs."""

import csv
import importlib.util
import json

import pytest

from engine.data.eval_sets import imagenet_subset_indices
from tests.eval_helpers import (
    ROOT,
    WNIDS,
    expected_accuracy,
    in1k_samples,
    run_eval,
    save_stub_checkpoint,
    write_folder,
)

spec = importlib.util.spec_from_file_location("make_tables", ROOT / "scripts" / "make_tables.py")
make_tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_tables)


@pytest.fixture
def result_folder(tmp_path):
    """Two rows evaluated on ImageNet-1k and ImageNet-A: ``stub`` and ``stub_dcls`` (whose first
    guess is one class later), plus an unpaired row with ImageNet-1k only."""
    subset = imagenet_subset_indices("imagenet_a")
    a_samples = [(WNIDS[subset[0]], subset[0]), (WNIDS[subset[5]], subset[5] - 1)]
    write_folder(tmp_path / "in1k", in1k_samples())
    write_folder(tmp_path / "in_a", a_samples, suffix=".jpg")
    roots = [f"roots.in1k={tmp_path / 'in1k'}", f"roots.in_a={tmp_path / 'in_a'}"]
    for name, offset, sets in [("stub", 0, "[in1k,in_a]"), ("stub_dcls", 1, "[in1k,in_a]")]:
        checkpoint = save_stub_checkpoint(tmp_path / name / "last.pt", offset)
        overrides = [f"checkpoint={checkpoint}", f"name={name}", f"sets={sets}", *roots]
        run_eval(tmp_path, overrides, run=f"results/{name}")
    checkpoint = save_stub_checkpoint(tmp_path / "other" / "last.pt", 2)
    run_eval(tmp_path, [f"checkpoint={checkpoint}", "name=other", roots[0]], run="results/other")
    by_hand = {
        name: (
            expected_accuracy(in1k_samples(), offset, label_of=WNIDS.index)[0],
            expected_accuracy(
                a_samples, offset, subset, label_of=lambda w: subset.index(WNIDS.index(w))
            )[0],
        )
        for name, offset in (("stub", 0), ("stub_dcls", 1), ("other", 2))
    }
    return tmp_path / "results", by_hand


def test_tables_put_each_variant_after_its_baseline_with_deltas(result_folder, tmp_path, capsys):
    folder, by_hand = result_folder
    assert make_tables.main([str(folder), "--csv", str(tmp_path / "csv")]) == 0
    output = capsys.readouterr().out
    (in1k, in_a), (in1k_dcls, in_a_dcls) = by_hand["stub"], by_hand["stub_dcls"]
    assert in1k != in1k_dcls and in_a != in_a_dcls  # the deltas are not trivially zero
    expected_imagenet = "\n".join(
        [
            "| model | params (M) | GMACs | top-1 | Δ top-1 |",
            "|---|---|---|---|---|",
            f"| other | 1e-06 | 0.00 | {by_hand['other'][0]:.2f} |  |",
            f"| stub | 1e-06 | 0.00 | {in1k:.2f} |  |",
            f"| stub_dcls | 1e-06 | 0.00 | {in1k_dcls:.2f} | {in1k_dcls - in1k:+.2f} |",
        ]
    )
    expected_robustness = "\n".join(
        [
            "| model | IN-A | Δ IN-A |",
            "|---|---|---|",
            "| other | - |  |",
            f"| stub | {in_a:.2f} |  |",
            f"| stub_dcls | {in_a_dcls:.2f} | {in_a_dcls - in_a:+.2f} |",
        ]
    )
    heading = "## top-1 and cost (the paper's ImageNet-1k table; top-1 on ImageNet-1k val"
    assert heading in output and "## robustness (" in output  # what each table holds
    assert expected_imagenet in output
    assert expected_robustness in output
    # the CSV holds numbers (one line per model and metric), unrounded, for pandas and plots
    rows = list(csv.DictReader((tmp_path / "csv" / "imagenet.csv").open()))
    top1 = {r["model"]: r for r in rows if r["metric"] == "top-1"}
    assert set(top1) == {"other", "stub", "stub_dcls"} and top1["stub_dcls"]["baseline"] == "stub"
    assert float(top1["stub_dcls"]["mean"]) == pytest.approx(in1k_dcls)
    assert float(top1["stub_dcls"]["delta"]) == pytest.approx(in1k_dcls - in1k)
    assert top1["stub"]["delta"] == top1["stub"]["std"] == "" and top1["stub"]["n"] == "1"


def test_throughput_and_mce_columns_appear_when_measured(tmp_path, capsys):
    base = {"params": 2e6, "gmacs": 1.0, "sets": {"in1k": {"top1": 70.0}}}
    results = {
        "net": base | {"name": "net", "sets": base["sets"] | {"in_c": {"mce": 60.0}}},
        "net_dcls": base
        | {
            "name": "net_dcls",
            "sets": {
                "in1k": {"top1": 71.5},
                "in_c": {"mce": 57.5},
                "throughput": {"images_per_s": {"inference": 90.0}, "ratio": {"inference": 1.1}},
            },
        },
    }
    for name, result in results.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval_results.json").write_text(json.dumps(result))
    make_tables.main([str(tmp_path)])
    output = capsys.readouterr().out
    assert "| net_dcls | 2.0 | 1.00 | 90.0 | 1.10 | 71.50 | +1.50 |" in output
    assert "| net_dcls | 57.50 | -2.50 |" in output


def _write(path, result):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))


def test_training_runs_show_their_best_epoch_next_to_their_last(tmp_path, capsys):
    # two seeds of a training run (its eval_results.json: the last epoch and the best one on its
    # validation split), and an eval.py result without a best epoch
    for seed, (last, best) in enumerate([(70.0, 71.0), (72.0, 72.5)]):
        val = {"top1": last, "best_top1": best, "best_epoch": 3}
        _write(
            tmp_path / f"s{seed}" / "eval_results.json",
            {"name": "net", "seed": seed, "sets": {"val": val}},
        )
    _write(
        tmp_path / "e" / "eval_results.json", {"name": "other", "sets": {"in1k": {"top1": 60.0}}}
    )
    make_tables.main([str(tmp_path)])
    output = capsys.readouterr().out
    assert "| model | top-1 | Δ top-1 | best val top-1 |" in output
    assert "| net | 71.00 ± 1.41 (n=2) |  | 71.75 ± 1.06 (n=2) |" in output
    assert "| other | 60.00 |  | - |" in output


def test_an_evaluation_of_a_training_runs_checkpoint_keeps_its_best_epoch(tmp_path, capsys):
    # eval.py on the run's last checkpoint (the command its summary prints) replaces its val set;
    # the best epoch over training stays next to it (the column was blank after it)
    val = {"top1": 70.0, "best_top1": 71.0, "best_epoch": 3}
    _write(tmp_path / "train" / "eval_results.json", {"name": "net", "created": 1.0,
                                                      "sets": {"val": val}})  # fmt: skip
    _write(
        tmp_path / "eval" / "eval_results.json",
        {"name": "net", "created": 2.0, "sets": {"val": {"top1": 70.5}}},
    )
    make_tables.main([str(tmp_path)])
    assert "| net | 70.50 |  | 71.00 |" in capsys.readouterr().out


def test_no_results_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no eval_results\.json under"):
        make_tables.main([str(tmp_path)])


def test_results_of_one_model_merge_and_the_newest_set_wins(tmp_path, capsys, caplog):
    """An in1k+in_c evaluation, then an in1k-only one of the same model: both sets stay, the
    newer in1k wins and the replacement is logged."""
    base = {"name": "net", "params": 1e6, "gmacs": 1.0}
    _write(
        tmp_path / "a" / "eval_results.json",
        base | {"created": 1.0, "sets": {"in1k": {"top1": 70.0}, "in_c": {"mce": 60.0}}},
    )
    _write(
        tmp_path / "b" / "eval_results.json",
        base | {"created": 2.0, "sets": {"in1k": {"top1": 71.0}}},
    )
    with caplog.at_level("INFO"):
        make_tables.main([str(tmp_path)])
    output = capsys.readouterr().out
    assert "| net | 1.0 | 1.00 | 71.00 |" in output  # the newer in1k
    assert "| net | 60.00 |" in output  # the robustness table is still there
    assert "in1k of " in caplog.text and "b/eval_results.json replaces the one of" in caplog.text
    assert "name=... keeps a run in a row of its own" in caplog.text


def test_seeds_aggregate_and_rows_stand_next_to_the_paper(tmp_path, capsys):
    # skewed seeds: the mean differs from the median and from the last seed
    for seed, (base_top1, dcls_top1) in enumerate([(82.0, 82.9), (82.1, 82.4), (82.6, 82.5)]):
        for model, top1 in (("convnext_tiny", base_top1), ("convnext_tiny_dcls", dcls_top1)):
            result = {"name": model, "model": model, "seed": seed, "params": 28.6e6, "gmacs": 4.5}
            _write(
                tmp_path / f"{model}_{seed}" / "eval_results.json",
                result | {"sets": {"val": {"top1": top1}}},
            )
    make_tables.main([str(tmp_path), "--csv", str(tmp_path / "csv")])
    output = capsys.readouterr().out
    header = "| model | params (M) | paper params | GMACs | paper GMACs | top-1 | Δ top-1 |"
    assert header + " paper top-1 |" in output
    # by hand: baseline mean 246.7 / 3 = 82.2333, sample std sqrt((0.2333^2 + 0.1333^2 +
    # 0.3667^2) / 2) = 0.3215; DCLS mean 82.6, std sqrt((0.3^2 + 0.2^2 + 0.1^2) / 2) = 0.2646;
    # the paper's 82.1 and 82.5 beside them
    assert "| convnext_tiny | 28.6 | 28.0 | 4.50 | 4.50 | 82.23 ± 0.32 (n=3) |  | 82.10 |" in output
    assert (
        "| convnext_tiny_dcls | 28.6 | 28.0 | 4.50 | 5.00 | 82.60 ± 0.26 (n=3) | +0.37 | 82.50 |"
        in output
    )
    rows = list(csv.DictReader((tmp_path / "csv" / "imagenet.csv").open()))
    top1 = {r["model"]: r for r in rows if r["metric"] == "top-1"}
    assert float(top1["convnext_tiny"]["mean"]) == pytest.approx(246.7 / 3)
    assert float(top1["convnext_tiny"]["std"]) == pytest.approx(0.103333**0.5, rel=1e-4)
    assert float(top1["convnext_tiny_dcls"]["std"]) == pytest.approx(0.07**0.5)
    assert float(top1["convnext_tiny_dcls"]["delta"]) == pytest.approx(82.6 - 246.7 / 3)
    assert top1["convnext_tiny_dcls"]["n"] == "3"


def test_results_of_different_models_in_one_row_are_warned_about(tmp_path, caplog):
    # (an untrained checkpoint=null throughput run of the 1000-class model shared the row of a
    # 10-class digits model: their parameters were averaged, without a word)
    _write(tmp_path / "a" / "eval_results.json", {"name": "net", "params": 3.38e6, "sets": {}})
    _write(tmp_path / "b" / "eval_results.json", {"name": "net", "params": 3.69e6, "sets": {}})
    _write(tmp_path / "c" / "eval_results.json", {"name": "other", "params": 1.0, "sets": {}})
    caplog.set_level("WARNING")
    make_tables.load_results([tmp_path])
    (line,) = [r.getMessage() for r in caplog.records if "different models" in r.getMessage()]
    assert line.startswith("net: ") and "(3380000.0 and 3690000.0 params) in one row" in line


def test_a_result_measured_otherwise_that_replaces_another_is_warned_about(tmp_path, caplog):
    """A fake-data smoke run named like the real run (name=...), or an fp32 re-evaluation of a
    bf16 run: the newest still wins (the row is named so), but with a warning saying what
    differs, and GMACs that differ (another image size) are named too."""
    real = {"name": "net", "seed": 0, "params": 5.0, "gmacs": 4.5, "weights": "ema", "amp": "bf16"}
    _write(
        tmp_path / "a" / "eval_results.json",
        real | {"created": 1.0, "sets": {"val": {"top1": 82.3, "data": "imagenet"}}},
    )
    smoke = real | {"created": 2.0, "gmacs": 0.1, "amp": None}
    _write(
        tmp_path / "b" / "eval_results.json",
        smoke | {"sets": {"val": {"top1": 12.5, "data": "fake"}}},
    )
    caplog.set_level("INFO")
    make_tables.load_results([tmp_path])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    (replaced,) = [w for w in warnings if "replaces" in w]
    assert "measured otherwise: data imagenet -> fake; amp bf16 -> None" in replaced
    assert any("(4.5 and 0.1 gmacs)" in w for w in warnings)
