"""Profile retrieval: pick the user's history items most useful for a question.

`make_retriever(name, **options)` gives a `Retriever`; `build(docs)` indexes one user's profile once and
the returned `RetrieverIndex.search(query, k)` ranks it per question. Registered: bm25, dense, hybrid,
recency, random, none, the collaborative cf (`retrieval/collaborative.py`), for
conversations dated and window (`retrieval/conversation.py`), and two that ask a
model: the re-rankers rerank-llm and rerank-ce (`retrieval/rerank.py`) and query rewriting, rewrite
(`retrieval/rewrite.py`). Heavy libraries (bm25s, torch, sentence-transformers) load on first use.
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
    retriever_reads_train,
)
from pllm.retrieval.collaborative import CollaborativeRetriever, CoRatings
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
from pllm.retrieval.rerank import (
    CrossEncoderRerankRetriever,
    CrossEncoderScorer,
    LLMRelevanceScorer,
    LLMRerankRetriever,
    RelevanceScorer,
)
from pllm.retrieval.rewrite import QueryRewriter, RewriteRetriever
from pllm.retrieval.simple import NoneRetriever, RandomRetriever, RecencyRetriever

__all__ = [
    "EMBEDDERS",
    "RETRIEVERS",
    "BM25Index",
    "BM25Retriever",
    "CoRatings",
    "CollaborativeRetriever",
    "CrossEncoderRerankRetriever",
    "CrossEncoderScorer",
    "DatedRetriever",
    "DenseIndex",
    "DenseRetriever",
    "Doc",
    "Embedder",
    "EmbeddingCache",
    "Hit",
    "HybridIndex",
    "HybridRetriever",
    "LLMRelevanceScorer",
    "LLMRerankRetriever",
    "MPNetEmbedder",
    "MemoryEmbeddingCache",
    "MiniLMEmbedder",
    "NoneRetriever",
    "QueryRewriter",
    "RandomRetriever",
    "RecencyRetriever",
    "RelevanceScorer",
    "Retriever",
    "RetrieverIndex",
    "RewriteRetriever",
    "WindowRetriever",
    "clear_loaded_embedders",
    "embed_with_cache",
    "load_embedder",
    "make_retriever",
    "rank_scores",
    "retriever_reads_train",
]
