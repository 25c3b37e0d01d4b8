"""Fixtures for adapter tests: a fresh tiny model per test (training wraps `.model` in place, so the
session-wide `tiny_generator` is never used here), movielens-shaped users, and fast recipes."""

from __future__ import annotations

import pytest

from pllm.adapt.config import AdaptConfig
from pllm.adapt.store import AdapterStore
from pllm.models.testing import make_tiny_generator
from pllm.tasks.spec import get_task
from pllm.types import ProfileItem, Question

WORDS = ["Heat", "Casino", "Fargo", "Alien", "Clueless", "Babe", "Crime", "Comedy", "Drama", "Horror", "Sci-Fi"]


def make_items(user: str, n: int, *, rating: int | None = None, genre: str = "Comedy") -> list[ProfileItem]:
    """n items of one user; `rating` fixes every rating (users who always rate 1 vs always 5 differ)."""
    titles = ["Heat", "Casino", "Fargo", "Alien", "Clueless", "Babe"]
    return [ProfileItem(id=f"{user}-{i}", user_id=user, timestamp=float(i),
                        fields={"title": titles[i % len(titles)], "year": "1995", "genres": genre,
                                "rating": str(rating if rating is not None else 1 + i % 5)}) for i in range(n)]


def make_question(user: str, items: list[ProfileItem], title: str = "Heat", genre: str = "Comedy") -> Question:
    return Question(id=f"q-{user}", user_id=user, input=f"{title} {genre}",
                    query={"title": title, "year": "1995", "genres": genre}, profile=items,
                    timestamp=float(len(items) + 1000))


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
