"""Honest non-LLM baselines, kept in every report: beating them is the point.

- `global-mean` / `most-frequent`: one answer for everyone, fitted on the outputs of the training
  questions (or, without them, on the pooled profile items of the questions scored);
- `user-mean` / `user-most-frequent`: the user's own history;
- `knn`: the outputs of the k profile items nearest to the query by embedding (mean for numeric
  tasks, vote for labels, the nearest item's output for generation).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from pllm.pipeline import PredictionRecord
from pllm.registry import Registry
from pllm.retrieval.base import Doc, make_retriever
from pllm.tasks.spec import TaskSpec
from pllm.types import Question


class Baseline(ABC):
    name: ClassVar[str]

    def __init__(self, spec: TaskSpec, **options: Any) -> None:
        self.spec = spec
        self.fallbacks = 0  # questions answered by the global fallback (empty profile)

    @classmethod
    def applies_to(cls, spec: TaskSpec) -> bool:
        return True

    def fit(self, train: Sequence[Question]) -> Baseline:
        return self

    @abstractmethod
    def predict_one(self, question: Question) -> str | None: ...

    def predict(self, questions: Sequence[Question]) -> list[PredictionRecord]:
        out = []
        for q in questions:
            pred = self.predict_one(q)
            out.append(PredictionRecord(id=q.id, user_id=q.user_id, prediction=pred, target=q.target,
                                        raw=pred or "", empty_profile=not q.profile))
        return out

    def _outputs(self, question: Question) -> list[str]:
        return [o for o in (self.spec.output_of(p) for p in question.profile) if o is not None]


BASELINES: Registry[type[Baseline]] = Registry("baseline")


def _numeric(spec: TaskSpec) -> bool:
    return spec.kind == "regression"


def _pooled(spec: TaskSpec, train: Sequence[Question]) -> list[str]:
    targets = [q.target for q in train if q.target is not None]
    if targets:
        return targets
    return [o for q in train for o in (spec.output_of(p) for p in q.profile) if o is not None]


def _mean(values: Sequence[str]) -> str | None:
    return f"{np.mean([float(v) for v in values]):.4f}" if values else None


def _mode(values: Sequence[str]) -> str | None:
    if not values:
        return None
    counts = Counter(values)
    best = max(counts.values())
    return min(v for v, c in counts.items() if c == best)  # deterministic tie-break


class _Global(Baseline):
    reduce = staticmethod(_mode)
    value: str | None = None

    def fit(self, train):
        self.value = self.reduce(_pooled(self.spec, train))
        return self

    def predict_one(self, question):
        return self.value


@BASELINES.register("global-mean")
class GlobalMean(_Global):
    name = "global-mean"
    reduce = staticmethod(_mean)

    @classmethod
    def applies_to(cls, spec):
        return _numeric(spec)


@BASELINES.register("most-frequent")
class MostFrequent(_Global):
    name = "most-frequent"

    @classmethod
    def applies_to(cls, spec):
        return bool(spec.labels) and spec.item_output is not None


class _User(_Global):
    def predict_one(self, question):
        own = self.reduce(self._outputs(question))
        if own is None:
            self.fallbacks += 1
            return self.value
        return own


@BASELINES.register("user-mean")
class UserMean(_User):
    name = "user-mean"
    reduce = staticmethod(_mean)

    @classmethod
    def applies_to(cls, spec):
        return _numeric(spec) and spec.item_output is not None


@BASELINES.register("user-most-frequent")
class UserMostFrequent(_User):
    name = "user-most-frequent"

    @classmethod
    def applies_to(cls, spec):
        return bool(spec.labels) and spec.item_output is not None


@BASELINES.register("knn")
class NearestItems(_Global):
    """Outputs of the k profile items nearest to the query (embedding cosine, via the dense retriever)."""

    name = "knn"

    def __init__(self, spec, *, k: int = 5, embedder: Any = "minilm", store: Any = None, **options):
        super().__init__(spec)
        self.k, self.embedder, self.store = k, embedder, store
        self.reduce = _mean if _numeric(spec) else _mode

    @classmethod
    def applies_to(cls, spec):
        return spec.item_output is not None

    def predict_one(self, question):
        if not question.profile:
            self.fallbacks += 1
            return self.value
        index = make_retriever("dense", embedder=self.embedder, cache=self.store, user_id=question.user_id).build(
            [Doc(self.spec.retrieval_text(p)) for p in question.profile])
        k = self.k if self.spec.kind != "generation" else 1
        hits = index.search(self.spec.retrieval_query(question), k)
        return self.reduce([o for o in (self.spec.output_of(question.profile[h.index]) for h in hits) if o])


def baselines_for(spec: TaskSpec) -> list[str]:
    return [n for n in BASELINES.names() if BASELINES.get(n).applies_to(spec)]


def make_baseline(name: str, spec: TaskSpec, **options: Any) -> Baseline:
    return BASELINES.get(name)(spec, **options)
