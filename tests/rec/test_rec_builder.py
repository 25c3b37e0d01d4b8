import json

import pytest

from pllm.data.base import BUILDERS, build_dataset
from pllm.data.movielens import load_movielens
from pllm.errors import InputError
from pllm.rec.data import RecBuildConfig, check_rec_question, target_index
from pllm.tasks.lamp import read_questions


def _build(ml_dir, **kw):
    cfg = RecBuildConfig(source=str(ml_dir), out="-", split="time", negatives=kw.pop("negatives", 8), **kw)
    return BUILDERS.get("movielens-rec")().questions(cfg)


def test_candidates_never_rated_and_target_not_in_history(ml_dir):
    ml = load_movielens(ml_dir)
    rated = {}
    for r in ml.ratings:
        rated.setdefault(r.user_id, set()).add(r.movie_id)
    splits = _build(ml_dir, questions_per_user=2, min_profile=3)
    qs = [q for split in splits.values() for q in split]
    assert splits["test"] and len(qs) > len(splits["test"])
    for q in qs:
        ids = [c["movie_id"] for c in q.query["candidates"]]
        assert len(ids) == 9 and ids.count(q.target) == 1
        negatives = set(ids) - {q.target}
        assert not negatives & rated[q.user_id]  # never a movie the user rated, at any time
        history = {p.fields["movie_id"] for p in q.profile}
        assert q.target not in history
        assert all(p.timestamp < q.timestamp for p in q.profile)  # strictly earlier
        target_rating = next(r.rating for r in ml.ratings if r.user_id == q.user_id and r.movie_id == q.target)
        assert target_rating >= 4
        assert {p.fields["liked"] for p in q.profile} <= {"Yes", "No"}


def test_seeded_and_shuffled(ml_dir):
    a, b = _build(ml_dir, seed=3)["test"], _build(ml_dir, seed=3)["test"]
    assert [q.query for q in a] == [q.query for q in b]
    c = _build(ml_dir, seed=4)["test"]
    assert [q.query for q in a] != [q.query for q in c]
    assert len({target_index(q) for q in a}) > 1  # the target is not always in the same slot


def test_folder_round_trip_keeps_structured_candidates(ml_dir, tmp_path):
    out = tmp_path / "task"
    result = build_dataset("movielens-rec", RecBuildConfig(source=str(ml_dir), out=str(out), split="time", negatives=5))
    assert result.counts["test"] > 0
    assert json.loads((out / "build_config.json").read_text())["negatives"] == 5
    qs = read_questions(out / "test_questions.json", outputs=out / "test_outputs.json")
    for q in qs:
        check_rec_question(q)
        assert isinstance(q.query["candidates"][0], dict) and q.target in [c["movie_id"] for c in q.query["candidates"]]


def test_checks_reject_leaks(ml_dir):
    q = _build(ml_dir)["test"][0]
    q.profile[0].fields["movie_id"] = q.target
    with pytest.raises(InputError, match="target is in the history"):
        check_rec_question(q)
    with pytest.raises(InputError):
        RecBuildConfig(source="x", out="y", negatives=0)
