"""Chat completions in-process: memories in the system message, multi-turn conversations through the chat
template, SSE streaming, stop strings, the personalizer hook, cached profile summaries, back-pressure
(429 + Retry-After) and timeouts (504)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from pllm_serve_testutil import auth

from pllm.errors import InputError
from pllm.models.base import GENERATORS, Prompt
from pllm.serve import ServeConfig, create_app, store_user_id

MEMORIES = [{"id": "dog", "text": "my dog is called Rex"}, {"id": "diet", "text": "I am vegetarian"},
            {"id": "job", "text": "I work night shifts as a nurse"}]


def chat(client: TestClient, key: str, content: str = "what is my dog called", **extra: object) -> httpx.Response:
    body = {"model": "serve-echo", "messages": [{"role": "user", "content": content}], **extra}
    return client.post("/v1/chat/completions", json=body, headers=auth(key))


def sse(response: httpx.Response) -> list[dict]:
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


@pytest.fixture
def alice(client: TestClient, keys: dict[str, str]) -> str:
    r = client.post("/v1/users/alice/items", json={"items": MEMORIES}, headers=auth(keys["acme"]))
    assert r.status_code == 201
    return keys["acme"]


def test_memories_go_into_the_system_message(client: TestClient, alice: str) -> None:
    r = chat(client, alice, user="alice", k=2)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["pllm"]["memories"][0] == "dog" and len(body["pllm"]["memories"]) == 2
    assert body["choices"][0]["message"] == {"role": "assistant",
                                             "content": "you said what is my dog called ; memories 2 ; turns 2"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    prompt: Prompt = client.app.state.pllm.generator().prompts[-1]
    # Memories go in front of the last user message by default (memory_in="user").
    assert prompt.messages[-1]["content"].startswith("Things I told you before:\n- my dog is called Rex\n")
    assert prompt.messages[-1]["content"].endswith("\n\nwhat is my dog called")
    assert prompt.question.input == "what is my dog called"
    assert prompt.question.user_id == store_user_id("acme", "alice")
    assert [p.id for p in prompt.question.profile] == body["pllm"]["memories"]
    # No user (or k=0): no memories at all.
    assert chat(client, alice).json()["pllm"]["memories"] == []
    assert chat(client, alice, user="alice", k=0).json()["pllm"]["memories"] == []


def test_multi_turn_conversation_is_passed_as_messages(client: TestClient, alice: str) -> None:
    messages = [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello!"},
                {"role": "user", "content": [{"type": "text", "text": "what is "}, {"type": "text", "text": "my job"}]}]
    r = client.post("/v1/chat/completions", json={"model": "serve-echo", "messages": messages, "user": "alice"},
                    headers=auth(alice))
    assert r.status_code == 200 and "turns 4" in r.json()["choices"][0]["message"]["content"]
    prompt: Prompt = client.app.state.pllm.generator().prompts[-1]
    assert [m["role"] for m in prompt.messages] == ["system", "user", "assistant", "user"]
    assert prompt.messages[0]["content"].endswith("Answer briefly.")  # the client's system merged after ours
    assert prompt.messages[1]["content"] == "hi"  # earlier turns untouched
    assert "night shifts" in prompt.messages[-1]["content"] and prompt.messages[-1]["content"].endswith("my job")
    assert prompt.text.startswith("user: hi\nassistant: hello!\nuser: Things I told you before:")


def test_memories_in_the_system_message(make_client) -> None:  # noqa: ANN001
    client = make_client(memory_in="system")
    key = client.app.state.pllm.keys.create(tenant="acme")[0]
    client.post("/v1/users/alice/items", json={"items": MEMORIES}, headers=auth(key))
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "night shifts?"}]
    r = client.post("/v1/chat/completions", json={"model": "serve-echo", "messages": messages, "user": "alice",
                                                  "k": 1}, headers=auth(key))
    assert r.status_code == 200 and r.json()["pllm"]["memories"] == ["job"]
    prompt: Prompt = client.app.state.pllm.generator().prompts[-1]
    assert prompt.messages[0]["role"] == "system"
    assert "What you know about the user:\n- I work night shifts as a nurse\n\nAnswer briefly." in prompt.system
    assert prompt.messages[-1] == {"role": "user", "content": "night shifts?"}


def test_hf_render_uses_the_chat_template_for_messages(tiny_generator) -> None:  # noqa: ANN001
    prompt = Prompt(text="unused", system="S", messages=[{"role": "user", "content": "a"},
                                                         {"role": "assistant", "content": "b"},
                                                         {"role": "user", "content": "c"}])
    assert tiny_generator.render(prompt) == ("<|system|> S </s> <|user|> a </s> <|assistant|> b </s> "
                                             "<|user|> c </s> <|assistant|> ")
    single = Prompt(text="hello", system="S")
    assert tiny_generator.render(single) == "<|system|> S </s> <|user|> hello </s> <|assistant|> "


def test_streaming_matches_non_streaming_on_a_real_model(make_client, tiny_generator) -> None:  # noqa: ANN001
    GENERATORS.register("serve-tiny", lambda model=None: tiny_generator, replace=True)
    try:
        client = make_client(backend="serve-tiny")
        key = client.app.state.pllm.keys.create(tenant="acme")[0]
        client.post("/v1/users/bob/items", json={"text": "good movie"}, headers=auth(key))
        body = {"model": tiny_generator.model_id, "user": "bob", "max_tokens": 8,
                "messages": [{"role": "user", "content": "rate the movie"}]}
        plain = client.post("/v1/chat/completions", json=body, headers=auth(key)).json()
        streamed = client.post("/v1/chat/completions", json={**body, "stream": True,
                                                             "stream_options": {"include_usage": True}},
                               headers=auth(key))
        assert streamed.headers["content-type"].startswith("text/event-stream")
        chunks = sse(streamed)
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text == plain["choices"][0]["message"]["content"] and text
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert chunks[-2]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    finally:
        GENERATORS.unregister("serve-tiny")


def test_stop_strings_cut_both_modes(client: TestClient, alice: str) -> None:
    plain = chat(client, alice, user="alice", stop=[" ; mem"]).json()
    assert plain["choices"][0]["message"]["content"] == "you said what is my dog called"
    streamed = sse(chat(client, alice, user="alice", stop=" ; mem", stream=True))
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in streamed)
    assert text == "you said what is my dog called" and streamed[-1]["choices"][0]["finish_reason"] == "stop"


def test_personalizer_hook_and_forget(client: TestClient, alice: str) -> None:
    r = chat(client, alice, user="alice", adapter="test-tag")
    assert r.status_code == 200 and r.json()["pllm"]["adapter"] == "test-tag"
    state = client.app.state.pllm
    assert state.generator().prompts[-1].system.endswith("- tagged by test-tag")
    assert "memories 4" in r.json()["choices"][0]["message"]["content"]  # 3 memories + the personalizer's line
    tagger = state.personalizer("test-tag")
    assert tagger.seen == [store_user_id("acme", "alice")]
    forgot = client.delete("/v1/users/alice", headers=auth(alice)).json()
    assert forgot["rows"]["personalizer:test-tag"] == 1 and tagger.forgotten == [store_user_id("acme", "alice")]
    unknown = chat(client, alice, user="alice", adapter="no-such")
    assert unknown.status_code == 400 and "test-tag" in unknown.json()["error"]["message"]


def test_profile_summary_is_cached_and_forgotten(client: TestClient, alice: str) -> None:
    state = client.app.state.pllm
    gen = state.generator()
    before = len(gen.prompts)
    first = chat(client, alice, user="alice", profile=True)
    assert first.status_code == 200
    assert len(gen.prompts) == before + 2  # the summary, then the answer
    assert "About the user: you said Here is part of a user's history" in gen.prompts[-1].system
    chat(client, alice, user="alice", profile=True)
    assert len(gen.prompts) == before + 3  # summary read from the cache
    uid = store_user_id("acme", "alice")
    assert state.store.execute("SELECT COUNT(*) FROM profile_summaries WHERE user_id=?", (uid,))[0][0] == 1
    client.delete("/v1/users/alice", headers=auth(alice))
    assert state.store.execute("SELECT COUNT(*) FROM profile_summaries WHERE user_id=?", (uid,))[0][0] == 0


def test_chat_validation(client: TestClient, alice: str) -> None:
    cases = [
        ({"model": "serve-echo", "messages": []}, 422, "messages: List should have at least 1 item"),
        ({"model": "serve-echo", "messages": [{"role": "system", "content": "x"}]}, 422, "at least one user"),
        ({"model": "serve-echo", "messages": [{"role": "user", "content": "x"}], "n": 2}, 422, "n: Input should be"),
        ({"model": "serve-echo", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10_000}, 422,
         "max_tokens: 10000 exceeds"),
        ({"model": "serve-echo", "messages": [{"role": "user", "content": "x"}], "k": 51}, 422, "k: 51 exceeds"),
        ({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}, 404, "not served here"),
        ({"messages": [{"role": "user", "content": "x"}]}, 422, "model: Field required"),
        ({"model": "serve-echo", "messages": [{"role": "user", "content": "x"}], "retriever": "nope"}, 400,
         "unknown retriever 'nope'"),
        ({"model": "serve-echo", "messages": [{"role": "user", "content": "x"}], "retriever": "cf"}, 422,
         "needs the train split"),  # ranks by other users' answers: a server holds no train split
    ]
    for body, status, message in cases:
        r = client.post("/v1/chat/completions", json=body, headers=auth(alice))
        assert r.status_code == status, (body, r.text)
        assert message in r.json()["error"]["message"], (body, r.json())
    # Unknown OpenAI parameters are accepted (the client may send them) and ignored.
    ok = chat(client, alice, presence_penalty=0.5, seed=3, top_p=0.9)
    assert ok.status_code == 200
    assert chat(client, alice, response_format={"type": "text"}, logprobs=False).status_code == 200


def test_unsupported_options_are_refused_not_ignored(client: TestClient, alice: str) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    cases = [({"tools": [tool]}, "tools"), ({"response_format": {"type": "json_object"}}, "response_format"),
             ({"logprobs": True}, "logprobs")]
    for extra, param in cases:
        r = chat(client, alice, **extra)
        err = r.json()["error"]
        assert r.status_code == 400 and err["param"] == param and err["code"] == "unsupported_parameter", r.text
        assert err["message"].startswith(f"{param}: ") and "not" in err["message"], err
    assert client.app.state.pllm.generator().prompts == []  # refused before any generation


def test_malformed_json_names_the_problem(client: TestClient, alice: str) -> None:
    r = client.post("/v1/chat/completions", content=b'{"model": "serve-echo" "messages": []}',
                    headers={**auth(alice), "Content-Type": "application/json"})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["message"] == "request body is not valid JSON: Expecting ',' delimiter at character 23", err
    assert err["param"] == "body" and err["type"] == "invalid_request_error"


def test_model_by_id(client: TestClient, alice: str) -> None:
    r = client.get("/v1/models/serve-echo", headers=auth(alice))
    assert r.status_code == 200 and r.json() == {"id": "serve-echo", "object": "model", "created": 0,
                                                 "owned_by": "pllm"}
    missing = client.get("/v1/models/org/gpt-9", headers=auth(alice))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found" and "'org/gpt-9' is not served here" in \
        missing.json()["error"]["message"]


async def _concurrent_chats(app, key: str, n: int) -> list[httpx.Response]:  # noqa: ANN001
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as ac:
        body = {"model": "serve-echo", "messages": [{"role": "user", "content": "hi"}]}
        return list(await asyncio.gather(*[ac.post("/v1/chat/completions", json=body, headers=auth(key))
                                           for _ in range(n)]))


def test_queue_full_gets_429_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLLM_TEST_GEN_DELAY", "0.5")
    app = create_app(ServeConfig(backend="serve-echo", embedder="serve-bow", gen_concurrency=1, gen_queue=1,
                                 preload=False))
    state = app.state.pllm
    key = state.keys.create(tenant="acme")[0]
    state.generator()
    try:
        responses = asyncio.run(_concurrent_chats(app, key, 4))
        codes = sorted(r.status_code for r in responses)
        assert codes == [200, 200, 429, 429], codes
        rejected = [r for r in responses if r.status_code == 429]
        for r in rejected:
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"]["type"] == "rate_limit_error" and "queue limit 1" in r.json()["error"]["message"]
        assert state.limiter.rejected == 2 and state.limiter.active == 0
    finally:
        state.close()


def test_one_tenants_burst_does_not_refuse_another_tenant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLLM_TEST_GEN_DELAY", "0.3")
    app = create_app(ServeConfig(backend="serve-echo", embedder="serve-bow", gen_concurrency=1, gen_queue=1,
                                 preload=False))
    state = app.state.pllm
    acme, globex = state.keys.create(tenant="acme")[0], state.keys.create(tenant="globex")[0]
    state.generator()

    async def scenario() -> tuple[list[httpx.Response], list[httpx.Response]]:
        burst = asyncio.ensure_future(_concurrent_chats(app, acme, 4))
        await asyncio.sleep(0.05)  # the burst is admitted first
        single = await _concurrent_chats(app, globex, 1)
        return await burst, single

    try:
        burst, single = asyncio.run(scenario())
        assert sorted(r.status_code for r in burst) == [200, 200, 429, 429]
        assert "per tenant" in next(r for r in burst if r.status_code == 429).json()["error"]["message"]
        assert [r.status_code for r in single] == [200]  # it waited its turn instead
        assert state.limiter.active == 0 and state.limiter.admitted == {}
    finally:
        state.close()


def test_timeout_gives_504_and_the_slot_is_held_until_the_model_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLLM_TEST_GEN_DELAY", "1.0")
    app = create_app(ServeConfig(backend="serve-echo", embedder="serve-bow", request_timeout_s=0.3, preload=False))
    state = app.state.pllm
    key = state.keys.create(tenant="acme")[0]
    state.generator()

    async def scenario() -> tuple[int, str, int, float]:
        started = time.monotonic()
        [r] = await _concurrent_chats(app, key, 1)
        active_after_504 = state.limiter.active  # the model is still working on the abandoned request
        while state.limiter.active:
            await asyncio.sleep(0.02)
        return r.status_code, r.json()["error"]["code"], active_after_504, time.monotonic() - started

    try:
        status, code, active_after_504, released_after = asyncio.run(scenario())
        assert (status, code, active_after_504) == (504, "timeout", 1)
        assert released_after >= 1.0  # the slot came back only when the generation really ended
        assert len(state.generator().prompts) == 1
    finally:
        state.close()


def test_raw_chat_memory_stores_each_user_turn_after_the_answer(make_client) -> None:  # noqa: ANN001
    client = make_client()
    key = client.app.state.pllm.keys.create(tenant="acme")[0]
    first = [{"role": "user", "content": "my sister is called Ines"}]
    r = chat(client, key, first[0]["content"], user="ada", memory="raw", session="s1")
    assert r.status_code == 200 and r.json()["pllm"]["memories"] == []  # stored after, not used by itself
    second = [*first, {"role": "assistant", "content": "noted"}, {"role": "user", "content": "I live in Porto"}]
    streamed = client.post("/v1/chat/completions", headers=auth(key), json={
        "model": "serve-echo", "messages": second, "user": "ada", "memory": "raw", "session": "s1", "stream": True})
    assert sse(streamed)[-1]["choices"][0]["finish_reason"] == "stop"
    chat(client, key, "I live in Porto", user="ada", memory="raw", session="s1",
         messages=second)  # a retried turn replaces itself
    items = client.get("/v1/users/ada/items", headers=auth(key)).json()["data"]
    assert [(i["id"], i["text"], i["fields"]) for i in items] == [
        ("chat-s1-0", "my sister is called Ines", {"source": "chat", "turn": 0, "session": "s1"}),
        ("chat-s1-1", "I live in Porto", {"source": "chat", "turn": 1, "session": "s1"})]
    assert all(time.time() - i["timestamp"] < 60 for i in items)
    # The next turn finds what was said before.
    later = chat(client, key, "where do I live", user="ada", k=1, retriever="bm25")
    assert later.json()["pllm"]["memories"] == ["chat-s1-1"]
    # Off by default, and "raw" needs a user.
    chat(client, key, "I like tea", user="bob")
    assert client.get("/v1/users/bob/items", headers=auth(key)).status_code == 404
    refused = chat(client, key, "hi", memory="raw")
    assert refused.status_code == 422 and refused.json()["error"]["param"] == "memory"


def test_server_default_chat_memory(make_client) -> None:  # noqa: ANN001
    client = make_client(chat_memory="raw")
    key = client.app.state.pllm.keys.create(tenant="acme")[0]
    assert chat(client, key, "I like tea", user="bob").status_code == 200
    assert chat(client, key, "no user, nothing stored").status_code == 200
    assert chat(client, key, "not this one", user="bob", memory="off").status_code == 200
    [item] = client.get("/v1/users/bob/items", headers=auth(key)).json()["data"]
    assert item["text"] == "I like tea" and item["fields"] == {"source": "chat", "turn": 0}
    with pytest.raises(InputError):
        ServeConfig(backend="serve-echo", chat_memory="remember")
