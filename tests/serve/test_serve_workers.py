"""Several server processes on one store (both stores): a write through one worker is seen by a search
through another within one request, because each request checks the user's version in the store. With
the check off, the second worker serves its stale cache: the test would catch a missing check."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pllm_serve_testutil import auth

from pllm.serve.auth import KeyStore
from pllm.serve.features import open_with_features


def make_key(location: str) -> str:
    with open_with_features(location) as store:
        return KeyStore(store).create(tenant="acme")[0]


def hits(base: str, key: str, query: str) -> list[str]:
    r = httpx.get(f"{base}/v1/users/alice/search", params={"q": query, "k": 10}, headers=auth(key))
    assert r.status_code == 200, r.text
    return [h["item"]["id"] for h in r.json()["data"]]


def add(base: str, key: str, item_id: str, text: str) -> None:
    r = httpx.post(f"{base}/v1/users/alice/items", json={"id": item_id, "text": text}, headers=auth(key))
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("version_check", [True, False], ids=["checked", "unchecked"])
def test_a_write_through_one_worker_is_found_through_the_other(server_factory, store_location: str,  # noqa: ANN001
                                                               version_check: bool) -> None:
    key = make_key(store_location)
    config = {"db": store_location, "version_check": version_check}
    a, b = server_factory(config=config).start(), server_factory(config=config).start()
    add(a.url, key, "dog", "my dog is called Rex")
    assert hits(b.url, key, "dog") == ["dog"]  # b has now cached alice's index
    add(a.url, key, "cat", "my cat is called Tom")
    found = hits(b.url, key, "cat Tom")
    if not version_check:  # what the check prevents: b answers from the index it built before the write
        assert found == ["dog"]
        return
    assert found[0] == "cat" and set(found) == {"cat", "dog"}
    assert httpx.delete(f"{a.url}/v1/users/alice/items/dog", headers=auth(key)).status_code == 200
    assert hits(b.url, key, "dog") == ["cat"]
    assert httpx.delete(f"{a.url}/v1/users/alice", headers=auth(key)).status_code == 200
    assert httpx.get(f"{b.url}/v1/users/alice/search", params={"q": "cat"}, headers=auth(key)).status_code == 404
    add(a.url, key, "fox", "a fox")  # alice again, from nothing: b must not revive its old index
    assert hits(b.url, key, "cat fox") == ["fox"]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def test_pllm_serve_workers(server_factory, store_location: str) -> None:  # noqa: ANN001
    """`pllm serve --workers 2 --store ...`: two processes behind one port; every write is found by the next
    request, whichever worker takes it (a fresh connection each time)."""
    key = make_key(store_location)
    server = server_factory("--workers", "2", "--store", store_location, cli=True).start()
    assert server.proc is not None and len(_children(server.proc.pid)) >= 2
    for i in range(10):  # k=10 returns every item: the newest must be among them
        add(server.url, key, f"n{i}", f"note number{i}")
        assert set(hits(server.url, key, f"number{i}")) == {f"n{j}" for j in range(i + 1)}
