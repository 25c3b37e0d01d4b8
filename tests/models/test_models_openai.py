"""The OpenAI-compatible backend against a tiny in-process fake server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pllm.errors import PllmError
from pllm.models import Prompt, load_generator
from pllm.models.openai_backend import OpenAIGenerator


class _FakeOpenAI(BaseHTTPRequestHandler):
    """Echoes the request: chat -> "chat: <last user message> STOP tail", completions -> "completion: ..."."""

    requests: list[dict] = []

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def _send(self, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.endswith("/models"):
            self._send({"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0,
                                                    "owned_by": "test"}]})
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        req["_path"] = self.path
        req["_auth"] = self.headers.get("Authorization")
        type(self).requests.append(req)
        usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        if self.path.endswith("/chat/completions"):
            text = f"chat: {req['messages'][-1]['content']} STOP tail"
            if req.get("stream"):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for piece in text.split(" "):
                    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": req["model"],
                             "choices": [{"index": 0, "delta": {"content": piece + " "}, "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                return
            self._send({"id": "c1", "object": "chat.completion", "created": 0, "model": req["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": text}}], "usage": usage})
        elif self.path.endswith("/completions"):
            self._send({"id": "c2", "object": "text_completion", "created": 0, "model": req["model"],
                        "choices": [{"index": 0, "text": f"completion: {req['prompt']}", "finish_reason": "stop",
                                     "logprobs": None}], "usage": usage})
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_chat_and_completions(server_url: str) -> None:
    gen = load_generator("openai", base_url=server_url, api_key="")
    assert isinstance(gen, OpenAIGenerator) and not gen.supports_scoring
    assert gen.model_id == "fake-model"  # taken from /models
    out = gen.generate([Prompt("hello there", system="be brief"), Prompt("once upon", chat=False)],
                       max_new_tokens=5, stop=["STOP"])
    assert out[0].text == "chat: hello there "
    assert out[1].text == "completion: once upon"
    assert (out[0].prompt_tokens, out[0].completion_tokens) == (7, 3)
    chat = next(r for r in _FakeOpenAI.requests if r["_path"].endswith("/chat/completions"))
    comp = next(r for r in _FakeOpenAI.requests if not r["_path"].endswith("/chat/completions"))
    assert chat["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    assert chat["max_tokens"] == 5 and chat["temperature"] == 0.0 and chat["stop"] == ["STOP"]
    assert comp["prompt"] == "once upon" and comp["model"] == "fake-model"


def test_explicit_model_env_and_stream(server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLLM_OPENAI_BASE_URL", server_url)
    monkeypatch.setenv("PLLM_OPENAI_API_KEY", "sekret")
    gen = load_generator("openai", model="my-model")
    assert gen.model_id == "my-model"
    assert "".join(gen.stream(Prompt("hi"))).strip() == "chat: hi STOP tail"
    last = _FakeOpenAI.requests[-1]
    assert last["model"] == "my-model" and last["_auth"] == "Bearer sekret"


def test_many_prompts_keep_order(server_url: str) -> None:
    gen = OpenAIGenerator("m", base_url=server_url)
    texts = [g.text for g in gen.generate([Prompt(f"q{i}", chat=False) for i in range(10)], batch_size=4)]
    assert texts == [f"completion: q{i}" for i in range(10)]


def test_token_heuristics_and_no_scoring(server_url: str) -> None:
    gen = OpenAIGenerator("m", base_url=server_url)
    n = gen.count_tokens("the quick brown fox")
    assert 3 <= n <= 8
    assert gen.count_tokens(gen.truncate_to_tokens("one two three four five six", 3)) <= 3
    with pytest.raises(PllmError, match="cannot score"):
        gen.score([Prompt("x")], ["a", "b"])


def test_unreachable_server_names_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    gen = OpenAIGenerator("m", base_url=url, max_retries=1, timeout=2.0)
    start = time.perf_counter()
    with pytest.raises(PllmError, match=f"127.0.0.1:{port}"):
        gen.generate([Prompt("hello")])
    assert time.perf_counter() - start < 20
