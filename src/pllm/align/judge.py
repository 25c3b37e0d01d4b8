"""The style judge: which DSP style (academy, business, entertainment, literature, normal) a generated
answer reads like, so a user's generations can be checked against the domain that user prefers.

The classifier is a registered kind (`STYLE_CLASSIFIERS`): nearest centroid over sentence embeddings
(all-MiniLM-L6-v2), logistic regression over those embeddings, or logistic regression over TF-IDF word
n-grams. Style lives largely in vocabulary ("revenue", "once upon a time"), which is why TF-IDF reads it
better than an embedding trained for topical similarity; `fit_dsp_judge(kind="auto")` picks the kind by
cross-validation over train queries (grouped by query), never by the held-out score it reports.

Generated answers are short (tens of tokens) while reference answers run to hundreds, so the judge can
be fitted and checked on answers cut to their first `max_words` words, the length it will judge.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import joblib
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline

from pllm.align.importers import DSPQuery
from pllm.align.store import query_split
from pllm.errors import ArtifactError, InputError
from pllm.io import atomic_dir, atomic_write_json
from pllm.registry import Registry
from pllm.retrieval.embedders import Embedder, l2_normalize, load_embedder


def first_words(text: str, max_words: int | None) -> str:
    if max_words is None:
        return text
    return " ".join(text.split()[:max_words])


@dataclass
class JudgeAccuracy:
    accuracy: float
    n: int
    per_label: dict[str, float]
    confusion: list[list[int]]  # [true label][predicted label], in `labels` order
    labels: list[str]


class StyleClassifier(ABC):
    """One way to read style: fitted on labelled texts, then an (N, L) score per text and label (higher:
    more that style), with its state saved in a folder."""

    kind: ClassVar[str]
    description: ClassVar[str]  # one line for reports

    def __init__(self, embedder: str = "minilm", encoder: Embedder | None = None) -> None:
        self.embedder_name = embedder
        self._embedder = encoder

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = load_embedder(self.embedder_name)
        return self._embedder

    @abstractmethod
    def fit(self, texts: Sequence[str], labels: Sequence[str], names: Sequence[str]) -> None:
        """Fit on `texts`; `names` is the sorted label order every score column follows."""

    @abstractmethod
    def scores(self, texts: Sequence[str]) -> np.ndarray: ...

    @abstractmethod
    def save(self, folder: Path) -> None: ...

    @abstractmethod
    def load(self, folder: Path) -> None: ...


class _Memo(Embedder):
    """Loads the embedder on first use and encodes each distinct text once: cross-validation refits on
    the same answers fold after fold, and a TF-IDF judge never loads it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._seen: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._seen]
        if new:
            self._seen.update(zip(new, load_embedder(self.name).encode(new, batch_size=batch_size), strict=True))
        return np.stack([self._seen[t] for t in texts])


STYLE_CLASSIFIERS: Registry[type[StyleClassifier]] = Registry("style classifier")


@STYLE_CLASSIFIERS.register("centroid")
class CentroidClassifier(StyleClassifier):
    """Cosine to each style's normalized mean embedding (the first judge: 0.374 held out on DSP)."""

    kind = "centroid"
    description = "Nearest centroid (cosine) over sentence embeddings"

    def fit(self, texts: Sequence[str], labels: Sequence[str], names: Sequence[str]) -> None:
        emb = self.embedder.encode(list(texts))  # (N, D)
        lab = np.array(labels)
        self.centroids = l2_normalize(np.stack([emb[lab == n].mean(axis=0) for n in names]))  # (L, D)

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        return self.embedder.encode(list(texts)) @ self.centroids.T

    def save(self, folder: Path) -> None:
        np.save(folder / "centroids.npy", self.centroids)

    def load(self, folder: Path) -> None:
        self.centroids = l2_normalize(np.load(folder / "centroids.npy"))


class _SklearnClassifier(StyleClassifier):
    """A scikit-learn estimator whose class probabilities are the scores (saved with joblib: a judge
    folder is pllm's own artifact; load only folders you wrote)."""

    def _features(self, texts: Sequence[str]) -> np.ndarray | Sequence[str]:
        return list(texts)

    @abstractmethod
    def _estimator(self) -> Pipeline | LogisticRegression: ...

    def fit(self, texts: Sequence[str], labels: Sequence[str], names: Sequence[str]) -> None:
        self.model = self._estimator().fit(self._features(texts), list(labels))
        if list(self.model.classes_) != list(names):
            raise InputError(f"classifier classes {list(self.model.classes_)} differ from labels {list(names)}")

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.predict_proba(self._features(texts))

    def save(self, folder: Path) -> None:
        joblib.dump(self.model, folder / "model.joblib")

    def load(self, folder: Path) -> None:
        self.model = joblib.load(folder / "model.joblib")


@STYLE_CLASSIFIERS.register("tfidf-lr")
class TfidfClassifier(_SklearnClassifier):
    """Logistic regression over TF-IDF word uni- and bigrams (no embedder needed)."""

    kind = "tfidf-lr"
    description = "Logistic regression over TF-IDF word uni- and bigrams"

    def _estimator(self) -> Pipeline:
        return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
                             LogisticRegression(C=1.0, max_iter=2000))


@STYLE_CLASSIFIERS.register("embed-lr")
class EmbeddingClassifier(_SklearnClassifier):
    """Logistic regression over the sentence embeddings."""

    kind = "embed-lr"
    description = "Logistic regression over sentence embeddings"

    def _features(self, texts: Sequence[str]) -> np.ndarray:
        return self.embedder.encode(list(texts))

    def _estimator(self) -> LogisticRegression:
        return LogisticRegression(C=1.0, max_iter=3000)


class StyleJudge:
    """A fitted style classifier plus the answer length it judges at."""

    def __init__(self, labels: Sequence[str], classifier: StyleClassifier, max_words: int | None) -> None:
        if len(labels) < 2:
            raise InputError("a judge needs >= 2 labels")
        self.labels = list(labels)
        self.classifier = classifier
        self.max_words = max_words
        self.selection: dict[str, float] = {}  # cross-validated accuracy per kind, when chosen by `auto`

    @property
    def kind(self) -> str:
        return self.classifier.kind

    @classmethod
    def fit(cls, texts: Sequence[str], labels: Sequence[str], *, kind: str = "centroid", embedder: str = "minilm",
            max_words: int | None = None, encoder: Embedder | None = None) -> StyleJudge:
        if len(texts) != len(labels) or not texts:
            raise InputError("fit needs as many labels as texts, and at least one of each")
        names = sorted(set(labels))
        if len(names) < 2:
            raise InputError(f"a judge needs >= 2 styles; got {names}")
        classifier = STYLE_CLASSIFIERS.get(kind)(embedder, encoder)
        classifier.fit([first_words(t, max_words) for t in texts], labels, names)
        return cls(names, classifier, max_words)

    def with_max_words(self, max_words: int | None) -> StyleJudge:
        """The same fitted classifier judging answers cut at another length (None: whole answers)."""
        judge = StyleJudge(self.labels, self.classifier, max_words)
        judge.selection = self.selection
        return judge

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """(N, L) score of each text for each style (cosine for centroids, probability for classifiers)."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return self.classifier.scores([first_words(t, self.max_words) for t in texts])

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.labels[i] for i in self.scores(texts).argmax(axis=1)] if texts else []

    def accuracy(self, texts: Sequence[str], labels: Sequence[str]) -> JudgeAccuracy:
        preds = self.predict(texts)
        index = {n: i for i, n in enumerate(self.labels)}
        confusion = [[0] * len(self.labels) for _ in self.labels]
        for p, g in zip(preds, labels, strict=True):
            confusion[index[g]][index[p]] += 1
        per = {n: (confusion[i][i] / max(1, sum(confusion[i]))) for n, i in index.items()}
        acc = float(np.mean([p == g for p, g in zip(preds, labels, strict=True)])) if labels else 0.0
        return JudgeAccuracy(accuracy=acc, n=len(labels), per_label=per, confusion=confusion, labels=self.labels)

    def save(self, folder: str | Path) -> Path:
        with atomic_dir(folder) as tmp:
            self.classifier.save(tmp)
            atomic_write_json(tmp / "judge.json", {"labels": self.labels, "kind": self.kind,
                                                   "embedder": self.classifier.embedder_name,
                                                   "max_words": self.max_words, "selection": self.selection})
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> StyleJudge:
        folder = Path(folder)
        try:
            meta = json.loads((folder / "judge.json").read_text(encoding="utf-8"))
            classifier = STYLE_CLASSIFIERS.get(meta.get("kind", "centroid"))(meta["embedder"])
            classifier.load(folder)
        except (OSError, json.JSONDecodeError, ValueError, KeyError) as exc:
            raise ArtifactError(f"cannot load style judge from {folder}: {exc}") from None
        judge = cls(meta["labels"], classifier, meta.get("max_words"))
        judge.selection = meta.get("selection", {})
        return judge


def dsp_answers(queries: Sequence[DSPQuery], split: str, *, styles: Sequence[str] | None = None,
                test_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """(answers, style labels) of the DSP queries in one split (the same by-query split as the importer)."""
    return _answers(queries, split, styles=styles, test_fraction=test_fraction, seed=seed)[:2]


def _answers(queries: Sequence[DSPQuery], split: str, *, styles: Sequence[str] | None, test_fraction: float,
             seed: int) -> tuple[list[str], list[str], list[str]]:
    texts, labels, groups = [], [], []
    for q in queries:
        if query_split(q.id, test_fraction=test_fraction, seed=seed) != split:
            continue
        for style, answer in sorted(q.responses.items()):
            if (styles is None or style in styles) and answer.strip():
                texts.append(answer)
                labels.append(style)
                groups.append(q.id)
    return texts, labels, groups


def fit_dsp_judge(queries: Sequence[DSPQuery], *, kind: str = "auto", styles: Sequence[str] | None = None,
                  embedder: str = "minilm", max_words: int | None = None, test_fraction: float = 0.2,
                  seed: int = 0, folds: int = 5) -> tuple[StyleJudge, JudgeAccuracy]:
    """Fit on train-query answers; report accuracy on held-out (test-query) answers.

    `kind="auto"` scores every registered kind by `folds`-fold cross-validation over the train queries
    (an answer's four siblings stay in its fold) and keeps the best: the held-out split never chooses."""
    texts, labels, groups = _answers(queries, "train", styles=styles, test_fraction=test_fraction, seed=seed)
    selection: dict[str, float] = {}
    encoder = _Memo(embedder)
    if kind == "auto":
        n_folds = min(folds, len(set(groups)))
        if n_folds < 2:
            raise InputError("choosing a judge by cross-validation needs at least 2 train queries")
        for name in STYLE_CLASSIFIERS.names():
            right = 0
            for fit_idx, val_idx in GroupKFold(n_splits=n_folds).split(texts, labels, groups):
                judge = StyleJudge.fit([texts[i] for i in fit_idx], [labels[i] for i in fit_idx], kind=name,
                                       embedder=embedder, max_words=max_words, encoder=encoder)
                right += sum(p == labels[i] for p, i in zip(judge.predict([texts[i] for i in val_idx]), val_idx,
                                                            strict=True))
            selection[name] = right / len(texts)
        kind = max(selection, key=lambda k: selection[k])
    judge = StyleJudge.fit(texts, labels, kind=kind, embedder=embedder, max_words=max_words, encoder=encoder)
    judge.selection = selection
    test_texts, test_labels = dsp_answers(queries, "test", styles=styles, test_fraction=test_fraction, seed=seed)
    return judge, judge.accuracy(test_texts, test_labels)
