"""Baselines that ignore the query text: most-recent-first, a seeded random draw, and no retrieval.

Their hits carry rank scores, 1 / (rank + 1), since they have no natural relevance score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from pllm.io import sha1_text
from pllm.retrieval.base import RETRIEVERS, Doc, Hit, Retriever, RetrieverIndex, SizedIndex, rank_only_hits


class _OrderIndex(RetrieverIndex):
    """A fixed ranking computed at build time."""

    def __init__(self, order: list[int]) -> None:
        self._order = order

    def __len__(self) -> int:
        return len(self._order)

    def search(
        self, query: str, k: int, *, query_timestamp: float | None = None, seed_key: str = ""
    ) -> list[Hit]:
        return rank_only_hits(self._order, k)


class RecencyRetriever(Retriever):
    """Most recent first. Items without a timestamp go last, in profile order; equal timestamps keep
    profile order. `query_timestamp` is ignored on purpose: every item is kept (none is filtered out
    as "after the question"), because profiles are already cut at the question's time where the task
    requires it, and a missing question time must not change the ranking."""

    name: ClassVar[str] = "recency"

    def build(self, docs: Sequence[Doc]) -> _OrderIndex:
        dated = [i for i, d in enumerate(docs) if d.timestamp is not None]
        undated = [i for i, d in enumerate(docs) if d.timestamp is None]
        dated.sort(key=lambda i: -float(docs[i].timestamp))  # type: ignore[arg-type]  # stable sort
        return _OrderIndex(dated + undated)


class _RandomIndex(SizedIndex):
    def __init__(self, n: int, seed: int) -> None:
        super().__init__(n)
        self._seed = seed

    def _search(self, query: str, k: int, *, query_timestamp: float | None, seed_key: str) -> list[Hit]:
        # One generator per (seed, seed_key): each question gets its own draw, identical on every run
        # and platform, and a smaller k returns a prefix of a larger k's draw.
        state = int(sha1_text("random-retriever", str(self._seed), seed_key)[:16], 16)
        order = np.random.default_rng(state).permutation(self._n)
        return rank_only_hits(order.tolist(), k)


class RandomRetriever(Retriever):
    """Uniformly random items without replacement, deterministic for (seed, seed_key)."""

    name: ClassVar[str] = "random"
    takes_seed = True

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = int(seed)

    def build(self, docs: Sequence[Doc]) -> _RandomIndex:
        return _RandomIndex(len(docs), self.seed)


class _NoneIndex(SizedIndex):
    def _search(self, query: str, k: int, *, query_timestamp: float | None, seed_key: str) -> list[Hit]:
        return []


class NoneRetriever(Retriever):
    """No retrieval (the non-personalized baseline): always []."""

    name: ClassVar[str] = "none"

    def build(self, docs: Sequence[Doc]) -> _NoneIndex:
        return _NoneIndex(len(docs))


RETRIEVERS.register("recency", RecencyRetriever)
RETRIEVERS.register("random", RandomRetriever)
RETRIEVERS.register("none", NoneRetriever)
