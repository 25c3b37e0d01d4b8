"""Server fixtures: an app on fakes registered through the real registries (see pllm_serve_fakes), a
TestClient running its lifespan, tenant keys, and `pllm serve` as a real process (pllm_serve_testutil)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pllm_serve_fakes  # noqa: F401  (registers serve-bow, serve-echo, test-tag)
import pytest
from fastapi.testclient import TestClient
from pllm_serve_testutil import ServerProcess

from pllm.serve import ServeConfig, create_app


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        cfg = {"backend": "serve-echo", "embedder": "serve-bow", **overrides}
        client = TestClient(create_app(ServeConfig(**cfg)))  # type: ignore[arg-type]
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def keys(client: TestClient) -> dict[str, str]:
    """Tenant keys for 'acme' and 'globex', and an admin key."""
    store = client.app.state.pllm.keys
    return {"acme": store.create(tenant="acme")[0], "globex": store.create(tenant="globex")[0],
            "admin": store.create(tenant=None, role="admin")[0]}


@pytest.fixture
def server_factory(pllm_home: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def make(*extra: str, env: dict[str, str] | None = None, port: int | None = None, cli: bool = False,
             config: dict | None = None) -> ServerProcess:
        proc = ServerProcess(pllm_home, *extra, env=env, port=port, cli=cli, config=config)
        started.append(proc)
        return proc

    yield make
    for p in started:
        p.stop()
