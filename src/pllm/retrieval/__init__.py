"""Profile retrieval: pick the user's history items most useful for a question.

`make_retriever(name, **options)` gives a `Retriever`; `build(docs)` indexes one user's profile once and
the returned `RetrieverIndex.search(query, k)` ranks it per question. Registered: bm25, dense, hybrid,
recency, random, none, and for conversations dated and window (`retrieval/conversation.py`). Heavy
libraries (bm25s, torch, sentence-transformers) load on first use.
"""

from __future__ import annotations

from pllm.retrieval.base import (
    RETRIEVERS,
    Doc,
    Hit,
    Retriever,
    RetrieverIndex,
    make_retriever,
    rank_scores,
)
from pllm.retrieval.conversation import DatedRetriever, WindowRetriever
from pllm.retrieval.dense import DenseIndex, DenseRetriever
from pllm.retrieval.embedders import (
    EMBEDDERS,
    Embedder,
    EmbeddingCache,
    MemoryEmbeddingCache,
    MiniLMEmbedder,
    clear_loaded_embedders,
    embed_with_cache,
    load_embedder,
)
from pllm.retrieval.hybrid import HybridIndex, HybridRetriever
from pllm.retrieval.lexical import BM25Index, BM25Retriever
from pllm.retrieval.mpnet import MPNetEmbedder
from pllm.retrieval.simple import NoneRetriever, RandomRetriever, RecencyRetriever

__all__ = [
    "EMBEDDERS",
    "RETRIEVERS",
    "BM25Index",
    "BM25Retriever",
    "DatedRetriever",
    "DenseIndex",
    "DenseRetriever",
    "Doc",
    "Embedder",
    "EmbeddingCache",
    "Hit",
    "HybridIndex",
    "HybridRetriever",
    "MPNetEmbedder",
    "MemoryEmbeddingCache",
    "MiniLMEmbedder",
    "NoneRetriever",
    "RandomRetriever",
    "RecencyRetriever",
    "Retriever",
    "RetrieverIndex",
    "WindowRetriever",
    "clear_loaded_embedders",
    "embed_with_cache",
    "load_embedder",
    "make_retriever",
    "rank_scores",
]
