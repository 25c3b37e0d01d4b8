from __future__ import annotations

import math

import pytest

from pllm.metrics import METRICS, compute_all
from pllm.stats import bootstrap_metric, mean_interval, paired_difference, paired_mean_difference


def test_accuracy_counts_unparseable_as_wrong():
    assert METRICS.get("accuracy").compute(["a", None, "b", "b"], ["a", "a", "b", "a"]) == 0.5


def test_macro_f1_over_full_label_set():
    preds, golds = ["a", "a", "b", None], ["a", "b", "b", "a"]
    # a: tp=1 fp=1 fn=1 -> 0.5 ; b: tp=1 fp=0 fn=1 -> 2/3 ; c (never seen): 0
    assert METRICS.get("f1").compute(preds, golds, ["a", "b"]) == pytest.approx((0.5 + 2 / 3) / 2)
    assert METRICS.get("f1").compute(preds, golds, ["a", "b", "c"]) == pytest.approx((0.5 + 2 / 3) / 3)


def test_mae_rmse_hand_computed_and_unparseable_gets_max_error():
    labels = ["1", "2", "3", "4", "5"]
    preds, golds = ["4", "2.5", None], ["5", "2", "2"]
    errs = [1, 0.5, 3]  # None on gold 2 -> farthest label is 5 -> 3
    assert METRICS.get("mae").compute(preds, golds, labels) == pytest.approx(sum(errs) / 3)
    assert METRICS.get("rmse").compute(preds, golds, labels) == pytest.approx(math.sqrt(sum(e * e for e in errs) / 3))


def test_rouge():
    r1 = METRICS.get("rouge-1").compute(["the cat sat", None], ["the cat sat down", "x"])
    # P=3/3, R=3/4 -> F=6/7 ; empty prediction -> 0
    assert r1 == pytest.approx((6 / 7) / 2)
    assert METRICS.get("rouge-L").compute(["a b c"], ["a b c"]) == pytest.approx(1.0)
    assert not METRICS.get("mae").higher_is_better and METRICS.get("rouge-L").higher_is_better


def test_compute_all_and_length_mismatch():
    assert compute_all(["accuracy"], ["a"], ["a"]) == {"accuracy": 1.0}
    with pytest.raises(ValueError, match="2 predictions for 1"):
        METRICS.get("accuracy").compute(["a", "b"], ["a"])


def test_bootstrap_interval_contains_value_and_paired_difference():
    golds = ["1"] * 50 + ["0"] * 50
    good = list(golds)
    bad = ["1"] * 100
    ci = bootstrap_metric("accuracy", bad, golds, n_resamples=200)
    assert ci.low <= ci.value == 0.5 <= ci.high and ci.high - ci.low > 0.05
    diff = paired_difference("accuracy", good, bad, golds, n_resamples=200)
    assert diff.value == pytest.approx(0.5) and diff.low > 0.3


def test_mean_interval_and_paired_mean_difference():
    values = [0.0, 0.5, 1.0, 1.0]
    iv = mean_interval(values, n_resamples=500)
    assert iv.value == 0.625 and 0.0 <= iv.low <= iv.value <= iv.high <= 1.0
    assert mean_interval([1.0] * 5).fmt() == "1.000 [1.000, 1.000]"
    assert math.isnan(mean_interval([]).value)
    diff = paired_mean_difference([1.0, 1.0, 0.5], [0.0, 0.5, 0.5], n_resamples=500)
    assert diff.value == pytest.approx(0.5) and diff.low >= 0.0 and diff.excludes_zero is (diff.low > 0)
    with pytest.raises(ValueError, match="3 scores for A but 2"):
        paired_mean_difference([1.0, 1.0, 1.0], [0.0, 0.0])
