"""The user store: users, their profile items, imported questions, persisted item embeddings and
cached profile summaries, in SQLite (WAL, the default) or PostgreSQL (`postgresql://...`, shared by many
server workers or machines).

`UserStore` holds every query, written once in SQLite's dialect (`users/dialect.py` translates it for
PostgreSQL); `SQLiteUserStore` and `PostgresUserStore` only connect, lock and open transactions. Every write
is one transaction and bumps the user's version (`user_version`), which a process caching the user's data
checks per request. `forget` removes every row of a user; SQLite runs with `secure_delete` on and
checkpoints the WAL, PostgreSQL vacuums the tables the rows left, so the user's text is not just unlinked
from an index.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import threading
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeAlias, TypedDict, TypeVar

import numpy as np

from pllm.errors import InputError, NotFoundError, PllmError
from pllm.paths import default_db_path, pllm_home
from pllm.types import JSONValue, ProfileItem, Question
from pllm.users.dialect import POSTGRES, SQLITE, Dialect
from pllm.users.migrations import MIGRATIONS

if TYPE_CHECKING:
    import psycopg

SQLValue: TypeAlias = str | int | float | bytes | None
"""A value the database driver binds as a query parameter."""
STORE_ENV = "PLLM_STORE"  # the store when no --store/--db is given: a SQLite path or a postgresql:// URL
_CORE_TABLES = frozenset({"question_items", "questions", "items", "item_history", "embeddings",
                          "profile_summaries", "users", "user_versions"})
_NO_LIMIT = 2**62  # LIMIT for "all rows" that both dialects accept


class EmbeddingRows(NamedTuple):
    """Vectors of one embedding model by text hash, to be written with the items they belong to."""

    model: str
    rows: Sequence[tuple[str, np.ndarray]]


class StoreError(PllmError):
    """A store that cannot be opened as asked: unreachable, malformed URL, missing database, newer schema."""


class _Cursor(Protocol):
    """What a statement returns (sqlite3's and psycopg's cursors both are one; rows are as dynamic as the drivers
    type them, which is why these two protocols stay private)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class _Connection(Protocol):
    """The connection a write transaction hands out: statements in SQLite's dialect, whatever the database."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> _Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> _Cursor: ...


@dataclass(frozen=True)
class Feature:
    """A feature that keeps data in the user store (keys, adapters, preferences): its own tables' migrations and
    what forgetting a user must also remove. Registered with a store explicitly (`register_feature`) by the
    feature's storage class and at start-up, never by importing a module.

    `forget(store, user_id)` runs after the user's rows are gone (tables with a `user_id` column are emptied
    by the store itself); it removes artifacts derived from the user's data (adapter files) and returns
    what it removed, by kind."""

    name: str
    migrations: tuple[tuple[str, str], ...] = ()
    forget: Callable[[UserStore, str], dict[str, int]] | None = None


@dataclass
class UserSummary:
    id: str
    n_items: int
    n_questions: int
    meta: dict[str, JSONValue] = field(default_factory=dict)


class SummaryRecord(TypedDict):
    """One cached profile summary, as `get_summaries` lists it."""

    key: str
    model: str
    summary: str
    created_at: float


@dataclass(frozen=True)
class ItemVersion:
    """One version of an item: `version` counts from 1; `replaced_at` is when a later write replaced it
    (None for the current one)."""

    version: int
    fields: dict[str, JSONValue]
    timestamp: float | None
    replaced_at: float | None


@dataclass
class ImportReport:
    questions: int = 0
    users: int = 0
    items: int = 0
    duplicate_items: int = 0


@dataclass
class ForgetReport:
    user_id: str
    rows: dict[str, int] = field(default_factory=dict)


_Store = TypeVar("_Store", bound="UserStore")


class UserStore(ABC):
    """Every user store: users, items, questions, embeddings, summaries and the features registered with it.

    The queries live here, once; an implementation gives the connection (`transaction`, `execute`), the
    dialect its SQL is translated to, and what forgetting does to the files. Opening a store with
    `features` (the server and CLI pass every built-in one) first checks that the database holds no
    migration this code does not know (a newer pllm wrote it) and writes nothing if it does."""

    dialect: Dialect = SQLITE
    location: str  # where the store is, for messages (a URL without its password)
    # Every implementation holds one connection, used under one lock (threads share the store).
    _lock: threading.RLock
    _conn: Any

    def __init__(self, features: Sequence[Feature] = ()) -> None:
        self._features: dict[str, Feature] = {}
        if features:
            self._check_schema([*MIGRATIONS, *(m for f in features for m in f.migrations)])
        self._migrate(MIGRATIONS)
        for feature in features:
            self.register_feature(feature)

    # -- what an implementation provides ----------------------------------------------------------
    @abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[_Connection]:
        """One write transaction; writers are serialized (a busy writer waits instead of failing later)."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[SQLValue] = ()) -> list[tuple]:
        """One statement outside a write transaction; its rows (none for a statement without a result)."""

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @property
    def home(self) -> Path:
        """The folder for files derived from this store's users (adapters): the SQLite file's folder, else
        $PLLM_HOME."""
        return pllm_home()

    def set_synchronous(self, mode: str) -> None:
        """How durable an acknowledged write is on this connection (FULL/EXTRA: survives power loss)."""

    def _after_forget(self, tables: Sequence[str]) -> None:
        """Make the forgotten rows unrecoverable from the files (tables: those that lost rows)."""

    def __enter__(self: _Store) -> _Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- migrations and features ------------------------------------------------------------------
    def _table_exists(self, name: str) -> bool:
        return bool(self.execute(self.dialect.table_exists_sql, (name,)))

    def _check_schema(self, known: Sequence[tuple[str, str]]) -> None:
        if not self._table_exists("_migrations"):
            return
        names = {n for n, _ in known}
        newer = sorted(r[0] for r in self.execute("SELECT name FROM _migrations") if r[0] not in names)
        if newer:
            raise StoreError(f"the store {self.location} has a newer schema than this pllm (migrations it does "
                             f"not know: {', '.join(newer)}); upgrade pllm to open it")

    def _migrate(self, migrations: Sequence[tuple[str, str]]) -> list[str]:
        """Apply pending migrations in order, each in its own transaction (rechecked under the write lock,
        so workers starting together apply each once); return the names applied."""
        done = {r[0] for r in self.execute("SELECT name FROM _migrations")} if self._table_exists("_migrations") \
            else set()
        applied = []
        for name, sql in migrations:
            if name in done:  # nothing to do: opening an up-to-date store takes no write lock
                continue
            with self.transaction() as conn:
                conn.execute(self.dialect.ddl(
                    "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"))
                if conn.execute("SELECT 1 FROM _migrations WHERE name=?", (name,)).fetchone():
                    continue
                for statement in self.dialect.ddl(sql).split(";"):
                    if statement.strip():
                        conn.execute(statement, ())
                conn.execute("INSERT INTO _migrations(name, applied_at) VALUES (?, ?)", (name, time.time()))
            applied.append(name)
        return applied

    def register_feature(self, feature: Feature) -> None:
        """Apply the feature's pending migrations and add its forget hook (once per feature name)."""
        known = self._features.get(feature.name)
        if known is not None:
            if known != feature:
                raise ValueError(f"another feature named {feature.name!r} is registered with this store")
            return
        self._migrate(feature.migrations)
        self._features[feature.name] = feature

    @property
    def features(self) -> list[str]:
        return sorted(self._features)

    def applied_migrations(self) -> list[str]:
        return [r[0] for r in self.execute("SELECT name FROM _migrations ORDER BY name")]

    # -- versions -----------------------------------------------------------------------------------
    @staticmethod
    def bump_version(conn: _Connection, user_id: str) -> int:
        """Inside a write transaction: give the user a new version from the store-wide clock (so a version
        never repeats, even after the user is forgotten and written again)."""
        conn.execute("UPDATE store_clock SET value = value + 1 WHERE id = 1")
        version = int(conn.execute("SELECT value FROM store_clock WHERE id = 1").fetchone()[0])
        conn.execute("INSERT INTO user_versions(user_id, version) VALUES (?, ?) "
                     "ON CONFLICT(user_id) DO UPDATE SET version = excluded.version", (user_id, version))
        return version

    def user_version(self, *, user_id: str) -> int:
        """The user's current version (0: nothing written since the store was created, or forgotten); a
        cache of the user's data built after reading version v is current while this still returns v."""
        rows = self.execute("SELECT version FROM user_versions WHERE user_id=?", (user_id,))
        return int(rows[0][0]) if rows else 0

    # -- users and items ------------------------------------------------------------------------
    @staticmethod
    def _ensure_user(conn: _Connection, user_id: str, meta: Mapping[str, JSONValue] | None = None) -> bool:
        cur = conn.execute("INSERT OR IGNORE INTO users(id, meta, created_at) VALUES (?, ?, ?)",
                           (user_id, json.dumps(dict(meta or {})), time.time()))
        return cur.rowcount > 0

    @staticmethod
    def _next_seq(conn: _Connection, table: str) -> int:
        return int(conn.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {table}").fetchone()[0]) + 1

    def add_user(self, *, user_id: str, meta: Mapping[str, JSONValue] | None = None) -> bool:
        _check_user_id(user_id)
        with self.transaction() as conn:
            self.bump_version(conn, user_id)
            return self._ensure_user(conn, user_id, meta)

    def _insert_items(self, conn: _Connection, items: Sequence[ProfileItem], user_id: str) -> int:
        seq = self._next_seq(conn, "items")
        now = time.time()
        conn.executemany(
            "INSERT INTO items(user_id, id, fields, timestamp, created_at, seq) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(user_id, id) DO UPDATE SET fields=excluded.fields, timestamp=excluded.timestamp",
            [(user_id, item.id, json.dumps(item.fields, ensure_ascii=False), item.timestamp, now, seq + n)
             for n, item in enumerate(items)],
        )
        return len(items)

    def add_items(self, items: Sequence[ProfileItem], *, user_id: str, keep_history: bool = False,
                  embeddings: EmbeddingRows | None = None) -> int:
        """Add or replace items (by id) for a user, creating the user if new; one transaction. With
        `keep_history`, a replaced item's previous version is archived in the same transaction; `embeddings`
        (the items' new vectors, user-scoped) are written in it too, so a write is all or nothing and costs
        one commit (one fsync under synchronous=FULL)."""
        _check_user_id(user_id)
        for i, item in enumerate(items):
            if not isinstance(item.id, str) or not item.id:
                raise InputError("item id must be a non-empty string", index=i, field="id")
            if not isinstance(item.fields, dict):
                raise InputError("item fields must be an object", index=i, field="fields")
        with self.transaction() as conn:
            self._ensure_user(conn, user_id)
            if keep_history:
                self._archive(conn, [it.id for it in items], user_id)
            self.bump_version(conn, user_id)
            if embeddings is not None and embeddings.rows:
                self._put_embeddings(conn, embeddings, user_id)
            return self._insert_items(conn, items, user_id)

    @staticmethod
    def _archive(conn: _Connection, ids: Sequence[str], user_id: str) -> None:
        now = time.time()
        for item_id in ids:
            conn.execute(
                "INSERT INTO item_history(user_id, item_id, version, fields, timestamp, replaced_at) "
                "SELECT i.user_id, i.id, (SELECT COUNT(*) FROM item_history h WHERE h.user_id=i.user_id "
                "AND h.item_id=i.id) + 1, i.fields, i.timestamp, ? FROM items i WHERE i.user_id=? AND i.id=?",
                (now, user_id, item_id))

    def get_item_history(self, item_id: str, *, user_id: str) -> list[ItemVersion]:
        """Every version of the item, oldest first, the current one last; [] when the item does not exist."""
        current = self.get_items_by_id([item_id], user_id=user_id)
        if not current:
            return []
        rows = self.execute("SELECT version, fields, timestamp, replaced_at FROM item_history "
                            "WHERE user_id=? AND item_id=? ORDER BY version", (user_id, item_id))
        out = [ItemVersion(version=r[0], fields=json.loads(r[1]), timestamp=r[2], replaced_at=r[3]) for r in rows]
        return [*out, ItemVersion(version=len(out) + 1, fields=dict(current[0].fields),
                                  timestamp=current[0].timestamp, replaced_at=None)]

    def get_items(self, *, user_id: str, limit: int | None = None, offset: int = 0) -> list[ProfileItem]:
        rows = self.execute(
            "SELECT id, fields, timestamp FROM items WHERE user_id=? ORDER BY seq LIMIT ? OFFSET ?",
            (user_id, _NO_LIMIT if limit is None else int(limit), int(offset)),
        )
        return [ProfileItem(id=r[0], fields=json.loads(r[1]), user_id=user_id, timestamp=r[2]) for r in rows]

    def get_items_by_id(self, ids: Sequence[str], *, user_id: str) -> list[ProfileItem]:
        """The user's items with these ids (those that exist), in no particular order."""
        out: list[ProfileItem] = []
        for start in range(0, len(ids), 500):
            chunk = list(ids[start:start + 500])
            rows = self.execute("SELECT id, fields, timestamp FROM items WHERE user_id=? AND id IN (%s)"
                                % ",".join("?" * len(chunk)), (user_id, *chunk))
            out.extend(ProfileItem(id=r[0], fields=json.loads(r[1]), user_id=user_id, timestamp=r[2]) for r in rows)
        return out

    def count_items(self, *, user_id: str) -> int:
        return int(self.execute("SELECT COUNT(*) FROM items WHERE user_id=?", (user_id,))[0][0])

    def has_user(self, *, user_id: str) -> bool:
        return bool(self.execute("SELECT 1 FROM users WHERE id=?", (user_id,)))

    def delete_item(self, item_id: str, *, user_id: str) -> bool:
        with self.transaction() as conn:
            n = conn.execute("DELETE FROM items WHERE user_id=? AND id=?", (user_id, item_id)).rowcount
            conn.execute("DELETE FROM item_history WHERE user_id=? AND item_id=?", (user_id, item_id))
            if n:
                self.bump_version(conn, user_id)
        return n > 0

    def list_users(self) -> list[UserSummary]:
        rows = self.execute(
            "SELECT u.id, u.meta, (SELECT COUNT(*) FROM items i WHERE i.user_id=u.id), "
            "(SELECT COUNT(*) FROM questions q WHERE q.user_id=u.id) FROM users u ORDER BY u.id"
        )
        return [UserSummary(id=r[0], meta=json.loads(r[1]), n_items=r[2], n_questions=r[3]) for r in rows]

    def get_user(self, *, user_id: str) -> UserSummary:
        rows = self.execute(
            "SELECT u.id, u.meta, (SELECT COUNT(*) FROM items i WHERE i.user_id=u.id), "
            "(SELECT COUNT(*) FROM questions q WHERE q.user_id=u.id) FROM users u WHERE u.id=?", (user_id,)
        )
        if not rows:
            raise NotFoundError(f"user {user_id!r} is not in the store ({self.location})")
        r = rows[0]
        return UserSummary(id=r[0], meta=json.loads(r[1]), n_items=r[2], n_questions=r[3])

    def forget(self, *, user_id: str) -> ForgetReport:
        """Delete every trace of a user: rows, embeddings, cached summaries, and derived artifacts.

        Embeddings and summaries can exist for a user who was never imported (an eval over a questions
        file), so a user counts as unknown only when nothing at all was found to delete."""
        report = ForgetReport(user_id=user_id)
        with self.transaction() as conn:
            for table in ("question_items", "questions", "items", "item_history", "embeddings",
                          "profile_summaries"):
                report.rows[table] = conn.execute(f"DELETE FROM {table} WHERE user_id=?", (user_id,)).rowcount
            for table in self._extra_user_tables(conn):
                report.rows[table] = conn.execute(f"DELETE FROM {table} WHERE user_id=?", (user_id,)).rowcount
            report.rows["users"] = conn.execute("DELETE FROM users WHERE id=?", (user_id,)).rowcount
            # No version row left: a cache built at any earlier version no longer matches (0).
            conn.execute("DELETE FROM user_versions WHERE user_id=?", (user_id,))
        for feature in list(self._features.values()):
            if feature.forget is not None:
                report.rows.update(feature.forget(self, user_id))
        if not any(report.rows.values()):
            raise NotFoundError(f"user {user_id!r} is not in the store ({self.location})")
        self._after_forget([t for t, n in report.rows.items() if n])
        return report

    def _extra_user_tables(self, conn: _Connection) -> list[str]:
        """Feature tables that carry a `user_id` column, so forget reaches them too (also those of features not
        registered in this process: a user's rows never outlive `forget`)."""
        names = dict.fromkeys(r[0] for r in conn.execute(self.dialect.user_tables_sql, ()).fetchall())
        return [n for n in names if n not in _CORE_TABLES and not n.startswith(("_", "sqlite_"))]

    # -- questions (LaMP import/export) ---------------------------------------------------------
    def import_questions(self, questions: Sequence[Question]) -> ImportReport:
        """Store questions and their profiles in one transaction; a user's shared items stored once."""
        report = ImportReport()
        users: set[str] = set()
        with self.transaction() as conn:
            qseq = self._next_seq(conn, "questions")
            for n, q in enumerate(questions):
                if self._ensure_user(conn, q.user_id):
                    report.users += 1
                if q.user_id not in users:
                    self.bump_version(conn, q.user_id)
                users.add(q.user_id)
                existing = {r[0] for r in conn.execute(
                    "SELECT id FROM items WHERE user_id=? AND id IN (%s)" % ",".join("?" * len(q.profile)),
                    (q.user_id, *[p.id for p in q.profile]))} if q.profile else set()
                fresh = [p for p in q.profile if p.id not in existing]
                report.duplicate_items += len(q.profile) - len(fresh)
                report.items += self._insert_items(conn, _dedupe(fresh), q.user_id)
                conn.execute("DELETE FROM question_items WHERE question_id=?", (q.id,))
                conn.execute(
                    "INSERT INTO questions(id, user_id, input, query, target, timestamp, seq) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET user_id=excluded.user_id, "
                    "input=excluded.input, query=excluded.query, target=COALESCE(excluded.target, questions.target), "
                    "timestamp=excluded.timestamp",
                    (q.id, q.user_id, q.input, json.dumps(q.query, ensure_ascii=False), q.target, q.timestamp,
                     qseq + n),
                )
                conn.executemany(
                    "INSERT INTO question_items(question_id, user_id, item_id, position) VALUES (?, ?, ?, ?)",
                    [(q.id, q.user_id, p.id, i) for i, p in enumerate(q.profile)],
                )
                report.questions += 1
        return report

    def get_questions(self, *, user_id: str | None = None) -> list[Question]:
        sql = "SELECT id, user_id, input, query, target, timestamp FROM questions"
        rows = self.execute(sql + (" WHERE user_id=? ORDER BY seq" if user_id else " ORDER BY seq"),
                            (user_id,) if user_id else ())
        items_cache: dict[str, dict[str, ProfileItem]] = {}
        out = []
        for qid, uid, inp, query, target, ts in rows:
            if uid not in items_cache:
                items_cache[uid] = {p.id: p for p in self.get_items(user_id=uid)}
            ids = [r[0] for r in self.execute(
                "SELECT item_id FROM question_items WHERE question_id=? ORDER BY position", (qid,))]
            profile = [items_cache[uid][i] for i in ids if i in items_cache[uid]]
            out.append(Question(id=qid, user_id=uid, input=inp, query=json.loads(query), profile=profile,
                                target=target, timestamp=ts))
        return out

    # -- embeddings (the retrieval EmbeddingCache protocol) -------------------------------------
    def get_embeddings(self, model: str, text_hashes: Sequence[str], *,
                       user_id: str | None = None) -> dict[str, np.ndarray]:
        """Stored vectors by text hash (only `user_id`'s rows when given: tenant-scoped reads)."""
        out: dict[str, np.ndarray] = {}
        hashes = list(dict.fromkeys(text_hashes))
        owner = "" if user_id is None else " AND user_id=?"
        for start in range(0, len(hashes), 500):
            chunk = hashes[start:start + 500]
            rows = self.execute(
                f"SELECT text_hash, dim, vector FROM embeddings WHERE model=?{owner} AND text_hash IN (%s)"
                % ",".join("?" * len(chunk)), (model, *([] if user_id is None else [user_id]), *chunk))
            for h, dim, blob in rows:
                out[h] = np.frombuffer(blob, dtype=np.float32, count=dim).copy()
        return out

    def put_embeddings(self, model: str, rows: Sequence[tuple[str, np.ndarray]], *,
                       user_id: str | None = None) -> None:
        with self.transaction() as conn:
            if user_id:
                self.bump_version(conn, user_id)
            self._put_embeddings(conn, EmbeddingRows(model, rows), user_id)

    @staticmethod
    def _put_embeddings(conn: _Connection, embeddings: EmbeddingRows, user_id: str | None) -> None:
        conn.executemany(
            "INSERT OR REPLACE INTO embeddings(model, text_hash, user_id, dim, vector) VALUES (?, ?, ?, ?, ?)",
            [(embeddings.model, h, user_id or "", int(v.shape[-1]), np.asarray(v, dtype=np.float32).tobytes())
             for h, v in embeddings.rows],
        )

    def delete_embeddings(self, text_hashes: Iterable[str], *, user_id: str,
                          in_use: Callable[[list[ProfileItem]], set[str]]) -> int:
        """Delete the user's vectors of `text_hashes` except those `in_use(the user's items)` still needs,
        checked and deleted in one transaction so no write slips between."""
        with self.transaction() as conn:
            keep = in_use(self.get_items(user_id=user_id))
            self.bump_version(conn, user_id)
            return sum(conn.execute("DELETE FROM embeddings WHERE user_id=? AND text_hash=?", (user_id, h)).rowcount
                       for h in sorted(set(text_hashes) - keep))

    def count_embeddings(self, *, user_id: str) -> int:
        return int(self.execute("SELECT COUNT(*) FROM embeddings WHERE user_id=?", (user_id,))[0][0])

    # -- cached profile summaries ---------------------------------------------------------------
    def get_summaries(self, *, user_id: str) -> list[SummaryRecord]:
        """Every cached summary of the user (key, model, summary, created_at), oldest first."""
        rows = self.execute("SELECT key, model, summary, created_at FROM profile_summaries WHERE user_id=? "
                            "ORDER BY created_at", (user_id,))
        return [SummaryRecord(key=k, model=m, summary=s, created_at=c) for k, m, s, c in rows]

    def get_summary(self, *, user_id: str, key: str) -> str | None:
        rows = self.execute("SELECT summary FROM profile_summaries WHERE user_id=? AND key=?", (user_id, key))
        return rows[0][0] if rows else None

    def put_summary(self, *, user_id: str, key: str, model: str, summary: str) -> None:
        with self.transaction() as conn:
            self.bump_version(conn, user_id)
            conn.execute(
                "INSERT OR REPLACE INTO profile_summaries(user_id, key, model, summary, created_at) "
                "VALUES (?, ?, ?, ?, ?)", (user_id, key, model, summary, time.time()))


def _dedupe(items: Sequence[ProfileItem]) -> list[ProfileItem]:
    seen: dict[str, ProfileItem] = {}
    for item in items:
        seen.setdefault(item.id, item)
    return list(seen.values())


def _check_user_id(user_id: str) -> None:
    if not isinstance(user_id, str) or not user_id.strip():
        raise InputError("user id must be a non-empty string", field="user_id")


class SQLiteUserStore(UserStore):
    """The embedded store: one SQLite file (WAL), the default."""

    def __init__(self, path: str | Path | None = None, *, timeout: float = 30.0,
                 features: Sequence[Feature] = ()) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.location = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as exc:
            raise InputError(f"not a usable SQLite database: {exc}", source=str(self.path)) from None
        self._conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA secure_delete=ON")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        super().__init__(features)

    @property
    def home(self) -> Path:
        return self.path.parent

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Connection]:
        with self._lock:
            self._conn.execute(self.dialect.begin_write)
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def execute(self, sql: str, params: Sequence[SQLValue] = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def set_synchronous(self, mode: str) -> None:
        if mode.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise InputError(f"must be FULL, NORMAL or EXTRA, got {mode!r}", field="synchronous")
        self.execute(f"PRAGMA synchronous={mode.upper()}")

    def _after_forget(self, tables: Sequence[str]) -> None:
        # secure_delete zeroed the pages; the checkpoint empties the WAL, which still held the old text.
        self.execute("PRAGMA wal_checkpoint(TRUNCATE)")


class _PgConnection:
    """A psycopg connection that takes the store's SQL in SQLite's dialect (translated by `POSTGRES`)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> _Cursor:
        return self._conn.execute(POSTGRES.query(sql), tuple(parameters))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> _Cursor:
        cur = self._conn.cursor()
        cur.executemany(POSTGRES.query(sql), [tuple(p) for p in parameters])
        return cur


class PostgresUserStore(UserStore):
    """The store in a PostgreSQL database (`postgresql://user:password@host:port/database`), shared by many
    server workers and machines. Writers are serialized by a transaction-scoped advisory lock (as SQLite's
    one writer: `MAX(seq) + 1` and the version clock stay consistent); reads run on their own snapshot.
    Vectors are rows of the embeddings table; each process caches what it built and rebuilds when the
    user's version moved."""

    dialect = POSTGRES
    _WRITE_LOCK = zlib.crc32(b"pllm user store writer")

    def __init__(self, url: str, *, features: Sequence[Feature] = (), connect_timeout: float = 10.0) -> None:
        self.url = url
        self.location = redact_url(url)
        self._connect_timeout = connect_timeout
        self._lock = threading.RLock()
        self._conn = self._connect()
        super().__init__(features)

    def _connect(self) -> psycopg.Connection:
        try:
            import psycopg
        except ImportError:
            raise StoreError("a postgresql:// store needs psycopg 3: pip install 'psycopg[binary]'") from None
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self._connect_timeout)))
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise StoreError(f"cannot open the PostgreSQL store {self.location}: {reason}") from None

    def _connection(self) -> psycopg.Connection:
        """The connection, opened again if the server dropped it (restart, failover): the next statement
        after a lost connection works, the one that met the loss fails."""
        if self._conn.closed or self._conn.broken:
            self._conn = self._connect()
        return self._conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Connection]:
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._WRITE_LOCK,))
                yield _PgConnection(conn)

    def execute(self, sql: str, params: Sequence[SQLValue] = ()) -> list[tuple]:
        with self._lock:
            cur = self._connection().execute(POSTGRES.query(sql), tuple(params))
            return cur.fetchall() if cur.description is not None else []

    def set_synchronous(self, mode: str) -> None:
        # NORMAL, as in SQLite, may lose the last acknowledged writes on a server crash (never corrupts).
        self.execute("SET synchronous_commit = " + ("off" if mode.upper() in ("OFF", "NORMAL") else "on"))

    def _after_forget(self, tables: Sequence[str]) -> None:
        # Dead row versions keep the text until vacuumed; VACUUM prunes them from the tables' pages.
        for table in tables:
            if re.fullmatch(r"\w+", table) and self._table_exists(table):
                self.execute(f"VACUUM {table}")


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def is_postgres_url(location: str | Path) -> bool:
    return str(location).startswith(("postgresql://", "postgres://"))


def open_store(location: str | Path | None = None, *, features: Sequence[Feature] = ()) -> UserStore:
    """The store at `location`: a `postgresql://` URL or a SQLite path; None: `$PLLM_STORE`, else
    `$PLLM_HOME/pllm.sqlite3`. With `features`, a database holding migrations none of them knows (a newer
    pllm's) is refused before anything is written."""
    if location is None or str(location) == "":
        location = os.environ.get(STORE_ENV) or None
    if location is not None and is_postgres_url(location):
        return PostgresUserStore(str(location), features=features)
    if location is not None and re.match(r"^[a-z][a-z0-9+.-]*://", str(location)):
        raise StoreError(f"unknown store URL {redact_url(str(location))}: expected postgresql://... or a SQLite path")
    return SQLiteUserStore(location, features=features)
