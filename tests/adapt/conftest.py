"""Fixtures for adapter tests: a fresh tiny model per test (training wraps `.model` in place, so the
session-wide `tiny_generator` is never used here), movielens-shaped users, and fast recipes."""

from __future__ import annotations

import pytest
from adapt_helpers import WORDS

from pllm.adapt.config import AdaptConfig
from pllm.adapt.store import AdapterStore
from pllm.models.testing import make_tiny_generator
from pllm.tasks.spec import get_task


@pytest.fixture
def spec():
    return get_task("movielens-rating")


@pytest.fixture
def tiny():
    return make_tiny_generator(seed=0, vocab_words=WORDS)


@pytest.fixture
def fast_config() -> AdaptConfig:
    return AdaptConfig(method="lora", epochs=3, batch_size=4, lr=5e-2, max_items=12, min_items=4)


@pytest.fixture
def store(tmp_path) -> AdapterStore:
    from pllm.users.store import SQLiteUserStore

    db = SQLiteUserStore(tmp_path / "store.sqlite3")
    yield AdapterStore(db=db)
    db.close()


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    yield
