"""The user store: users, their profile items, imported questions, persisted item embeddings and
cached profile summaries, in SQLite (WAL).

Every write is one transaction; `forget` removes every row of a user with `secure_delete` on and the
WAL checkpointed, so the user's text is gone from the files, not just unlinked from an index.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias, TypedDict

import numpy as np

from pllm.errors import InputError, NotFoundError
from pllm.paths import default_db_path
from pllm.types import JSONValue, ProfileItem, Question
from pllm.users.migrations import migrate

SQLValue: TypeAlias = str | int | float | bytes | None
"""A value sqlite3 binds as a query parameter."""


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
    forget: Callable[[SQLiteUserStore, str], dict[str, int]] | None = None


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


class UserStore(ABC):
    """What every user store provides; `SQLiteUserStore` is the default implementation."""

    @abstractmethod
    def add_items(self, items: Sequence[ProfileItem], *, user_id: str, keep_history: bool = False) -> int: ...

    @abstractmethod
    def get_item_history(self, item_id: str, *, user_id: str) -> list[ItemVersion]: ...

    @abstractmethod
    def get_items(self, *, user_id: str, limit: int | None = None, offset: int = 0) -> list[ProfileItem]: ...

    @abstractmethod
    def delete_item(self, item_id: str, *, user_id: str) -> bool: ...

    @abstractmethod
    def list_users(self) -> list[UserSummary]: ...

    @abstractmethod
    def get_user(self, *, user_id: str) -> UserSummary: ...

    @abstractmethod
    def forget(self, *, user_id: str) -> ForgetReport: ...

    def has_user(self, *, user_id: str) -> bool:
        try:
            self.get_user(user_id=user_id)
        except NotFoundError:
            return False
        return True


class SQLiteUserStore(UserStore):
    def __init__(self, path: str | Path | None = None, *, timeout: float = 30.0) -> None:
        self.path = Path(path) if path is not None else default_db_path()
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
        self._features: dict[str, Feature] = {}
        with self._lock:
            migrate(self._conn)

    def register_feature(self, feature: Feature) -> None:
        """Apply the feature's pending migrations and add its forget hook (once per feature name)."""
        with self._lock:
            known = self._features.get(feature.name)
            if known is not None:
                if known != feature:
                    raise ValueError(f"another feature named {feature.name!r} is registered with this store")
                return
            migrate(self._conn, feature.migrations)
            self._features[feature.name] = feature

    @property
    def features(self) -> list[str]:
        return sorted(self._features)

    # -- plumbing -------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SQLiteUserStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE, so a busy writer waits instead of failing later)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def execute(self, sql: str, params: Sequence[SQLValue] = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def applied_migrations(self) -> list[str]:
        return [r[0] for r in self.execute("SELECT name FROM _migrations ORDER BY name")]

    # -- users and items ------------------------------------------------------------------------
    @staticmethod
    def _ensure_user(conn: sqlite3.Connection, user_id: str, meta: Mapping[str, JSONValue] | None = None) -> bool:
        cur = conn.execute("INSERT OR IGNORE INTO users(id, meta, created_at) VALUES (?, ?, ?)",
                           (user_id, json.dumps(dict(meta or {})), time.time()))
        return cur.rowcount > 0

    @staticmethod
    def _next_seq(conn: sqlite3.Connection, table: str) -> int:
        return int(conn.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {table}").fetchone()[0]) + 1

    def add_user(self, *, user_id: str, meta: Mapping[str, JSONValue] | None = None) -> bool:
        _check_user_id(user_id)
        with self.transaction() as conn:
            return self._ensure_user(conn, user_id, meta)

    def _insert_items(self, conn: sqlite3.Connection, items: Sequence[ProfileItem], user_id: str) -> int:
        seq = self._next_seq(conn, "items")
        now = time.time()
        n = 0
        for item in items:
            conn.execute(
                "INSERT INTO items(user_id, id, fields, timestamp, created_at, seq) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(user_id, id) DO UPDATE SET fields=excluded.fields, timestamp=excluded.timestamp",
                (user_id, item.id, json.dumps(item.fields, ensure_ascii=False), item.timestamp, now, seq + n),
            )
            n += 1
        return n

    def add_items(self, items: Sequence[ProfileItem], *, user_id: str, keep_history: bool = False) -> int:
        """Add or replace items (by id) for a user, creating the user if new; one transaction. With
        `keep_history`, a replaced item's previous version is archived in the same transaction."""
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
            return self._insert_items(conn, items, user_id)

    @staticmethod
    def _archive(conn: sqlite3.Connection, ids: Sequence[str], user_id: str) -> None:
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
            (user_id, -1 if limit is None else int(limit), int(offset)),
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
            raise NotFoundError(f"user {user_id!r} is not in the store ({self.path})")
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
            for table in _extra_user_tables(conn):
                report.rows[table] = conn.execute(f"DELETE FROM {table} WHERE user_id=?", (user_id,)).rowcount
            report.rows["users"] = conn.execute("DELETE FROM users WHERE id=?", (user_id,)).rowcount
        for feature in list(self._features.values()):
            if feature.forget is not None:
                report.rows.update(feature.forget(self, user_id))
        if not any(report.rows.values()):
            raise NotFoundError(f"user {user_id!r} is not in the store ({self.path})")
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return report

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
                    "input=excluded.input, query=excluded.query, target=COALESCE(excluded.target, target), "
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
            conn.executemany(
                "INSERT OR REPLACE INTO embeddings(model, text_hash, user_id, dim, vector) VALUES (?, ?, ?, ?, ?)",
                [(model, h, user_id or "", int(v.shape[-1]), np.asarray(v, dtype=np.float32).tobytes())
                 for h, v in rows],
            )

    def delete_embeddings(self, text_hashes: Iterable[str], *, user_id: str,
                          in_use: Callable[[list[ProfileItem]], set[str]]) -> int:
        """Delete the user's vectors of `text_hashes` except those `in_use(the user's items)` still needs,
        checked and deleted in one transaction so no write slips between."""
        with self.transaction() as conn:
            keep = in_use(self.get_items(user_id=user_id))
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
            conn.execute(
                "INSERT OR REPLACE INTO profile_summaries(user_id, key, model, summary, created_at) "
                "VALUES (?, ?, ?, ?, ?)", (user_id, key, model, summary, time.time()))


def _extra_user_tables(conn: sqlite3.Connection) -> list[str]:
    """Feature tables that carry a `user_id` column, so forget reaches them too (also those of features not
    registered in this process: a user's rows never outlive `forget`)."""
    core = {"question_items", "questions", "items", "item_history", "embeddings", "profile_summaries", "users"}
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    out = []
    for name in names:
        if name in core or name.startswith(("_", "sqlite_")):
            continue
        cols = {r[1] for r in conn.execute(f"PRAGMA table_info({name})")}
        if "user_id" in cols:
            out.append(name)
    return out


def _dedupe(items: Sequence[ProfileItem]) -> list[ProfileItem]:
    seen: dict[str, ProfileItem] = {}
    for item in items:
        seen.setdefault(item.id, item)
    return list(seen.values())


def _check_user_id(user_id: str) -> None:
    if not isinstance(user_id, str) or not user_id.strip():
        raise InputError("user id must be a non-empty string", field="user_id")


def open_store(path: str | Path | None = None) -> SQLiteUserStore:
    """The default store: `path` if given, else `$PLLM_HOME/pllm.sqlite3`."""
    return SQLiteUserStore(path)
