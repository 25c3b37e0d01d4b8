"""OpenAI-compatible HTTP backend (vLLM, Ollama, llama.cpp server, OpenAI itself).

The server owns the tokenizer and chat template, so token counts here are approximate and there is
no scoring (the chat API gives no log-probs of arbitrary continuations).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pllm.errors import InputError, PllmError
from pllm.models.base import (
    GENERATORS,
    Generation,
    Generator,
    Prompt,
    approx_count_tokens,
    approx_truncate_tokens,
    trim_at_stop,
)

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

log = logging.getLogger(__name__)

OPENAI_MAX_STOP = 4  # the OpenAI API accepts at most 4 stop strings; extra ones are trimmed locally


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value is not None:
            return value
    return None


def _tiktoken_encoding() -> Any | None:
    """cl100k_base if tiktoken is installed and its encoding file is available offline, else None."""
    try:
        import tiktoken

        return tiktoken.get_encoding("cl100k_base")
    except Exception:  # not installed, or the BPE file cannot be fetched (offline)
        return None


@GENERATORS.register("openai")
class OpenAIGenerator(Generator):
    """Generation through an OpenAI-compatible server.

    base_url defaults to env PLLM_OPENAI_BASE_URL, then OPENAI_BASE_URL, then the openai client's own
    default (api.openai.com). The api key comes from PLLM_OPENAI_API_KEY or OPENAI_API_KEY and may be
    empty for local servers. model=None takes env PLLM_OPENAI_MODEL, else the server's first listed
    model. Transient failures (connection errors, timeouts, 429 and 5xx) are retried by the openai
    client with exponential backoff, `max_retries` times.

    count_tokens uses tiktoken's cl100k_base when available; otherwise a heuristic (a run of up to four
    word characters, or one punctuation character, is one token), which slightly over-counts English
    text: treat prompt budgets as approximate for this backend.
    """

    name = "openai"
    supports_scoring = False
    serves_engine_adapters = True

    def __init__(self, model: str | None = None, *, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 3, concurrency: int | None = None) -> None:
        from openai import OpenAI

        self.base_url = base_url or _env("PLLM_OPENAI_BASE_URL", "OPENAI_BASE_URL")
        key = api_key if api_key is not None else _env("PLLM_OPENAI_API_KEY", "OPENAI_API_KEY")
        # The client insists on a non-empty key; local servers ignore it.
        self.client = OpenAI(base_url=self.base_url, api_key=key or "EMPTY", timeout=timeout,
                             max_retries=max_retries)
        self.base_url = str(self.client.base_url)
        self.concurrency = concurrency
        self._model = model or _env("PLLM_OPENAI_MODEL")
        self._encoding = _tiktoken_encoding()
        self._request_model: str | None = None  # an engine adapter's name, sent as `model` (with_engine_adapter)

    def with_engine_adapter(self, name: str) -> OpenAIGenerator:
        """Requests name the adapter as their `model` (vLLM with `--enable-lora --lora-modules name=path`
        answers with that LoRA on the base model); `model_id` stays the base model's."""
        if not name:
            raise InputError("an engine adapter name must be non-empty", field="adapter")
        routed = copy.copy(self)
        routed._request_model = name
        return routed

    @property
    def request_model(self) -> str:
        """The `model` field of this generator's requests: the engine adapter's name, else the base model."""
        return self._request_model or self.model_id

    @property
    def model_id(self) -> str:  # type: ignore[override]
        """The served model; asked from the server's /models on first use when not given."""
        if not self._model:
            models = self._call(lambda: self.client.models.list())
            ids = [m.id for m in getattr(models, "data", [])]
            if not ids:
                raise PllmError(f"the server at {self.base_url} lists no models; pass model=...")
            self._model = ids[0]
        return self._model

    def _call(self, fn: Any) -> Any:
        """Run one API call, turning openai exceptions into PllmErrors that name the server URL."""
        import openai

        try:
            return fn()
        except openai.APITimeoutError as exc:
            raise PllmError(f"OpenAI-compatible server at {self.base_url} timed out: {exc}") from exc
        except openai.APIConnectionError as exc:
            raise PllmError(f"cannot reach OpenAI-compatible server at {self.base_url} "
                            f"(is it running? set base_url or PLLM_OPENAI_BASE_URL): {exc}") from exc
        except openai.APIStatusError as exc:
            if exc.status_code == 404 and self._request_model:
                raise PllmError(f"the server at {self.base_url} has no adapter {self._request_model!r}: start vLLM "
                                "with --enable-lora --lora-modules $(pllm adapt list --task TASK --lora-modules)"
                                ) from exc
            raise PllmError(f"OpenAI-compatible server at {self.base_url} answered HTTP {exc.status_code}: "
                            f"{exc.message}") from exc

    def count_tokens(self, text: str) -> int:
        if self._encoding is not None:
            return len(self._encoding.encode(text, disallowed_special=()))
        return approx_count_tokens(text)

    def truncate_to_tokens(self, text: str, max_tokens: int) -> str:
        if max_tokens <= 0:
            return ""
        if self._encoding is not None:
            ids = self._encoding.encode(text, disallowed_special=())
            return text if len(ids) <= max_tokens else self._encoding.decode(ids[:max_tokens])
        return approx_truncate_tokens(text, max_tokens)

    def render(self, prompt: Prompt) -> str:
        """Approximate: the server applies its own chat template to chat prompts."""
        return super().render(prompt)

    @staticmethod
    def _messages(prompt: Prompt) -> list[ChatCompletionMessageParam]:
        messages: list[ChatCompletionMessageParam] = []
        if prompt.system:
            messages.append({"role": "system", "content": prompt.system})
        messages.append({"role": "user", "content": prompt.text})
        return messages

    def _one(self, prompt: Prompt, max_new_tokens: int, temperature: float, stop: list[str]) -> Generation:
        common: dict[str, Any] = {"model": self.request_model, "max_tokens": max_new_tokens,
                                  "temperature": float(temperature)}
        if stop:
            common["stop"] = stop[:OPENAI_MAX_STOP]
        if prompt.chat:
            resp = self._call(lambda: self.client.chat.completions.create(
                messages=self._messages(prompt), **common))
            text = (resp.choices[0].message.content or "") if resp.choices else ""
        else:
            resp = self._call(lambda: self.client.completions.create(prompt=prompt.text, **common))
            text = (resp.choices[0].text or "") if resp.choices else ""
        text, _ = trim_at_stop(text, stop)
        usage = getattr(resp, "usage", None)
        p_tok = getattr(usage, "prompt_tokens", None)
        c_tok = getattr(usage, "completion_tokens", None)
        return Generation(text=text,
                          prompt_tokens=int(p_tok) if p_tok is not None else self.count_prompt_tokens(prompt),
                          completion_tokens=int(c_tok) if c_tok is not None else self.count_tokens(text))

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 stop: Sequence[str] | None = None, batch_size: int = 8) -> list[Generation]:
        """One request per prompt, up to `concurrency` (default batch_size) in flight, so servers that
        batch internally (vLLM) see a batch."""
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        stop_list = [s for s in (stop or []) if s]
        if not prompts:
            return []
        _ = self.model_id  # resolve once, before the threads
        workers = max(1, min(self.concurrency or batch_size, len(prompts)))
        if workers == 1:
            return [self._one(p, max_new_tokens, temperature, stop_list) for p in prompts]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda p: self._one(p, max_new_tokens, temperature, stop_list), prompts))

    def stream(self, prompt: Prompt, *, max_new_tokens: int = 64, temperature: float = 0.0) -> Iterator[str]:
        """Server-sent streaming of the completion text."""
        common: dict[str, Any] = {"model": self.request_model, "max_tokens": max_new_tokens,
                                  "temperature": float(temperature), "stream": True}
        if prompt.chat:
            chunks = self._call(lambda: self.client.chat.completions.create(
                messages=self._messages(prompt), **common))
        else:
            chunks = self._call(lambda: self.client.completions.create(prompt=prompt.text, **common))
        for chunk in chunks:
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            piece = choice.delta.content if prompt.chat else choice.text
            if piece:
                yield piece
