"""Stores made by earlier code open and migrate. Before features owned their tables, every migration sat in
`users/migrations.py` and ran on open; now keys, adapters and preferences apply theirs when registered, under
the same names, so an old file applies nothing twice. The per-method assignment columns of `0003` become one
`adapter_assignments` row per user and method (`0006`), and forgetting still reaches every feature."""

from __future__ import annotations

import sqlite3

from pllm.adapt.store import ADAPTERS, AdapterStore
from pllm.align.store import PREFERENCES, PreferenceStore
from pllm.serve.auth import KEYS, KeyStore
from pllm.serve.features import register_features
from pllm.types import ProfileItem
from pllm.users.migrations import MIGRATIONS
from pllm.users.store import SQLiteUserStore

# What the code before 0006 applied on open, in this order (shipped migrations never change).
SHIPPED = ["0001_users_items", "0002_embeddings_summaries", "0003_align_preferences", "0004_serve_tenants_keys",
           "0005_adapters"]
OLD_ASSIGNMENTS = """CREATE TABLE alignment_assignments (
            user_id TEXT PRIMARY KEY,
            adapter TEXT,
            soup TEXT,
            ric TEXT,
            updated_at REAL NOT NULL
        )"""


def _old_store(path) -> None:
    """A database as the code before 0006 left it: every shipped migration applied, rows in each feature."""
    shipped = dict([*MIGRATIONS, *PREFERENCES.migrations, *KEYS.migrations, *ADAPTERS.migrations])
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    for name in SHIPPED:
        for statement in shipped[name].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO _migrations VALUES (?, 0)", (name,))
    table = conn.execute("SELECT sql FROM sqlite_master WHERE name='alignment_assignments'").fetchone()[0]
    assert " ".join(table.split()) == " ".join(OLD_ASSIGNMENTS.split())  # the shipped 0003, unchanged
    for uid in ("ada", "bob", "cy"):
        conn.execute("INSERT INTO users(id, meta, created_at) VALUES (?, '{}', 0)", (uid,))
    conn.execute("INSERT INTO items VALUES ('ada', 'i1', '{\"text\": \"hi\"}', NULL, 0, 1)")
    conn.executemany("INSERT INTO alignment_assignments VALUES (?, ?, ?, ?, ?)",
                     [("ada", "dpo-ada", "dsp", None, 1.0), ("bob", None, None, "ric-all", 2.0),
                      ("cy", None, None, None, 3.0)])
    conn.execute("INSERT INTO preference_vectors VALUES ('ada', '{\"x\": 1.0}', 0)")
    conn.execute("INSERT INTO serve_tenants VALUES ('acme', 0)")
    conn.execute("INSERT INTO serve_api_keys VALUES ('k1', 'acme', 'tenant', 'h', '', 0, NULL)")
    conn.execute("INSERT INTO adapters VALUES ('t', 'user', 'ada', 'u_x', '/nowhere', 'lora', 'm', 'h', 1, 1, 1.0, "
                 "0, 0)")
    conn.close()


def test_an_old_store_opens_and_migrates_every_feature(tmp_path):
    path = tmp_path / "old.sqlite3"
    _old_store(path)
    with register_features(SQLiteUserStore(path)) as store:
        assert store.features == ["adapters", "keys", "preferences"]
        assert [m for m in store.applied_migrations() if m not in SHIPPED] == ["0006_adapter_assignments",
                                                                               "0007_user_versions",
                                                                               "0008_memory_history"]
        prefs = PreferenceStore(store)
        assert prefs.get_assignment(user_id="ada") == {"dpo": "dpo-ada", "soup": "dsp"}
        assert prefs.get_assignment(user_id="bob") == {"ric": "ric-all"}
        assert prefs.get_assignment(user_id="cy") == {}
        assert store.execute("SELECT updated_at FROM adapter_assignments WHERE user_id='bob'") == [(2.0,)]
        assert not store.execute("SELECT name FROM sqlite_master WHERE name='alignment_assignments'")
        assert [k.id for k in KeyStore(store).list()] == ["k1"]
        assert AdapterStore(db=store).db is store
        rows = store.forget(user_id="ada").rows
        assert rows["adapter_assignments"] == 2 and rows["preference_vectors"] == 1 and rows["items"] == 1
        assert rows["adapters"] == 1  # the adapters feature's hook ran
        # An item stored before item history existed gets one when a write replaces it.
        store.add_items([ProfileItem(id="old", fields={"text": "a"})], user_id="bob")
        store.add_items([ProfileItem(id="old", fields={"text": "b"})], user_id="bob", keep_history=True)
        assert [v.fields["text"] for v in store.get_item_history("old", user_id="bob")] == ["a", "b"]
    with SQLiteUserStore(path) as store:  # reopening applies nothing twice
        assert PreferenceStore(store).get_assignment(user_id="bob") == {"ric": "ric-all"}
        assert store.applied_migrations() == sorted([*SHIPPED, "0006_adapter_assignments", "0007_user_versions",
                                                     "0008_memory_history"])


def test_a_new_store_holds_only_the_features_registered_with_it(tmp_path):
    with SQLiteUserStore(tmp_path / "s.db") as store:
        assert store.features == [] and store.applied_migrations() == [n for n, _ in MIGRATIONS]
        PreferenceStore(store)  # a feature's storage registers its feature with the store it is given
        PreferenceStore(store)
        assert store.features == ["preferences"]
        assert store.applied_migrations() == ["0001_users_items", "0002_embeddings_summaries",
                                              "0003_align_preferences", "0006_adapter_assignments",
                                              "0007_user_versions", "0008_memory_history"]
