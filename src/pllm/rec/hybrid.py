"""Two-stage recommendation, labelled as a hybrid: a learned blend of ranker scores (LlamaRec-style, with the
collaborative rankers' scores as features of the LLM's re-scoring).

`Stacker` fits a logistic regression over per-candidate features, each component's score standardized and
ranked within its list (so scales that differ per user or per ranker do not matter), on *held-out lists*:
lists of users who are not evaluated, scored by components fitted without those lists' targets
(`fit_stage`: one collaborative side for the ranked lists, one for the fit lists). A `cf` twin of the same
stacker without the LLM's score is what a hybrid's gain is credited against: beating MF with MF inside is
not an LLM win.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy.stats import rankdata

from pllm.data.movielens import MovieLens
from pllm.errors import InputError, PllmError
from pllm.prompting.profile import ItemCrowd
from pllm.rec.data import candidates_of, rec_crowd, target_index
from pllm.rec.rankers import RANKERS, Interactions, Ranker, make_ranker, training_interactions
from pllm.types import Question

CF_FEATURES = ("mf-als", "itemknn", "popularity")  # the collaborative side of every hybrid, and its cf twin


def list_features(scores: np.ndarray) -> np.ndarray:
    """(C, 2): a component's scores within one list, standardized and as a rank share in [0, 1] (ties share
    their mean rank); non-finite scores (an item a ranker never saw) count as the list's lowest."""
    x = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(x)
    x = np.where(finite, x, x[finite].min() if finite.any() else 0.0)
    sd = x.std()
    z = (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)
    rank = (rankdata(x, method="average") - 1) / max(len(x) - 1, 1)
    return np.stack([z, rank], axis=1)


@dataclass
class StackConfig:
    features: list[str] = field(metadata={"help": "Component rankers whose scores are the features, in order."})
    c: float = field(default=1.0, metadata={"help": "Inverse L2 strength of the logistic regression."})

    def __post_init__(self) -> None:
        if not self.features:
            raise InputError("a stacked ranker needs at least one component", field="features")
        if len(set(self.features)) != len(self.features):
            raise InputError(f"duplicate components in {self.features}", field="features")
        if self.c <= 0:
            raise InputError(f"c must be > 0, got {self.c}", field="c")


class Stacker:
    """Logistic regression over `list_features` of every component, fitted on held-out lists' targets."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.model: Any = None
        self.n_lists = 0

    def rows(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        missing = [f for f in self.config.features if f not in scores]
        if missing:
            raise InputError(f"scores for {missing} are missing", field="features")
        return np.concatenate([list_features(scores[f]) for f in self.config.features], axis=1)

    def fit(self, lists: Sequence[Mapping[str, np.ndarray]], targets: Sequence[int]) -> Stacker:
        from sklearn.linear_model import LogisticRegression

        if not lists or len(lists) != len(targets):
            raise InputError(f"{len(lists)} scored lists for {len(targets)} targets", field="lists")
        x = np.concatenate([self.rows(s) for s in lists])
        y = np.concatenate([np.arange(len(next(iter(s.values())))) == t for s, t in zip(lists, targets)])
        self.model = LogisticRegression(C=self.config.c, max_iter=1000).fit(x, y.astype(int))
        self.n_lists = len(lists)
        return self

    def combine(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        if self.model is None:
            raise PllmError("the stacker must be fitted before it combines scores")
        return np.asarray(self.model.decision_function(self.rows(scores)), dtype=np.float64)

    def weights(self) -> dict[str, list[float]]:
        """Each component's (z-score, rank) coefficients: what the blend leans on."""
        coef = self.model.coef_[0] if self.model is not None else np.zeros(2 * len(self.config.features))
        return {f: [round(float(c), 4) for c in coef[2 * i:2 * i + 2]] for i, f in enumerate(self.config.features)}


@RANKERS.register("hybrid")
class StackedRanker(Ranker):
    """Scores a list with every component ranker and blends them with a fitted `Stacker`."""

    name = "hybrid"
    kind: ClassVar[str] = "hybrid"

    def __init__(self, components: Mapping[str, Ranker], stacker: Stacker, *, label: str = "hybrid") -> None:
        missing = [f for f in stacker.config.features if f not in components]
        if missing:
            raise InputError(f"no component ranker for {missing}", field="components")
        self.components, self.stacker, self.label = dict(components), stacker, label

    def score(self, question: Question) -> np.ndarray:
        return self.stacker.combine({f: self.components[f].score(question) for f in self.stacker.config.features})

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.label, "features": self.stacker.config.features, "c": self.stacker.config.c,
                "fitted_on_lists": self.stacker.n_lists, "weights": self.stacker.weights()}


class RecordedRanker(Ranker):
    """Scores already computed for these questions (a ranker's checkpoint), so a stack does not score an
    LLM twice; a question it has no scores for goes to `fallback` (and is kept), else is an error."""

    def __init__(self, name: str, scores: Mapping[str, np.ndarray], fallback: Ranker | None = None) -> None:
        self.name, self.scores, self.fallback = name, dict(scores), fallback  # type: ignore[misc]
        self.kind = fallback.kind if fallback is not None else "recorded"  # type: ignore[misc]

    def score(self, question: Question) -> np.ndarray:
        got = self.scores.get(question.id)
        if got is not None:
            if len(got) != len(candidates_of(question)):
                raise InputError(f"recorded {self.name} scores have {len(got)} entries for "
                                 f"{len(candidates_of(question))} candidates", source=question.id)
            return np.asarray(got, dtype=np.float64)
        if self.fallback is None:
            raise InputError(f"no recorded {self.name} scores for this question", source=question.id)
        self.scores[question.id] = self.fallback.score(question)
        return self.scores[question.id]

    def describe(self) -> dict[str, Any]:
        return self.fallback.describe() if self.fallback is not None else {"ranker": self.name, "recorded": True}


class MeanRanker(Ranker):
    """The mean of its members' standardized scores within each list (`list_features`' z column), with fixed
    equal weights and nothing fitted: an ensemble of fine-tuned LLM rankers is still LLM alone when every member
    is one (it costs every member's inference)."""

    def __init__(self, name: str, members: Sequence[Ranker], *, kind: str) -> None:
        """`kind`: what the members are (`llm` only when every one is an LLM ranker, recorded or live)."""
        if len(members) < 2:
            raise InputError(f"an ensemble needs at least two rankers, got {len(members)}", field="ensemble")
        self.name, self.members, self.kind = name, list(members), kind  # type: ignore[misc]

    def score(self, question: Question) -> np.ndarray:
        return np.mean([list_features(m.score(question))[:, 0] for m in self.members], axis=0)

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, "mean_of": [m.describe() for m in self.members]}


def fit_stacker(config: StackConfig, components: Mapping[str, Ranker], lists: Sequence[Question]) -> Stacker:
    """Fit on held-out lists, each scored by `components` (rankers that never saw those lists' targets)."""
    scored = [{f: components[f].score(q) for f in config.features} for q in lists]
    return Stacker(config).fit(scored, [target_index(q) for q in lists])


@dataclass
class Stage:
    """The collaborative side fitted for one set of ranked lists: every rating except theirs at or after
    their time (`kept_ratings`), as classic rankers and as the crowd line."""

    interactions: Interactions
    crowd: ItemCrowd
    rankers: dict[str, Ranker]
    fit_seconds: dict[str, float]


def fit_stage(ml: MovieLens, hidden: Sequence[Question], names: Sequence[str] = CF_FEATURES) -> Stage:
    """Classic rankers and the crowd for ranking lists while the lists in `hidden` stay unseen (the test
    lists for scoring them; test and fit lists together for scoring the fit lists)."""
    import time

    inter = training_interactions(ml.ratings, hidden, items=sorted(ml.movies, key=int))
    rankers, secs = {}, {}
    for name in names:
        t0 = time.perf_counter()
        rankers[name] = make_ranker(name)
        rankers[name].fit(inter)
        secs[name] = time.perf_counter() - t0
    return Stage(inter, rec_crowd(ml, hidden), rankers, secs)


def fit_hybrids(llm_name: str, llm: Mapping[str, Ranker], stages: Mapping[str, Stage],
                fit_lists: Sequence[Question]) -> list[StackedRanker]:
    """`hybrid` (the LLM's score with `CF_FEATURES`) and its twin `hybrid-cf` (without the LLM), fitted on
    `fit_lists` as scored by the "fit" stage (`llm["fit"]`, `stages["fit"]`), ranking with the "test" stage."""
    out = []
    for label, features in (("hybrid", [llm_name, *CF_FEATURES]), ("hybrid-cf", list(CF_FEATURES))):
        comps = {s: {llm_name: llm[s], **stages[s].rankers} for s in ("test", "fit")}
        stacker = fit_stacker(StackConfig(features=features), comps["fit"], fit_lists)
        out.append(StackedRanker(comps["test"], stacker, label=label))
    return out
