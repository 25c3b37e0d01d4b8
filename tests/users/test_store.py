from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pllm.errors import InputError, NotFoundError
from pllm.tasks.lamp import read_questions, write_questions
from pllm.types import ProfileItem
from pllm.users.migrations import MIGRATIONS
from pllm.users.store import SQLiteUserStore, UserStore, open_store
from pllm_testkit import lamp3_records


def _import(store: UserStore, path: Path) -> None:
    store.import_questions(read_questions(path))


def _snapshot(store: UserStore) -> list:
    return [store.execute(f"SELECT * FROM {t} ORDER BY 1, 2") for t in ("users", "items", "questions")]


def test_migrations_are_named_and_recorded(tmp_path):
    with SQLiteUserStore(tmp_path / "s.db") as store:
        assert store.applied_migrations() == [name for name, _ in MIGRATIONS]
    with SQLiteUserStore(tmp_path / "s.db") as store:  # reopening applies nothing twice
        assert store.applied_migrations() == [name for name, _ in MIGRATIONS]
        assert store.execute("PRAGMA journal_mode")[0][0] == "wal"


def test_import_stores_shared_items_once_and_round_trips(tmp_path, store_location, lamp3_files):
    q, _ = lamp3_files
    with open_store(store_location) as store:
        rep = store.import_questions(read_questions(q))
        assert (rep.questions, rep.users) == (3, 2)
        assert rep.duplicate_items == 1  # r1 appears in both of u1's questions
        assert [i.id for i in store.get_items(user_id="u1")] == ["r1", "r2", "r3", "r4"]
        assert store.get_user(user_id="u1").n_questions == 2
        out = tmp_path / "export.json"
        write_questions(out, store.get_questions())
    exported = json.loads(out.read_text())
    original = lamp3_records()
    assert [r["id"] for r in exported] == [r["id"] for r in original]
    for a, b in zip(exported, original):
        assert a["input"] == b["input"] and a["user_id"] == b["user_id"]
        assert a["profile"] == b["profile"]


def test_questions_without_user_id_are_their_own_user(tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps([{"id": 7, "input": "x", "profile": [{"id": "a", "text": "t"}]}]))
    qs = read_questions(path)
    assert qs[0].user_id == "7" and qs[0].id == "7"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"[{\"id\": 1,", "invalid JSON"),
        (b"\xff\xfe not utf8", "UTF-8"),
        (json.dumps({"id": 1}).encode(), "must be a list"),
        (json.dumps([{"input": "x", "profile": []}]).encode(), "record 0: field 'id': missing 'id'"),
        (json.dumps([{"id": "a", "profile": []}]).encode(), "field 'input'"),
        (json.dumps([{"id": "a", "input": "x"}]).encode(), "field 'profile'"),
        (json.dumps([{"id": "a", "input": 3, "profile": []}]).encode(), "must be a string"),
        (json.dumps([{"id": "a", "input": "x", "profile": {}}]).encode(), "must be a list"),
        (json.dumps([{"id": "a", "input": "x", "profile": []},
                     {"id": "b", "input": "x", "profile": [{"text": "no id"}]}]).encode(),
         "record 1: field 'profile[0]': missing 'id'"),
        (json.dumps([{"id": [1], "input": "x", "profile": []}]).encode(), "field 'id'"),
    ],
)
def test_malformed_files_are_refused_and_store_unchanged(tmp_path, store_location, lamp3_files, content, needle):
    good, _ = lamp3_files
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    with open_store(store_location) as store:
        _import(store, good)
        before = _snapshot(store)
        with pytest.raises(InputError) as err:
            _import(store, bad)
        assert str(bad) in str(err.value) and needle in str(err.value)
        assert _snapshot(store) == before


def test_import_is_one_transaction(tmp_path, store_location, lamp3_files):
    """A failure half way through the writes rolls back everything, including earlier questions."""
    good, _ = lamp3_files
    qs = read_questions(good)
    qs[2].profile[0].fields = {"bad": object()}  # not JSON-serializable: fails on the third question
    with open_store(store_location) as store:
        with pytest.raises(TypeError):
            store.import_questions(qs)
        assert store.list_users() == []


def test_forget_removes_every_trace(tmp_path, lamp3_files, store_location):
    q, _ = lamp3_files
    secret = "zyxwv-unique-secret-text"
    with open_store(store_location) as store:
        _import(store, q)
        store.add_items([ProfileItem(id="sx", fields={"text": secret})], user_id="u2")
        store.put_embeddings("m", [("h-u2", np.ones(4, np.float32))], user_id="u2")
        store.put_embeddings("m", [("h-u1", np.ones(4, np.float32))], user_id="u1")
        store.put_summary(user_id="u2", key="k", model="m", summary=f"likes {secret}")
        report = store.forget(user_id="u2")
        assert report.rows["items"] == 3 and report.rows["embeddings"] == 1 and report.rows["profile_summaries"] == 1
        for table in ("users", "items", "questions", "question_items", "embeddings", "profile_summaries"):
            col = "id" if table == "users" else "user_id"
            assert store.execute(f"SELECT COUNT(*) FROM {table} WHERE {col}='u2'")[0][0] == 0
        assert not store.has_user(user_id="u2")
        assert store.get_items(user_id="u1")  # other users untouched
        assert store.get_embeddings("m", ["h-u1"])
        with pytest.raises(NotFoundError):
            store.forget(user_id="u2")
    # The text is gone from the files themselves (secure_delete + WAL checkpoint), not only unlinked.
    for f in tmp_path.glob("store.sqlite3*"):
        data = f.read_bytes()
        assert secret.encode() not in data
        assert b"awful, broke in a day" not in data


def test_items_api_and_embeddings(tmp_path, store_location):
    with open_store(store_location) as store:
        n = store.add_items([ProfileItem(id=str(i), fields={"text": f"t{i}"}, timestamp=float(i)) for i in range(5)],
                            user_id="u")
        assert n == 5
        assert [i.id for i in store.get_items(user_id="u", limit=2, offset=1)] == ["1", "2"]
        assert store.delete_item("1", user_id="u") and not store.delete_item("1", user_id="u")
        vec = np.arange(3, dtype=np.float32)
        store.put_embeddings("m", [("h", vec)], user_id="u")
        np.testing.assert_array_equal(store.get_embeddings("m", ["h", "missing"])["h"], vec)
        with pytest.raises(InputError):
            store.add_items([ProfileItem(id="", fields={})], user_id="u")
        with pytest.raises(InputError):
            store.add_items([], user_id=" ")
        with pytest.raises(NotFoundError, match="'nobody'"):
            store.get_user(user_id="nobody")


def test_not_a_database(tmp_path):
    bad = tmp_path / "x.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(InputError, match="x.db"):
        SQLiteUserStore(bad)


def test_per_user_reads_and_embedding_cleanup(tmp_path, store_location):
    """The memory service's storage goes through these: items by id, counts, user-scoped vectors, and deleting
    a user's vectors except those their remaining items still need."""
    with open_store(store_location) as store:
        store.add_items([ProfileItem(id="a", fields={"t": "x"}), ProfileItem(id="b", fields={"t": "y"})], user_id="u")
        assert sorted(i.id for i in store.get_items_by_id(["b", "zz", "a"], user_id="u")) == ["a", "b"]
        assert store.get_items_by_id(["a"], user_id="other") == []
        assert store.count_items(user_id="u") == 2 and store.has_user(user_id="u") and not store.has_user(user_id="v")
        vec = np.ones(3, dtype=np.float32)
        store.put_embeddings("m", [("hx", vec), ("hy", vec)], user_id="u")
        store.put_embeddings("m", [("hv", vec)], user_id="v")
        assert set(store.get_embeddings("m", ["hx", "hv"], user_id="u")) == {"hx"}
        assert set(store.get_embeddings("m", ["hx", "hv"])) == {"hx", "hv"}
        assert store.delete_embeddings(["hx", "hy", "hv"], user_id="u", in_use=lambda items: {"hy"}) == 1
        assert store.count_embeddings(user_id="u") == 1 and store.count_embeddings(user_id="v") == 1
        store.put_summary(user_id="u", key="k", model="m", summary="likes x")
        assert [s["summary"] for s in store.get_summaries(user_id="u")] == ["likes x"]


def test_item_history_keeps_replaced_versions_and_goes_with_the_item(store_location):
    with open_store(store_location) as store:
        store.add_items([ProfileItem(id="a", fields={"text": "v1"}, timestamp=1.0)], user_id="u")
        store.add_items([ProfileItem(id="a", fields={"text": "v2"}, timestamp=2.0)], user_id="u")  # no history
        store.add_items([ProfileItem(id="a", fields={"text": "v3"}, timestamp=3.0)], user_id="u", keep_history=True)
        store.add_items([ProfileItem(id="b", fields={"text": "x"})], user_id="u", keep_history=True)  # new: none
        versions = store.get_item_history("a", user_id="u")
        assert [(v.version, v.fields["text"], v.timestamp) for v in versions] == [(1, "v2", 2.0), (2, "v3", 3.0)]
        assert versions[0].replaced_at is not None and versions[1].replaced_at is None
        assert [v.fields["text"] for v in store.get_item_history("b", user_id="u")] == ["x"]
        assert store.get_item_history("a", user_id="other") == [] and store.get_item_history("z", user_id="u") == []
        assert store.delete_item("a", user_id="u")
        assert store.execute("SELECT COUNT(*) FROM item_history WHERE item_id='a'") == [(0,)]
        store.add_items([ProfileItem(id="b", fields={"text": "y"})], user_id="u", keep_history=True)
        assert store.forget(user_id="u").rows["item_history"] == 1
        assert store.execute("SELECT COUNT(*) FROM item_history") == [(0,)]
