"""Per-user memory over the user store: add, page, search, delete, forget, export.

Items are `ProfileItem`s whose `fields["text"]` is the memory; their embeddings are computed first and
stored (scoped to the user) in the items' own transaction, so a new item is searchable as soon as the write
is acknowledged and a failed write leaves neither. Searches run on a per-user in-memory index (the stored
embedding matrix as a `DenseIndex`, or any registered retriever built over the user's items), cached,
invalidated on every write, and checked per request against the user's version in the store, so writes by
other workers or machines are never missed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from pllm.errors import InputError
from pllm.io import sha1_text
from pllm.retrieval import DenseIndex, Doc, Embedder, RetrieverIndex, embed_with_cache, make_retriever
from pllm.retrieval.base import item_group, retriever_needs_embedder, retriever_needs_generator, retriever_options
from pllm.retrieval.embedders import l2_normalize
from pllm.types import ProfileItem
from pllm.users.store import EmbeddingRows, ItemVersion, UserStore

if TYPE_CHECKING:
    from pllm.models.base import Generator

T = TypeVar("T")
TEXT_FIELD = "text"


def item_text(item: ProfileItem) -> str:
    value = item.fields.get(TEXT_FIELD)
    return value if isinstance(value, str) else json.dumps(item.fields, ensure_ascii=False, sort_keys=True)


class UserEmbeddingCache:
    """The store's embeddings table seen through one user: reads and writes only that user's rows, so
    forgetting a user removes every vector derived from their text and no tenant reads another's."""

    def __init__(self, store: UserStore, user_id: str) -> None:
        self.store, self.user_id = store, user_id

    def get_embeddings(self, model: str, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        return self.store.get_embeddings(model, text_hashes, user_id=self.user_id)

    def put_embeddings(self, model: str, rows: Sequence[tuple[str, np.ndarray]], *,
                       user_id: str | None = None) -> None:
        self.store.put_embeddings(model, rows, user_id=self.user_id)


class StagedEmbeddings(UserEmbeddingCache):
    """The user's embedding cache for one write: reads go to the store, new vectors are held back so they are
    written in the same transaction as the items they belong to."""

    def __init__(self, store: UserStore, user_id: str) -> None:
        super().__init__(store, user_id)
        self.staged: EmbeddingRows | None = None

    def put_embeddings(self, model: str, rows: Sequence[tuple[str, np.ndarray]], *,
                       user_id: str | None = None) -> None:
        if self.staged is not None and self.staged.model != model:
            raise ValueError(f"one write embeds with one model, got {self.staged.model!r} and {model!r}")
        self.staged = EmbeddingRows(model, [*(self.staged.rows if self.staged else []), *rows])


@dataclass
class _UserIndex:
    """One user's items and lazily built search indexes (one per retriever name)."""

    items: list[ProfileItem]
    store_version: int = 0  # the user's version in the store when the items were read
    indexes: dict[str, RetrieverIndex] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class SearchHit:
    item: ProfileItem
    score: float


def retry_busy(fn: Callable[[], T], retries: int) -> T:
    """Run a store write, retrying with backoff while another process holds the write lock past the
    connection's busy timeout (SQLite's 'database is locked')."""
    delay = 0.05
    for attempt in range(retries + 1):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            msg = str(exc).lower()
            if attempt == retries or ("locked" not in msg and "busy" not in msg):
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    raise AssertionError("unreachable")  # pragma: no cover


class MemoryService:
    """Memory operations on store user ids (already tenant-namespaced by the caller)."""

    def __init__(self, store: UserStore, *, embedder: Callable[[], Embedder] | None,
                 generator: Callable[[], Generator] | None = None, cross_encoder: str | None = None,
                 default_retriever: str = "dense", cache_users: int = 2048, busy_retries: int = 5,
                 query_cache_size: int = 4096, version_check: bool = True) -> None:
        self.store = store
        self.version_check = version_check
        self._embedder_factory = embedder
        self._generator_factory = generator  # for retrievers that ask a model (re-ranking, query rewriting)
        self.cross_encoder = cross_encoder
        self.default_retriever = default_retriever
        self.cache_users = cache_users
        self.busy_retries = busy_retries
        self._cache: OrderedDict[str, _UserIndex] = OrderedDict()
        self._versions: dict[str, int] = {}
        self._queries: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self.query_cache_size = query_cache_size
        self._lock = threading.Lock()

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder | None:
        return self._embedder_factory() if self._embedder_factory is not None else None

    def _invalidate(self, user_id: str) -> None:
        with self._lock:
            self._versions[user_id] = self._versions.get(user_id, 0) + 1
            self._cache.pop(user_id, None)

    def _user_index(self, user_id: str) -> _UserIndex:
        # Read before the items: a write landing in between leaves the cache one version behind, never ahead.
        store_version = self.store.user_version(user_id=user_id) if self.version_check else 0
        with self._lock:
            cached = self._cache.get(user_id)
            if cached is not None and cached.store_version == store_version:
                self._cache.move_to_end(user_id)
                return cached
            version = self._versions.get(user_id, 0)
        built = _UserIndex(items=self.store.get_items(user_id=user_id), store_version=store_version)
        with self._lock:
            # A write that landed while we read would have bumped the version: keep our copy out of the cache.
            if self._versions.get(user_id, 0) == version:
                self._cache[user_id] = built
                self._cache.move_to_end(user_id)
                while len(self._cache) > self.cache_users:
                    self._cache.popitem(last=False)
        return built

    def exists(self, user_id: str) -> bool:
        return self.store.has_user(user_id=user_id)

    def count_items(self, user_id: str) -> int:
        return self.store.count_items(user_id=user_id)

    # -- writes ----------------------------------------------------------------------------------
    def add(self, user_id: str, items: Sequence[ProfileItem]) -> list[ProfileItem]:
        """Embed (if an embedder is configured) the texts the user has no vector for, then write the items
        and those vectors in one transaction (all or nothing); returns the items with ids filled in. Replacing
        an item by id archives its previous version (`history`) and drops the old text's embedding when
        nothing else uses it."""
        items = [ProfileItem(id=it.id or uuid.uuid4().hex, fields=it.fields, user_id=None, timestamp=it.timestamp)
                 for it in items]
        ids = [it.id for it in items]
        if len(set(ids)) != len(ids):
            raise InputError("item ids repeat within one request", field="id")
        emb = self.embedder
        staged = StagedEmbeddings(self.store, user_id)
        if emb is not None:
            retry_busy(lambda: embed_with_cache(emb, [item_text(it) for it in items], staged, user_id=user_id),
                       self.busy_retries)
        old = self._texts_of(user_id, ids)
        try:
            retry_busy(lambda: self.store.add_items(items, user_id=user_id, keep_history=True,
                                                    embeddings=staged.staged), self.busy_retries)
        finally:
            self._invalidate(user_id)
        new_hashes = {sha1_text(item_text(it)) for it in items}
        stale = {sha1_text(t) for t in old.values()} - new_hashes
        if stale:
            retry_busy(lambda: self._drop_unused_embeddings(user_id, stale), self.busy_retries)
        return [ProfileItem(id=it.id, fields=it.fields, user_id=user_id, timestamp=it.timestamp) for it in items]

    def _texts_of(self, user_id: str, ids: Sequence[str]) -> dict[str, str]:
        return {it.id: item_text(it) for it in self.store.get_items_by_id(ids, user_id=user_id)}

    def _drop_unused_embeddings(self, user_id: str, hashes: set[str]) -> int:
        """Delete this user's embeddings of `hashes` unless a remaining item still has that text."""
        return self.store.delete_embeddings(hashes, user_id=user_id,
                                            in_use=lambda items: {sha1_text(item_text(it)) for it in items})

    def delete(self, user_id: str, item_id: str) -> bool:
        """Delete one item and, when no other item of the user has the same text, its embedding."""
        old = self._texts_of(user_id, [item_id])
        if not old:
            return False
        try:
            deleted = retry_busy(lambda: self.store.delete_item(item_id, user_id=user_id), self.busy_retries)
        finally:
            self._invalidate(user_id)
        if deleted:
            retry_busy(lambda: self._drop_unused_embeddings(user_id, {sha1_text(old[item_id])}), self.busy_retries)
        return deleted

    def forget(self, user_id: str) -> dict[str, int]:
        """Every row of the user (items, embeddings, cached summaries, registered artifacts) via the store."""
        try:
            report = retry_busy(lambda: self.store.forget(user_id=user_id), self.busy_retries)
        finally:
            self._invalidate(user_id)
        return dict(report.rows)

    # -- reads -----------------------------------------------------------------------------------
    def page(self, user_id: str, *, limit: int, offset: int) -> list[ProfileItem]:
        return self.store.get_items(user_id=user_id, limit=limit, offset=offset)

    def export(self, user_id: str) -> dict[str, Any]:
        return {"items": self.store.get_items(user_id=user_id),
                "n_embeddings": self.store.count_embeddings(user_id=user_id),
                "profile_summaries": self.store.get_summaries(user_id=user_id)}

    def history(self, user_id: str, item_id: str) -> list[ItemVersion]:
        """Every version of one item, oldest first ([] when the item does not exist)."""
        return self.store.get_item_history(item_id, user_id=user_id)

    def vectors(self, user_id: str, texts: Sequence[str], *, stored: bool) -> np.ndarray | None:
        """Unit vectors of `texts`, None without an embedder. `stored`: the texts are the user's items, so
        their vectors are read from (or added to) the store; otherwise they are encoded and not kept."""
        emb = self.embedder
        if emb is None or not texts:
            return None
        cache = UserEmbeddingCache(self.store, user_id) if stored else None
        vecs = retry_busy(lambda: embed_with_cache(emb, list(texts), cache, user_id=user_id), self.busy_retries)
        return l2_normalize(np.asarray(vecs, dtype=np.float32))

    def items(self, user_id: str) -> list[ProfileItem]:
        return list(self._user_index(user_id).items)

    def search(self, user_id: str, query: str, k: int, *, retriever: str | None = None,
               scope: str | None = None) -> list[SearchHit]:
        """Top-k of the user's items; `scope` (the tenant) shares cached query vectors between its users."""
        name = retriever or self.default_retriever  # the routes have checked it (unknown names: 400)
        entry = self._user_index(user_id)
        if not entry.items or k <= 0:
            return []
        with entry.lock:  # one build per (user, retriever), however many concurrent searches ask
            index = entry.indexes.get(name)
            if index is None:
                index = self._build(user_id, name, entry.items)
                entry.indexes[name] = index
        if isinstance(index, DenseIndex) and self.embedder is not None:
            # Query vectors are cached per scope (the tenant): users of one tenant share repeated queries,
            # and no tenant can learn from timing what another asked.
            hits = index.search_vector(self._query_vector(scope or user_id, query), k)
        else:
            hits = index.search(query, k, query_timestamp=time.time(), seed_key=query)
        return [SearchHit(entry.items[h.index], float(h.score)) for h in hits]

    def _query_vector(self, scope: str, query: str) -> np.ndarray:
        key = (scope, query)
        with self._lock:
            vec = self._queries.get(key)
            if vec is not None:
                self._queries.move_to_end(key)
                return vec
        emb = self.embedder
        assert emb is not None
        vec = l2_normalize(emb.encode([query]))[0]
        with self._lock:
            self._queries[key] = vec
            while len(self._queries) > self.query_cache_size:
                self._queries.popitem(last=False)
        return vec

    def _build(self, user_id: str, name: str, items: list[ProfileItem]) -> RetrieverIndex:
        """Build `name` over the user's items; retrievers that take an embedder and an embedding cache get
        this server's embedder and the user's stored vectors (computed on write), so nothing is re-encoded."""
        docs = [Doc(text=item_text(it), timestamp=it.timestamp, group=item_group(it.fields)) for it in items]
        emb = self.embedder if retriever_needs_embedder(name) else None
        if emb is None and retriever_needs_embedder(name):
            raise InputError(f"retriever {name!r} needs an embedder, and this server has none", field="retriever")
        gen = None
        if retriever_needs_generator(name):
            if self._generator_factory is None:
                raise InputError(f"retriever {name!r} asks a language model, and this memory service has none",
                                 field="retriever")
            gen = self._generator_factory()
        retriever = make_retriever(name, **retriever_options(name, embedder=emb, user_id=user_id,
                                                             cache=UserEmbeddingCache(self.store, user_id),
                                                             generator=gen, cross_encoder=self.cross_encoder))
        return retry_busy(lambda: retriever.build(docs), self.busy_retries)
