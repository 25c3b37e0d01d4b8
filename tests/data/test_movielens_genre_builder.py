from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from pllm.data import BuildConfig, build_dataset
from pllm.data.movielens import Rating, load_movielens
from pllm.data.movielens_genre import GENRE_LABELS, genre_tag, user_tags
from pllm.tasks.lamp import read_questions
from pllm.tasks.spec import get_task
from pllm_testkit import SHARED_DATA, folder_digest, read_split, write_recbole_movielens

GENRES = ["Action", "Comedy", "Drama", "Sci-Fi", "Romance"]


def write_raw(folder: Path, n_users: int = 12, n_movies: int = 30, per_user: int = 14) -> Path:
    """MovieLens in RecBole's atomic format; user u likes (rates 5) two genres, dislikes the rest."""
    genres = ["unknown" if m == n_movies else f"{GENRES[m % 5]} {GENRES[(m * 3 + 1) % 5]}"
              for m in range(1, n_movies + 1)]
    ratings = []
    for u in range(1, n_users + 1):
        liked = {GENRES[u % 5], GENRES[(u + 2) % 5]}
        for j in range(per_user):
            m = (u * 7 + j * 2) % n_movies + 1
            ts = 880000000 + u * 1000 + (j // 2) * 10  # pairs share a second
            ratings.append((u, m, 5 if GENRES[m % 5] in liked else 2, ts))
    return write_recbole_movielens(folder, genres, ratings)


def test_tag_rule_prefers_liked_then_seen_then_genre_order():
    liked, seen = Counter({"Comedy": 2, "Drama": 2}), Counter({"Comedy": 3, "Drama": 5, "War": 9})
    assert genre_tag(("Comedy", "Drama", "War"), liked, seen) == "Drama"  # tie on liked: seen more
    assert genre_tag(("War", "Western"), liked, seen) == "War"
    assert genre_tag(("Western", "Action"), Counter(), Counter()) == "Action"  # MovieLens order
    assert genre_tag(("unknown",), liked, seen) is None
    assert len(GENRE_LABELS) == 18 and "unknown" not in GENRE_LABELS


def test_user_tags_never_see_the_same_second(tmp_path):
    ml = load_movielens(write_raw(tmp_path / "raw"))
    history = [Rating("u", "1", 5, 10), Rating("u", "6", 5, 10), Rating("u", "11", 2, 20)]
    tags = user_tags(history, ml)
    # movies 1 and 6 share a second: neither counts for the other, so both fall back to genre order
    g1, g6 = ml.movies["1"].genres, ml.movies["6"].genres
    assert tags[0] == min(g1, key=GENRE_LABELS.index) and tags[1] == min(g6, key=GENRE_LABELS.index)
    liked = Counter(g for m in ("1", "6") for g in ml.movies[m].genres)
    assert tags[2] == genre_tag(ml.movies["11"].genres, liked, liked)


def test_build_user_and_time_splits(tmp_path):
    src = write_raw(tmp_path / "raw")
    cfg = dict(source=str(src), split="user", seed=1, dev_fraction=0.25, test_fraction=0.25)
    res = build_dataset("movielens-genre", BuildConfig(out=str(tmp_path / "a"), **cfg))
    build_dataset("movielens-genre", BuildConfig(out=str(tmp_path / "b"), **cfg))
    assert folder_digest(tmp_path / "a") == folder_digest(tmp_path / "b")
    spec = get_task(tmp_path / "a")
    assert spec.name == "movielens-genre" and spec.kind == "classification" and spec.labels == GENRE_LABELS
    ml = load_movielens(src)
    users: dict[str, set[str]] = {}
    for split in ("train", "dev", "test"):
        qs = read_split(tmp_path / "a", split, spec)
        users[split] = {q.user_id for q in qs}
        for q in qs:
            movie = ml.movies[q.id.split("-")[1]]
            assert q.target in movie.genres and q.target in spec.labels
            assert set(q.query) >= {"title", "year"} and "genres" not in q.query  # the title only
            assert "genres" not in q.input.split("?")[0] and movie.title in q.input
            assert len(q.profile) >= 5 and all(p.timestamp < q.timestamp for p in q.profile)
            # the label follows the rule on the profile alone (the user's strictly earlier movies)
            liked = Counter(g for p in q.profile for g in p.fields["genres"].split(", ")
                            if int(p.fields["rating"]) >= 4)
            seen = Counter(g for p in q.profile for g in p.fields["genres"].split(", "))
            assert q.target == genre_tag(movie.genres, liked, seen)
    assert res.counts["test"] == len(users["test"]) > 0
    assert not users["train"] & users["test"] and not users["dev"] & users["test"]
    # most users like a genre of their own: the personal label differs from a per-movie constant
    assert len({q.target for q in read_split(tmp_path / "a", "train", spec)}) > 1

    build_dataset("movielens-genre", BuildConfig(source=str(src), out=str(tmp_path / "t"), split="time"))
    qs = {s: read_questions(tmp_path / "t" / f"{s}_questions.json") for s in ("train", "dev", "test")}
    for q in qs["test"]:
        dev = [d for d in qs["dev"] if d.user_id == q.user_id]
        assert dev and max(d.timestamp for d in dev) < q.timestamp
        assert q.id not in {p.id for p in q.profile}


@pytest.mark.slow
def test_build_genre_from_shared_movielens(tmp_path):
    src = SHARED_DATA / "movielens-100k"
    if not (src / "ml-100k.inter").is_file():
        pytest.skip(f"real MovieLens-100k not present at {src} (../shared/data is optional)")
    res = build_dataset("movielens-genre", BuildConfig(source=str(src), out=str(tmp_path / "g"), split="time",
                                                       max_users=300))
    assert res.counts["test"] == 300
    golds = json.loads((tmp_path / "g" / "test_outputs.json").read_text())["golds"]
    assert len({g["output"] for g in golds}) >= 5
