"""Hybrid retrieval by weighted reciprocal rank fusion (RRF) of member retrievers (bm25 + dense).

score(d) = sum_m  w_m / (rrf_k + rank_m(d)),  rank 1-based; an item a member did not return adds 0.
RRF needs only ranks, so members with incomparable score scales (BM25 vs cosine) fuse cleanly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from pllm.retrieval.base import (
    RETRIEVERS,
    Doc,
    Hit,
    Retriever,
    RetrieverIndex,
    SizedIndex,
    make_retriever,
    merge_counters,
    rank_scores,
)

# Options the hybrid forwards to the named members that declare they take them (e.g. dense's cache).
_FORWARDED = {"embedder": "needs_embedder", "embedder_options": "needs_embedder", "cache": "uses_cache",
              "user_id": "uses_cache", "seed": "takes_seed", "generator": "needs_generator",
              "cross_encoder": "takes_cross_encoder"}


def rrf_fuse(rankings: Sequence[Sequence[Hit]], weights: Sequence[float], n: int, k: int,
             rrf_k: float = 60.0) -> list[Hit]:
    """Weighted reciprocal rank fusion of rankings over the same `n` items (see the module doc): the top-k,
    only items some ranking holds, ties broken by lower index. The one RRF of pllm (hybrid, window, rewrite)."""
    fused = np.zeros(n, dtype=np.float64)
    seen = np.zeros(n, dtype=bool)
    for hits, w in zip(rankings, weights, strict=True):
        if hits:
            idx = np.fromiter((h.index for h in hits), dtype=np.int64, count=len(hits))
            fused[idx] += w / (rrf_k + np.arange(1, len(hits) + 1, dtype=np.float64))
            seen[idx] = True
    cand = np.flatnonzero(seen)  # ascending, so ties keep profile order
    return [Hit(int(cand[h.index]), h.score) for h in rank_scores(fused[cand], k)]


def member_retriever(member: str | Retriever | tuple[str, Mapping[str, Any]], forwarded: Mapping[str, Any],
                     member_options: Mapping[str, Mapping[str, Any]] | None = None) -> Retriever:
    """A retriever that a composite (hybrid, dated, window) is built on: given, or made from its name with its
    own options plus the composite's shared `forwarded` options (embedder, cache, seed) it declares it takes."""
    if isinstance(member, Retriever):
        return member
    unknown = set(forwarded) - set(_FORWARDED)
    if unknown:
        raise TypeError(f"unexpected options {sorted(unknown)}; use member_options for member-specific ones")
    name, opts = (member, {}) if isinstance(member, str) else (member[0], dict(member[1]))
    opts = {**dict((member_options or {}).get(name, {})), **opts}
    cls = RETRIEVERS.get(name)
    for key, value in forwarded.items():
        if key not in opts and getattr(cls, _FORWARDED[key]):
            opts[key] = value
    return make_retriever(name, **opts)


class HybridIndex(SizedIndex):
    def __init__(self, members: list[RetrieverIndex], weights: list[float], n: int, rrf_k: float,
                 depth: int | None) -> None:
        super().__init__(n)
        self._members, self._weights, self._rrf_k, self._depth = members, weights, rrf_k, depth

    def _search(self, query: str, k: int, *, query_timestamp: float | None, seed_key: str) -> list[Hit]:
        depth = self._n if self._depth is None else max(k, self._depth)
        rankings = [index.search(query, depth, query_timestamp=query_timestamp, seed_key=seed_key)
                    for index in self._members]
        return rrf_fuse(rankings, self._weights, self._n, k, self._rrf_k)

    def counters(self) -> dict[str, int]:
        return merge_counters(m.counters() for m in self._members)


class HybridRetriever(Retriever):
    """RRF of `members` (names, Retriever instances, or (name, options) pairs; default bm25 + dense).

    `weights` default to 1 each; `rrf_k` is the RRF constant (60, as in Cormack et al. 2009); `depth`
    is how many hits each member contributes (None: the whole profile, so every item is fused).
    `member_options` maps a member name to its options; `embedder`, `cache`, `user_id`, `seed` and
    `embedder_options` given to the hybrid are forwarded to named members that declare they take them.
    It declares what its default members need (an embedder, the cache) and takes a seed for any member.
    """

    name: ClassVar[str] = "hybrid"
    needs_embedder = uses_cache = takes_seed = True

    def __init__(
        self, members: Sequence[str | Retriever | tuple[str, Mapping[str, Any]]] = ("bm25", "dense"),
        weights: Sequence[float] | None = None, *, rrf_k: float = 60.0, depth: int | None = None,
        member_options: Mapping[str, Mapping[str, Any]] | None = None, **forwarded: Any,
    ) -> None:
        unknown = set(forwarded) - set(_FORWARDED)
        if unknown:
            raise TypeError(f"hybrid got unexpected options {sorted(unknown)}; "
                            f"use member_options for member-specific ones")
        if not members:
            raise ValueError("hybrid needs at least one member retriever")
        if weights is None:
            weights = [1.0] * len(members)
        if len(weights) != len(members):
            raise ValueError(f"hybrid has {len(members)} members but {len(weights)} weights")
        if rrf_k < 0:
            raise ValueError("rrf_k must be >= 0")
        self.members = [member_retriever(m, forwarded, member_options) for m in members]
        self.weights = [float(w) for w in weights]
        self.rrf_k, self.depth = float(rrf_k), depth

    def build(self, docs: Sequence[Doc]) -> HybridIndex:
        return HybridIndex([m.build(docs) for m in self.members], self.weights, len(docs), self.rrf_k,
                           self.depth)


RETRIEVERS.register("hybrid", HybridRetriever)
