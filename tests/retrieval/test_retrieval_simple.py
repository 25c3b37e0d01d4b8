"""Recency, random and none baselines, plus the registry contract."""

from __future__ import annotations

import pytest

from pllm.errors import UnknownNameError
from pllm.retrieval import RETRIEVERS, Doc, make_retriever


def test_recency_most_recent_first_and_undated_last_in_profile_order() -> None:
    docs = [Doc("a", 10.0), Doc("b", None), Doc("c", 30.0), Doc("d", 20.0), Doc("e", None), Doc("f", 30.0)]
    index = make_retriever("recency").build(docs)
    hits = index.search("anything", 10)
    assert [h.index for h in hits] == [2, 5, 3, 0, 1, 4]  # equal times keep profile order
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # the query time does not filter or reorder: every item stays available
    assert index.search("q", 10, query_timestamp=15.0) == hits
    assert index.search("q", 2) == hits[:2]


def test_recency_edge_cases() -> None:
    assert make_retriever("recency").build([]).search("q", 3) == []
    assert make_retriever("recency").build([Doc("a")]).search("q", 0) == []


def test_random_is_deterministic_per_seed_and_key() -> None:
    docs = [Doc(str(i)) for i in range(50)]
    a = make_retriever("random", seed=1).build(docs)
    b = make_retriever("random", seed=1).build(docs)
    draw = [h.index for h in a.search("q", 10, seed_key="question-1")]
    assert draw == [h.index for h in b.search("other text", 10, seed_key="question-1")]
    assert len(set(draw)) == 10
    assert draw[:3] == [h.index for h in a.search("q", 3, seed_key="question-1")]
    assert draw != [h.index for h in a.search("q", 10, seed_key="question-2")]
    c = make_retriever("random", seed=2).build(docs)
    assert draw != [h.index for h in c.search("q", 10, seed_key="question-1")]


def test_random_k_larger_than_profile_is_a_permutation() -> None:
    hits = make_retriever("random").build([Doc("x"), Doc("y"), Doc("z")]).search("q", 10)
    assert sorted(h.index for h in hits) == [0, 1, 2]
    assert make_retriever("random").build([]).search("q", 10) == []


def test_none_returns_nothing() -> None:
    assert make_retriever("none").build([Doc("a"), Doc("b")]).search("a", 5) == []


def test_unknown_retriever_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as err:
        make_retriever("tfidf-magic")
    for name in ["bm25", "dense", "hybrid", "none", "random", "recency"]:
        assert name in str(err.value)
        assert name in RETRIEVERS
