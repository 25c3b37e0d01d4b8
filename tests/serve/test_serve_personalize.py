"""Model- and objective-level personalization in the server, on the tiny random Llama: chat serves the user's
own adapter (pllm adapt), their alignment preference (pllm align) or the soft-prompt encoder, "auto" taking the
first that has something for the user; DELETE /v1/users/{id} removes their adapter files and rows too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from pllm_serve_adapters import save_adapt_adapter, save_align_adapter, save_soft
from pllm_serve_testutil import SRC, auth

from pllm.adapt.store import RECORD_FILE, AdapterStore
from pllm.align.store import PreferencePair, PreferenceStore
from pllm.errors import InputError
from pllm.models.base import GENERATORS, Prompt
from pllm.serve import ServeConfig, store_user_id

ALICE, BOB = store_user_id("acme", "alice"), store_user_id("acme", "bob")
MEMORIES = [{"id": "dog", "text": "my dog is called Rex"}, {"id": "job", "text": "I work night shifts"}]


@pytest.fixture
def tiny_app(make_client, tiny_generator) -> Iterator[Callable[..., tuple[TestClient, str]]]:  # noqa: ANN001
    """A server on the session's tiny random Llama, with a tenant key; alice and bob have the same memories."""
    GENERATORS.register("serve-tiny", lambda model=None: tiny_generator, replace=True)

    def make(**overrides: object) -> tuple[TestClient, str]:
        client = make_client(backend="serve-tiny", **overrides)
        key = client.app.state.pllm.keys.create(tenant="acme")[0]
        for user in ("alice", "bob"):
            r = client.post(f"/v1/users/{user}/items", json={"items": MEMORIES}, headers=auth(key))
            assert r.status_code == 201
        return client, key

    yield make
    GENERATORS.unregister("serve-tiny")


def ask(client: TestClient, key: str, user: str, **extra: object) -> dict:
    body = {"model": client.app.state.pllm.model_id(), "user": user, "max_tokens": 8,
            "messages": [{"role": "user", "content": "what is my dog called"}], **extra}
    r = client.post("/v1/chat/completions", json=body, headers=auth(key))
    assert r.status_code == 200, r.text
    if extra.get("stream"):
        chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        return {"text": "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]),
                "pllm": chunks[0]["pllm"]}
    return {"text": r.json()["choices"][0]["message"]["content"], **r.json()}


def untouched(base) -> bool:  # noqa: ANN001
    """The server's shared base model never gets adapters injected (each personalizer works on a copy)."""
    return not hasattr(base.model, "peft_config") and not any("lora_" in n for n, _ in base.model.named_parameters())


def test_chat_serves_the_users_own_adapter(tiny_app, tiny_generator) -> None:  # noqa: ANN001
    client, key = tiny_app()
    save_adapt_adapter(tiny_generator, AdapterStore(db=client.app.state.pllm.store), ALICE, seed=1)
    plain = ask(client, key, "alice", adapter="none")
    auto = ask(client, key, "alice")
    assert plain["pllm"]["adapter"] is None and auto["pllm"]["adapter"] == "user-adapter"
    assert auto["pllm"]["memories"] == plain["pllm"]["memories"] == ["dog", "job"]  # same prompt, her weights
    assert auto["text"] != plain["text"]
    assert ask(client, key, "alice", stream=True) == {"text": auto["text"], "pllm": auto["pllm"]}
    # bob has no adapter: memory-only chat on the base model, even when he asks for one
    bob = ask(client, key, "bob")
    assert bob["pllm"]["adapter"] is None and bob["text"] == plain["text"]
    assert ask(client, key, "bob", adapter="user-adapter")["pllm"]["adapter"] is None
    assert ask(client, key, "alice", adapter="soft")["pllm"]["adapter"] is None  # no --soft encoder here
    assert untouched(tiny_generator)


def test_chat_serves_the_users_alignment_preference(tiny_app, tiny_generator) -> None:  # noqa: ANN001
    client, key = tiny_app()
    store = client.app.state.pllm.store
    save_align_adapter(tiny_generator, "dpo-alice", 4, users=[ALICE])
    PreferenceStore(store).assign("dpo", "dpo-alice", user_id=ALICE)
    plain = ask(client, key, "alice", adapter="none")
    aligned = ask(client, key, "alice")
    assert aligned["pllm"]["adapter"] == "preference" and aligned["text"] != plain["text"]
    assert ask(client, key, "bob", adapter="preference")["pllm"]["adapter"] is None
    # Her own adapter comes first under "auto"; naming the personalizer still picks the preference.
    save_adapt_adapter(tiny_generator, AdapterStore(db=store), ALICE, seed=1)
    assert ask(client, key, "alice")["pllm"]["adapter"] == "user-adapter"
    assert ask(client, key, "alice", adapter="preference")["text"] == aligned["text"]
    assert untouched(tiny_generator)


def test_ric_conditions_the_last_user_turn_of_a_conversation(tiny_generator) -> None:  # noqa: ANN001
    from pllm.adapt.pool import shared_pool
    from pllm.align.ric import RiCGenerator

    save_align_adapter(tiny_generator, "ric", 6, users=[], kind="ric", dimensions=["x", "y"])
    gen = RiCGenerator(shared_pool(tiny_generator), AdapterStore().get_named("ric"), {"x": 1.0})
    prompt = Prompt(text="user: hi\nassistant: hello\nuser: rate it", system="S",
                    messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
                              {"role": "assistant", "content": "hello"}, {"role": "user", "content": "rate it"}])
    rendered = gen.render(prompt)
    assert rendered.count("<x=1.00 y=0.00>") == 1 and rendered.index("<x=1.00") > rendered.index("hello")
    assert prompt.messages[-1]["content"] == "rate it"  # the caller's prompt is left as it was


def test_chat_with_the_soft_prompt_encoder(tiny_app, tiny_generator, tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match="no soft-prompt encoder folder"):
        ServeConfig(soft=str(tmp_path / "missing"))
    config = save_soft(tiny_generator, tmp_path / "encoder", embedder="serve-bow", embed_dim=64)
    client, key = tiny_app(soft=str(tmp_path / "encoder"))
    plain = ask(client, key, "alice", adapter="none")
    soft = ask(client, key, "alice")
    assert soft["pllm"]["adapter"] == "soft" and soft["pllm"]["memories"] == plain["pllm"]["memories"]
    # The soft vectors occupy input positions like tokens: same text prompt, n_soft more positions.
    assert soft["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"] + config.n_soft
    assert ask(client, key, "alice", stream=True)["text"] == soft["text"]
    state = client.app.state.pllm
    assert state.personalizer("soft").generator.embedder is state.embedder()  # the server's, not a second copy
    forgot = client.delete("/v1/users/alice", headers=auth(key)).json()["rows"]
    assert forgot["personalizer:soft"] == 1  # her cached item vectors
    assert ask(client, key, "alice")["pllm"]["adapter"] is None  # no memories left to read
    assert untouched(tiny_generator)


def test_forget_removes_adapters_preferences_and_their_files(tiny_app, tiny_generator) -> None:  # noqa: ANN001
    client, key = tiny_app()
    store = client.app.state.pllm.store
    adapters = AdapterStore(db=store)
    own = save_adapt_adapter(tiny_generator, adapters, ALICE, seed=1)
    bobs = save_adapt_adapter(tiny_generator, adapters, BOB, seed=2)
    group = save_adapt_adapter(tiny_generator, adapters, "g0", seed=3, kind="group", members=(ALICE, BOB))
    aligned = save_align_adapter(tiny_generator, "dpo-alice", 4, users=[ALICE])
    shared = save_align_adapter(tiny_generator, "dpo-both", 5, users=[ALICE, BOB])
    prefs = PreferenceStore(store)
    prefs.add_pairs([PreferencePair(id="p1", prompt="rate it", chosen="five", rejected="one")], user_id=ALICE)
    prefs.set_vector({"x": 1.0}, user_id=ALICE)
    prefs.assign("dpo", "dpo-alice", user_id=ALICE)
    assert ask(client, key, "alice")["pllm"]["adapter"] == "user-adapter"  # her adapter is loaded now

    r = client.delete("/v1/users/alice", headers=auth(key))
    assert r.status_code == 200
    rows = r.json()["rows"]
    assert rows["items"] == 2 and rows["preference_pairs"] == 1 and rows["preference_vectors"] == 1
    assert rows["adapter_assignments"] == 1
    assert rows["adapters"] == 2  # her adapter's row and her membership of the group adapter
    assert rows["adapter_files"] == len(own.files) + 1  # the peft files and the record
    assert rows["stale_shared_adapters"] == 1 and rows["align_adapters"] == 1
    assert rows["personalizer:user-adapter"] == 1  # unloaded from the served model
    assert not own.path.exists() and not aligned.exists()
    assert bobs.path.exists() and shared.exists()  # other users' (and shared alignment) adapters stay
    record = json.loads((group.path / RECORD_FILE).read_text())
    assert record["members"] == [BOB] and record["stale"] is True
    assert store.execute("SELECT COUNT(*) FROM adapters WHERE owner=?", (ALICE,))[0][0] == 0
    assert store.execute("SELECT COUNT(*) FROM adapter_members WHERE member=?", (ALICE,))[0][0] == 0
    assert prefs.get_vector(user_id=ALICE) is None and prefs.get_assignment(user_id=ALICE) == {}
    assert ask(client, key, "alice")["pllm"]["adapter"] is None
    assert ask(client, key, "bob")["pllm"]["adapter"] == "user-adapter"


def test_the_server_registers_the_forget_hooks_without_heavy_imports(tmp_path) -> None:  # noqa: ANN001
    """Start-up registers every feature with the store explicitly, from light modules: `pllm serve` starts
    without importing peft or trl."""
    code = ("import sys; from pllm.serve import ServeConfig, ServerState; "
            f"state = ServerState(ServeConfig(db={str(tmp_path / 's.db')!r})); "
            "print(state.store.features); "
            "print(sorted(m for m in ('peft', 'trl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(SRC)}).stdout.splitlines()
    assert out[0] == "['adapters', 'keys', 'preferences']"
    assert out[1] == "[]"
