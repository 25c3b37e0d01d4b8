"""Shared fakes for the retrieval tests: a deterministic hashed bag-of-words embedder, registered
through the real EMBEDDERS registry (never by patching the code under test)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from pllm.retrieval import EMBEDDERS, Embedder, clear_loaded_embedders

FAKE = "fake-bow"


class HashedBowEmbedder(Embedder):
    """Bag of words hashed into `dim` buckets with sha1 (stable across processes), L2-normalized.

    Counts every call and text so tests can prove what was (not) re-encoded.
    """

    def __init__(self, dim: int = 64) -> None:
        self.name = f"{FAKE}-{dim}"
        self.dim = dim
        self.calls = 0
        self.texts: list[str] = []

    def vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float64)
        for tok in re.findall(r"\w+", text.lower()):
            v[int(hashlib.sha1(tok.encode()).hexdigest(), 16) % self.dim] += 1.0
        n = np.linalg.norm(v)
        return (v / n if n else v).astype(np.float32)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        self.calls += 1
        self.texts.extend(texts)
        return np.stack([self.vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


@pytest.fixture
def fake_embedder_name() -> Iterator[str]:
    """Register the fake under its name for one test, then remove it and any loaded instance."""
    EMBEDDERS.register(FAKE, HashedBowEmbedder, replace=True)
    clear_loaded_embedders()
    yield FAKE
    EMBEDDERS.unregister(FAKE)
    clear_loaded_embedders()


@pytest.fixture
def fake_embedder(fake_embedder_name: str) -> HashedBowEmbedder:
    """A fresh counting instance built by the registered factory."""
    emb = EMBEDDERS.get(fake_embedder_name)(dim=64)
    assert isinstance(emb, HashedBowEmbedder)
    return emb
