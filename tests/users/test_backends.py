"""The two store implementations behind one interface: SQLite (the default) and PostgreSQL (`postgresql://`,
run when $PLLM_TEST_POSTGRES names a server). Per-user versions, every feature's rows forgotten, the SQL
translation, and bad stores refused at start-up with one line, exit 2 and nothing written."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pllm.adapt.store import AdapterStore
from pllm.align.store import PreferenceStore
from pllm.serve.auth import KeyStore
from pllm.serve.features import open_with_features
from pllm.types import ProfileItem
from pllm.users.dialect import POSTGRES
from pllm.users.store import PostgresUserStore, SQLiteUserStore, StoreError, UserStore, open_store, redact_url
from pllm_testkit import POSTGRES_ENV, POSTGRES_REQUIRED_ENV


def test_open_store_picks_the_implementation(store_location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    kind = PostgresUserStore if store_location.startswith("postgresql://") else SQLiteUserStore
    with open_store(store_location) as store:
        assert isinstance(store, kind) and isinstance(store, UserStore)
    monkeypatch.setenv("PLLM_STORE", store_location)  # no location given: $PLLM_STORE
    with open_store() as store:
        assert isinstance(store, kind)


def test_versions_move_on_every_write_and_never_repeat(store_location: str) -> None:
    with open_store(store_location) as store:
        assert store.user_version(user_id="u") == 0
        seen = []
        store.add_items([ProfileItem(id="a", fields={"text": "x"})], user_id="u")
        seen.append(store.user_version(user_id="u"))
        store.put_summary(user_id="u", key="k", model="m", summary="s")
        seen.append(store.user_version(user_id="u"))
        assert not store.delete_item("missing", user_id="u")  # nothing deleted: no new version
        assert store.user_version(user_id="u") == seen[-1]
        assert store.delete_item("a", user_id="u")
        seen.append(store.user_version(user_id="u"))
        store.add_items([ProfileItem(id="b", fields={"text": "y"})], user_id="other")
        other = store.user_version(user_id="other")
        store.forget(user_id="u")
        assert store.user_version(user_id="u") == 0  # forgotten: no row, so every earlier cache is stale
        store.add_items([ProfileItem(id="a", fields={"text": "x"})], user_id="u")
        seen.append(store.user_version(user_id="u"))
        assert seen == sorted(set(seen)) and seen[-1] > other  # strictly increasing, from one clock
        assert store.user_version(user_id="other") == other  # another user's writes leave it alone


def test_forget_reaches_every_feature(store_location: str, tmp_path: Path) -> None:
    with open_with_features(store_location) as store:
        store.add_items([ProfileItem(id="a", fields={"text": "x"})], user_id="u")
        prefs = PreferenceStore(store)
        prefs.set_vector({"brevity": 1.0}, user_id="u")
        prefs.assign(user_id="u", method="dpo", name="dpo-u")
        prefs.assign(user_id="v", method="dpo", name="dpo-v")
        KeyStore(store).create(tenant="acme")
        assert AdapterStore(tmp_path / "adapters", db=store).db is store
        rows = store.forget(user_id="u").rows
        assert rows["items"] == 1 and rows["preference_vectors"] == 1 and rows["adapter_assignments"] == 1
        assert prefs.get_assignment(user_id="u") == {} and prefs.get_assignment(user_id="v") == {"dpo": "dpo-v"}
        assert [k.tenant for k in KeyStore(store).list()] == ["acme"]  # not user data: kept
        for table in ("items", "preference_vectors", "adapter_assignments", "user_versions"):
            assert store.execute(f"SELECT COUNT(*) FROM {table} WHERE user_id='u'")[0][0] == 0


def test_concurrent_writers_from_two_connections(store_location: str) -> None:
    """Two stores on one database (two workers) writing at once: every write lands, sequence numbers stay
    unique, and each user's version is the last one written for them."""
    stores = [open_store(store_location), open_store(store_location)]

    def write(store: UserStore, who: str) -> None:
        for i in range(15):
            store.add_items([ProfileItem(id=f"{who}{i}", fields={"text": f"{who} {i}"})], user_id=who)

    threads = [threading.Thread(target=write, args=(s, w)) for s, w in zip(stores, ("p", "q"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = [r[0] for r in stores[0].execute("SELECT seq FROM items")]
    assert len(seqs) == 30 and len(set(seqs)) == 30
    assert {stores[1].user_version(user_id=u) for u in "pq"} <= set(range(1, 31))
    for s in stores:
        s.close()


def test_a_dropped_connection_is_reopened(postgres_url: str) -> None:
    """A server restart or failover: the statement that meets the loss fails, the next one reconnects."""
    import psycopg

    with open_store(postgres_url) as store, psycopg.connect(postgres_url, autocommit=True) as admin:
        assert isinstance(store, PostgresUserStore)
        store.add_items([ProfileItem(id="a", fields={"text": "x"})], user_id="u")
        admin.execute("SELECT pg_terminate_backend(%s)", (store._conn.info.backend_pid,))
        with pytest.raises(psycopg.OperationalError):
            store.get_items(user_id="u")
        assert [i.id for i in store.get_items(user_id="u")] == ["a"]


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT id FROM items WHERE user_id=? AND id LIKE '%x'",
     "SELECT id FROM items WHERE user_id=%s AND id LIKE '%%x'"),
    ("INSERT OR IGNORE INTO users(id, meta, created_at) VALUES (?, ?, ?)",
     "INSERT INTO users(id, meta, created_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"),
    ("INSERT OR REPLACE INTO preference_vectors(user_id, vector) VALUES (?, ?)",
     "INSERT INTO preference_vectors(user_id, vector) VALUES (%s, %s) ON CONFLICT ON CONSTRAINT "
     "preference_vectors_pkey DO UPDATE SET user_id = EXCLUDED.user_id, vector = EXCLUDED.vector"),
])
def test_sqlite_dialect_becomes_postgres(sql: str, expected: str) -> None:
    assert POSTGRES.query(sql) == expected


def test_migration_types_become_postgres() -> None:
    assert POSTGRES.ddl("a REAL NOT NULL, b BLOB, c INTEGER, realm TEXT") == \
        "a DOUBLE PRECISION NOT NULL, b BYTEA, c BIGINT, realm TEXT"


# -- bad stores: one line, exit 2, nothing written --------------------------------------------------------
def _cli(*args: str) -> tuple[int, str]:
    from pllm.cli import app

    out = CliRunner().invoke(app, list(args))
    return out.exit_code, out.output


def _postgres_server() -> str:
    url = os.environ.get(POSTGRES_ENV, "")
    if not url:
        if os.environ.get(POSTGRES_REQUIRED_ENV) == "1":
            pytest.fail(f"needs ${POSTGRES_ENV}")
        pytest.skip(f"needs ${POSTGRES_ENV}")
    return url


@pytest.mark.parametrize(("url", "needle"), [
    ("postgresql://pllm:secret@127.0.0.1:1/pllm", "cannot open the PostgreSQL store postgresql://pllm:***@127.0.0.1:1"),
    ("postgresql://pllm@127.0.0.1:5432/db?sslmode=nonsense", "cannot open the PostgreSQL store"),
    ("mysql://localhost/db", "unknown store URL mysql://localhost/db"),
])
def test_unreachable_or_malformed_urls(url: str, needle: str) -> None:
    with pytest.raises(StoreError, match=needle.replace("*", r"\*").replace("?", r"\?")):
        open_store(url)
    for args in (["users", "list", "--store", url], ["serve", "--store", url, "--no-preload"]):
        code, output = _cli(*args)
        assert code == 2 and needle in output and "secret" not in output
        assert len(output.strip().splitlines()) == 1 or "serve" in args  # serve prints its banner first


def test_a_missing_database_is_named() -> None:
    url = _postgres_server()
    base = url.rsplit("/", 1)[0]
    missing = f"{base}/pllm_no_such_db_{hashlib.sha1(url.encode()).hexdigest()[:6]}"
    code, output = _cli("users", "list", "--store", missing)
    assert code == 2 and "does not exist" in output and len(output.strip().splitlines()) == 1


def test_a_newer_schema_is_refused_with_nothing_written(store_location: str, tmp_path: Path) -> None:
    with open_with_features(store_location) as store:
        store.add_items([ProfileItem(id="a", fields={"text": "x"})], user_id="u")
        with store.transaction() as conn:
            conn.execute("INSERT INTO _migrations(name, applied_at) VALUES ('0999_from_the_future', 0)")
        before = [store.execute(f"SELECT * FROM {t} ORDER BY 1") for t in ("_migrations", "items", "user_versions")]
    files = {p: p.read_bytes() for p in tmp_path.glob("store.sqlite3*")}
    with pytest.raises(StoreError, match="newer schema.*0999_from_the_future"):
        open_with_features(store_location)
    code, output = _cli("users", "forget", "u", "--store", store_location)
    assert code == 2 and "0999_from_the_future" in output and len(output.strip().splitlines()) == 1
    with open_store(store_location) as store:  # opened without features: no check, and nothing changed
        after = [store.execute(f"SELECT * FROM {t} ORDER BY 1") for t in ("_migrations", "items", "user_versions")]
    assert after == before
    for p, data in files.items():
        if not p.name.endswith(("-wal", "-shm")):
            assert p.read_bytes() == data


def test_the_password_never_shows() -> None:
    assert redact_url("postgresql://me:pa55@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert redact_url("postgresql://db/x") == "postgresql://db/x"
