"""Retrievers for long conversations, each built on another retriever (default: `DEFAULT_BASE`, dense):

- `dated`: a time phrase in the query ("last May", "in 2023", "two weeks ago", `retrieval.dates`) ranks the
  items whose timestamp falls in that period first, in the base retriever's order (searched without the
  phrase); a query without one is the base ranking unchanged;
- `window`: each item is also indexed with its neighbouring items of the same group (a chat session), so a
  fact spread over two turns, or a turn that only makes sense after the previous one, is found as a whole;
  the ranking fuses (RRF) the base retriever over the items alone and over their windows, so an item that
  matches on its own does not lose to its diluted window.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pllm.errors import InputError, UnknownNameError
from pllm.retrieval.base import RETRIEVERS, Doc, Hit, Retriever, RetrieverIndex, rank_only_hits
from pllm.retrieval.dates import parse_period, strip_phrase
from pllm.retrieval.hybrid import HybridIndex, member_retriever

# The base of every composite retriever (these and the re-rankers, query rewriting) unless one is named. Chosen
# on the memory benchmark's dev users (docs/serving.md): dense holds recall@10 0.92 / 0.82 (questions in the
# facts' words / in other words) where hybrid holds 0.71 / 0.36, as bm25's word matches pull the fusion down.
DEFAULT_BASE = "dense"


class Composite(Retriever):
    """Built on one base retriever, to which the shared options (embedder, cache, seed, generator) are
    forwarded; an unknown base name is an InputError naming this retriever's `base` option."""

    needs_embedder = uses_cache = takes_seed = True  # those of any base: each is forwarded only what it takes

    def __init__(self, base: str | Retriever | tuple[str, Mapping[str, Any]] = DEFAULT_BASE, **forwarded: Any) -> None:
        try:
            self.base = member_retriever(base, forwarded)
        except UnknownNameError as err:
            raise InputError(f"{self.name}: unknown base retriever: {err}", field="base") from err


class DatedIndex(RetrieverIndex):
    def __init__(self, base: RetrieverIndex, timestamps: list[float | None]) -> None:
        self.base, self.timestamps = base, timestamps

    def __len__(self) -> int:
        return len(self.timestamps)

    def counters(self) -> dict[str, int]:
        return self.base.counters()

    def search(self, query: str, k: int, *, query_timestamp: float | None = None, seed_key: str = "") -> list[Hit]:
        period = parse_period(query, time.time() if query_timestamp is None else query_timestamp)
        if period is None or k <= 0:
            return self.base.search(query, k, query_timestamp=query_timestamp, seed_key=seed_key)
        ranked = self.base.search(strip_phrase(query, period), len(self), query_timestamp=query_timestamp,
                                  seed_key=seed_key)
        inside = [h.index for h in ranked if self.timestamps[h.index] in period]
        outside = [h.index for h in ranked if self.timestamps[h.index] not in period]
        return rank_only_hits(inside + outside, k)


class DatedRetriever(Composite):
    """Time phrases in the query select a period whose items rank first (see the module doc)."""

    name: ClassVar[str] = "dated"

    def build(self, docs: Sequence[Doc]) -> DatedIndex:
        return DatedIndex(self.base.build(docs), [d.timestamp for d in docs])


class WindowRetriever(Composite):
    """Each item indexed alone and with `size` neighbours on each side from its own group (profile order),
    the two rankings fused by RRF; an item without a group is its own window. Hits are the items."""

    name: ClassVar[str] = "window"

    def __init__(self, base: str | Retriever | tuple[str, Mapping[str, Any]] = DEFAULT_BASE, *, size: int = 1,
                 **forwarded: Any) -> None:
        if size < 0:
            raise ValueError(f"window size must be >= 0, got {size}")
        super().__init__(base, **forwarded)
        self.size = size

    def windows(self, docs: Sequence[Doc]) -> list[Doc]:
        groups: dict[str, list[int]] = {}
        for i, d in enumerate(docs):
            if d.group is not None:
                groups.setdefault(d.group, []).append(i)
        out = []
        for i, d in enumerate(docs):
            members = groups.get(d.group, [i]) if d.group is not None else [i]
            at = members.index(i)
            near = members[max(0, at - self.size):at + self.size + 1]
            out.append(Doc(text="\n".join(docs[j].text for j in near), timestamp=d.timestamp, group=d.group))
        return out

    def build(self, docs: Sequence[Doc]) -> HybridIndex:
        return HybridIndex([self.base.build(docs), self.base.build(self.windows(docs))], [1.0, 1.0], len(docs),
                           rrf_k=60.0, depth=None)


RETRIEVERS.register("dated", DatedRetriever)
RETRIEVERS.register("window", WindowRetriever)
