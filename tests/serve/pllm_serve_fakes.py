"""Fakes for the server tests, registered through the real registries. Imported in-process by the tests'
conftest, and by `pllm serve --plugin pllm_serve_fakes` in subprocess tests (PYTHONPATH=tests/serve:tests).

- `serve-bow`: hashed bag-of-words embedder (deterministic, offline).
- `serve-echo`: a generator whose answer shows what it was given: the last user message and how many
  memories the system message carried; streams word by word; `PLLM_TEST_GEN_DELAY` seconds per call
  (to fill the generation queue in tests), `PLLM_TEST_TOKEN_DELAY` seconds per streamed word.
- `serve-notes`: serve-echo that also answers the fact-extraction prompt of memory from chats: "I live in X"
  gives "city: X", "my R is called N" gives "R: N", "I feel fine" gives "none", "explode" raises, "copycat"
  gives the prompt's example facts, and anything else gives text with no fact line.
- `serve-judge`: serve-echo that also scores continuations (`supports_scoring`), for the `rerank-llm` retriever:
  a relevance prompt's " Yes" is likelier the shorter its memory, whatever the question, so its order is
  visibly its own.
- `test-tag` personalizer: marks the system prompt and records the users it personalized and forgot.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator

from pllm.models.base import GENERATORS, Generation, Generator, Prompt
from pllm.retrieval.embedders import EMBEDDERS
from pllm.serve.chat import PERSONALIZERS, ChatContext, ChatPersonalizer
from pllm.serve.remember import EXTRACT_HEADER
from pllm_testkit import BowEmbedder


class ServeBow(BowEmbedder):
    """The shared test bag of words (`pllm_testkit.BowEmbedder`) under the server tests' name."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__(dim)
        self.name = f"serve-bow-{dim}"


class ServeEcho(Generator):
    name = "serve-echo"

    def __init__(self, model: str | None = None) -> None:
        self.model_id = model or "serve-echo"
        self.delay = float(os.environ.get("PLLM_TEST_GEN_DELAY", "0"))
        self.token_delay = float(os.environ.get("PLLM_TEST_TOKEN_DELAY", "0"))
        self.prompts: list[Prompt] = []

    def answer(self, prompt: Prompt, max_new_tokens: int) -> str:
        msgs = prompt.messages or [{"role": "user", "content": prompt.text}]
        last = prompt.question.input if prompt.question else msgs[-1]["content"]
        n_mem = sum(1 for m in msgs for line in m["content"].splitlines() if line.startswith("- "))
        words = f"you said {last} ; memories {n_mem} ; turns {len(msgs)}".split()
        return " ".join(words[:max_new_tokens])

    def generate(self, prompts, *, max_new_tokens=64, temperature=0.0, stop=None, batch_size=8):
        out = []
        for p in prompts:
            if self.delay:
                time.sleep(self.delay)
            self.prompts.append(p)
            text = self.answer(p, max_new_tokens)
            for s in stop or []:
                if s and s in text:
                    text = text[:text.index(s)]
            out.append(Generation(text=text, prompt_tokens=self.count_tokens(p.system or "") + 1,
                                  completion_tokens=len(text.split())))
        return out

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(self, prompt: Prompt, *, max_new_tokens: int = 64, temperature: float = 0.0) -> Iterator[str]:
        if self.delay:
            time.sleep(self.delay)
        self.prompts.append(prompt)
        for i, word in enumerate(self.answer(prompt, max_new_tokens).split()):
            time.sleep(self.token_delay)
            yield word if i == 0 else " " + word


class ServeNotes(ServeEcho):
    """Its extraction runs `gap_steps` background steps of `step_delay` s first (0 by default), counting the
    steps that ran while a chat generated (`steps_beside_chat`); `chat_delay` s per chat generation."""

    name = "serve-notes"

    def __init__(self, model: str | None = None) -> None:
        super().__init__(model or "serve-notes")
        self.extractions = 0
        self.gap_steps, self.step_delay, self.chat_delay = 0, 0.0, 0.0
        self.chatting = self.steps_beside_chat = self.chats_beside_extraction = 0
        self.extracting = threading.Event()

    def generate(self, prompts, *, max_new_tokens=64, temperature=0.0, stop=None, batch_size=8):
        chat = not prompts[0].text.startswith(EXTRACT_HEADER)
        if chat:
            self.chatting += 1
            self.chats_beside_extraction += self.extracting.is_set()
            time.sleep(self.chat_delay)
        try:
            return super().generate(prompts, max_new_tokens=max_new_tokens, stop=stop)
        finally:
            self.chatting -= chat

    def generate_in_gaps(self, prompt, *, max_new_tokens, stop, yield_to):
        self.extracting.set()
        try:
            for _ in range(self.gap_steps):
                yield_to()
                self.steps_beside_chat += self.chatting > 0
                time.sleep(self.step_delay)
            return super().generate_in_gaps(prompt, max_new_tokens=max_new_tokens, stop=stop, yield_to=yield_to)
        finally:
            self.extracting.clear()

    def answer(self, prompt: Prompt, max_new_tokens: int) -> str:
        if not prompt.text.startswith(EXTRACT_HEADER):
            return super().answer(prompt, max_new_tokens)
        self.extractions += 1
        said = prompt.text.rsplit("Message: ", 1)[1].removesuffix("\nNotes:\n")
        lines = [f"city: {m.group(1)}" for m in re.finditer(r"I live in (\w+)", said)]
        lines += [f"{m.group(1)}: {m.group(2)}" for m in re.finditer(r"my (\w+) is called (\w+)", said)]
        if "explode" in said:
            raise RuntimeError("the model failed")
        if "copycat" in said:  # copies the prompt's first example instead of reading the message
            lines = ["city: Paris", "dog: Rex"]
        if lines:
            return "\n".join(lines)
        return "none" if "I feel fine" in said else "Sure! Here is what I noticed about you."


class ServeJudge(ServeEcho):
    name = "serve-judge"
    supports_scoring = True

    def __init__(self, model: str | None = None) -> None:
        super().__init__(model or "serve-judge")

    def score(self, prompts, continuations, *, batch_size=8, normalize=False):  # noqa: ANN001, ANN201
        import numpy as np

        memories = [re.findall(r"Memory: (.*)", p.text)[-1] for p in prompts]
        return np.array([[-float(len(m)), 0.0] for m in memories])  # (N, 2): log P(" Yes"), log P(" No")


class TagPersonalizer(ChatPersonalizer):
    """Adds a marker to the system message; a real one would swap in a generator with the user's adapter."""

    name = "test-tag"

    def __init__(self, store) -> None:  # noqa: ANN001
        self.store = store
        self.seen: list[str | None] = []
        self.forgotten: list[str] = []

    def personalize(self, ctx: ChatContext) -> ChatContext:
        self.seen.append(ctx.prompt.question.user_id if ctx.prompt.question else None)
        ctx.prompt.system = (ctx.prompt.system or "") + "\n- tagged by test-tag"
        if ctx.prompt.messages and ctx.prompt.messages[0]["role"] == "system":
            ctx.prompt.messages[0]["content"] = ctx.prompt.system
        return ctx

    def forget(self, store_user_id: str) -> int:
        self.forgotten.append(store_user_id)
        return 1


EMBEDDERS.register("serve-bow", ServeBow, replace=True)
GENERATORS.register("serve-echo", ServeEcho, replace=True)
GENERATORS.register("serve-notes", ServeNotes, replace=True)
GENERATORS.register("serve-judge", ServeJudge, replace=True)
PERSONALIZERS.register("test-tag", TagPersonalizer, replace=True)
