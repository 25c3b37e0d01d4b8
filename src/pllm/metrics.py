"""LaMP's metrics: accuracy and macro-F1 (over the task's full label set), MAE and RMSE, ROUGE-1/L.

Unparseable predictions arrive as None and are scored explicitly: wrong for accuracy/F1, the largest
possible error for MAE/RMSE, an empty string for ROUGE. Their count is reported beside the metric.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from pllm.errors import InputError
from pllm.registry import Registry

UNPARSEABLE = "<unparseable>"


class Metric(ABC):
    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True

    @abstractmethod
    def compute(self, preds: Sequence[str | None], golds: Sequence[str], labels: Sequence[str] | None = None) -> float:
        """Corpus-level value (bootstrap resamples and calls this again)."""


METRICS: Registry[Metric] = Registry("metric")


def _register(cls: type[Metric]) -> type[Metric]:
    METRICS.register(cls.name, cls())
    return cls


def _check(preds: Sequence, golds: Sequence) -> None:
    if len(preds) != len(golds):
        raise InputError(f"{len(preds)} predictions for {len(golds)} gold outputs")
    if not golds:
        raise InputError("no examples to score")


@_register
class Accuracy(Metric):
    name = "accuracy"

    def compute(self, preds, golds, labels=None):
        _check(preds, golds)
        return float(np.mean([p is not None and str(p).strip() == str(g).strip() for p, g in zip(preds, golds)]))


@_register
class MacroF1(Metric):
    """Macro-F1 over the task's full label set (as LaMP computes it), not only labels that occur."""

    name = "f1"

    def compute(self, preds, golds, labels=None):
        _check(preds, golds)
        label_set = list(labels) if labels else sorted({str(g) for g in golds})
        p = [UNPARSEABLE if x is None else str(x).strip() for x in preds]
        g = [str(x).strip() for x in golds]
        f1s = []
        for lab in label_set:
            tp = sum(1 for a, b in zip(p, g) if a == lab and b == lab)
            fp = sum(1 for a, b in zip(p, g) if a == lab and b != lab)
            fn = sum(1 for a, b in zip(p, g) if a != lab and b == lab)
            denom = 2 * tp + fp + fn
            f1s.append(0.0 if denom == 0 else 2 * tp / denom)
        return float(np.mean(f1s))


def _numeric_errors(preds, golds, labels) -> np.ndarray:
    g = np.array([float(x) for x in golds])
    if labels:
        lo, hi = min(float(x) for x in labels), max(float(x) for x in labels)
    else:
        lo, hi = float(g.min()), float(g.max())
    errs = []
    for p, gold in zip(preds, g):
        try:
            value = float(p) if p is not None else math.nan
        except ValueError:
            value = math.nan
        errs.append(max(abs(gold - lo), abs(gold - hi)) if math.isnan(value) else abs(value - gold))
    return np.array(errs)


class _ErrorMetric(Metric):
    """A summary of the absolute errors (unparseable predictions count as the worst error)."""

    higher_is_better = False
    summarize: Callable[[np.ndarray], float]  # a staticmethod in each subclass

    def compute(self, preds, golds, labels=None):
        _check(preds, golds)
        return float(self.summarize(_numeric_errors(preds, golds, labels)))


@_register
class MAE(_ErrorMetric):
    name = "mae"
    summarize = staticmethod(lambda errors: float(np.mean(errors)))


@_register
class RMSE(_ErrorMetric):
    name = "rmse"
    summarize = staticmethod(lambda errors: float(np.sqrt(np.mean(errors ** 2))))


class _Rouge(Metric):
    rouge_type: ClassVar[str]

    @functools.cached_property
    def _scorer(self) -> Any:
        """Loaded on first use: rouge-score (and nltk) take seconds to import, and specs import this module."""
        from rouge_score import rouge_scorer

        return rouge_scorer.RougeScorer([self.rouge_type], use_stemmer=True)

    def compute(self, preds, golds, labels=None):
        _check(preds, golds)
        return float(np.mean([self._scorer.score(str(g), p or "")[self.rouge_type].fmeasure
                              for p, g in zip(preds, golds)]))


@_register
class Rouge1(_Rouge):
    name = "rouge-1"
    rouge_type = "rouge1"


@_register
class RougeL(_Rouge):
    name = "rouge-L"
    rouge_type = "rougeL"


def get_metric(name: str) -> Metric:
    return METRICS.get(name)


def compute_all(names: Sequence[str], preds, golds, labels=None) -> dict[str, float]:
    return {n: METRICS.get(n).compute(preds, golds, labels) for n in names}
