"""Named, append-only schema migrations, recorded in the `_migrations` table.

Never edit a migration that has shipped: append a new one. `MIGRATIONS` holds the user store's own tables
(users, items, questions, embeddings, summaries); a feature (keys, adapters, preferences) keeps its tables'
migrations in its own package and applies them when registered with a store (`SQLiteUserStore.register_feature`).
Migration names are one namespace across features (numbered in the order they shipped).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_users_items",
        """
        CREATE TABLE users (
            id TEXT PRIMARY KEY,
            meta TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL
        );
        CREATE TABLE items (
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            id TEXT NOT NULL,
            fields TEXT NOT NULL,
            timestamp REAL,
            created_at REAL NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (user_id, id)
        );
        CREATE INDEX items_user_seq ON items(user_id, seq);
        CREATE TABLE questions (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            input TEXT NOT NULL,
            query TEXT NOT NULL DEFAULT '{}',
            extra TEXT NOT NULL DEFAULT '{}',
            target TEXT,
            timestamp REAL,
            seq INTEGER NOT NULL
        );
        CREATE INDEX questions_user ON questions(user_id);
        CREATE TABLE question_items (
            question_id TEXT NOT NULL REFERENCES questions(id) ON DELETE CASCADE,
            user_id TEXT NOT NULL,
            item_id TEXT NOT NULL,
            position INTEGER NOT NULL,
            PRIMARY KEY (question_id, position)
        );
        CREATE INDEX question_items_user ON question_items(user_id);
        """,
    ),
    (
        "0002_embeddings_summaries",
        """
        CREATE TABLE embeddings (
            model TEXT NOT NULL,
            text_hash TEXT NOT NULL,
            user_id TEXT NOT NULL DEFAULT '',
            dim INTEGER NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (model, text_hash, user_id)
        );
        CREATE INDEX embeddings_user ON embeddings(user_id);
        CREATE TABLE profile_summaries (
            user_id TEXT NOT NULL,
            key TEXT NOT NULL,
            model TEXT NOT NULL,
            summary TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (user_id, key)
        );
        """,
    ),
    (
        # Earlier versions of an item, archived when a write replaces it (a merged or superseded memory, a
        # re-posted id), so `get_item_history` shows every version; deleting the item deletes them.
        "0008_memory_history",
        """
        CREATE TABLE item_history (
            user_id TEXT NOT NULL,
            item_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            fields TEXT NOT NULL,
            timestamp REAL,
            replaced_at REAL NOT NULL,
            PRIMARY KEY (user_id, item_id, version)
        );
        """,
    ),
]


def migrate(conn: sqlite3.Connection, migrations: Sequence[tuple[str, str]] = MIGRATIONS) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; return the names applied."""
    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
    applied = []
    for name, sql in migrations:
        if name in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in sql.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO _migrations(name, applied_at) VALUES (?, ?)", (name, time.time()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied
