"""Named, append-only schema migrations, recorded in the `_migrations` table.

Never edit a migration that has shipped: append a new one. `MIGRATIONS` holds the user store's own tables
(users, items, questions, embeddings, summaries); a feature (keys, adapters, preferences) keeps its tables'
migrations in its own package and applies them when registered with a store (`UserStore.register_feature`).
They are written in SQLite's dialect; `users/dialect.py` translates them for PostgreSQL.
Migration names are one namespace across features (numbered in the order they shipped).
"""

from __future__ import annotations

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
        # A per-user version, bumped (from one store-wide clock, so it never repeats after a forget) by every
        # write of the user's data: a server worker checks it per request and never serves a stale cache.
        "0007_user_versions",
        """
        CREATE TABLE store_clock (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            value INTEGER NOT NULL
        );
        INSERT INTO store_clock(id, value) VALUES (1, 0);
        CREATE TABLE user_versions (
            user_id TEXT PRIMARY KEY,
            version INTEGER NOT NULL
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
