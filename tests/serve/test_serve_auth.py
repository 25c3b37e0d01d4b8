"""Keys and tenants: every endpoint with a missing key, a wrong key and another tenant's key; admin
routes; revocation; keys stored hashed; the `pllm keys` CLI. Tenant isolation runs on both stores."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from pllm_serve_testutil import auth
from typer.testing import CliRunner

from pllm.serve import ServeConfig, create_app, store_user_id
from pllm.serve.auth import KeyStore
from pllm.users.store import SQLiteUserStore

CHAT = {"model": "serve-echo", "messages": [{"role": "user", "content": "where does my dog like to go?"}],
        "user": "alice"}
DATA_ROUTES = [
    ("POST", "/v1/chat/completions", CHAT),
    ("POST", "/v1/users/alice/items", {"text": "another memory"}),
    ("GET", "/v1/users/alice/items", None),
    ("GET", "/v1/users/alice/search?q=dog", None),
    ("GET", "/v1/users/alice/export", None),
    ("DELETE", "/v1/users/alice/items/dog", None),
    ("DELETE", "/v1/users/alice", None),
]
ALL_ROUTES = [("GET", "/v1/models", None), ("GET", "/v1/models/serve-echo", None), *DATA_ROUTES,
              ("GET", "/v1/admin/keys", None), ("POST", "/v1/admin/keys", {"tenant": "x"}),
              ("DELETE", "/v1/admin/keys/0123456789abcdef", None)]


@pytest.fixture
def client(make_client, store_location: str) -> TestClient:  # noqa: ANN001
    """These tests run on both stores: a SQLite file, and PostgreSQL (skipped without $PLLM_TEST_POSTGRES)."""
    return make_client(db=store_location)


def call(client: TestClient, method: str, path: str, body: dict | None, headers: dict[str, str]):  # noqa: ANN201
    return client.request(method, path, json=body, headers=headers)


@pytest.fixture
def seeded(client: TestClient, keys: dict[str, str]) -> dict[str, str]:
    r = client.post("/v1/users/alice/items", json={"items": [{"id": "dog", "text": "my dog Rex loves the beach"}]},
                    headers=auth(keys["acme"]))
    assert r.status_code == 201
    return keys


def acme_alice_items(client: TestClient) -> list[str]:
    store = client.app.state.pllm.store
    return [it.id for it in store.get_items(user_id=store_user_id("acme", "alice"))]


@pytest.mark.parametrize("method,path,body", ALL_ROUTES)
def test_missing_and_wrong_keys_get_401(client: TestClient, seeded: dict[str, str], method: str, path: str,
                                        body: dict | None) -> None:
    real = seeded["acme"]
    wrong_secret = real[: real.rindex("-") + 1] + "A" * 43  # right key id, wrong secret
    for headers in ({}, auth("not-a-key"), auth(wrong_secret), {"Authorization": f"Basic {real}"}):
        r = call(client, method, path, body, headers)
        assert r.status_code == 401, (method, path, headers, r.text)
        assert r.json()["error"]["type"] == "authentication_error"
        assert "dog" not in r.text and "Rex" not in r.text
    assert acme_alice_items(client) == ["dog"]


@pytest.mark.parametrize("method,path,body", DATA_ROUTES)
def test_another_tenants_users_are_invisible(client: TestClient, seeded: dict[str, str], method: str, path: str,
                                             body: dict | None) -> None:
    r = call(client, method, path, body, auth(seeded["globex"]))
    assert "Rex" not in r.text and "acme" not in r.text
    if method == "POST" and path.endswith("/items"):
        # globex writes its own, separate 'alice'; acme's alice is untouched
        assert r.status_code == 201
        assert client.app.state.pllm.memory.exists(store_user_id("globex", "alice"))
    elif path == "/v1/chat/completions":
        assert r.status_code == 200 and r.json()["pllm"]["memories"] == []
    else:
        assert r.status_code == 404, r.text  # 404 exactly as for a user that never existed
        never = call(client, method, path.replace("alice", "nobody"), body, auth(seeded["globex"]))
        assert never.status_code == 404
        assert r.json()["error"]["message"] == never.json()["error"]["message"].replace("nobody", "alice")
    assert acme_alice_items(client) == ["dog"]


def test_the_owner_sees_its_data(client: TestClient, seeded: dict[str, str]) -> None:
    r = client.post("/v1/chat/completions", json=CHAT, headers=auth(seeded["acme"]))
    assert r.status_code == 200 and r.json()["pllm"]["memories"] == ["dog"]
    assert client.get("/v1/users/alice/items", headers=auth(seeded["acme"])).json()["total"] == 1


def test_admin_routes(client: TestClient, seeded: dict[str, str]) -> None:
    admin = auth(seeded["admin"])
    for method, path, body in ALL_ROUTES[-3:]:
        assert call(client, method, path, body, auth(seeded["acme"])).status_code == 403
    for method, path, body in DATA_ROUTES:
        r = call(client, method, path, body, admin)
        assert r.status_code == 403 and "tenant key" in r.json()["error"]["message"]
    created = client.post("/v1/admin/keys", json={"tenant": "initech", "name": "ci"}, headers=admin)
    assert created.status_code == 201
    new = created.json()
    assert new["tenant"] == "initech" and new["key"].startswith("pllm-" + new["id"] + "-")
    assert client.get("/v1/users/alice/items", headers=auth(new["key"])).status_code == 404  # initech has no alice
    listed = client.get("/v1/admin/keys", params={"tenant": "initech"}, headers=admin).json()["data"]
    assert [k["id"] for k in listed] == [new["id"]] and "key" not in listed[0]
    revoked = client.delete(f"/v1/admin/keys/{new['id']}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert client.get("/v1/models", headers=auth(new["key"])).status_code == 401
    assert client.delete("/v1/admin/keys/ffffffffffffffff", headers=admin).status_code == 404
    bad = client.post("/v1/admin/keys", json={"tenant": "no/slash"}, headers=admin)
    assert bad.status_code == 422 and "invalid tenant" in bad.json()["error"]["message"]


def test_admin_key_from_config_or_environment(make_client, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("PLLM_ADMIN_KEY", "env-admin-secret-0123456789")
    client = make_client()
    r = client.post("/v1/admin/keys", json={"tenant": "acme"}, headers=auth("env-admin-secret-0123456789"))
    assert r.status_code == 201
    assert client.get("/v1/admin/keys", headers=auth("env-admin-secret-012345678")).status_code == 401
    explicit = make_client(admin_key="config-admin-secret-abcdefgh")
    assert explicit.get("/v1/admin/keys", headers=auth("config-admin-secret-abcdefgh")).status_code == 200


def test_keys_are_stored_hashed(make_client, tmp_path) -> None:  # noqa: ANN001
    client = make_client(db=str(tmp_path / "keys.sqlite3"))  # the whole SQLite file is searched for the keys
    store = client.app.state.pllm.store
    made = client.app.state.pllm.keys
    keys = [made.create(tenant="acme")[0], made.create(tenant="globex")[0], made.create(tenant=None, role="admin")[0]]
    dump = "\n".join(store._conn.iterdump())
    for key in keys:
        secret = key.split("-", 2)[2]  # pllm-<id>-<secret>; the url-safe secret may itself contain "-"
        assert key not in dump and secret not in dump  # neither the key nor its secret
    rows = store.execute("SELECT key_hash FROM serve_api_keys")
    assert all(len(h) == 64 for (h,) in rows)


def test_keys_cli_create_list_revoke(pllm_home) -> None:  # noqa: ANN001
    from pllm.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--name", "web", "--json"])
    assert out.exit_code == 0, out.output
    created = json.loads(out.stdout)
    listed = runner.invoke(app, ["keys", "list", "--json"])
    assert [k["id"] for k in json.loads(listed.stdout)] == [created["id"]]
    store = SQLiteUserStore()
    assert KeyStore(store).authenticate(created["key"]).tenant == "acme"
    assert runner.invoke(app, ["keys", "revoke", created["id"]]).exit_code == 0
    assert KeyStore(store).authenticate(created["key"]) is None
    bad = runner.invoke(app, ["keys", "create", "--tenant", "a/b"])
    assert bad.exit_code == 2 and "invalid tenant" in bad.output
    assert runner.invoke(app, ["keys", "create"]).exit_code == 2  # a tenant key needs a tenant
    admin = runner.invoke(app, ["keys", "create", "--admin"])
    assert admin.exit_code == 0
    client = TestClient(create_app(ServeConfig(backend="serve-echo", embedder="serve-bow", preload=False)))
    with client:
        assert client.get("/v1/admin/keys", headers=auth(admin.stdout.strip())).status_code == 200
    store.close()
