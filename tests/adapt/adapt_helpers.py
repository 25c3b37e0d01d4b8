"""Movielens-shaped users and questions for adapter tests (a module of its own: `conftest` is not a
unique name to import from when several test folders run together)."""

from __future__ import annotations

from collections.abc import Sequence

from pllm.adapt.learned import ft_config, learned_generator, train_learned
from pllm.adapt.store import AdapterRecord, AdapterStore
from pllm.models.hf import HFGenerator
from pllm.pipeline import MethodConfig
from pllm.tasks.spec import TaskSpec
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


def train_first_stage(tiny: HFGenerator, spec: TaskSpec, method: MethodConfig, train: Sequence[Question],
                      store: AdapterStore) -> tuple[AdapterRecord, HFGenerator]:
    """(the task adapter's record, the merged copy) of `method`'s first stage on a tiny model: one epoch over 12
    texts of `train`, what a second stage (`ft+user+`, `ft+soft+`) is tested on top of."""
    record, _ = train_learned(tiny, spec, method, train, store=store,
                              config=ft_config(spec, method, epochs=1, batch_size=4), max_pairs=12)
    return record, learned_generator(tiny, spec, record)
