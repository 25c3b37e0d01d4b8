"""Retrievers declare the shared resources they take; callers ask (`retriever_options`), never list names."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from pllm.errors import InputError, UnknownNameError
from pllm.pipeline import MethodConfig
from pllm.retrieval import RETRIEVERS, Doc, Retriever, RetrieverIndex, make_retriever
from pllm.retrieval.base import retriever_needs_embedder, retriever_needs_generator, retriever_options
from pllm.retrieval.simple import RecencyRetriever
from pllm.serve.config import ServeConfig


class EncodingRetriever(Retriever):
    """A toy retriever that needs an embedder: recency order, but it records what it was given."""

    name = "test-encoding"
    needs_embedder = True

    def __init__(self, *, embedder: object) -> None:
        self.embedder = embedder

    def build(self, docs: Sequence[Doc]) -> RetrieverIndex:
        return RecencyRetriever().build(docs)


@pytest.fixture
def registered() -> None:
    RETRIEVERS.register(EncodingRetriever.name, EncodingRetriever)
    yield
    RETRIEVERS.unregister(EncodingRetriever.name)


def test_builtin_declarations() -> None:
    # The composites take what any base takes (each is forwarded only what it takes).
    assert [n for n in RETRIEVERS.names() if retriever_needs_embedder(n)] == [
        "dated", "dense", "hybrid", "rerank-ce", "rerank-llm", "rewrite", "window"]
    assert [n for n in RETRIEVERS.names() if retriever_needs_generator(n)] == ["rerank-llm", "rewrite"]
    gen = object()
    assert retriever_options("rewrite", generator=gen, user_id="u")["generator"] is gen
    assert "generator" not in retriever_options("hybrid", generator=gen)
    assert retriever_options("rerank-ce", cross_encoder="/models/ce")["cross_encoder"] == "/models/ce"
    assert "cross_encoder" not in retriever_options("rerank-ce")  # none held: the retriever says what is missing
    assert retriever_options("dense", embedder="minilm", cache=None, user_id="u", seed=3) == {
        "embedder": "minilm", "cache": None, "user_id": "u"}
    assert retriever_options("random", embedder="minilm", seed=3) == {"seed": 3}
    assert retriever_options("bm25", embedder="minilm", user_id="u", seed=3) == {}
    with pytest.raises(UnknownNameError, match="known: .*bm25"):
        retriever_needs_embedder("nope")


def test_a_new_retriever_is_one_class_plus_its_registration(registered: None) -> None:
    options = retriever_options("test-encoding", embedder="bow", cache=None, user_id="u")
    assert options == {"embedder": "bow"}
    index = make_retriever("test-encoding", **options).build([Doc("a", 1.0), Doc("b", 2.0)])
    assert [h.index for h in index.search("q", 2)] == [1, 0]
    with pytest.raises(UnknownNameError, match="embedder"):
        MethodConfig(retriever="test-encoding", embedder="no-such-embedder")
    with pytest.raises(InputError, match="needs an embedder"):
        ServeConfig(embedder=None, retriever="test-encoding")
    ServeConfig(embedder=None, retriever="bm25")


def test_a_server_refuses_a_retriever_that_reads_a_train_split() -> None:
    with pytest.raises(InputError, match="train split, which a server does not hold"):
        ServeConfig(retriever="cf")
