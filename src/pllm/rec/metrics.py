"""Ranking metrics for one held-out relevant item per user: the rank of the target among the
candidates decides Recall@k (= hit rate, since there is one relevant item), NDCG@k and MRR.
Confidence intervals resample users (the unit of independence), as `pllm.stats` does for
questions."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from pllm.errors import InputError
from pllm.stats import Interval


def rank_of_target(scores: Sequence[float] | np.ndarray, target_index: int) -> int:
    """1-based rank of the target when candidates are sorted by score, best first.

    Ties are broken by candidate position (a stable sort): the builder shuffles every list with a seed,
    so that is a random tie-break that never favours the target. NaN scores rank last.
    """
    s = np.asarray(scores, dtype=np.float64)  # (C,)
    if s.ndim != 1 or not 0 <= target_index < s.shape[0]:
        raise InputError(f"target index {target_index} out of range for {s.shape} scores")
    s = np.where(np.isnan(s), -np.inf, s)
    order = np.argsort(-s, kind="stable")
    return int(np.flatnonzero(order == target_index)[0]) + 1


def recall_at_k(ranks: Sequence[int], k: int) -> float:
    """Share of users whose target is in the top k (one relevant item: Recall@k = HitRate@k)."""
    _check(ranks, k)
    return float(np.mean([r <= k for r in ranks]))


def ndcg_at_k(ranks: Sequence[int], k: int) -> float:
    """Mean NDCG@k with one relevant item: 1/log2(rank + 1) inside the top k, else 0 (ideal DCG is 1)."""
    _check(ranks, k)
    return float(np.mean([1.0 / math.log2(r + 1) if r <= k else 0.0 for r in ranks]))


def mrr(ranks: Sequence[int]) -> float:
    """Mean reciprocal rank of the target (over the full candidate list, no cut-off)."""
    _check(ranks, 1)
    return float(np.mean([1.0 / r for r in ranks]))


def _check(ranks: Sequence[int], k: int) -> None:
    if not len(ranks):
        raise InputError("no ranks to score")
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    if any(int(r) < 1 for r in ranks):
        raise InputError("ranks are 1-based; got a rank < 1")


def metric_fn(name: str) -> Callable[[Sequence[int]], float]:
    """'recall@5', 'ndcg@5', 'mrr' -> a function of the ranks."""
    low = name.lower()
    if low == "mrr":
        return mrr
    base, sep, k = low.partition("@")
    if sep and k.isdigit() and base in ("recall", "ndcg"):
        kk = int(k)
        fn = recall_at_k if base == "recall" else ndcg_at_k
        return lambda ranks: fn(ranks, kk)
    raise InputError(f"unknown ranking metric {name!r}; use recall@K, ndcg@K or mrr")


def bootstrap_ranking(name: str, ranks: Sequence[int], *, n_resamples: int = 1000, seed: int = 0,
                      alpha: float = 0.05) -> Interval:
    """The metric with a percentile bootstrap interval over users."""
    fn = metric_fn(name)
    r = np.asarray(ranks, dtype=np.int64)
    value = fn(r.tolist())
    rng = np.random.default_rng(seed)
    samples = [fn(r[rng.integers(0, len(r), len(r))].tolist()) for _ in range(n_resamples)]
    lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return Interval(value, float(lo), float(hi))


def paired_ranking_difference(name: str, ranks_a: Sequence[int], ranks_b: Sequence[int], *,
                              n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05) -> Interval:
    """metric(A) - metric(B) on the same users, users resampled jointly so shared noise cancels."""
    if len(ranks_a) != len(ranks_b):
        raise InputError(f"{len(ranks_a)} ranks for A but {len(ranks_b)} for B")
    fn = metric_fn(name)
    a, b = np.asarray(ranks_a), np.asarray(ranks_b)
    value = fn(a.tolist()) - fn(b.tolist())
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_resamples):
        idx = rng.integers(0, len(a), len(a))
        samples.append(fn(a[idx].tolist()) - fn(b[idx].tolist()))
    lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return Interval(value, float(lo), float(hi))
