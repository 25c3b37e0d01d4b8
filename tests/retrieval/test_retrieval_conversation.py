"""The conversation retrievers: `dated` (time phrases rank that period's items first) and `window`
(neighbouring turns of a session indexed together), and the time phrases they read."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pllm.retrieval import Doc, make_retriever
from pllm.retrieval.dates import DAY, parse_period, strip_phrase


def ts(y: int, m: int, d: int) -> float:
    return datetime(y, m, d, 12, tzinfo=timezone.utc).timestamp()


NOW = ts(2024, 3, 20)  # a Wednesday


@pytest.mark.parametrize(("query", "start", "end"), [
    ("what did I cook last May?", ts(2023, 5, 1), ts(2023, 6, 1)),
    ("where did I go in February", ts(2024, 2, 1), ts(2024, 3, 1)),
    ("in March", ts(2024, 3, 1), ts(2024, 4, 1)),
    ("what happened in 2022", ts(2022, 1, 1), ts(2023, 1, 1)),
    ("my plans in June 2021?", ts(2021, 6, 1), ts(2021, 7, 1)),
    ("what did I buy yesterday", ts(2024, 3, 19), ts(2024, 3, 20)),
    ("last week's dinner", ts(2024, 3, 11), ts(2024, 3, 18)),
    ("last month", ts(2024, 2, 1), ts(2024, 3, 1)),
    ("last year", ts(2023, 1, 1), ts(2024, 1, 1)),
])
def test_calendar_phrases(query: str, start: float, end: float) -> None:
    p = parse_period(query, NOW)
    assert p is not None and (p.start, p.end) == (start - DAY / 2, end - DAY / 2)  # midnight UTC bounds


def test_relative_phrases_and_none() -> None:
    p = parse_period("what did I say two weeks ago?", NOW)
    assert p is not None and p.phrase == "two weeks ago"
    assert NOW - 14 * DAY in p and NOW - 7 * DAY not in p and NOW - 21 * DAY not in p
    assert parse_period("3 days ago", NOW) is not None and NOW - 3 * DAY in parse_period("3 days ago", NOW)
    assert parse_period("where do I live", NOW) is None
    assert parse_period("may I ask what my dog is called", NOW) is None
    assert strip_phrase("What did I cook Last May?", parse_period("last may", NOW)) == "What did I cook ?"


DOCS = [Doc("I cooked a lasagna for dinner", ts(2023, 5, 10), "s1"),
        Doc("the weather is nice", ts(2023, 5, 10), "s1"),
        Doc("I cooked risotto for dinner tonight", ts(2024, 1, 5), "s2"),
        Doc("I cooked a curry for dinner", ts(2024, 3, 6), "s3")]


def test_dated_ranks_the_period_first_and_keeps_the_base_order_otherwise() -> None:
    base = make_retriever("bm25").build(DOCS)
    dated = make_retriever("dated", base="bm25").build(DOCS)
    q = "what did I cook for dinner"
    assert [h.index for h in dated.search(q, 4, query_timestamp=NOW)] == \
        [h.index for h in base.search(q, 4, query_timestamp=NOW)]
    assert [h.index for h in dated.search(q + " last May", 2, query_timestamp=NOW)][0] == 0
    assert [h.index for h in dated.search(q + " two weeks ago", 1, query_timestamp=NOW)] == [3]
    # Every item is still ranked (the period's first), scores strictly decreasing.
    hits = dated.search("dinner in 2023", 4, query_timestamp=NOW)
    assert hits[0].index in (0, 1) and sorted(h.index for h in hits) == [0, 1, 2, 3]
    assert all(a.score > b.score for a, b in zip(hits, hits[1:], strict=False))
    assert dated.search("dinner in 2023", 0, query_timestamp=NOW) == []


def test_window_indexes_neighbours_of_the_same_session() -> None:
    docs = [Doc("my sister has a new job", 1.0, "a"), Doc("she works as a pilot now", 2.0, "a"),
            Doc("I like tea", 3.0, "b"), Doc("pilot training is hard", 4.0, None)]
    retriever = make_retriever("window", base="bm25")
    assert [d.text for d in retriever.windows(docs)] == [
        "my sister has a new job\nshe works as a pilot now", "my sister has a new job\nshe works as a pilot now",
        "I like tea", "pilot training is hard"]
    # The question names words of both turns: with the window both turns of session a rank above the others.
    hits = retriever.build(docs).search("what job does my sister have, pilot?", 2)
    assert sorted(h.index for h in hits) == [0, 1]
    alone = make_retriever("window", base="bm25", size=0)
    assert [d.text for d in alone.windows(docs)] == [d.text for d in docs]
    with pytest.raises(ValueError, match="window size"):
        make_retriever("window", size=-1)


def test_composites_take_the_shared_options_of_their_base(fake_embedder_name: str) -> None:
    for name in ("dated", "window"):
        index = make_retriever(name, embedder=fake_embedder_name).build(DOCS)  # hybrid: bm25 + dense
        assert len(index) == 4 and len(index.search("curry dinner", 4, query_timestamp=NOW)) == 4
    with pytest.raises(TypeError, match="unexpected options"):
        make_retriever("dated", size=3)
