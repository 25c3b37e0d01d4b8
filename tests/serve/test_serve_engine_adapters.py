"""Per-user adapters on a serving engine: the `openai` backend names the user's adapter as the request's
`model` (vLLM multi-LoRA), checked against a fake OpenAI-compatible server in the test that records every
request; `pllm adapt list --lora-modules` prints the vLLM flag values for the same names, pointing at the peft
folders `pllm adapt` wrote."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pllm_serve_adapters import TASK, save_adapt_adapter
from pllm_serve_testutil import auth
from typer.testing import CliRunner

from pllm.adapt.store import AdapterStore, engine_name
from pllm.serve import store_user_id

BASE = "base-model"


class FakeEngine:
    """An OpenAI-compatible server holding the base model and some adapters by name (as vLLM started with
    `--enable-lora --lora-modules NAME=PATH`); unknown models get vLLM's 404."""

    def __init__(self) -> None:
        self.models = {BASE}
        self.requests: list[dict] = []
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                self._send(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                             "owned_by": "fake"} for m in sorted(engine.models)]})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                engine.requests.append(body)
                model = body["model"]
                if model not in engine.models:
                    self._send(404, {"object": "error", "message": f"The model `{model}` does not exist.",
                                     "type": "NotFoundError", "code": 404})
                    return
                text = f"answered by {model}"
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": model,
                             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())
                    return
                self._send(200, {"id": "c", "object": "chat.completion", "created": 0, "model": model,
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}],
                                 "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEngine]:
    fake = FakeEngine()
    monkeypatch.setenv("PLLM_OPENAI_BASE_URL", fake.url)
    monkeypatch.setenv("PLLM_OPENAI_API_KEY", "unused")
    yield fake
    fake.close()


def chat(client, key: str, user: str, **extra: object) -> dict:  # noqa: ANN001
    r = client.post("/v1/chat/completions", headers=auth(key),
                    json={"model": BASE, "user": user, "messages": [{"role": "user", "content": "hi"}], **extra})
    return {"status": r.status_code, "body": r.json() if r.headers.get("content-type", "").startswith(
        "application/json") else r.text}


def test_each_user_is_routed_to_their_engine_adapter(engine: FakeEngine, make_client, tiny_generator) -> None:  # noqa: ANN001
    client = make_client(backend="openai", model=BASE, embedder="serve-bow", retriever="bm25")
    state = client.app.state.pllm
    key = state.keys.create(tenant="acme")[0]
    alice = store_user_id("acme", "alice")
    save_adapt_adapter(tiny_generator, AdapterStore(db=state.store), alice, seed=1)
    alice_engine = engine_name(TASK, "user", alice)
    engine.models.add(alice_engine)

    assert chat(client, key, "alice")["body"]["choices"][0]["message"]["content"] == f"answered by {alice_engine}"
    assert chat(client, key, "bob")["body"]["choices"][0]["message"]["content"] == f"answered by {BASE}"
    assert chat(client, key, "alice", adapter="none")["body"]["choices"][0]["message"]["content"] == \
        f"answered by {BASE}"  # memory-only chat: the base model
    streamed = chat(client, key, "alice", stream=True)
    assert streamed["status"] == 200 and f"answered by {alice_engine}" in streamed["body"]
    assert [r["model"] for r in engine.requests] == [alice_engine, BASE, BASE, alice_engine]
    assert client.get("/v1/models", headers=auth(key)).json()["data"][0]["id"] == BASE  # the base is served

    engine.models.discard(alice_engine)  # the engine was started without alice's adapter: a clear error
    missing = chat(client, key, "alice")
    assert missing["status"] >= 400 and "has no adapter" in json.dumps(missing["body"])
    assert "--lora-modules" in json.dumps(missing["body"])


def test_lora_modules_lists_the_peft_folders_by_engine_name(tiny_generator, tmp_path: Path) -> None:  # noqa: ANN001
    from pllm.cli import app
    from pllm.serve.features import open_with_features

    db = tmp_path / "s.sqlite3"
    with open_with_features(db) as store:
        adapters = AdapterStore(db=store)
        for user, seed in (("acme/alice", 1), ("acme/bob", 2)):
            save_adapt_adapter(tiny_generator, adapters, user, seed=seed)
        adapters.mark_stale(adapters.get(TASK, "user", "acme/bob"))
    out = CliRunner().invoke(app, ["adapt", "list", "--task", TASK, "--store", str(db), "--lora-modules"])
    assert out.exit_code == 0, out.output
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and "left out: acme/bob: stale" in out.stderr
    name, path = lines[0].split("=", 1)
    assert name == engine_name(TASK, "user", "acme/alice") and name.startswith("u_")
    files = {p.name for p in Path(path).iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files  # peft's format, as vLLM loads it
    assert json.loads((Path(path) / "adapter_config.json").read_text())["peft_type"] == "LORA"
