"""Memory from chats through the HTTP API with the official openai client (in-process): raw turns, facts
extracted by the served model with their source turns, counted failures, the update rules (merge, supersede,
history, delete, forget) and the stats route."""

from __future__ import annotations

import time
from collections.abc import Callable

import openai
import pytest
from fastapi.testclient import TestClient
from pllm_serve_testutil import auth

from pllm.serve import store_user_id

MODEL = "serve-notes"


@pytest.fixture
def notes(make_client: Callable[..., TestClient], store_location: str) -> tuple[TestClient, str, openai.OpenAI]:
    client = make_client(backend=MODEL, db=store_location)  # each test on both stores (SQLite, PostgreSQL)
    key = client.app.state.pllm.keys.create(tenant="acme")[0]
    return client, key, openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client,
                                      max_retries=0)


def say(oa: openai.OpenAI, text: str, *, user: str = "ada", session: str = "s1", memory: str | None = "extract",
        history: list[dict[str, str]] | None = None) -> str:
    body = {"session": session} | ({"memory": memory} if memory else {})
    resp = oa.chat.completions.create(model=MODEL, user=user, extra_body=body,
                                      messages=[*(history or []), {"role": "user", "content": text}])
    return str(resp.choices[0].message.content)


def stats(client: TestClient, key: str, *, until: Callable[[dict[str, int]], bool] | None = None) -> dict[str, int]:
    """The tenant's memory stats, once `until` holds (the writes run after the answer, in the background)."""
    deadline = time.monotonic() + 10
    while True:
        s = client.get("/v1/memory/stats", headers=auth(key)).json()
        if until is None or until(s) or time.monotonic() > deadline:
            return s
        time.sleep(0.02)


def items(client: TestClient, key: str, user: str = "ada") -> dict[str, dict]:
    r = client.get(f"/v1/users/{user}/items", headers=auth(key))
    return {i["id"]: i for i in r.json()["data"]} if r.status_code == 200 else {}


def history(client: TestClient, key: str, item: str, user: str = "ada") -> list[dict]:
    return client.get(f"/v1/users/{user}/items/{item}/history", headers=auth(key)).json()["data"]


def test_extract_stores_the_turn_and_facts_with_their_source_turn(notes) -> None:  # noqa: ANN001
    client, key, oa = notes
    assert say(oa, "I live in Porto and my sister is called Ines") == \
        "you said I live in Porto and my sister is called Ines ; memories 0 ; turns 1"
    s = stats(client, key, until=lambda s: s["extractions"] == 1)  # counted once the extraction is over
    assert s == {"object": "memory.stats", "turns_stored": 1, "turn_failures": 0, "extractions": 1,
                 "extraction_errors": 0, "extraction_unparsed": 0, "facts_added": 2, "facts_merged": 0,
                 "facts_superseded": 0, "facts_ungrounded": 0}
    got = items(client, key)
    assert got["chat-s1-0"]["text"] == "I live in Porto and my sister is called Ines"
    assert got["chat-s1-0"]["fields"] == {"source": "chat", "turn": 0, "session": "s1"}
    city = got["fact-city"]
    assert city["text"] == "city: Porto" and city["timestamp"] == got["chat-s1-0"]["timestamp"]
    assert {k: city["fields"][k] for k in ("slot", "value", "source", "sources", "count")} == {
        "slot": "city", "value": "Porto", "source": "extract", "sources": ["chat-s1-0"], "count": 1}
    assert got["fact-sister"]["text"] == "sister: Ines"
    # The next chat finds the fact.
    r = client.post("/v1/chat/completions", headers=auth(key), json={
        "model": MODEL, "user": "ada", "k": 1, "retriever": "bm25", "memory": "off",
        "messages": [{"role": "user", "content": "which city do I live in"}]})
    assert r.json()["pllm"]["memories"] == ["fact-city"]


def test_raw_mode_extracts_nothing_and_failures_are_counted_with_the_turn_kept(notes) -> None:  # noqa: ANN001
    client, key, oa = notes
    say(oa, "I live in Porto", memory="raw")
    stats(client, key, until=lambda s: s["turns_stored"] == 1)
    assert client.app.state.pllm.generator().extractions == 0
    say(oa, "explode", history=[{"role": "user", "content": "I live in Porto"}])  # the model raises
    say(oa, "I said many things", session="s2")  # no fact line in the model's answer
    say(oa, "I feel fine", session="s3")  # an explicit 'none': no fact, no failure
    say(oa, "I am a copycat", session="s4")  # facts that are not in the message: dropped and counted
    s = stats(client, key, until=lambda s: s["extractions"] == 4 and s["turns_stored"] == 5)
    assert (s["extraction_errors"], s["extraction_unparsed"], s["facts_added"], s["turn_failures"]) == (1, 1, 0, 0)
    assert s["facts_ungrounded"] == 2
    assert set(items(client, key)) == {"chat-s1-0", "chat-s1-1", "chat-s2-0", "chat-s3-0", "chat-s4-0"}


def test_extraction_runs_in_the_gaps_between_chats_and_takes_no_slot(make_client) -> None:  # noqa: ANN001
    """One generation slot: chats sent while an extraction is under way run at once (the extraction takes no
    slot), and the extraction pauses while they generate (at most the step it was in runs beside each)."""
    client = make_client(backend=MODEL, gen_concurrency=1, gen_queue=0)
    key = client.app.state.pllm.keys.create(tenant="acme")[0]
    oa = openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)
    gen = client.app.state.pllm.generator()
    gen.gap_steps, gen.step_delay, gen.chat_delay = 200, 0.005, 0.05
    say(oa, "I live in Porto")
    assert gen.extracting.wait(10)
    for i in range(4):  # gen_queue=0: a chat queued behind a slot-holding extraction would get a 429
        assert say(oa, f"hello {i}", memory="off").startswith(f"you said hello {i}")
    assert gen.chats_beside_extraction == 4 and gen.steps_beside_chat <= 4
    s = stats(client, key, until=lambda s: s["extractions"] == 1)
    assert (s["facts_added"], s["extraction_errors"]) == (1, 0)


def test_repeated_fact_merges_with_count_and_sources(notes) -> None:  # noqa: ANN001
    client, key, oa = notes
    say(oa, "I live in Porto", session="a")
    stats(client, key, until=lambda s: s["facts_added"] == 1)
    say(oa, "I live in porto!", session="b")  # identical after normalization: merged, not added
    s = stats(client, key, until=lambda s: s["facts_merged"] == 1)
    assert s["facts_added"] == 1 and s["facts_superseded"] == 0
    city = items(client, key)["fact-city"]
    assert city["text"] == "city: Porto"
    assert city["fields"]["count"] == 2 and city["fields"]["sources"] == ["chat-a-0", "chat-b-0"]
    versions = history(client, key, "fact-city")
    assert [v["fields"]["count"] for v in versions] == [1, 2]
    assert versions[0]["replaced_at"] is not None and versions[1]["replaced_at"] is None


def test_near_identical_fact_merges_by_embedding_similarity(make_client) -> None:  # noqa: ANN001
    # serve-bow: "hometown: Porto" and "city: Porto" share one of two words (cosine 0.5); at 0.5 they merge.
    for threshold, merged in ((0.5, True), (0.9, False)):
        client = make_client(backend=MODEL, memory_merge_similarity=threshold)
        key = client.app.state.pllm.keys.create(tenant=f"t{threshold}")[0]  # one store: a tenant per run
        oa = openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)
        say(oa, "my hometown is called Porto", session="a")
        stats(client, key, until=lambda s: s["facts_added"] == 1)
        say(oa, "I live in Porto", session="b")
        s = stats(client, key, until=lambda s: s["facts_added"] + s["facts_merged"] == 2)
        assert (s["facts_merged"], s["facts_added"]) == ((1, 1) if merged else (0, 2))
        got = items(client, key)
        if merged:
            assert "fact-city" not in got and got["fact-hometown"]["fields"]["sources"] == ["chat-a-0", "chat-b-0"]
        else:
            assert got["fact-city"]["fields"]["count"] == 1


def test_a_new_value_for_a_slot_supersedes_and_history_keeps_every_version(notes) -> None:  # noqa: ANN001
    client, key, oa = notes
    say(oa, "I live in Porto", session="a")
    stats(client, key, until=lambda s: s["facts_added"] == 1)
    say(oa, "I live in Lisbon", session="b")
    stats(client, key, until=lambda s: s["facts_superseded"] == 1)
    say(oa, "I live in Berlin", session="c")
    s = stats(client, key, until=lambda s: s["facts_superseded"] == 2)
    assert s["facts_added"] == 1
    city = items(client, key)["fact-city"]
    assert city["text"] == "city: Berlin" and city["fields"]["sources"] == ["chat-c-0"]
    versions = history(client, key, "fact-city")
    assert [(v["version"], v["text"], v["fields"]["sources"]) for v in versions] == [
        (1, "city: Porto", ["chat-a-0"]), (2, "city: Lisbon", ["chat-b-0"]), (3, "city: Berlin", ["chat-c-0"])]
    assert [v["replaced_at"] is None for v in versions] == [False, False, True]
    # Search sees only the current value.
    hits = client.get("/v1/users/ada/search", params={"q": "city", "k": 10, "retriever": "bm25"},
                      headers=auth(key)).json()["data"]
    assert [h["item"]["text"] for h in hits if h["item"]["id"].startswith("fact-")] == ["city: Berlin"]


def test_a_reposted_item_keeps_its_history_and_a_deleted_one_is_gone_with_it(notes) -> None:  # noqa: ANN001
    client, key, _ = notes
    for text in ("v1", "v2"):
        assert client.post("/v1/users/ada/items", headers=auth(key),
                           json={"id": "note", "text": text}).status_code == 201
    assert [v["text"] for v in history(client, key, "note")] == ["v1", "v2"]
    assert client.delete("/v1/users/ada/items/note", headers=auth(key)).status_code == 200
    r = client.get("/v1/users/ada/items/note/history", headers=auth(key))
    assert r.status_code == 404 and r.json()["error"]["param"] == "item"
    # Re-adding the id starts a fresh history: nothing of the deleted versions comes back.
    client.post("/v1/users/ada/items", headers=auth(key), json={"id": "note", "text": "v3"})
    assert [v["text"] for v in history(client, key, "note")] == ["v3"]
    # Another tenant cannot read it.
    other = client.app.state.pllm.keys.create(tenant="globex")[0]
    assert client.get("/v1/users/ada/items/note/history", headers=auth(other)).status_code == 404


def test_forgetting_a_user_removes_facts_and_their_history(notes) -> None:  # noqa: ANN001
    client, key, oa = notes
    say(oa, "I live in Porto", session="a")
    say(oa, "I live in Lisbon", session="b")
    stats(client, key, until=lambda s: s["facts_superseded"] == 1)
    store = client.app.state.pllm.store
    uid = store_user_id("acme", "ada")
    assert len(store.get_item_history("fact-city", user_id=uid)) == 2
    r = client.delete("/v1/users/ada", headers=auth(key))
    assert r.status_code == 200 and r.json()["rows"]["item_history"] == 1
    assert client.get("/v1/users/ada/items", headers=auth(key)).status_code == 404
    assert store.get_item_history("fact-city", user_id=uid) == []
    assert store.execute("SELECT COUNT(*) FROM item_history WHERE user_id=?", (uid,))[0][0] == 0


def test_memory_needs_a_user_and_an_unknown_mode_is_refused(notes) -> None:  # noqa: ANN001
    client, key, oa = notes
    with pytest.raises(openai.UnprocessableEntityError) as err:
        oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                   extra_body={"memory": "extract"})
    assert err.value.body["param"] == "memory"
    with pytest.raises(openai.UnprocessableEntityError) as err:
        oa.chat.completions.create(model=MODEL, user="ada", messages=[{"role": "user", "content": "hi"}],
                                   extra_body={"memory": "everything"})
    assert "memory" in err.value.body["message"]
    assert stats(client, key)["turns_stored"] == 0 and items(client, key) == {}


def test_a_streamed_chat_remembers_after_the_stream(notes) -> None:  # noqa: ANN001
    client, key, oa = notes
    stream = oa.chat.completions.create(model=MODEL, user="ada", stream=True, extra_body={"memory": "extract"},
                                        messages=[{"role": "user", "content": "I live in Porto"}])
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.startswith("you said I live in Porto")
    stats(client, key, until=lambda s: s["facts_added"] == 1)
    assert {i["text"] for i in items(client, key).values()} == {"I live in Porto", "city: Porto"}


def test_remembered_turns_are_searchable_by_the_conversation_retrievers(notes) -> None:  # noqa: ANN001
    client, key, oa = notes
    turns = ["my sister has a new job", "she flies planes for a living"]
    say(oa, turns[0], memory="raw")
    say(oa, turns[1], memory="raw", history=[{"role": "user", "content": turns[0]}])
    say(oa, "I drink tea every morning", memory="raw", session="s2")
    stats(client, key, until=lambda s: s["turns_stored"] == 3)

    def search(q: str, retriever: str) -> list[str]:
        r = client.get("/v1/users/ada/search", params={"q": q, "k": 2, "retriever": retriever}, headers=auth(key))
        assert r.status_code == 200, r.text
        return [h["item"]["id"] for h in r.json()["data"]]

    # The second turn alone says nothing of the sister; indexed with its neighbour it is found.
    assert sorted(search("what does my sister do", "window")) == ["chat-s1-0", "chat-s1-1"]
    bm25 = client.get("/v1/users/ada/search", params={"q": "what does my sister do", "k": 3, "retriever": "bm25"},
                      headers=auth(key)).json()["data"]
    assert {h["item"]["id"]: h["score"] for h in bm25}["chat-s1-1"] == 0.0  # alone, it matches nothing
    assert search("what did I say today about tea", "dated")[0] == "chat-s2-0"


def test_fact_lines_are_read_leniently_and_kept_only_when_grounded() -> None:
    from pllm.serve.remember import grounded, parse_facts

    out = "- City: Lyon.\n2) my_job : nurse\nslot: x\nThe user seems nice\n* pet name: Rex"
    facts = parse_facts(out, sources=("t1",), timestamp=5.0)
    assert facts is not None
    assert [(f.slot, f.value, f.sources, f.timestamp) for f in facts] == [
        ("city", "Lyon", ("t1",), 5.0), ("my job", "nurse", ("t1",), 5.0), ("pet name", "Rex", ("t1",), 5.0)]
    assert parse_facts("None.", sources=(), timestamp=None) == []
    assert parse_facts("I'm allergic to peanuts.", sources=(), timestamp=None) is None
    assert [f.value for f in grounded(facts, "I moved to lyon, I am a nurse")] == ["Lyon", "nurse"]
