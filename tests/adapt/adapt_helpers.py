"""Movielens-shaped users and questions for adapter tests (a module of its own: `conftest` is not a
unique name to import from when several test folders run together)."""

from __future__ import annotations

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
