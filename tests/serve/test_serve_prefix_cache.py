"""`pllm serve --prefix-cache-users N` on a real (tiny) transformers model: a user's later turns reuse their
cached prefix with the same greedy answers, and `DELETE /v1/users/{id}` drops the cache."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from pllm_serve_testutil import auth

from pllm.errors import InputError
from pllm.models.base import GENERATORS
from pllm.models.testing import make_tiny_generator
from pllm.serve import ServeConfig, store_user_id

GENERATORS.register("serve-tiny-hf", lambda model=None: make_tiny_generator(seed=0), replace=True)


def _conversation(client: TestClient, key: str, *, stream: bool = False) -> list[str]:
    messages = [{"role": "system", "content": "you are a movie critic"}]
    answers = []
    for text in ("great movie", "and the book is bad", "what about the movie"):
        messages.append({"role": "user", "content": text})
        body = {"model": "tiny-llama-seed0", "user": "alice", "messages": messages, "max_tokens": 6, "stream": stream}
        r = client.post("/v1/chat/completions", json=body, headers=auth(key))
        assert r.status_code == 200
        if stream:
            chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
            pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
            assert len([p for p in pieces if p]) > 1  # token by token
            assert chunks[0]["pllm"]["adapter"] == "user-adapter"
            answers.append("".join(pieces))
        else:
            answers.append(r.json()["choices"][0]["message"]["content"])
        messages.append({"role": "assistant", "content": answers[-1]})
    return answers


def test_cached_turns_answer_as_uncached_ones_and_forget_drops_the_cache(make_client) -> None:
    answers = {}
    for users in (0, 4):
        client = make_client(backend="serve-tiny-hf", prefix_cache_users=users)
        key = client.app.state.pllm.keys.create(tenant="acme")[0]
        r = client.post("/v1/users/alice/items", json={"items": [{"id": "a", "text": "I love this movie"}]},
                        headers=auth(key))
        assert r.status_code == 201
        answers[users] = _conversation(client, key)
    assert answers[4] == answers[0]
    gen = client.app.state.pllm.generator()
    uid = store_user_id("acme", "alice")
    assert len(gen.prefix_cache) == 1 and gen.prefix_cache.stats["hits"] == 2
    forgot = client.delete("/v1/users/alice", headers=auth(key)).json()
    assert forgot["rows"]["prefix_cache"] == 1 and len(gen.prefix_cache) == 0
    assert gen.prefix_cache.forget(uid) == 0


def test_a_chat_served_with_the_users_adapter_streams_and_reuses_its_own_prefix_cache(make_client) -> None:
    """The user's adapter runs on a private model copy: its cached prefixes are that copy's, kept apart from the
    bare model's, answer as uncached turns do, and go when the user is forgotten."""
    from pllm_serve_adapters import save_adapt_adapter

    from pllm.adapt.store import AdapterStore

    answers, caches = {}, {}
    for users in (0, 4):
        client = make_client(backend="serve-tiny-hf", prefix_cache_users=users)
        state = client.app.state.pllm
        key = state.keys.create(tenant="acme")[0]
        r = client.post("/v1/users/alice/items", json={"items": [{"id": "a", "text": "I love this movie"}]},
                        headers=auth(key))
        assert r.status_code == 201
        save_adapt_adapter(state.generator(), AdapterStore(db=state.store), store_user_id("acme", "alice"), seed=1)
        answers[users] = _conversation(client, key, stream=True)
        caches[users] = [g.base.prefix_cache for g in state.personalizer("user-adapter")._generators.values()]
    assert answers[4] == answers[0]
    assert caches[0] == [None] and len(caches[4]) == 1
    cache = caches[4][0]
    assert cache.stats["hits"] == 2 and len(cache) == 1 and len(state.generator().prefix_cache) == 0
    assert client.delete("/v1/users/alice", headers=auth(key)).status_code == 200
    assert len(cache) == 0


def test_a_negative_prefix_cache_size_is_refused() -> None:
    with pytest.raises(InputError, match="prefix_cache_users"):
        ServeConfig(prefix_cache_users=-1)


def test_the_cli_refuses_a_prefix_cache_with_several_workers(pllm_home) -> None:
    """A forget reaches one worker, so another worker's cache would keep the user's text: refused up front."""
    from typer.testing import CliRunner

    from pllm.cli import app

    res = CliRunner().invoke(app, ["serve", "--workers", "2", "--prefix-cache-users", "4", "--embedder", "none",
                                   "--retriever", "bm25"])
    assert res.exit_code == 2 and "--prefix-cache-users" in res.output and "one worker" in res.output
    assert not list(pllm_home.glob("*.sqlite3"))  # refused before the store was opened
