"""CE and mCE normalisation by AlexNet's published errors."""

import pytest

from engine.evaluation.corruptions import (
    ALEXNET_ERRORS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    SEVERITIES,
    corruption_summary,
)


def test_errors_equal_to_alexnets_give_an_mce_of_exactly_100():
    errors = {c: {s: 100 * ALEXNET_ERRORS[c] for s in SEVERITIES} for c in CORRUPTIONS}
    summary = corruption_summary(errors)
    assert summary["mce"] == 100.0
    assert all(ce == pytest.approx(100.0, abs=1e-12) for ce in summary["ce"].values())


def test_ce_is_the_ratio_of_summed_errors():
    errors = {c: {s: 10.0 * s for s in SEVERITIES} for c in CORRUPTIONS}  # sum 150 -> mean 30
    summary = corruption_summary(errors)
    for corruption in CORRUPTIONS:
        assert summary["ce"][corruption] == pytest.approx(30.0 / ALEXNET_ERRORS[corruption])
        assert summary["mean_errors"][corruption] == pytest.approx(30.0)
    expected = sum(30.0 / ALEXNET_ERRORS[c] for c in CORRUPTIONS) / 15
    assert summary["mce"] == pytest.approx(expected)


def test_incomplete_severities_or_unknown_corruptions_have_no_mce():
    partial = corruption_summary({"fog": {1: 20.0, 2: 30.0}})
    assert partial["ce"] == {} and partial["mce"] is None and partial["mean_error"] == 25.0
    unknown = corruption_summary({"rain": {s: 20.0 for s in SEVERITIES}})
    assert unknown["mce"] is None


def test_the_tables_hold_15_benchmark_and_4_extra_corruptions():
    assert len(CORRUPTIONS) == 15 and len(EXTRA_CORRUPTIONS) == 4
    assert set(ALEXNET_ERRORS) == set(CORRUPTIONS) | set(EXTRA_CORRUPTIONS)
    # spot values from the ImageNet-C paper's AlexNet row (errors in percent, rounded)
    assert round(100 * ALEXNET_ERRORS["gaussian_noise"]) == 89
    assert round(100 * ALEXNET_ERRORS["brightness"]) == 56
