"""The retrieval contract: a `Retriever` indexes one user's profile once (`build`), and the resulting
`RetrieverIndex` is searched many times, once per question. Every ranking is deterministic: ties are
broken by the document's position in the profile, so runs are reproducible across machines."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from pllm.registry import Registry

if TYPE_CHECKING:
    from pllm.models.base import Generator
    from pllm.retrieval.collaborative import CoRatings
    from pllm.retrieval.embedders import Embedder, EmbeddingCache


@dataclass(frozen=True)
class Doc:
    """What a retriever indexes: one profile item's retrieval text, its time (epoch seconds), the group it
    belongs to (a conversation's session: the `window` retriever indexes neighbouring turns of a group together)
    and its identity across users (`TaskSpec.item_key`: what a question about it asks; the `cf` retriever matches
    it to other users' answers)."""

    text: str
    timestamp: float | None = None
    group: str | None = None
    key: str | None = None


GROUP_FIELD = "session"  # the item field that groups items for `Doc.group` (a chat turn's session)


def item_group(fields: Mapping[str, object]) -> str | None:
    """An item's group (`Doc.group`) from its fields, None when it has none."""
    value = fields.get(GROUP_FIELD)
    return value if isinstance(value, str) else None


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

    def counters(self) -> dict[str, int]:
        """Counts of this index's fallbacks and model calls since it was built (a re-ranker's failed scorings,
        a query rewriter's unparsable answers), so reports can show them; {} for indexes that have none."""
        return {}


class SizedIndex(RetrieverIndex):
    """An index over `n` items whose `_search` only ever sees `k >= 1` and a non-empty profile."""

    def __init__(self, n: int) -> None:
        self._n = n

    def __len__(self) -> int:
        return self._n

    def search(
        self, query: str, k: int, *, query_timestamp: float | None = None, seed_key: str = ""
    ) -> list[Hit]:
        if k <= 0 or self._n == 0:
            return []
        return self._search(query, k, query_timestamp=query_timestamp, seed_key=seed_key)

    @abstractmethod
    def _search(self, query: str, k: int, *, query_timestamp: float | None, seed_key: str) -> list[Hit]: ...


class Retriever(ABC):
    """Factory of per-user indexes; stateless across users except for shared models and caches.

    A retriever declares the shared resources it takes as keyword options, so callers ask it (through
    `retriever_options`) instead of listing retriever names."""

    name: ClassVar[str]
    needs_embedder: ClassVar[bool] = False  # encodes text: takes `embedder=` (a name or an Embedder)
    uses_cache: ClassVar[bool] = False  # persists item embeddings: takes `cache=` and `user_id=` (their owner)
    takes_seed: ClassVar[bool] = False  # takes `seed=`
    needs_generator: ClassVar[bool] = False  # asks a language model: takes `generator=` (a Generator)
    takes_cross_encoder: ClassVar[bool] = False  # takes `cross_encoder=` (a model name or path, or a loaded one)
    reads_train: ClassVar[bool] = False  # ranks by other users' answers: takes `coratings=` and `user_id=` (the asker)

    @abstractmethod
    def build(self, docs: Sequence[Doc]) -> RetrieverIndex:
        """Index one user's profile once so each later search is cheap."""


RETRIEVERS: Registry[type[Retriever]] = Registry("retriever")


def make_retriever(name: str, **options: Any) -> Retriever:
    """Instantiate a registered retriever; an unknown name raises UnknownNameError listing known ones."""
    return RETRIEVERS.get(name)(**options)


def retriever_needs_embedder(name: str) -> bool:
    """Whether retriever `name` encodes text (a caller without an embedder cannot serve it)."""
    return RETRIEVERS.get(name).needs_embedder


def retriever_needs_generator(name: str) -> bool:
    """Whether retriever `name` asks a language model (a caller loads its generator only then)."""
    return RETRIEVERS.get(name).needs_generator


def retriever_reads_train(name: str) -> bool:
    """Whether retriever `name` ranks by other users' answers (a caller fits them on a train split only then)."""
    return RETRIEVERS.get(name).reads_train


def retriever_options(name: str, *, embedder: str | Embedder | None = None, cache: EmbeddingCache | None = None,
                      user_id: str | None = None, seed: int = 0, generator: Generator | None = None,
                      cross_encoder: str | None = None, coratings: CoRatings | None = None) -> dict[str, Any]:
    """Of the shared resources a caller holds, the ones retriever `name` declares it takes."""
    cls = RETRIEVERS.get(name)
    options: dict[str, Any] = {}
    if cls.needs_embedder:
        options["embedder"] = embedder
    if cls.uses_cache:
        options.update(cache=cache, user_id=user_id)
    if cls.takes_seed:
        options["seed"] = seed
    if cls.needs_generator:
        options["generator"] = generator
    if cls.reads_train:
        options.update(coratings=coratings, user_id=user_id)
    if cls.takes_cross_encoder and cross_encoder is not None:  # None: the retriever's own default, if any
        options["cross_encoder"] = cross_encoder
    return options


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


def merge_counters(parts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Sum of counters by name (a composite index's own and its members')."""
    out: dict[str, int] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = out.get(key, 0) + value
    return out


def rank_only_hits(order: Sequence[int], k: int) -> list[Hit]:
    """Hits for retrievers with no natural score: score = 1 / (rank + 1), so best first is highest."""
    if k <= 0:
        return []
    return [Hit(int(i), 1.0 / (r + 1)) for r, i in enumerate(order[:k])]
