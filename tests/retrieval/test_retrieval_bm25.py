"""BM25 against an independent plain-Python Okapi BM25 with bm25s's default ("lucene") variant:
idf = ln(1 + (N - df + 0.5) / (df + 0.5)), tf part = tf / (tf + k1 * (1 - b + b * dl / avgdl)),
k1 = 1.5, b = 0.75, English stopwords removed, repeated query tokens counted each time."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest
from bm25s.stopwords import STOPWORDS_EN

from pllm.retrieval import Doc, make_retriever

CORPUS = [
    "The astronaut trained for a long mission to Mars.",
    "A recipe for tomato pasta with fresh basil and garlic.",
    "Space travel movies: astronauts, rockets and the Mars mission again.",
    "Garlic bread, garlic butter, garlic everything.",
    "",  # empty item: length 0, still counted in N and the average length
    "the and of to",  # stopwords only
    "Review of a rocket launch; the rocket was late.",
    "A recipe for tomato pasta with fresh basil and garlic.",  # exact duplicate of item 1
]
QUERIES = [
    "astronaut mission to Mars",
    "garlic pasta recipe",
    "rocket rocket launch",
    "fresh basil",
    "movies about space",
]


def ref_tokens(text: str) -> list[str]:
    stop = set(STOPWORDS_EN)
    return [t for t in re.findall(r"(?u)\b\w\w+\b", text.lower()) if t not in stop]


def ref_bm25(corpus: list[str], query: str, k1: float = 1.5, b: float = 0.75) -> list[float]:
    docs = [ref_tokens(t) for t in corpus]
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    df = Counter(t for d in docs for t in set(d))
    scores = []
    for d in docs:
        tf = Counter(d)
        s = 0.0
        for q in ref_tokens(query):
            if q not in df or tf[q] == 0:
                continue
            idf = math.log(1 + (n - df[q] + 0.5) / (df[q] + 0.5))
            s += idf * tf[q] / (tf[q] + k1 * (1 - b + b * len(d) / avgdl))
        scores.append(s)
    return scores


def ref_ranking(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-round(scores[i], 5), i))


@pytest.mark.parametrize("query", QUERIES)
def test_bm25_matches_reference_scores_and_ranking(query: str) -> None:
    index = make_retriever("bm25").build([Doc(t) for t in CORPUS])
    hits = index.search(query, len(CORPUS))
    ref = ref_bm25(CORPUS, query)
    assert [h.index for h in hits] == ref_ranking(ref)
    for h in hits:
        assert h.score == pytest.approx(ref[h.index], rel=1e-5, abs=1e-6)


def test_bm25_custom_parameters_match_reference() -> None:
    index = make_retriever("bm25", k1=0.9, b=0.4).build([Doc(t) for t in CORPUS])
    ref = ref_bm25(CORPUS, "garlic pasta", k1=0.9, b=0.4)
    hits = index.search("garlic pasta", 3)
    assert [h.index for h in hits] == ref_ranking(ref)[:3]
    assert [h.score for h in hits] == pytest.approx([ref[h.index] for h in hits], rel=1e-5)


def test_bm25_top_k_is_prefix_and_duplicates_tie_in_profile_order() -> None:
    index = make_retriever("bm25").build([Doc(t) for t in CORPUS])
    full = index.search("basil", len(CORPUS))
    assert [h.index for h in full[:2]] == [1, 7]  # identical items: earlier one first
    assert index.search("basil", 2) == full[:2]
    assert index.search("basil", 0) == [] and index.search("basil", -3) == []


def test_bm25_query_without_known_tokens_returns_profile_order_with_zero_scores() -> None:
    index = make_retriever("bm25").build([Doc(t) for t in CORPUS])
    for query in ["zebra quantum", "", "the of and", "!!!"]:
        hits = index.search(query, 3)
        assert [h.index for h in hits] == [0, 1, 2]
        assert all(h.score == 0.0 for h in hits)


def test_bm25_pad_false_returns_only_matching_items() -> None:
    index = make_retriever("bm25", pad=False).build([Doc(t) for t in CORPUS])
    assert index.search("zebra", 4) == []
    assert [h.index for h in index.search("rocket", 10)] == [6]  # no stemming: "rockets" differs


def test_bm25_k_larger_than_profile_and_empty_profiles() -> None:
    docs = [Doc("alpha beta"), Doc("beta gamma")]
    hits = make_retriever("bm25").build(docs).search("gamma", 50)
    assert [h.index for h in hits] == [1, 0]
    assert make_retriever("bm25").build([]).search("gamma", 5) == []
    only_stop = make_retriever("bm25").build([Doc("the"), Doc("")])
    assert [h.index for h in only_stop.search("the", 5)] == [0, 1]
