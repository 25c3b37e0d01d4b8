"""The retrieval contract: a `Retriever` indexes one user's profile once (`build`), and the resulting
`RetrieverIndex` is searched many times, once per question. Every ranking is deterministic: ties are
broken by the document's position in the profile, so runs are reproducible across machines."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pllm.registry import Registry


@dataclass(frozen=True)
class Doc:
    """What a retriever indexes: one profile item's retrieval text and its time (epoch seconds)."""

    text: str
    timestamp: float | None = None


@dataclass(frozen=True)
class Hit:
    """One retrieved item: `index` is its position in the docs given to `build()`."""

    index: int
    score: float


class RetrieverIndex(ABC):
    """One user's searchable profile."""

    @abstractmethod
    def search(
        self, query: str, k: int, *, query_timestamp: float | None = None, seed_key: str = ""
    ) -> list[Hit]:
        """Best first, at most `k` hits (`k <= 0`: []); `seed_key` varies seeded retrievers per question."""

    def __len__(self) -> int:  # pragma: no cover - overridden by every index
        raise NotImplementedError


class Retriever(ABC):
    """Factory of per-user indexes; stateless across users except for shared models and caches."""

    name: ClassVar[str]

    @abstractmethod
    def build(self, docs: Sequence[Doc]) -> RetrieverIndex:
        """Index one user's profile once so each later search is cheap."""


RETRIEVERS: Registry[Callable[..., Retriever]] = Registry("retriever")


def make_retriever(name: str, **options: Any) -> Retriever:
    """Instantiate a registered retriever; an unknown name raises UnknownNameError listing known ones."""
    return RETRIEVERS.get(name)(**options)


def accepts_option(factory: Any, option: str) -> bool:
    """Whether a retriever factory takes keyword `option` (by name or **kwargs), so callers forward shared
    resources (an embedder, an embedding cache) only to the retrievers that use them."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return option in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def rank_scores(scores: np.ndarray, k: int) -> list[Hit]:
    """Top-k of a score vector, best first, ties broken by lower index (so results are reproducible).

    Uses argpartition to shortlist, so cost is O(n) plus a sort of the (usually tiny) shortlist.
    """
    n = int(scores.shape[0])
    if k <= 0 or n == 0:
        return []
    if k >= n:
        order = np.argsort(-scores, kind="stable")
    else:
        # Everything scoring at least the k-th best value is a candidate; that set contains the
        # true top-k including every tie at the boundary, which the stable sort then resolves.
        kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
        cand = np.flatnonzero(scores >= kth)
        order = cand[np.argsort(-scores[cand], kind="stable")][:k]
    return [Hit(int(i), float(scores[i])) for i in order]


def rank_only_hits(order: Sequence[int], k: int) -> list[Hit]:
    """Hits for retrievers with no natural score: score = 1 / (rank + 1), so best first is highest."""
    if k <= 0:
        return []
    return [Hit(int(i), 1.0 / (r + 1)) for r, i in enumerate(order[:k])]
