"""Stores made by earlier code open and migrate: the per-method assignment columns of `0003` become one
`adapter_assignments` row per user and method (migration `0006`), and forgetting still reaches them."""

from __future__ import annotations

import sqlite3

from pllm.align.store import PreferenceStore
from pllm.users.migrations import MIGRATIONS
from pllm.users.store import SQLiteUserStore

# The schema as shipped before 0006 (migrations are append-only, so these five are what old stores hold).
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
    """A database as the code before 0006 left it, with assignment rows in the old columns."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    for name, sql in MIGRATIONS[:len(SHIPPED)]:
        for statement in sql.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO _migrations VALUES (?, 0)", (name,))
    table = conn.execute("SELECT sql FROM sqlite_master WHERE name='alignment_assignments'").fetchone()[0]
    assert " ".join(table.split()) == " ".join(OLD_ASSIGNMENTS.split())  # the shipped migration is untouched
    for uid in ("ada", "bob", "cy"):
        conn.execute("INSERT INTO users(id, meta, created_at) VALUES (?, '{}', 0)", (uid,))
    conn.executemany("INSERT INTO alignment_assignments VALUES (?, ?, ?, ?, ?)",
                     [("ada", "dpo-ada", "dsp", None, 1.0), ("bob", None, None, "ric-all", 2.0),
                      ("cy", None, None, None, 3.0)])
    conn.close()


def test_an_old_store_migrates_its_assignment_columns_to_rows(tmp_path):
    path = tmp_path / "old.sqlite3"
    _old_store(path)
    with SQLiteUserStore(path) as store:
        assert [m for m in store.applied_migrations() if m not in SHIPPED] == ["0006_adapter_assignments"]
        prefs = PreferenceStore(store)
        assert prefs.get_assignment(user_id="ada") == {"dpo": "dpo-ada", "soup": "dsp"}
        assert prefs.get_assignment(user_id="bob") == {"ric": "ric-all"}
        assert prefs.get_assignment(user_id="cy") == {}
        assert store.execute("SELECT updated_at FROM adapter_assignments WHERE user_id='bob'") == [(2.0,)]
        assert not store.execute("SELECT name FROM sqlite_master WHERE name='alignment_assignments'")
        assert store.forget(user_id="ada").rows["adapter_assignments"] == 2
    with SQLiteUserStore(path) as store:  # reopening applies nothing twice
        assert PreferenceStore(store).get_assignment(user_id="bob") == {"ric": "ric-all"}
