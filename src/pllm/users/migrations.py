"""Named, append-only schema migrations, recorded in the `_migrations` table.

Never edit a migration that has shipped: append a new one. Other modules (adapters, preferences,
tenants) add their tables the same way, by appending to `MIGRATIONS` here, the one place.
"""

from __future__ import annotations

import sqlite3
import time

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
        "0003_align_preferences",
        """
        CREATE TABLE preference_pairs (
            user_id TEXT NOT NULL,
            id TEXT NOT NULL,
            query_id TEXT NOT NULL,
            prompt TEXT NOT NULL,
            chosen TEXT NOT NULL,
            rejected TEXT NOT NULL,
            split TEXT NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}',
            seq INTEGER NOT NULL,
            PRIMARY KEY (user_id, id)
        );
        CREATE INDEX preference_pairs_user_split ON preference_pairs(user_id, split, seq);
        CREATE TABLE preference_vectors (
            user_id TEXT PRIMARY KEY,
            vector TEXT NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE TABLE alignment_assignments (
            user_id TEXT PRIMARY KEY,
            adapter TEXT,
            soup TEXT,
            ric TEXT,
            updated_at REAL NOT NULL
        );
        """,
    ),
    (
        "0004_serve_tenants_keys",
        """
        CREATE TABLE serve_tenants (
            id TEXT PRIMARY KEY,
            created_at REAL NOT NULL
        );
        CREATE TABLE serve_api_keys (
            id TEXT PRIMARY KEY,
            tenant TEXT REFERENCES serve_tenants(id),
            role TEXT NOT NULL CHECK (role IN ('tenant', 'admin')),
            key_hash TEXT NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            revoked_at REAL
        );
        CREATE INDEX serve_api_keys_tenant ON serve_api_keys(tenant);
        """,
    ),
    (
        "0005_adapters",
        """
        CREATE TABLE adapters (
            task TEXT NOT NULL,
            kind TEXT NOT NULL,
            owner TEXT NOT NULL,
            name TEXT NOT NULL,
            path TEXT NOT NULL,
            method TEXT NOT NULL,
            base_model TEXT NOT NULL,
            data_hash TEXT NOT NULL,
            n_items INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            train_seconds REAL NOT NULL,
            stale INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            PRIMARY KEY (task, kind, owner)
        );
        CREATE INDEX adapters_owner ON adapters(owner);
        CREATE TABLE adapter_members (
            task TEXT NOT NULL,
            kind TEXT NOT NULL,
            owner TEXT NOT NULL,
            member TEXT NOT NULL,
            PRIMARY KEY (task, kind, owner, member)
        );
        CREATE INDEX adapter_members_member ON adapter_members(member);
        """,
    ),
    (
        # One row per user and adapter method instead of a column per method: a new method needs no migration.
        "0006_adapter_assignments",
        """
        CREATE TABLE adapter_assignments (
            user_id TEXT NOT NULL,
            method TEXT NOT NULL,
            name TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (user_id, method)
        );
        INSERT INTO adapter_assignments(user_id, method, name, updated_at)
            SELECT user_id, 'dpo', adapter, updated_at FROM alignment_assignments WHERE adapter IS NOT NULL;
        INSERT INTO adapter_assignments(user_id, method, name, updated_at)
            SELECT user_id, 'soup', soup, updated_at FROM alignment_assignments WHERE soup IS NOT NULL;
        INSERT INTO adapter_assignments(user_id, method, name, updated_at)
            SELECT user_id, 'ric', ric, updated_at FROM alignment_assignments WHERE ric IS NOT NULL;
        DROP TABLE alignment_assignments;
        """,
    ),
]


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; return the names applied."""
    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
    applied = []
    for name, sql in MIGRATIONS:
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
