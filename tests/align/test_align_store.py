"""Preferences in the store: pairs, vectors, assignments, splits by query, importers, and forget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from align_helpers import (  # noqa: F401  (fixtures)
    DSP_PATH,
    STYLES,
    dsp_file_fixture,
    movie_pairs,
    one_thread,
    save_random_adapter,
)

import pllm.align  # noqa: F401  (registers the forget hook)
from pllm.adapt.store import AdapterStore
from pllm.align.importers import DSP_DOMAINS, import_dsp, import_hh, read_dsp, split_hh
from pllm.align.store import PreferencePair, PreferenceStore, parse_vector, query_split
from pllm.errors import InputError, NotFoundError, UnknownNameError
from pllm.users.store import SQLiteUserStore


@pytest.fixture
def pstore(tmp_path: Path):
    store = SQLiteUserStore(tmp_path / "db.sqlite3")
    yield PreferenceStore(store)
    store.close()


def test_pairs_vectors_and_assignments_roundtrip(pstore: PreferenceStore) -> None:
    pairs = movie_pairs(3)
    pairs[2].split = "test"
    assert pstore.add_pairs(pairs, user_id="u1") == 3
    assert [p.id for p in pstore.get_pairs(user_id="u1")] == ["p0", "p1", "p2"]
    assert [p.id for p in pstore.get_pairs(user_id="u1", split="test")] == ["p2"]
    assert pstore.count_pairs(user_id="u1") == {"train": 2, "test": 1}
    assert pstore.store.has_user(user_id="u1")
    pstore.add_pairs([PreferencePair(id="p0", prompt="new", chosen="a", rejected="b")], user_id="u1")  # replace
    assert pstore.get_pairs(user_id="u1")[0].prompt == "new"
    assert pstore.get_vector(user_id="u1") is None
    assert pstore.set_vector({"academy": 1, "business": 0.5}, user_id="u1") == {"academy": 1.0, "business": 0.5}
    assert pstore.get_vector(user_id="u1") == {"academy": 1.0, "business": 0.5}
    pstore.assign("dpo", "a0", user_id="u1")
    pstore.assign("dpo", "a1", user_id="u1")  # one row per user and method: replaced
    assert pstore.assign("soup", "s1", user_id="u1") == {"dpo": "a1", "soup": "s1"}
    assert pstore.get_assignment(user_id="u2") == {}
    with pytest.raises(UnknownNameError, match="unknown adapter method 'nope'"):
        pstore.assign("nope", "x", user_id="u1")
    with pytest.raises(InputError, match="does not serve users by assignment"):
        pstore.assign("lora", "x", user_id="u1")  # per-user LoRA adapters are routed by owner, not assigned


@pytest.mark.parametrize("bad", [{}, {"a": -1}, {"a": 0.0}, {"a": "x"}, {"a": float("nan")}, {"": 1}])
def test_bad_vectors_are_rejected(pstore: PreferenceStore, bad: dict) -> None:
    with pytest.raises(InputError):
        pstore.set_vector(bad, user_id="u1")


def test_bad_pairs_are_rejected_and_nothing_is_written(pstore: PreferenceStore) -> None:
    good = movie_pairs(1)[0]
    same = PreferencePair(id="x", prompt="q", chosen="same", rejected="same")
    with pytest.raises(InputError, match="record 1"):
        pstore.add_pairs([good, same], user_id="u1")
    with pytest.raises(InputError, match="split"):
        PreferencePair(id="y", prompt="q", chosen="a", rejected="b", split="dev")
    assert pstore.get_pairs(user_id="u1") == []
    assert parse_vector(["a=1", "b=0"]) == {"a": 1.0, "b": 0.0}
    with pytest.raises(InputError, match="NAME=WEIGHT"):
        parse_vector(["a"])


def test_query_split_is_deterministic_and_near_the_fraction() -> None:
    ids = [f"q{i}" for i in range(2000)]
    splits = [query_split(q, test_fraction=0.2, seed=0) for q in ids]
    assert splits == [query_split(q, test_fraction=0.2, seed=0) for q in ids]
    assert 0.17 < splits.count("test") / len(ids) < 0.23
    assert splits != [query_split(q, test_fraction=0.2, seed=1) for q in ids]
    with pytest.raises(InputError):
        query_split("q", test_fraction=1.0)


def test_import_dsp_makes_one_user_per_domain(pstore: PreferenceStore, dsp_file: Path) -> None:
    summary = import_dsp(pstore, dsp_file, rejected_per_query=2, test_fraction=0.3)
    assert set(summary.users) == {f"dsp-{d}" for d in DSP_DOMAINS}
    queries = read_dsp(dsp_file)
    for d in DSP_DOMAINS:
        user = f"dsp-{d}"
        assert pstore.get_vector(user_id=user) == {x: float(x == d) for x in DSP_DOMAINS}
        pairs = pstore.get_pairs(user_id=user)
        assert len(pairs) == 2 * len(queries)
        assert all(p.chosen.startswith(STYLES[d]) and not p.rejected.startswith(STYLES[d]) for p in pairs)
        train_q = {p.query_id for p in pairs if p.split == "train"}
        test_q = {p.query_id for p in pairs if p.split == "test"}
        assert train_q and test_q and not train_q & test_q
    # the split is by query, identical for every simulated user
    splits = [{(p.query_id, p.split) for p in pstore.get_pairs(user_id=f"dsp-{d}")} for d in DSP_DOMAINS]
    assert all(s == splits[0] for s in splits)


def test_import_hh_splits_dialogues_and_orders_by_score(pstore: PreferenceStore, tmp_path: Path) -> None:
    ctx = "\n\nHuman: how do I bake bread?\n\nAssistant:"
    rows = [{"text": [ctx + " Mix flour and water.", ctx + " No."], "score": [0.2, 1.0]},
            {"text": [ctx + " same", ctx + " same"], "score": [1.0, 0.0]},  # identical answers: skipped
            {"text": ["\n\nHuman: a\n\nAssistant: x", "\n\nHuman: b\n\nAssistant: y"], "score": [1, 0]}]
    (tmp_path / "h.json").write_text(json.dumps(rows))
    (tmp_path / "s.json").write_text(json.dumps(rows[:1]))
    summary = import_hh(pstore, {"helpful": tmp_path / "h.json", "harmless": tmp_path / "s.json"})
    assert summary.skipped == 2
    (pair,) = pstore.get_pairs(user_id="hh-helpful")
    assert (pair.prompt, pair.chosen, pair.rejected) == ("how do I bake bread?", "No.", "Mix flour and water.")
    assert pstore.get_vector(user_id="hh-harmless") == {"helpful": 0.0, "harmless": 1.0}
    assert split_hh("no assistant turn") is None
    (tmp_path / "bad.json").write_text(json.dumps([{"text": ["a"], "score": [1]}]))
    with pytest.raises(InputError, match="record 0"):
        import_hh(pstore, {"helpful": tmp_path / "bad.json"})


def test_forget_removes_preferences_and_the_users_own_adapters(pstore: PreferenceStore, tiny_generator) -> None:
    pstore.add_pairs(movie_pairs(2), user_id="u1")
    pstore.add_pairs(movie_pairs(2), user_id="u2")
    pstore.set_vector({"a": 1}, user_id="u1")
    pstore.assign("dpo", "mine", user_id="u1")
    adapters = AdapterStore()
    save_random_adapter(tiny_generator, adapters, "mine", 0, users=["u1"])
    save_random_adapter(tiny_generator, adapters, "group", 1, users=["u1", "u2"])
    report = pstore.store.forget(user_id="u1")
    assert report.rows["preference_pairs"] == 2 and report.rows["preference_vectors"] == 1
    assert report.rows["adapter_assignments"] == 1 and report.rows["align_adapters"] == 1
    assert pstore.get_pairs(user_id="u1") == [] and pstore.get_vector(user_id="u1") is None
    assert not adapters.has_named("mine") and adapters.has_named("group")
    assert len(pstore.get_pairs(user_id="u2")) == 2
    with pytest.raises(NotFoundError):
        adapters.get_named("mine")


def test_real_dsp_file_format() -> None:
    path = DSP_PATH
    if not path.is_file():
        pytest.skip(f"shared data not available: {path}")
    queries = read_dsp(path)
    assert len(queries) == 661
    assert all(set(q.responses) == {*DSP_DOMAINS, "normal"} for q in queries)
    assert len({q.id for q in queries}) == len(queries)
