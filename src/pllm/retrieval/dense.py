"""Dense retrieval: cosine similarity between an embedded query and the profile's item embeddings.

Item embeddings go through an `EmbeddingCache`, so each distinct item text is encoded once per
embedder and persisted (by the user store in serving); a search only encodes the query, and recent
query vectors are kept in a small LRU shared by every index the retriever built.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from pllm.retrieval.base import RETRIEVERS, Doc, Hit, Retriever, RetrieverIndex, rank_scores
from pllm.retrieval.embedders import Embedder, EmbeddingCache, embed_with_cache, l2_normalize, load_embedder


class _QueryLRU:
    """Thread-safe LRU of query text -> normalized query vector (size 0 disables it)."""

    def __init__(self, embedder: Embedder, size: int) -> None:
        self.embedder, self.size = embedder, size
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, query: str) -> np.ndarray:
        if self.size > 0:
            with self._lock:
                vec = self._items.get(query)
                if vec is not None:
                    self._items.move_to_end(query)
                    return vec
        vec = l2_normalize(self.embedder.encode([query]))[0]
        if self.size > 0:
            with self._lock:
                self._items[query] = vec
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        return vec


class DenseIndex(RetrieverIndex):
    """Row-normalized (N, dim) item matrix; searchable by text (needs an embedder) or by vector.

    Build one directly from a precomputed matrix (benchmarks, the server's stored embeddings):
    `DenseIndex(matrix, embedder=load_embedder())`.
    """

    def __init__(self, matrix: np.ndarray, embedder: Embedder | None = None, *,
                 query_cache_size: int = 256, _encode_query: _QueryLRU | None = None) -> None:
        self.matrix = l2_normalize(matrix)
        if embedder is not None and self.matrix.shape[0] and self.matrix.shape[1] != embedder.dim:
            raise ValueError(f"matrix has dim {self.matrix.shape[1]} but embedder {embedder.name!r} "
                             f"produces {embedder.dim}")
        self.embedder = embedder
        if _encode_query is None and embedder is not None:
            _encode_query = _QueryLRU(embedder, query_cache_size)
        self._encode_query = _encode_query

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    def encode_query(self, query: str) -> np.ndarray:
        if self._encode_query is None:
            raise ValueError("this DenseIndex has no embedder; use search_vector() or pass embedder=")
        return self._encode_query(query)

    def search_vector(self, vector: np.ndarray, k: int) -> list[Hit]:
        """Top-k items by cosine similarity to an already-embedded query."""
        if k <= 0 or len(self) == 0:
            return []
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(q))
        if norm > 0:
            q = q / norm
        # einsum runs numpy's own single-threaded loop instead of a multi-threaded BLAS gemv: on small
        # CPU boxes the BLAS thread pool fights torch's (query encoding) and server threads, which made
        # a 10,000-item matvec take tens of ms under load instead of ~1 ms.
        return rank_scores(np.einsum("ij,j->i", self.matrix, q), k)

    def search(
        self, query: str, k: int, *, query_timestamp: float | None = None, seed_key: str = ""
    ) -> list[Hit]:
        if k <= 0 or len(self) == 0:
            return []
        return self.search_vector(self.encode_query(query), k)


class DenseRetriever(Retriever):
    """Embedding retriever. `embedder` is a registered embedder name or an `Embedder` instance;
    `cache` persists item embeddings (None: an in-memory cache private to this retriever);
    `user_id` is passed to the cache when new rows are stored."""

    name: ClassVar[str] = "dense"
    needs_embedder = uses_cache = True

    def __init__(self, embedder: str | Embedder = "minilm", cache: EmbeddingCache | None = None,
                 user_id: str | None = None, *, embedder_options: dict[str, Any] | None = None,
                 query_cache_size: int = 256) -> None:
        from pllm.retrieval.embedders import MemoryEmbeddingCache

        self._embedder_spec = embedder
        self._embedder_options = dict(embedder_options or {})
        self._embedder: Embedder | None = embedder if isinstance(embedder, Embedder) else None
        self.cache: EmbeddingCache = cache if cache is not None else MemoryEmbeddingCache()
        self.user_id = user_id
        self.query_cache_size = query_cache_size
        self._query_lru: _QueryLRU | None = None

    @property
    def embedder(self) -> Embedder:
        """Loaded on first use, so constructing a retriever never loads a model."""
        if self._embedder is None:
            self._embedder = load_embedder(str(self._embedder_spec), **self._embedder_options)
        return self._embedder

    def build(self, docs: Sequence[Doc]) -> DenseIndex:
        if len(docs) == 0:  # nothing to rank, so no reason to load a model
            return DenseIndex(np.zeros((0, 0), dtype=np.float32))
        emb = self.embedder
        if self._query_lru is None:
            self._query_lru = _QueryLRU(emb, self.query_cache_size)
        matrix = embed_with_cache(emb, [d.text for d in docs], self.cache, user_id=self.user_id)
        return DenseIndex(matrix, emb, _encode_query=self._query_lru)


RETRIEVERS.register("dense", DenseRetriever)
