"""Query rewriting (`rewrite`): the model's sub-queries are each ranked by the base and fused with the question's
own ranking by RRF (checked against a brute-force reference); an empty, unparsable or failing answer falls back
to the question alone and is counted, never raised."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from pllm.errors import InputError, PllmError
from pllm.models.base import Generation, Generator, Prompt
from pllm.retrieval import Doc, make_retriever
from pllm.retrieval.rewrite import parse_queries

DOCS = [
    Doc("I adopted a cat from the shelter"),  # 0
    Doc("she is a Siamese and sleeps on my desk"),  # 1: the answer, no word of the question
    Doc("the shelter was busy on Saturday"),  # 2
    Doc("I like my desk by the window"),  # 3
    Doc("what breed of dog do you have"),  # 4
]
QUESTION = "What breed is the cat I adopted?"


class FakeRewriter(Generator):
    """Answers every prompt with `answer` (or raises), counting its calls."""

    name = "fake-rewriter"

    def __init__(self, answer: str = "", *, fail: bool = False) -> None:
        self.answer, self.fail, self.prompts = answer, fail, []

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 stop: Sequence[str] | None = None, batch_size: int = 8) -> list[Generation]:
        if self.fail:
            raise PllmError("the model is unreachable")
        self.prompts += prompts
        return [Generation(self.answer, 1, 1) for _ in prompts]


class NeutralJudge(FakeRewriter):
    """Rewrites as FakeRewriter and scores every candidate alike (so a re-ranker keeps its base's order)."""

    supports_scoring = True

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[Sequence[str]] | Sequence[str], *,
              batch_size: int = 8, normalize: bool = False) -> np.ndarray:
        return np.zeros((len(prompts), 2))


def brute_rrf(rankings: list[list[int]], n: int, rrf_k: float = 60.0) -> list[int]:
    score = np.zeros(n)
    for r in rankings:
        for rank, i in enumerate(r, start=1):
            score[i] += 1.0 / (rrf_k + rank)
    seen = sorted({i for r in rankings for i in r})
    return sorted(seen, key=lambda i: (-score[i], i))


def test_sub_queries_are_searched_and_fused_with_the_question() -> None:
    gen = FakeRewriter("1. sleeps on my desk\n- Siamese cat\n\nQuestion: something else")
    index = make_retriever("rewrite", base="bm25", generator=gen).build(DOCS)
    got = [h.index for h in index.search(QUESTION, 5)]
    bm25 = make_retriever("bm25").build(DOCS)
    rankings = [[h.index for h in bm25.search(q, len(DOCS))]
                for q in (QUESTION, "sleeps on my desk", "Siamese cat")]
    assert got == brute_rrf(rankings, len(DOCS))[:5]
    assert 1 in got[:2]  # the answer's turn, found by the sub-queries
    assert "Question: What breed is the cat I adopted?" in gen.prompts[0].text
    assert index.counters() == {"rewrites": 1, "rewrite_fallbacks": 0, "rewrite_errors": 0}
    index.search(QUESTION, 3)  # a repeated question is not rewritten again
    assert len(gen.prompts) == 1 and index.counters()["rewrites"] == 1


@pytest.mark.parametrize("answer", ["", "   \n", "Question: What breed is the cat I adopted?",
                                    "What breed is the cat I adopted?", "- ...\n"])
def test_an_empty_or_unparsable_answer_searches_the_question_alone_and_is_counted(answer: str) -> None:
    index = make_retriever("rewrite", base="bm25", generator=FakeRewriter(answer)).build(DOCS)
    assert index.search(QUESTION, 3) == make_retriever("bm25").build(DOCS).search(QUESTION, 3)
    assert index.counters() == {"rewrites": 1, "rewrite_fallbacks": 1, "rewrite_errors": 0}


def test_a_failing_model_falls_back_and_is_counted() -> None:
    index = make_retriever("rewrite", base="bm25", generator=FakeRewriter(fail=True)).build(DOCS)
    assert index.search(QUESTION, 2) == make_retriever("bm25").build(DOCS).search(QUESTION, 2)
    assert index.counters() == {"rewrites": 1, "rewrite_fallbacks": 1, "rewrite_errors": 1}


def test_queries_are_read_line_by_line() -> None:
    text = ' 1) "my cat"\n2. my cat\n* the shelter\nWHAT BREED is the cat I adopted?\n- desk\n- four\n\nmore'
    assert parse_queries(text, QUESTION, 3) == ["my cat", "the shelter", "desk"]
    assert parse_queries("Queries:\nfoo", QUESTION, 3) == []


def test_rewrite_options_and_composition() -> None:
    with pytest.raises(InputError, match=r"field 'generator'.*rewrite asks a language model"):
        make_retriever("rewrite", base="bm25")
    with pytest.raises(InputError, match=r"field 'base'.*rewrite: unknown base retriever.*nope"):
        make_retriever("rewrite", base="nope", generator=FakeRewriter())
    with pytest.raises(InputError, match=r"field 'max_queries'"):
        make_retriever("rewrite", base="bm25", generator=FakeRewriter(), max_queries=0)
    with pytest.raises(InputError, match=r"field 'depth'"):
        make_retriever("rewrite", base="bm25", generator=FakeRewriter(), depth=0)
    # A re-ranker over rewriting: the generator is forwarded to the base that asks for it; counters add up.
    index = make_retriever("rerank-llm", base=("rewrite", {"base": "bm25"}), generator=NeutralJudge("Siamese cat"),
                           depth=3).build(DOCS)
    alone = make_retriever("rewrite", base="bm25", generator=FakeRewriter("Siamese cat")).build(DOCS)
    assert [h.index for h in index.search(QUESTION, 3)] == [h.index for h in alone.search(QUESTION, 3)]
    assert index.counters() == {"rerank_scored": 3, "rerank_fallbacks": 0, "rewrites": 1, "rewrite_fallbacks": 0,
                                "rewrite_errors": 0}
