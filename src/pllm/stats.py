"""Bootstrap confidence intervals for corpus-level metrics, and paired differences between methods
scored on the same questions (the difference is resampled jointly, so shared noise cancels)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pllm.metrics import METRICS


@dataclass
class Interval:
    value: float
    low: float
    high: float

    def fmt(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def fmt_signed(self, digits: int = 3) -> str:
        """`+0.105 [+0.020, +0.190]`: for differences, where the sign is the point."""
        return f"{self.value:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

    def fmt_short(self, digits: int = 3, *, signed: bool = False) -> str:
        """`0.995 ±0.13`, ± being half the interval's width: a narrow column's form of `fmt` (the
        interval may be asymmetric; reports keep the full one)."""
        value = f"{self.value:+.{digits}f}" if signed else f"{self.value:.{digits}f}"
        return f"{value} ±{(self.high - self.low) / 2:.{max(digits - 1, 1)}f}"

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def proportion_interval(hits: Sequence[bool] | np.ndarray, *, n_resamples: int = 2000, seed: int = 0,
                        alpha: float = 0.05) -> Interval:
    """Share of True with a percentile bootstrap interval (empty input -> NaN)."""
    x = np.asarray(hits, dtype=np.float64)
    if x.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (n_resamples, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Interval(float(x.mean()), float(lo), float(hi))


def mean_interval(values: Sequence[float] | np.ndarray, *, n_resamples: int = 2000, seed: int = 0,
                  alpha: float = 0.05) -> Interval:
    """Mean of per-question scores (a recall, a hit rate) with a percentile bootstrap interval."""
    return proportion_interval(np.asarray(values, dtype=np.float64), n_resamples=n_resamples, seed=seed,
                               alpha=alpha)


def paired_mean_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                           n_resamples: int = 2000, seed: int = 0, alpha: float = 0.05) -> Interval:
    """mean(a) - mean(b) of two methods' scores on the same questions, resampled jointly."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"{x.size} scores for A but {y.size} for B")
    return mean_interval(x - y, n_resamples=n_resamples, seed=seed, alpha=alpha)


def bootstrap_metric(metric: str, preds: Sequence[str | None], golds: Sequence[str], labels=None, *,
                     n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05) -> Interval:
    m = METRICS.get(metric)
    value = m.compute(preds, golds, labels)
    rng = np.random.default_rng(seed)
    n = len(golds)
    preds, golds = list(preds), list(golds)
    samples = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        samples.append(m.compute([preds[i] for i in idx], [golds[i] for i in idx], labels))
    lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return Interval(value, float(lo), float(hi))


def paired_difference(metric: str, preds_a: Sequence[str | None], preds_b: Sequence[str | None],
                      golds: Sequence[str], labels=None, *, n_resamples: int = 1000, seed: int = 0,
                      alpha: float = 0.05) -> Interval:
    """metric(A) - metric(B) on the same questions, with a paired bootstrap interval."""
    m = METRICS.get(metric)
    value = m.compute(preds_a, golds, labels) - m.compute(preds_b, golds, labels)
    rng = np.random.default_rng(seed)
    n = len(golds)
    a, b, g = list(preds_a), list(preds_b), list(golds)
    samples = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        gi = [g[i] for i in idx]
        samples.append(m.compute([a[i] for i in idx], gi, labels) - m.compute([b[i] for i in idx], gi, labels))
    lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return Interval(value, float(lo), float(hi))


# Metrics that are a function of the mean of per-question scores: bootstrapping them needs each
# question scored once (by the metric itself, on that one question) instead of once per resample,
# which is what makes 1,000-resample intervals of ROUGE affordable. The draws are the same as
# `bootstrap_metric`'s (same generator, seed and order), so the intervals are identical.
_MEAN_OF = {"accuracy": (lambda x: x, lambda m: m), "mae": (lambda x: x, lambda m: m),
            "rmse": (lambda x: x * x, lambda m: m ** 0.5),
            "rouge-1": (lambda x: x, lambda m: m), "rouge-L": (lambda x: x, lambda m: m)}


def _per_question(metric: str, preds: Sequence[str | None], golds: Sequence[str], labels) -> np.ndarray:
    m = METRICS.get(metric)
    to, _ = _MEAN_OF[metric]
    return np.array([to(m.compute([p], [g], labels)) for p, g in zip(preds, golds)], dtype=np.float64)


def draws(n: int, n_resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, n, n) for _ in range(n_resamples)])  # (R, n), as stats draws them


def fast_bootstrap(metric: str, preds, golds, labels=None, *, n_resamples: int = 1000, seed: int = 0,
                   alpha: float = 0.05, ref_preds=None) -> Interval:
    """`bootstrap_metric` (or, with `ref_preds`, `paired_difference`), computed from
    per-question scores when the metric is a mean of them, and by the generic resampling otherwise."""
    if metric not in _MEAN_OF:
        if ref_preds is None:
            return bootstrap_metric(metric, preds, golds, labels, n_resamples=n_resamples, seed=seed, alpha=alpha)
        return paired_difference(metric, preds, ref_preds, golds, labels, n_resamples=n_resamples, seed=seed,
                                 alpha=alpha)
    _, agg = _MEAN_OF[metric]
    idx = draws(len(golds), n_resamples, seed)
    a = _per_question(metric, preds, golds, labels)
    if ref_preds is None:
        value, samples = agg(a.mean()), agg(a[idx].mean(axis=1))
    else:
        b = _per_question(metric, ref_preds, golds, labels)
        value, samples = agg(a.mean()) - agg(b.mean()), agg(a[idx].mean(axis=1)) - agg(b[idx].mean(axis=1))
    lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return Interval(float(value), float(lo), float(hi))
