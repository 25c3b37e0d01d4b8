"""API keys and tenants.

A key is `pllm-<key id>-<secret>`: the id (public, shown by `pllm keys list`) finds the row, and the
sha256 of the whole key is compared with `hmac.compare_digest`, so the server stores no usable secret
and the comparison takes the same time whatever the key. Keys are 256-bit random tokens, so one fast
hash is enough (no password-style stretching is needed).

Each tenant key belongs to one tenant; admin keys (stored here, or the `PLLM_ADMIN_KEY` environment
value) manage keys and can read no user data. User ids are namespaced as `<tenant>/<user>` in the store,
so every store query (search, export, forget) stays inside one tenant.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from pllm.errors import InputError, NotFoundError
from pllm.users.store import Feature, UserStore

KEY_PREFIX = "pllm"
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_KEY = re.compile(r"^pllm-([0-9a-f]{16})-([A-Za-z0-9_\-]{20,})$")
ROLES = ("tenant", "admin")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant's key, or an admin."""

    role: str
    tenant: str | None
    key_id: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass
class KeyInfo:
    id: str
    tenant: str | None
    role: str
    name: str
    created_at: float
    revoked_at: float | None

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "tenant": self.tenant, "role": self.role, "name": self.name,
                "created_at": self.created_at, "revoked_at": self.revoked_at}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise InputError(f"invalid tenant {tenant!r}: 1-64 letters, digits, '_', '.', '-', starting with a "
                         "letter or digit", field="tenant")
    return tenant


def store_user_id(tenant: str, user: str) -> str:
    """The store's id for a tenant's user; tenants contain no '/', so the mapping is one-to-one."""
    return f"{tenant}/{user}"


# Tenants and their API keys (no user data: forgetting a user leaves them).
KEYS = Feature(name="keys", migrations=(
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
))


class KeyStore:
    """Keys and tenants in the user store's SQLite file (tables from migration 0004_serve_tenants_keys)."""

    def __init__(self, store: UserStore, *, env_admin_key: str | None = None) -> None:
        self.store = store
        store.register_feature(KEYS)
        self._env_admin_hash = hash_key(env_admin_key) if env_admin_key else None

    def create(self, *, tenant: str | None, role: str = "tenant", name: str = "") -> tuple[str, KeyInfo]:
        """Create a key; the plain key is returned once and never stored."""
        if role not in ROLES:
            raise InputError(f"role must be one of {ROLES}, got {role!r}", field="role")
        if role == "tenant":
            if tenant is None:
                raise InputError("a tenant key needs a tenant", field="tenant")
            check_tenant(tenant)
        elif tenant is not None:
            raise InputError("an admin key belongs to no tenant", field="tenant")
        if len(name) > 200:
            raise InputError("name is longer than 200 characters", field="name")
        key_id = secrets.token_hex(8)
        key = f"{KEY_PREFIX}-{key_id}-{secrets.token_urlsafe(32)}"
        now = time.time()
        with self.store.transaction() as conn:
            if tenant is not None:
                conn.execute("INSERT OR IGNORE INTO serve_tenants(id, created_at) VALUES (?, ?)", (tenant, now))
            conn.execute("INSERT INTO serve_api_keys(id, tenant, role, key_hash, name, created_at) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (key_id, tenant, role, hash_key(key), name, now))
        return key, KeyInfo(key_id, tenant, role, name, now, None)

    def list(self, *, tenant: str | None = None, include_revoked: bool = True) -> list[KeyInfo]:
        sql = "SELECT id, tenant, role, name, created_at, revoked_at FROM serve_api_keys"
        where, params = [], []
        if tenant is not None:
            where.append("tenant=?")
            params.append(tenant)
        if not include_revoked:
            where.append("revoked_at IS NULL")
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.store.execute(sql + " ORDER BY created_at, id", params)
        return [KeyInfo(*r) for r in rows]

    def revoke(self, key_id: str) -> KeyInfo:
        with self.store.transaction() as conn:
            conn.execute("UPDATE serve_api_keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                         (time.time(), key_id))
            row = conn.execute("SELECT id, tenant, role, name, created_at, revoked_at FROM serve_api_keys "
                               "WHERE id=?", (key_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no API key with id {key_id!r}")
        return KeyInfo(*row)

    def authenticate(self, key: str | None) -> Principal | None:
        """The principal for a presented key, or None (unknown, malformed or revoked: all look the same)."""
        if not key:
            return None
        presented = hash_key(key)
        if self._env_admin_hash is not None and hmac.compare_digest(presented, self._env_admin_hash):
            return Principal(role="admin", tenant=None, key_id="env")
        m = _KEY.match(key)
        if not m:
            return None
        rows = self.store.execute("SELECT key_hash, role, tenant FROM serve_api_keys WHERE id=? AND "
                                  "revoked_at IS NULL", (m.group(1),))
        if not rows:
            return None
        stored, role, tenant = rows[0]
        if not hmac.compare_digest(presented, stored):
            return None
        return Principal(role=role, tenant=tenant, key_id=m.group(1))
