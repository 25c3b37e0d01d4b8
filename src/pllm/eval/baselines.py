"""Honest non-LLM baselines, kept in every report: beating them is the point.

- `global-mean` / `most-frequent`: one answer for everyone, fitted on the outputs of the training
  questions (or, without them, on the pooled profile items of the questions scored);
- `user-mean` / `user-median` / `user-most-frequent`: the user's own history (for MAE the median is
  the best constant, so it is the bar a rating method has to clear);
- `bias`: global mean + item bias (fitted on the training questions) + the user's bias read from their
  own history: the classic collaborative-filtering baseline predictor (Koren 2008);
- `item-knn`: the bias model plus the user's residuals on the items most similar to the queried one by
  co-ratings (item-based collaborative filtering; what a `cf@k` prompt shows, read by a formula);
- `item-most-frequent` / `item-user-favourite`: its twins for labels: the item's most frequent label among
  the training users, and among those labels the one this user gives most often;
- `candidate-similarity`: for choice tasks whose labels stand for candidate texts (LaMP-1), the candidate
  most similar to the user's profile;
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
from pllm.prompting.profile import ItemCrowd
from pllm.registry import Registry
from pllm.retrieval.base import Doc, make_retriever
from pllm.tasks.spec import TaskSpec
from pllm.types import Question


class Baseline(ABC):
    name: ClassVar[str]
    # Grid options this baseline takes (bench passes only these); every baseline accepts `store=`.
    options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: TaskSpec, **options: Any) -> None:
        self.spec = spec
        self.fallbacks = 0  # questions answered by the global fallback (empty profile)

    @staticmethod
    def applies_to(spec: TaskSpec) -> bool:
        """Whether this baseline can answer the task's questions (subclasses name a predicate below)."""
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


def _has_outputs(spec: TaskSpec) -> bool:  # profile items carry an output (a rating, a tag)
    return spec.item_output is not None


def _numeric_outputs(spec: TaskSpec) -> bool:
    return _numeric(spec) and _has_outputs(spec)


def _labelled_outputs(spec: TaskSpec) -> bool:
    return bool(spec.labels) and _has_outputs(spec)


def _category_outputs(spec: TaskSpec) -> bool:  # labels that are categories, not a rating scale (`bias` has those)
    return _labelled_outputs(spec) and not _numeric(spec)


def _candidate_texts(spec: TaskSpec) -> bool:  # labels stand for candidate texts (LaMP-1)
    return bool(spec.label_texts)


def _pooled(spec: TaskSpec, train: Sequence[Question]) -> list[str]:
    targets = [q.target for q in train if q.target is not None]
    if targets:
        return targets
    return [o for q in train for o in (spec.output_of(p) for p in q.profile) if o is not None]


def _mean(values: Sequence[str]) -> str | None:
    return f"{np.mean([float(v) for v in values]):.4f}" if values else None


def _median(values: Sequence[str]) -> str | None:
    return f"{np.median([float(v) for v in values]):.4f}" if values else None


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

    applies_to = staticmethod(_numeric)


@BASELINES.register("most-frequent")
class MostFrequent(_Global):
    name = "most-frequent"

    applies_to = staticmethod(_labelled_outputs)


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

    applies_to = staticmethod(_numeric_outputs)


@BASELINES.register("user-median")
class UserMedian(UserMean):
    name = "user-median"
    reduce = staticmethod(_median)


@BASELINES.register("bias")
class BiasModel(_Global):
    """mu + b_item + b_user with shrinkage (Koren's baseline predictor).

    Items are matched across users as `ItemCrowd` matches them (the query text an item's fields render to;
    for MovieLens: title and genres), so a spec-file task gets it with no code; where no item repeats, the
    item biases shrink to zero and this is a regularised user mean. Item biases come from the training
    questions only (their profiles and targets); a scored user's bias from that user's own history, never
    from the scored target."""

    name = "bias"

    def __init__(self, spec, *, item_reg: float = 25.0, user_reg: float = 10.0, **options):
        super().__init__(spec)
        self.item_reg, self.user_reg = item_reg, user_reg
        self.mu = 0.0
        self.item_bias: dict[str, float] = {}

    applies_to = staticmethod(_numeric_outputs)

    def fit(self, train):
        self.crowd = ItemCrowd(self.spec).fit(train) if train else None
        # (user, item) -> rating, each pair once: the train split's profiles and targets, as ItemCrowd reads them
        ratings = {(u, item): float(out) for item, users in (self.crowd.outputs if self.crowd else {}).items()
                   for u, out in users.items()}
        if not ratings:
            self.mu, self.item_bias = 0.0, {}
            return self
        self.mu = float(np.mean(list(ratings.values())))
        sums: dict[str, list[float]] = {}
        for (_, item), r in ratings.items():
            sums.setdefault(item, []).append(r - self.mu)
        self.item_bias = {item: sum(d) / (self.item_reg + len(d)) for item, d in sums.items()}
        return self

    def user_bias(self, question: Question) -> tuple[float, list[tuple[str, float]]]:
        """The user's shrunk bias from their own history, and that history as (item key, rating)."""
        key = self.spec.item_key if self.crowd else self.spec.retrieval_text
        own = [(key(p), float(o)) for p in question.profile if (o := self.spec.output_of(p)) is not None]
        if not own:
            self.fallbacks += 1
        residuals = [r - self.mu - self.item_bias.get(item, 0.0) for item, r in own]
        return (sum(residuals) / (self.user_reg + len(residuals)) if residuals else 0.0), own

    def on_scale(self, pred: float) -> str:
        if self.spec.labels:  # a rating scale: no prediction outside it
            scale = [float(x) for x in self.spec.labels]
            pred = min(max(pred, min(scale)), max(scale))
        return f"{pred:.4f}"

    def predict_one(self, question):
        b_user, _ = self.user_bias(question)
        return self.on_scale(self.mu + b_user + self.item_bias.get(self.spec.retrieval_query(question), 0.0))


@BASELINES.register("item-knn")
class ItemKNN(BiasModel):
    """Item-based collaborative filtering with baselines (Koren 2008's kNN-baseline; Surprise's KNNBaseline):
    the bias model's prediction plus the similarity-weighted residuals of the user's `k` rated items most similar
    to the queried one by co-ratings (the `cf` retriever's similarity, fitted on the training questions, the
    asking user left out). The bar for a method that shows the model those neighbours (`cf@k`): it reads the
    same neighbourhood with a formula."""

    name = "item-knn"

    def __init__(self, spec, *, k: int = 40, **options):
        super().__init__(spec, **options)
        self.k = k

    def fit(self, train):
        super().fit(train)
        self.coratings = self.crowd.coratings() if self.crowd else None
        return self

    def predict_one(self, question):
        b_user, own = self.user_bias(question)
        query = self.spec.retrieval_query(question)
        pred = self.mu + b_user + self.item_bias.get(query, 0.0)
        if own and self.coratings is not None:  # the neighbours the `cf` retriever would show, by the same ranking
            index = make_retriever("cf", coratings=self.coratings, user_id=question.user_id).build(
                [Doc(text=item, key=item) for item, _ in own])
            near = [h for h in index.search(query, self.k) if h.score > 0]
            if near:
                residual = [own[h.index][1] - self.mu - b_user - self.item_bias.get(own[h.index][0], 0.0)
                            for h in near]
                weights = np.array([h.score for h in near])
                pred += float(np.dot(weights, residual) / weights.sum())
        return self.on_scale(pred)


@BASELINES.register("user-most-frequent")
class UserMostFrequent(_User):
    name = "user-most-frequent"

    applies_to = staticmethod(_labelled_outputs)


@BASELINES.register("item-most-frequent")
class ItemMostFrequent(_User):
    """The label other users gave this item most often (the train split, as `crowd+` prompts show it); the
    user's most frequent label where nobody else answered. The classification twin of the `bias` model."""

    name = "item-most-frequent"

    applies_to = staticmethod(_category_outputs)

    def fit(self, train):
        self.crowd = ItemCrowd(self.spec).fit(train) if train else None
        return super().fit(train)

    def predict_one(self, question):
        crowd = self.choose(question, self.crowd.answers(question) if self.crowd else [])
        return crowd if crowd is not None else super().predict_one(question)

    def choose(self, question: Question, answers: list[str]) -> str | None:
        return _mode(answers)


@BASELINES.register("item-user-favourite")
class ItemUserFavourite(ItemMostFrequent):
    """Among the labels other users gave this item, the one this user gave most often in their own history
    (ties: the item's more frequent label). Reads exactly what a `stats+crowd+` prompt shows, with a rule
    instead of a model: the bar that says whether the LLM does more than combine the two lines."""

    name = "item-user-favourite"

    def choose(self, question: Question, answers: list[str]) -> str | None:
        if not answers:
            return None
        own, item = Counter(self._outputs(question)), Counter(answers)
        return min(item, key=lambda lab: (-own[lab], -item[lab], lab))


class _ProfileSearch(_Global):
    """Baselines that search the user's profile by embedding (the dense retriever; vectors cached in the
    store, keyed by user so forgetting reaches them)."""

    options: ClassVar[tuple[str, ...]] = ("embedder",)

    def __init__(self, spec, *, embedder: Any = "minilm", store: Any = None, **options):
        super().__init__(spec)
        self.embedder, self.store = embedder, store

    def _index(self, question: Question) -> Any:
        return make_retriever("dense", embedder=self.embedder, cache=self.store, user_id=question.user_id).build(
            [Doc(self.spec.retrieval_text(p)) for p in question.profile])


@BASELINES.register("knn")
class NearestItems(_ProfileSearch):
    """Outputs of the k profile items nearest to the query (embedding cosine, via the dense retriever)."""

    name = "knn"
    options = ("k", "embedder")

    def __init__(self, spec, *, k: int = 5, **options):
        super().__init__(spec, **options)
        self.k = k
        self.reduce = _mean if _numeric(spec) else _mode

    applies_to = staticmethod(_has_outputs)

    def predict_one(self, question):
        if not question.profile:
            self.fallbacks += 1
            return self.value
        k = self.k if self.spec.kind != "generation" else 1
        hits = self._index(question).search(self.spec.retrieval_query(question), k)
        return self.reduce([o for o in (self.spec.output_of(question.profile[h.index]) for h in hits) if o])


@BASELINES.register("candidate-similarity")
class CandidateSimilarity(_ProfileSearch):
    """Choice tasks whose labels stand for candidate texts (LaMP-1): the candidate most similar to the
    user's profile (mean cosine of its `top` nearest profile items, by embedding). Needs no item output,
    so it is the honest bar where the user-history baselines above do not apply."""

    name = "candidate-similarity"

    def __init__(self, spec, *, top: int = 3, **options):
        super().__init__(spec, **options)
        self.top = top

    applies_to = staticmethod(_candidate_texts)

    def predict_one(self, question):
        from pllm.tasks.spec import render

        if not question.profile:
            self.fallbacks += 1
            return self.value
        index = self._index(question)
        scores = {}
        for label, template in (self.spec.label_texts or {}).items():
            hits = index.search(render(template, question.query, what="label_texts"), self.top)
            scores[label] = float(np.mean([h.score for h in hits])) if hits else 0.0
        return max(self.spec.labels or [], key=lambda lab: scores[lab])


def baselines_for(spec: TaskSpec) -> list[str]:
    return [n for n in BASELINES.names() if BASELINES.get(n).applies_to(spec)]


def make_baseline(name: str, spec: TaskSpec, **options: Any) -> Baseline:
    return BASELINES.get(name)(spec, **options)
