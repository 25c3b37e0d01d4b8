"""Hybrid rating predictors: a small model, fitted on the train split, over the LLM's label distribution
plus collaborative features (the bias model's prediction, the item's bias, the user's mean, median,
spread and history size).

Every report keeps these apart from LLM-alone rows and fits a `cf` twin on the same features without
the LLM's: a hybrid's win is the LLM's only where it beats that twin, not just a baseline. The fit
reads only the train split's targets; the features of every row (train or scored) come from the
user's history and from a bias model fitted on train *profiles* (no row's own target shapes its own
features, so train rows look like scored rows).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

import numpy as np

from pllm.errors import InputError
from pllm.eval.baselines import BiasModel
from pllm.pipeline import PredictionRecord
from pllm.registry import Registry
from pllm.tasks.readouts import probabilities, read_out
from pllm.tasks.spec import TaskSpec
from pllm.types import Question


class Estimator(Protocol):
    """The part of a scikit-learn regressor the hybrid uses."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> object: ...

    def predict(self, x: np.ndarray) -> np.ndarray: ...


ESTIMATORS: Registry[Callable[[int], Estimator]] = Registry("hybrid estimator")  # seed -> sklearn estimator


@ESTIMATORS.register("gbm")
def _gbm(seed: int) -> Estimator:
    """Gradient-boosted trees on absolute error (MAE is the primary metric)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(loss="absolute_error", max_depth=3, max_iter=150, learning_rate=0.05,
                                         min_samples_leaf=10, random_state=seed)


@ESTIMATORS.register("linear")
def _linear(seed: int) -> Estimator:
    """Median (quantile 0.5) linear regression on standardised features."""
    from sklearn.linear_model import QuantileRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), QuantileRegressor(quantile=0.5, alpha=1e-3, solver="highs"))


@dataclass
class HybridConfig:
    estimator: str = field(default="gbm", metadata={"help": "gbm | linear (see ESTIMATORS)."})
    use_llm: bool = field(default=True, metadata={
        "help": "Include the LLM's label distribution (False: the collaborative-only twin)."})
    seed: int = field(default=0, metadata={"help": "Estimator seed."})

    def __post_init__(self) -> None:
        ESTIMATORS.get(self.estimator)

    @property
    def label(self) -> str:
        return f"hybrid-{self.estimator}" if self.use_llm else f"cf-{self.estimator}"


class HybridRater:
    """Fit on (train questions, their LLM records); predict scored questions from their LLM records."""

    def __init__(self, spec: TaskSpec, config: HybridConfig | None = None) -> None:
        if not spec.numeric_labels or spec.item_output is None:
            raise InputError(f"hybrid rating needs numeric labels and item outputs; {spec.name!r} has not",
                             field="task")
        self.spec, self.config = spec, config or HybridConfig()
        self.bias = BiasModel(spec)
        self.model: Estimator | None = None
        self.scale = [float(x) for x in spec.labels or []]

    def _row(self, q: Question, record: PredictionRecord | None) -> list[float]:
        own = np.array([float(o) for p in q.profile if (o := self.spec.output_of(p)) is not None] or [np.nan])
        has = bool(np.isfinite(own).all())
        item = self.bias.item_bias.get(self.spec.retrieval_query(q), 0.0)
        feats = [float(self.bias.predict_one(q)), item, float(np.mean(own)) if has else self.bias.mu,
                 float(np.median(own)) if has else self.bias.mu, float(np.std(own)) if has else 0.0,
                 float(np.log1p(len(q.profile)))]
        if self.config.use_llm:
            if record is None or not record.label_scores:
                raise InputError(f"question {q.id!r} has no LLM label scores to build hybrid features from",
                                 field="records")
            labels = list(self.spec.labels or [])
            p = probabilities(np.array([record.label_scores[lab] for lab in labels]))
            feats += [*p.tolist(), float(read_out(self.spec, record.label_scores, "expected")),
                      float(read_out(self.spec, record.label_scores, "median"))]
        return feats

    def _matrix(self, questions: Sequence[Question], records: Sequence[PredictionRecord] | None) -> np.ndarray:
        by_id = {r.id: r for r in records or []}
        return np.array([self._row(q, by_id.get(q.id)) for q in questions], dtype=np.float64)

    def fit(self, train: Sequence[Question], records: Sequence[PredictionRecord] | None = None) -> HybridRater:
        rows = [q for q in train if q.target is not None]
        if len(rows) < 20:
            raise InputError(f"a hybrid needs at least 20 train questions with targets, got {len(rows)}",
                             field="train")
        self.bias.fit([dataclasses.replace(q, target=None) for q in train])  # profiles only
        self.model = ESTIMATORS.get(self.config.estimator)(self.config.seed)
        self.model.fit(self._matrix(rows, records), np.array([float(cast(str, q.target)) for q in rows]))
        return self

    def predict(self, questions: Sequence[Question], records: Sequence[PredictionRecord] | None = None
                ) -> list[PredictionRecord]:
        if self.model is None:
            raise InputError("fit the hybrid before predicting", field="model")
        raw = self.model.predict(self._matrix(questions, records))
        out = []
        for q, v in zip(questions, np.clip(raw, min(self.scale), max(self.scale))):
            pred = f"{float(v):.4f}"
            out.append(PredictionRecord(id=q.id, user_id=q.user_id, prediction=pred, target=q.target, raw=pred,
                                        empty_profile=not q.profile))
        return out
