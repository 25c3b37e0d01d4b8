"""Memory API in-process: add (one or many), page, search with several retrievers, delete, forget,
export; embeddings written with the items and removed with them; validation and size limits. On both stores."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pllm_serve_testutil import auth

from pllm.errors import InputError
from pllm.io import sha1_text
from pllm.serve import ServeConfig, store_user_id
from pllm.types import ProfileItem

PETS = [
    {"id": "dog", "text": "my dog is called Rex and loves the beach"},
    {"id": "food", "text": "I am vegetarian and cook pasta every friday", "fields": {"source": "chat"}},
    {"id": "job", "text": "I work as a nurse on night shifts", "timestamp": "2024-05-01"},
]


@pytest.fixture
def client(make_client, store_location: str) -> TestClient:  # noqa: ANN001
    """These tests run on both stores: a SQLite file, and PostgreSQL (skipped without $PLLM_TEST_POSTGRES)."""
    return make_client(db=store_location)


def add(client: TestClient, key: str, user: str, items: list[dict]) -> dict:
    r = client.post(f"/v1/users/{user}/items", json={"items": items}, headers=auth(key))
    assert r.status_code == 201, r.text
    return r.json()


def embedding_rows(client: TestClient, tenant: str, user: str) -> list[str]:
    store = client.app.state.pllm.store
    return [r[0] for r in store.execute("SELECT text_hash FROM embeddings WHERE user_id=?",
                                        (store_user_id(tenant, user),))]


def test_add_one_or_many_and_page(client: TestClient, keys: dict[str, str]) -> None:
    one = client.post("/v1/users/alice/items", json={"text": "likes green tea"}, headers=auth(keys["acme"]))
    assert one.status_code == 201
    [item] = one.json()["data"]
    assert item["text"] == "likes green tea" and len(item["id"]) == 32  # a fresh random id
    out = add(client, keys["acme"], "alice", PETS)
    assert [d["id"] for d in out["data"]] == ["dog", "food", "job"]
    assert out["data"][1]["fields"] == {"source": "chat"}
    assert out["data"][2]["timestamp"] == 1714521600.0  # ISO date parsed to epoch seconds (UTC)

    page1 = client.get("/v1/users/alice/items", params={"limit": 2}, headers=auth(keys["acme"])).json()
    page2 = client.get("/v1/users/alice/items", params={"limit": 2, "offset": 2}, headers=auth(keys["acme"])).json()
    assert page1["total"] == page2["total"] == 4
    assert page1["has_more"] and not page2["has_more"]
    assert [d["id"] for d in page1["data"] + page2["data"]] == [item["id"], "dog", "food", "job"]


def test_new_items_are_searchable_immediately_with_embeddings_computed_on_write(
        client: TestClient, keys: dict[str, str]) -> None:
    state = client.app.state.pllm
    add(client, keys["acme"], "alice", PETS)
    assert sorted(embedding_rows(client, "acme", "alice")) == sorted(sha1_text(p["text"]) for p in PETS)
    encoded_before = len(state.embedder().encoded)
    r = client.get("/v1/users/alice/search", params={"q": "what is the dog called", "k": 2},
                   headers=auth(keys["acme"]))
    assert r.status_code == 200
    body = r.json()
    assert body["retriever"] == "dense" and len(body["data"]) == 2
    assert body["data"][0]["item"]["id"] == "dog"
    # Only the query was encoded: item vectors came from the store.
    assert state.embedder().encoded[encoded_before:] == ["what is the dog called"]

    # A write invalidates the cached index: the new item is found by the very next search.
    add(client, keys["acme"], "alice", [{"id": "cat", "text": "my cat Tom hates the dog"}])
    hits = client.get("/v1/users/alice/search", params={"q": "cat Tom", "k": 1}, headers=auth(keys["acme"])).json()
    assert hits["data"][0]["item"]["id"] == "cat"


def test_search_with_other_retrievers(client: TestClient, keys: dict[str, str]) -> None:
    add(client, keys["acme"], "alice", PETS)
    h = auth(keys["acme"])
    bm25 = client.get("/v1/users/alice/search", params={"q": "pasta friday", "retriever": "bm25"}, headers=h).json()
    assert bm25["retriever"] == "bm25" and bm25["data"][0]["item"]["id"] == "food"
    hybrid = client.get("/v1/users/alice/search", params={"q": "nurse shifts", "retriever": "hybrid", "k": 1},
                        headers=h).json()
    assert [d["item"]["id"] for d in hybrid["data"]] == ["job"]
    recency = client.get("/v1/users/alice/search", params={"q": "x", "retriever": "recency", "k": 1}, headers=h).json()
    assert [d["item"]["id"] for d in recency["data"]] == ["job"]  # the only item with a timestamp
    unknown = client.get("/v1/users/alice/search", params={"q": "x", "retriever": "nope"}, headers=h)
    assert unknown.status_code == 400 and "known:" in unknown.json()["error"]["message"]


def test_search_and_chat_with_the_model_based_retrievers(make_client, store_location: str) -> None:  # noqa: ANN001
    client = make_client(backend="serve-judge", db=store_location)
    key = client.app.state.pllm.keys.create(tenant="acme")[0]
    add(client, key, "alice", PETS)

    def search(q: str, retriever: str, k: int = 3) -> list[str]:
        r = client.get("/v1/users/alice/search", params={"q": q, "k": k, "retriever": retriever}, headers=auth(key))
        assert r.status_code == 200, r.text
        return [d["item"]["id"] for d in r.json()["data"]]

    assert search("pasta friday", "bm25")[0] == "food"
    # The served model judges the base's candidates (shortest memory first, whatever the question).
    assert search("pasta friday", "rerank-llm") == ["job", "dog", "food"]
    assert search("pasta friday", "rewrite", k=2)  # the model's (echoed) sub-queries fused with the question
    chat = client.post("/v1/chat/completions", headers=auth(key), json={
        "model": "serve-judge", "user": "alice", "k": 1, "retriever": "rerank-llm",
        "messages": [{"role": "user", "content": "what do I cook on friday?"}]})
    assert chat.status_code == 200, chat.text
    assert chat.json()["pllm"]["retriever"] == "rerank-llm" and chat.json()["pllm"]["memories"] == ["job"]
    # No cross-encoder configured: rerank-ce is refused with the option to set.
    r = client.get("/v1/users/alice/search", params={"q": "x", "retriever": "rerank-ce"}, headers=auth(key))
    assert r.status_code == 422 and r.json()["error"]["param"] == "cross_encoder"
    assert "rerank-ce needs a cross-encoder model" in r.json()["error"]["message"]


def test_a_cross_encoder_that_cannot_load_is_named(make_client, tmp_path) -> None:  # noqa: ANN001
    missing = str(tmp_path / "no-ce")
    client = make_client(cross_encoder=missing)
    key = client.app.state.pllm.keys.create(tenant="acme")[0]
    add(client, key, "alice", PETS)
    r = client.get("/v1/users/alice/search", params={"q": "x", "retriever": "rerank-ce"}, headers=auth(key))
    assert r.status_code == 422 and missing in r.json()["error"]["message"]


def test_a_write_is_all_or_nothing_items_and_embeddings_together(client: TestClient, keys: dict[str, str]) -> None:
    state = client.app.state.pllm
    add(client, keys["acme"], "alice", PETS[:1])
    uid = store_user_id("acme", "alice")
    version = state.store.user_version(user_id=uid)
    # The second item's fields cannot be stored (a set is not JSON): the failure comes inside the transaction,
    # after the first item and both new vectors were written, and rolls them all back.
    batch = [ProfileItem(id="tea", fields={"text": "likes green tea"}),
             ProfileItem(id="bad", fields={"text": "never stored", "tags": {"a"}})]
    with pytest.raises(TypeError):
        state.memory.add(uid, batch)
    assert [i.id for i in state.store.get_items(user_id=uid)] == ["dog"]
    assert embedding_rows(client, "acme", "alice") == [sha1_text(PETS[0]["text"])]
    assert state.store.user_version(user_id=uid) == version
    # A good write stores its items and their vectors, and bumps the version once.
    state.memory.add(uid, batch[:1])
    assert sorted(embedding_rows(client, "acme", "alice")) == sorted([sha1_text(PETS[0]["text"]),
                                                                      sha1_text("likes green tea")])
    assert state.store.user_version(user_id=uid) > version


def test_replace_and_delete_remove_the_old_embedding(client: TestClient, keys: dict[str, str]) -> None:
    add(client, keys["acme"], "alice", PETS)
    add(client, keys["acme"], "alice", [{"id": "dog", "text": "my dog Rex died last year"}])
    hashes = embedding_rows(client, "acme", "alice")
    assert sha1_text(PETS[0]["text"]) not in hashes and sha1_text("my dog Rex died last year") in hashes
    r = client.delete("/v1/users/alice/items/food", headers=auth(keys["acme"]))
    assert r.status_code == 200 and r.json() == {"id": "food", "object": "item", "deleted": True}
    assert sha1_text(PETS[1]["text"]) not in embedding_rows(client, "acme", "alice")
    ids = [d["item"]["id"] for d in client.get("/v1/users/alice/search", params={"q": "pasta vegetarian", "k": 5},
                                               headers=auth(keys["acme"])).json()["data"]]
    assert "food" not in ids and sorted(ids) == ["dog", "job"]
    again = client.delete("/v1/users/alice/items/food", headers=auth(keys["acme"]))
    assert again.status_code == 404 and again.json()["error"]["param"] == "item"


def test_forget_removes_rows_embeddings_and_summaries(client: TestClient, keys: dict[str, str]) -> None:
    state = client.app.state.pllm
    add(client, keys["acme"], "alice", PETS)
    add(client, keys["acme"], "bob", PETS[:1])
    uid = store_user_id("acme", "alice")
    state.store.put_summary(user_id=uid, key="k", model="m", summary="likes dogs")
    r = client.delete("/v1/users/alice", headers=auth(keys["acme"]))
    assert r.status_code == 200
    rows = r.json()["rows"]
    assert rows["items"] == 3 and rows["embeddings"] == 3 and rows["profile_summaries"] == 1 and rows["users"] == 1
    for table in ("items", "embeddings", "profile_summaries"):
        assert state.store.execute(f"SELECT COUNT(*) FROM {table} WHERE user_id=?", (uid,))[0][0] == 0
    for path in ("/v1/users/alice/items", "/v1/users/alice/export", "/v1/users/alice/search?q=dog"):
        assert client.get(path, headers=auth(keys["acme"])).status_code == 404
    assert client.get("/v1/users/bob/items", headers=auth(keys["acme"])).json()["total"] == 1  # bob untouched
    assert len(embedding_rows(client, "acme", "bob")) == 1


def test_export_holds_everything_about_the_user(client: TestClient, keys: dict[str, str]) -> None:
    add(client, keys["acme"], "alice", PETS)
    client.app.state.pllm.store.put_summary(user_id=store_user_id("acme", "alice"), key="k", model="m",
                                            summary="a nurse")
    body = client.get("/v1/users/alice/export", headers=auth(keys["acme"])).json()
    assert body["user"] == "alice" and [i["id"] for i in body["items"]] == ["dog", "food", "job"]
    assert body["n_embeddings"] == 3 and body["profile_summaries"][0]["summary"] == "a nurse"
    assert "acme/" not in str(body)  # the store's namespaced ids never appear


def test_validation_errors_are_clear_422s(client: TestClient, keys: dict[str, str]) -> None:
    h = auth(keys["acme"])
    cases = [
        ({"items": []}, "items: List should have at least 1 item"),
        ({"items": [{"id": "a"}]}, "items.0.text: Field required"),
        ({"text": "   "}, "text: Value error, text is blank"),
        ({"text": "x", "colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"text": "x", "fields": {"text": "y"}}, "put the memory in 'text'"),
        ({"text": "x", "timestamp": "yesterday-ish"}, "not a timestamp"),
        ({"items": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}, "item ids repeat"),
        ({"items": [{"id": "ok", "text": "x"}, {"id": "a/b", "text": "y"}]}, "items.1.id: Value error, item id "
                                                                              "must not contain '/'"),
    ]
    for body, message in cases:
        r = client.post("/v1/users/alice/items", json=body, headers=h)
        assert r.status_code == 422, (body, r.text)
        err = r.json()["error"]
        assert message in err["message"] and err["type"] == "invalid_request_error", (body, err)
    bad_json = client.post("/v1/users/alice/items", content=b"{not json", headers=h)
    assert bad_json.status_code == 422 and "request body is not valid JSON" in bad_json.json()["error"]["message"]
    assert client.get("/v1/users/alice/search", params={"q": ""}, headers=h).status_code == 422
    assert client.get("/v1/users/alice/items", params={"limit": 0}, headers=h).status_code == 422
    # Nothing was written by any rejected request.
    assert not client.app.state.pllm.memory.exists(store_user_id("acme", "alice"))


def test_size_limits(make_client, keys: dict[str, str]) -> None:  # noqa: ANN001
    small = make_client(max_body_bytes=2000, max_items_per_request=3, max_item_chars=100, max_k=5)
    key = small.app.state.pllm.keys.create(tenant="acme")[0]
    h = auth(key)
    big = small.post("/v1/users/alice/items", json={"text": "x" * 3000}, headers=h)
    assert big.status_code == 413 and "exceeds the limit of 2000 bytes" in big.json()["error"]["message"]
    many = small.post("/v1/users/alice/items", json={"items": [{"text": f"t{i}"} for i in range(4)]}, headers=h)
    assert many.status_code == 413 and many.json()["error"]["code"] == "too_many_items"
    long = small.post("/v1/users/alice/items", json={"text": "y" * 101}, headers=h)
    assert long.status_code == 422 and "limit is 100" in long.json()["error"]["message"]
    small.post("/v1/users/alice/items", json={"text": "ok"}, headers=h)
    assert small.get("/v1/users/alice/search", params={"q": "ok", "k": 6}, headers=h).status_code == 422


def test_ids_with_a_slash_are_refused_at_write_time(client: TestClient, keys: dict[str, str]) -> None:
    """A '/' in an item or user id could never be addressed again as a path segment: refused with a 422 that
    names the field, and nothing is stored."""
    h = auth(keys["acme"])
    item = client.post("/v1/users/alice/items", json={"id": "notes/1", "text": "x"}, headers=h)
    assert item.status_code == 422 and item.json()["error"]["param"] == "id"
    assert "must not contain '/'" in item.json()["error"]["message"]
    # An encoded slash in the user segment matches no route; a chat's `user` field is refused like an item id.
    user = client.post("/v1/users/a%2Fb/items", json={"text": "x"}, headers=h)
    assert user.status_code == 404  # the router decodes %2F before matching: no route, nothing written
    chat = client.post("/v1/chat/completions", headers=h, json={
        "model": "serve-echo", "user": "a/b", "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 422 and chat.json()["error"]["param"] == "user"
    assert "must not contain '/'" in chat.json()["error"]["message"]
    assert not client.app.state.pllm.memory.exists(store_user_id("acme", "alice"))
    assert not client.app.state.pllm.memory.exists(store_user_id("acme", "a/b"))


def test_an_unknown_embed_precision_is_refused_at_startup() -> None:
    with pytest.raises(InputError, match="field 'embed_precision': must be one of float32, bfloat16"):
        ServeConfig(embed_precision="fp16")


@pytest.mark.slow
def test_a_bfloat16_server_stores_its_vectors_under_their_own_model_name(make_client, tmp_path) -> None:  # noqa: ANN001
    client = make_client(db=str(tmp_path / "bf16.db"), embedder="minilm", embed_precision="bfloat16")
    key = client.app.state.pllm.keys.create(tenant="acme")[0]
    add(client, key, "alice", PETS)
    store = client.app.state.pllm.store
    assert [r[0] for r in store.execute("SELECT DISTINCT model FROM embeddings")] == ["all-MiniLM-L6-v2@bfloat16"]
    hits = client.get("/v1/users/alice/search", params={"q": "what is my pet's name", "k": 1}, headers=auth(key))
    assert hits.json()["data"][0]["item"]["id"] == "dog"
