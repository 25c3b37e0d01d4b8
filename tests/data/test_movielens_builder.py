from __future__ import annotations

import json
from pathlib import Path

import pytest

from pllm.data import BuildConfig, build_dataset
from pllm.errors import InputError, PllmError
from pllm.tasks.lamp import read_outputs, read_questions
from pllm.tasks.spec import get_task
from pllm_testkit import SHARED_DATA, folder_digest, read_split, write_recbole_movielens

GENRES = ["Action", "Comedy", "Drama", "Sci-Fi", "Romance"]


def write_movielens(folder: Path, n_users: int = 12, n_movies: int = 30, per_user: int = 15) -> Path:
    """A small MovieLens-100k in RecBole's atomic format (the layout of ../shared/data)."""
    genres = [f"{GENRES[m % 5]} {GENRES[(m * 3) % 5]}" for m in range(1, n_movies + 1)]
    ratings = []
    for u in range(1, n_users + 1):
        for j in range(per_user):
            ts = 880000000 + u * 1000 + j * 10 - (5 if j == 3 else 0)
            if j == 4:
                ts = 880000000 + u * 1000 + 3 * 10 - 5  # same second as item 3: never "strictly earlier"
            ratings.append((u, (u * 7 + j) % n_movies + 1, 1 + (u + j) % 5, ts))
    return write_recbole_movielens(folder, genres, ratings)


def test_user_split_disjoint_deterministic_and_valid(tmp_path):
    src = write_movielens(tmp_path / "ml")
    cfg = dict(source=str(src), split="user", seed=3, test_fraction=0.25, dev_fraction=0.25)
    res = build_dataset("movielens-rating", BuildConfig(out=str(tmp_path / "a"), **cfg))
    build_dataset("movielens-rating", BuildConfig(out=str(tmp_path / "b"), **cfg))
    assert folder_digest(tmp_path / "a") == folder_digest(tmp_path / "b")  # same seed, same bytes
    other = build_dataset("movielens-rating", BuildConfig(out=str(tmp_path / "c"), **{**cfg, "seed": 4}))
    assert other.counts == res.counts and folder_digest(tmp_path / "c") != folder_digest(tmp_path / "a")
    spec = get_task(str(tmp_path / "a"))  # the folder's task.yaml
    assert spec.name == "movielens-rating"
    users = {}
    for split in ("train", "dev", "test"):
        qs = read_split(tmp_path / "a", split, spec)
        users[split] = {q.user_id for q in qs}
        for q in qs:
            assert q.target in spec.labels
            assert q.profile and all(p.timestamp < q.timestamp for p in q.profile)
            assert q.query["title"] in q.input
    assert res.counts == {s: len(users[s]) for s in users}
    assert not (users["train"] & users["test"]) and not (users["dev"] & users["test"])
    assert sum(len(v) for v in users.values()) == 12


def test_time_split_holds_out_latest(tmp_path):
    src = write_movielens(tmp_path / "ml")
    build_dataset("movielens-rating", BuildConfig(source=str(src), out=str(tmp_path / "t"), split="time"))
    golds = {s: read_outputs(tmp_path / "t" / f"{s}_outputs.json") for s in ("train", "dev", "test")}
    qs = {s: read_questions(tmp_path / "t" / f"{s}_questions.json") for s in ("train", "dev", "test")}
    assert {q.user_id for q in qs["test"]} == {q.user_id for q in qs["train"]}  # same users in every split
    for user in {q.user_id for q in qs["test"]}:
        t_test = max(q.timestamp for q in qs["test"] if q.user_id == user)
        t_dev = max(q.timestamp for q in qs["dev"] if q.user_id == user)
        assert t_dev < t_test
        test_q = next(q for q in qs["test"] if q.user_id == user)
        assert all(p.timestamp < test_q.timestamp for p in test_q.profile)  # never the answer itself
        assert f"{user}-" in test_q.id and test_q.id not in {p.id for p in test_q.profile}
    assert all(golds[s] for s in golds)


def test_bad_sources_are_clear(tmp_path):
    with pytest.raises(InputError, match="no MovieLens-100k files"):
        build_dataset("movielens-rating", BuildConfig(source=str(tmp_path), out=str(tmp_path / "o")))
    src = write_movielens(tmp_path / "ml")
    with (src / "ml-100k.inter").open("a") as fh:
        fh.write("1\tnot-a-number\n")
    with pytest.raises(InputError, match="ml-100k.inter: record"):
        build_dataset("movielens-rating", BuildConfig(source=str(src), out=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()  # nothing half-written
    with pytest.raises(InputError, match="split"):
        BuildConfig(source="x", out="y", split="random")
    with pytest.raises(PllmError, match="unknown dataset builder"):
        build_dataset("nope", BuildConfig(source="x", out="y"))


@pytest.mark.slow
def test_build_from_shared_movielens(tmp_path):
    src = SHARED_DATA / "movielens-100k"
    if not (src / "ml-100k.inter").is_file():
        pytest.skip(f"real MovieLens-100k not present at {src} (../shared/data is optional)")
    res = build_dataset("movielens-rating", BuildConfig(source=str(src), out=str(tmp_path / "ml")))
    assert res.counts["test"] >= 200 and res.users["test"] == res.counts["test"]
    data = json.loads((tmp_path / "ml" / "test_questions.json").read_text())
    assert all(len(r["profile"]) >= 5 for r in data)
