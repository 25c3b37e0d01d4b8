"""The style judge: a nearest-centroid classifier over sentence embeddings (all-MiniLM-L6-v2 by default)
of each DSP style's answers. It tells which style a generated answer reads like, so a user's generations
can be checked against the domain that user prefers.

Generated answers are short (tens of tokens) while reference answers run to hundreds, so the judge can
be fitted and checked on answers cut to their first `max_words` words, the length it will judge.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pllm.align.importers import DSPQuery
from pllm.align.store import query_split
from pllm.errors import ArtifactError, InputError
from pllm.io import atomic_dir, atomic_write_json
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


class StyleJudge:
    """Nearest centroid (cosine) over L2-normalized embeddings; centroids are normalized class means."""

    def __init__(self, labels: Sequence[str], centroids: np.ndarray, embedder: str, max_words: int | None) -> None:
        if len(labels) != centroids.shape[0] or len(labels) < 2:
            raise InputError("a judge needs >= 2 labels, one centroid each")
        self.labels = list(labels)
        self.centroids = l2_normalize(centroids)  # (L, D)
        self.embedder_name = embedder
        self.max_words = max_words
        self._embedder: Embedder | None = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = load_embedder(self.embedder_name)
        return self._embedder

    @classmethod
    def fit(cls, texts: Sequence[str], labels: Sequence[str], *, embedder: str = "minilm",
            max_words: int | None = None) -> StyleJudge:
        if len(texts) != len(labels) or not texts:
            raise InputError("fit needs as many labels as texts, and at least one of each")
        names = sorted(set(labels))
        emb = load_embedder(embedder).encode([first_words(t, max_words) for t in texts])  # (N, D)
        lab = np.array(labels)
        centroids = np.stack([emb[lab == n].mean(axis=0) for n in names])  # (L, D)
        judge = cls(names, centroids, embedder, max_words)
        return judge

    def similarities(self, texts: Sequence[str]) -> np.ndarray:
        """(N, L) cosine similarity of each text to each style centroid."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        emb = self.embedder.encode([first_words(t, self.max_words) for t in texts])  # (N, D)
        return emb @ self.centroids.T

    def predict(self, texts: Sequence[str]) -> list[str]:
        sims = self.similarities(texts)
        return [self.labels[i] for i in sims.argmax(axis=1)]

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
            np.save(tmp / "centroids.npy", self.centroids)
            atomic_write_json(tmp / "judge.json", {"labels": self.labels, "embedder": self.embedder_name,
                                                   "max_words": self.max_words})
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> StyleJudge:
        folder = Path(folder)
        try:
            meta = json.loads((folder / "judge.json").read_text(encoding="utf-8"))
            centroids = np.load(folder / "centroids.npy")
        except (OSError, json.JSONDecodeError, ValueError) as exc:
            raise ArtifactError(f"cannot load style judge from {folder}: {exc}") from None
        return cls(meta["labels"], centroids, meta["embedder"], meta.get("max_words"))


def dsp_answers(queries: Sequence[DSPQuery], split: str, *, styles: Sequence[str] | None = None,
                test_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """(answers, style labels) of the DSP queries in one split (the same by-query split as the importer)."""
    texts, labels = [], []
    for q in queries:
        if query_split(q.id, test_fraction=test_fraction, seed=seed) != split:
            continue
        for style, answer in sorted(q.responses.items()):
            if (styles is None or style in styles) and answer.strip():
                texts.append(answer)
                labels.append(style)
    return texts, labels


def fit_dsp_judge(queries: Sequence[DSPQuery], *, styles: Sequence[str] | None = None, embedder: str = "minilm",
                  max_words: int | None = None, test_fraction: float = 0.2,
                  seed: int = 0) -> tuple[StyleJudge, JudgeAccuracy]:
    """Fit on train-query answers; report accuracy on held-out (test-query) answers."""
    texts, labels = dsp_answers(queries, "train", styles=styles, test_fraction=test_fraction, seed=seed)
    judge = StyleJudge.fit(texts, labels, embedder=embedder, max_words=max_words)
    test_texts, test_labels = dsp_answers(queries, "test", styles=styles, test_fraction=test_fraction, seed=seed)
    return judge, judge.accuracy(test_texts, test_labels)
