"""Re-rankers (`rerank-llm`, `rerank-ce`): they re-order the base's top `depth` by the scorer and never
return anything else; a scorer failure keeps the base order (counted); bad options are InputErrors naming
the option. Fake models go through the real interfaces (a `Generator` subclass, a cross-encoder's `predict`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from pllm.errors import InputError, PllmError
from pllm.models.base import Generation, Generator, Prompt
from pllm.retrieval import Doc, make_retriever

DOCS = [
    Doc("we talked about the weather and the rain"),  # 0
    Doc("the rain in Lyon was heavy, I live in Lyon"),  # 1
    Doc("my weather app says rain again"),  # 2
    Doc("rain rain rain weather weather"),  # 3
    Doc("I moved to Porto last month"),  # 4: the answer, but no query word
    Doc("lunch was pasta"),  # 5
]
QUERY = "rain weather"


def memory_of(prompt: Prompt) -> str:
    """The candidate a relevance prompt asks about (its last "Memory:" line), as a fake model reads it."""
    return re.findall(r"Memory: (.*)", prompt.text)[-1]


class FakeJudge(Generator):
    """Scores " Yes" by how many of `liked` words the memory holds (a fake relevance model); or, without
    scoring, answers each prompt with the next of `answers`."""

    name = "fake-judge"

    def __init__(self, liked: Sequence[str] = (), *, scoring: bool = True, answers: Sequence[str] = (),
                 fail: bool = False) -> None:
        self.liked, self.supports_scoring, self.answers, self.fail = list(liked), scoring, list(answers), fail
        self.scored: list[str] = []

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[Sequence[str]] | Sequence[str], *,
              batch_size: int = 8, normalize: bool = False) -> np.ndarray:
        if self.fail:
            raise PllmError("the judge is down")
        assert list(continuations) == [" Yes", " No"]
        mems = [memory_of(p) for p in prompts]
        self.scored += mems
        yes = np.array([sum(w in m for w in self.liked) for m in mems], dtype=np.float64)
        return np.stack([yes, np.zeros_like(yes)], axis=1)  # log P(Yes), log P(No)

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 stop: Sequence[str] | None = None, batch_size: int = 8) -> list[Generation]:
        return [Generation(self.answers[i % len(self.answers)], 1, 1) for i in range(len(prompts))]


def ranked(name: str, query: str = QUERY, k: int = 10, **options: object) -> list[int]:
    return [h.index for h in make_retriever(name, **options).build(DOCS).search(query, k)]


def test_llm_reranker_reorders_the_base_top_n_by_the_model_and_returns_nothing_else() -> None:
    base = ranked("bm25", k=3)
    assert set(base) == {0, 2, 3} and 1 not in base  # Lyon's turn ranks 4th in bm25
    judge = FakeJudge(liked=["Lyon", "app", "Porto"])
    index = make_retriever("rerank-llm", base="bm25", generator=judge, depth=3).build(DOCS)
    hits = index.search(QUERY, 3)
    assert [h.index for h in hits] == [2, *[i for i in base if i != 2]]  # "app" first, then the base's order
    assert hits[0].score == 1.0 and hits[1].score == 0.0
    assert 4 not in [h.index for h in hits] and 1 not in [h.index for h in hits]  # liked, but not candidates
    assert len(judge.scored) == 3 and index.counters()["rerank_scored"] == 3
    # Deeper, Lyon's turn becomes a candidate and wins; k above depth re-ranks k candidates.
    assert ranked("rerank-llm", base="bm25", generator=FakeJudge(liked=["Lyon"]), depth=5, k=2)[0] == 1
    assert len(ranked("rerank-llm", base="bm25", generator=FakeJudge(), depth=1, k=3)) == 3
    assert ranked("rerank-llm", base="bm25", generator=FakeJudge(), k=0) == []
    assert make_retriever("rerank-llm", base="bm25", generator=FakeJudge()).build([]).search(QUERY, 3) == []


def test_a_backend_that_cannot_score_is_read_from_its_answers_and_odd_answers_are_counted() -> None:
    judge = FakeJudge(scoring=False, answers=["No", " yes.", "maybe"])  # candidates get No, Yes, ? in base order
    base = ranked("bm25", k=3)
    index = make_retriever("rerank-llm", base="bm25", generator=judge, depth=3).build(DOCS)
    hits = index.search(QUERY, 3)
    assert [h.index for h in hits] == [base[1], base[2], base[0]] and [h.score for h in hits] == [1.0, 0.0, -1.0]
    assert index.counters()["rerank_unparsed"] == 1


def test_a_failing_scorer_keeps_the_base_order_and_is_counted() -> None:
    index = make_retriever("rerank-llm", base="bm25", generator=FakeJudge(fail=True), depth=4).build(DOCS)
    assert [h.index for h in index.search(QUERY, 3)] == ranked("bm25", k=3)
    assert index.counters()["rerank_fallbacks"] == 1


def test_the_real_model_path_scores_every_candidate(tiny_generator, one_torch_thread) -> None:  # noqa: ANN001
    index = make_retriever("rerank-llm", base="bm25", generator=tiny_generator, depth=4).build(DOCS)
    hits = index.search(QUERY, 4)
    assert sorted(h.index for h in hits) == sorted(ranked("bm25", k=4))
    assert all(np.isfinite(h.score) for h in hits) and [h.score for h in hits] == sorted(
        (h.score for h in hits), reverse=True)


class FakeCrossEncoder:
    """sentence-transformers' `CrossEncoder.predict` shape: one score per (query, text) pair."""

    def __init__(self, liked: str) -> None:
        self.liked, self.pairs = liked, []

    def predict(self, sentences: list[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        self.pairs += sentences
        return np.array([float(self.liked in text) for _, text in sentences])


def test_cross_encoder_reranker_orders_by_the_model(tmp_path: Path) -> None:
    ce = FakeCrossEncoder("Lyon")
    hits = ranked("rerank-ce", base="bm25", cross_encoder=ce, depth=5, k=5)
    assert hits[0] == 1 and set(hits) == set(ranked("bm25", k=5))
    assert len(ce.pairs) == 5 and ce.pairs[0][0] == QUERY


def test_bad_options_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"field 'base'.*rerank-llm: unknown base retriever.*nope.*known: .*bm25"):
        make_retriever("rerank-llm", base="nope", generator=FakeJudge())
    for depth in (0, -3, 2.5):
        with pytest.raises(InputError, match=r"field 'depth'.*rerank-llm.*integer >= 1, got"):
            make_retriever("rerank-llm", base="bm25", generator=FakeJudge(), depth=depth)
    with pytest.raises(InputError, match=r"field 'generator'.*rerank-llm asks a language model"):
        make_retriever("rerank-llm", base="bm25")
    with pytest.raises(InputError, match=r"field 'cross_encoder'.*rerank-ce needs a cross-encoder model"):
        make_retriever("rerank-ce", base="bm25")
    missing = str(tmp_path / "no-such-cross-encoder")
    with pytest.raises(InputError, match=rf"field 'cross_encoder'.*cannot load the cross-encoder model "
                                         rf"'{re.escape(missing)}'"):
        make_retriever("rerank-ce", base="bm25", cross_encoder=missing)
    with pytest.raises(InputError, match=r"field 'base'.*window: unknown base"):  # the other composites too
        make_retriever("window", base="nope")
