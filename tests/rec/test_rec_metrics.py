import math

import pytest

from pllm.errors import InputError
from pllm.rec.metrics import (
    bootstrap_ranking,
    metric_fn,
    mrr,
    ndcg_at_k,
    paired_ranking_difference,
    rank_of_target,
    recall_at_k,
)


def test_rank_of_target_by_hand():
    assert rank_of_target([0.1, 0.9, 0.5], 1) == 1
    assert rank_of_target([0.1, 0.9, 0.5], 2) == 2
    assert rank_of_target([0.1, 0.9, 0.5], 0) == 3
    # ties keep list order (the builder shuffles lists, so this is a seeded random tie-break)
    assert rank_of_target([1.0, 1.0, 1.0], 0) == 1 and rank_of_target([1.0, 1.0, 1.0], 2) == 3
    assert rank_of_target([float("nan"), 0.0], 0) == 2  # NaN ranks last
    with pytest.raises(InputError):
        rank_of_target([0.1], 3)


def test_metrics_match_hand_computed_rankings():
    # Three users whose targets landed at ranks 1, 3 and 7.
    ranks = [1, 3, 7]
    assert recall_at_k(ranks, 1) == pytest.approx(1 / 3)
    assert recall_at_k(ranks, 5) == pytest.approx(2 / 3)
    assert ndcg_at_k(ranks, 5) == pytest.approx((1.0 + 1 / math.log2(4) + 0.0) / 3)
    assert mrr(ranks) == pytest.approx((1 + 1 / 3 + 1 / 7) / 3)
    assert metric_fn("NDCG@5")(ranks) == ndcg_at_k(ranks, 5)
    with pytest.raises(InputError):
        metric_fn("precision@3")
    with pytest.raises(InputError):
        recall_at_k([], 1)


def test_bootstrap_interval_brackets_value_and_paired_difference():
    ranks = [1, 2, 3, 10, 1, 5, 20, 1]
    iv = bootstrap_ranking("mrr", ranks, n_resamples=200, seed=0)
    assert iv.low <= iv.value <= iv.high
    assert iv.value == pytest.approx(mrr(ranks))
    same = paired_ranking_difference("recall@1", ranks, ranks, n_resamples=50)
    assert same.value == 0 and same.low == 0 and same.high == 0
    better = paired_ranking_difference("recall@1", [1] * 8, ranks, n_resamples=100)
    assert better.value == pytest.approx(1 - 3 / 8) and better.low > 0
