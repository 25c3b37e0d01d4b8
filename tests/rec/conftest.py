"""A small synthetic MovieLens (atomic files) written per test: 6 users, 40 movies, known ratings."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from pllm.models.base import GENERATORS, Generation, Generator
from pllm_testkit import write_recbole_movielens

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance"]


def write_movielens(folder: Path, n_users: int = 6, n_movies: int = 40, per_user: int = 15, seed: int = 1) -> Path:
    rng = random.Random(seed)
    ratings = []
    for u in range(1, n_users + 1):
        movies = rng.sample(range(1, n_movies + 1), per_user)
        for t, m in enumerate(movies):
            ratings.append((u, m, rng.choice([2, 3, 4, 5]), 1000 + 10 * t + u))
    genres = [GENRES[m % len(GENRES)] for m in range(1, n_movies + 1)]
    return write_recbole_movielens(folder, genres, ratings, title="Film")


@pytest.fixture
def ml_dir(tmp_path: Path) -> Path:
    return write_movielens(tmp_path / "ml")


@pytest.fixture
def ml_dir_16(tmp_path: Path) -> Path:
    """16 users: enough for disjoint train, dev and test users (a user split)."""
    return write_movielens(tmp_path / "ml16", n_users=16, per_user=14)


class LetterGenerator(Generator):
    """A generate-only fake (no scoring): answers with a fixed text and records its prompts."""

    name = "test-letter"
    supports_scoring = False

    def __init__(self, model: str | None = None, answer: str = "B") -> None:
        self.model_id, self.answer, self.prompts = model or "letter", answer, []

    def generate(self, prompts, *, max_new_tokens=64, temperature=0.0, stop=None, batch_size=8):
        self.prompts.extend(prompts)
        return [Generation(text=self.answer, prompt_tokens=1, completion_tokens=1) for _ in prompts]


@pytest.fixture
def letter_backend() -> Iterator[str]:
    GENERATORS.register("test-letter", LetterGenerator, replace=True)
    yield "test-letter"
    GENERATORS.unregister("test-letter")
