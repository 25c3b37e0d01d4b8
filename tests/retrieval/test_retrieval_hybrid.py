"""Hybrid = weighted reciprocal rank fusion of its members, checked against a hand computation."""

from __future__ import annotations

from typing import Any

import pytest

from pllm.retrieval import Doc, MemoryEmbeddingCache, make_retriever

TEXTS = [
    "astronaut mission to mars",
    "tomato pasta with basil",
    "space rockets and astronauts",
    "garlic bread and garlic butter",
    "rocket launch review of the mars mission",
    "mars rover photos",
]


def rrf(rankings: list[list[int]], weights: list[float], k: float) -> list[tuple[int, float]]:
    fused: dict[int, float] = {}
    for ranking, w in zip(rankings, weights, strict=True):
        for rank, i in enumerate(ranking, start=1):
            fused[i] = fused.get(i, 0.0) + w / (k + rank)
    return sorted(fused.items(), key=lambda kv: (-round(kv[1], 12), kv[0]))


@pytest.mark.parametrize("query", ["mars mission", "astronaut rockets", "pasta"])
def test_hybrid_equals_hand_computed_rrf(fake_embedder: Any, query: str) -> None:
    docs = [Doc(t) for t in TEXTS]
    n = len(docs)
    bm25 = [h.index for h in make_retriever("bm25").build(docs).search(query, n)]
    dense = [h.index for h in make_retriever("dense", embedder=fake_embedder).build(docs).search(query, n)]
    expected = rrf([bm25, dense], [1.0, 1.0], 60.0)
    index = make_retriever("hybrid", embedder=fake_embedder).build(docs)
    hits = index.search(query, 4)
    assert [h.index for h in hits] == [i for i, _ in expected[:4]]
    assert [h.score for h in hits] == pytest.approx([s for _, s in expected[:4]])


def test_hybrid_weights_members_and_constant(fake_embedder: Any) -> None:
    docs = [Doc(t, float(i)) for i, t in enumerate(TEXTS)]
    n = len(docs)
    bm25 = [h.index for h in make_retriever("bm25").build(docs).search("mars", n)]
    recency = [h.index for h in make_retriever("recency").build(docs).search("mars", n)]
    expected = rrf([bm25, recency], [2.0, 0.5], 10.0)
    index = make_retriever("hybrid", members=["bm25", "recency"], weights=[2.0, 0.5], rrf_k=10).build(docs)
    hits = index.search("mars", n + 5)
    assert [(h.index, pytest.approx(h.score)) for h in hits] == expected


def test_hybrid_depth_limits_member_contributions(fake_embedder: Any) -> None:
    docs = [Doc(t) for t in TEXTS]
    bm25 = [h.index for h in make_retriever("bm25", pad=False).build(docs).search("garlic", 2)]
    index = make_retriever("hybrid", members=[("bm25", {"pad": False}), "none"], depth=2).build(docs)
    assert [h.index for h in index.search("garlic", 5)] == bm25 == [3]


def test_hybrid_forwards_cache_to_dense_member(fake_embedder: Any) -> None:
    cache = MemoryEmbeddingCache()
    make_retriever("hybrid", embedder=fake_embedder, cache=cache, user_id="u").build([Doc(t) for t in TEXTS])
    assert len(cache) == len(TEXTS)


def test_hybrid_edge_cases_and_validation(fake_embedder: Any) -> None:
    index = make_retriever("hybrid", embedder=fake_embedder)
    assert index.build([]).search("q", 3) == []
    assert index.build([Doc("a b")]).search("q", 0) == []
    with pytest.raises(ValueError):
        make_retriever("hybrid", members=["bm25"], weights=[1.0, 2.0])
    with pytest.raises(TypeError):
        make_retriever("hybrid", k1=1.2)
