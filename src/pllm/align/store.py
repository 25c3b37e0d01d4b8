"""Per-user preferences in the user store: pairwise preferences `(prompt, chosen, rejected)`, an
optional preference vector over named dimensions, and which adapter of each method (DPO adapter, soup, RiC
adapter) serves the user, one `adapter_assignments` row per user and method. The tables carry `user_id`,
so the store's `forget` deletes them with the user."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pllm.adapt.store import forget_named_adapters
from pllm.errors import InputError
from pllm.users.store import Feature, UserStore

SPLITS = ("train", "test")


@dataclass
class PreferencePair:
    """One pairwise preference of one user: for `prompt`, `chosen` is preferred over `rejected`.

    `query_id` groups pairs that share a query, so train/test splits never put one query on both sides.
    """

    id: str
    prompt: str
    chosen: str
    rejected: str
    query_id: str = ""
    split: str = "train"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.query_id:
            self.query_id = self.prompt
        if self.split not in SPLITS:
            raise InputError(f"split must be one of {SPLITS}, got {self.split!r}", field="split")


def query_split(query_id: str, *, test_fraction: float, seed: int = 0) -> str:
    """Deterministic train/test split by query: a hash of (seed, query id) below the fraction is test."""
    if not 0.0 <= test_fraction < 1.0:
        raise InputError(f"test_fraction must be in [0, 1), got {test_fraction}", field="test_fraction")
    digest = hashlib.sha1(f"{seed}\x1f{query_id}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def check_vector(vector: dict[str, float], *, source: str = "preference vector") -> dict[str, float]:
    """A preference vector: non-empty, named dimensions, finite non-negative weights, not all zero."""
    if not isinstance(vector, dict) or not vector:
        raise InputError("a preference vector needs at least one dimension, e.g. {'academy': 1.0}", source=source)
    out: dict[str, float] = {}
    for name, value in vector.items():
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"dimension names must be non-empty strings, got {name!r}", source=source)
        try:
            w = float(value)
        except (TypeError, ValueError):
            raise InputError(f"weight of {name!r} must be a number, got {value!r}", source=source) from None
        if not math.isfinite(w) or w < 0:
            raise InputError(f"weight of {name!r} must be finite and >= 0, got {value!r}", source=source)
        out[name] = w
    if sum(out.values()) <= 0:
        raise InputError("a preference vector needs at least one positive weight", source=source)
    return out


def parse_vector(items: Sequence[str]) -> dict[str, float]:
    """`["academy=1", "business=0.5"]` (CLI form) -> {"academy": 1.0, "business": 0.5}."""
    out: dict[str, Any] = {}
    for i, item in enumerate(items):
        name, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"expected NAME=WEIGHT, got {item!r}", index=i, field="vector")
        out[name.strip()] = value.strip()
    return check_vector(out)


# Preference pairs, vectors and adapter assignments (rows go with the user's `user_id` rows); forgetting
# also deletes alignment adapters trained on the user's data alone.
PREFERENCES = Feature(name="preferences", migrations=(
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
), forget=forget_named_adapters)


class PreferenceStore:
    """Preference pairs, vectors and alignment assignments of users, on top of a `UserStore`."""

    def __init__(self, store: UserStore) -> None:
        self.store = store
        store.register_feature(PREFERENCES)

    # -- pairs ----------------------------------------------------------------------------------
    def add_pairs(self, pairs: Sequence[PreferencePair], *, user_id: str) -> int:
        """Add or replace (by id) a user's pairs, creating the user if new; one transaction."""
        _check_user_id(user_id)
        for i, p in enumerate(pairs):
            for name in ("id", "prompt", "chosen", "rejected"):
                value = getattr(p, name)
                if not isinstance(value, str) or not value.strip():
                    raise InputError("must be a non-empty string", index=i, field=name)
            if p.chosen == p.rejected:
                raise InputError("chosen and rejected are the same text", index=i, field="rejected")
        with self.store.transaction() as conn:
            UserStore._ensure_user(conn, user_id)
            seq = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM preference_pairs").fetchone()[0]) + 1
            conn.executemany(
                "INSERT INTO preference_pairs(user_id, id, query_id, prompt, chosen, rejected, split, meta, seq) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(user_id, id) DO UPDATE SET "
                "query_id=excluded.query_id, prompt=excluded.prompt, chosen=excluded.chosen, "
                "rejected=excluded.rejected, split=excluded.split, meta=excluded.meta",
                [(user_id, p.id, p.query_id, p.prompt, p.chosen, p.rejected, p.split,
                  json.dumps(p.meta, ensure_ascii=False), seq + n) for n, p in enumerate(pairs)],
            )
        return len(pairs)

    def get_pairs(self, *, user_id: str, split: str | None = None, limit: int | None = None) -> list[PreferencePair]:
        """A user's pairs in insertion order, optionally one split only."""
        if split is not None and split not in SPLITS:
            raise InputError(f"split must be one of {SPLITS}, got {split!r}", field="split")
        sql = "SELECT id, query_id, prompt, chosen, rejected, split, meta FROM preference_pairs WHERE user_id=?"
        params: list[Any] = [user_id]
        if split is not None:
            sql += " AND split=?"
            params.append(split)
        sql += " ORDER BY seq LIMIT ?"
        params.append(-1 if limit is None else int(limit))
        return [PreferencePair(id=r[0], query_id=r[1], prompt=r[2], chosen=r[3], rejected=r[4], split=r[5],
                               meta=json.loads(r[6])) for r in self.store.execute(sql, params)]

    def count_pairs(self, *, user_id: str) -> dict[str, int]:
        rows = self.store.execute("SELECT split, COUNT(*) FROM preference_pairs WHERE user_id=? GROUP BY split",
                                  (user_id,))
        return {s: 0 for s in SPLITS} | {r[0]: int(r[1]) for r in rows}

    def users_with_pairs(self) -> list[str]:
        return [r[0] for r in self.store.execute("SELECT DISTINCT user_id FROM preference_pairs ORDER BY user_id")]

    # -- vectors --------------------------------------------------------------------------------
    def set_vector(self, vector: dict[str, float], *, user_id: str) -> dict[str, float]:
        _check_user_id(user_id)
        vec = check_vector(vector, source=f"preference vector of {user_id!r}")
        with self.store.transaction() as conn:
            UserStore._ensure_user(conn, user_id)
            conn.execute("INSERT OR REPLACE INTO preference_vectors(user_id, vector, updated_at) VALUES (?, ?, ?)",
                         (user_id, json.dumps(vec), time.time()))
        return vec

    def get_vector(self, *, user_id: str) -> dict[str, float] | None:
        rows = self.store.execute("SELECT vector FROM preference_vectors WHERE user_id=?", (user_id,))
        return json.loads(rows[0][0]) if rows else None

    # -- which adapter of each method serves the user -------------------------------------------
    def assign(self, method: str, name: str, *, user_id: str) -> dict[str, str]:
        """Record that `name` (an adapter, or a soup) of the registered `method` serves the user: one row per
        user and method, replacing that method's earlier one. Returns the user's assignments."""
        from pllm.adapt.methods import get_method

        _check_user_id(user_id)
        if get_method(method).serve is None:
            raise InputError(f"method {method!r} does not serve users by assignment", field="method")
        if not isinstance(name, str) or not name.strip():
            raise InputError("the assigned name must be a non-empty string", field="name")
        with self.store.transaction() as conn:
            UserStore._ensure_user(conn, user_id)
            conn.execute("INSERT OR REPLACE INTO adapter_assignments(user_id, method, name, updated_at) "
                         "VALUES (?, ?, ?, ?)", (user_id, method, name, time.time()))
        return self.get_assignment(user_id=user_id)

    def get_assignment(self, *, user_id: str) -> dict[str, str]:
        """method -> assigned name, for every method the user has an assignment for."""
        rows = self.store.execute("SELECT method, name FROM adapter_assignments WHERE user_id=? ORDER BY method",
                                  (user_id,))
        return {r[0]: r[1] for r in rows}


def _check_user_id(user_id: str) -> None:
    if not isinstance(user_id, str) or not user_id.strip():
        raise InputError("user id must be a non-empty string", field="user_id")
