"""Personalized chat: the conversation goes to the model through its chat template, with the user's
retrieved memories in front of the last user message (or in the system message, `memory_in="system"`),
an optional cached summary of them in the system message, and an optional named personalizer applied last.

Personalizers are the hook for model-level personalization (per-user adapters from `pllm.adapt`,
preference vectors from `pllm.align`, a soft-prompt encoder; the built-in ones are in
`pllm.serve.personalizers`): a module registers a factory in `PERSONALIZERS`, and a chat request names it in
its `adapter` field, or leaves "auto" (the first that has something for the user) or "none". The
personalizer gets the whole `ChatContext` (tenant, the store's user id, memories, the prompt, the base
generator, the server config) and may swap the generator (e.g. one with the user's adapter active, reading
`prompt.question.user_id`) or edit the prompt, or answer None when it has nothing for this request.
Artifacts it keeps per user are removed by `DELETE /v1/users/{id}` through the forget hooks of the features
registered with the store (`pllm.serve.features`) and its own `forget`.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pllm.models.base import Generator, Prompt
from pllm.registry import Registry
from pllm.retrieval.embedders import Embedder
from pllm.serve.config import ServeConfig
from pllm.tasks.spec import TaskSpec
from pllm.types import ProfileItem, Question
from pllm.users.store import SQLiteUserStore

BASE_INSTRUCTION = ("You are a helpful assistant. When it is relevant, use what you know about the user to "
                    "personalize your answer.")


@functools.lru_cache(maxsize=1)
def memory_spec() -> TaskSpec:
    """What the profile summarizer reads: a memory is its `text` field (see `pllm.prompting.ProfileSummarizer`).
    Built on first use: validating a spec imports the metrics (rouge, nltk), which the server rarely needs."""
    return TaskSpec(name="serve-memory", kind="generation", description="A user's free-text memories.",
                    item_text="{text}", item_template="{text}", parser="text", metrics=["rouge-1"])


@dataclass
class ChatContext:
    """Everything about one chat turn that a personalizer may read or change."""

    tenant: str
    user: str | None
    store_user_id: str | None
    messages: list[dict[str, str]]
    memories: list[ProfileItem]
    prompt: Prompt
    generator: Generator
    options: dict[str, Any] = field(default_factory=dict)
    config: ServeConfig | None = None
    embedder: Callable[[], Embedder] | None = None  # the server's embedder (loaded on first call)


class Personalizer(ABC):
    """Model-level personalization for chat, registered by name in `PERSONALIZERS`."""

    name: ClassVar[str] = "personalizer"

    @abstractmethod
    def personalize(self, ctx: ChatContext) -> ChatContext | None:
        """Return the context to generate with (a different `generator`, an edited `prompt`...), or None
        when there is nothing for this request (no user, nothing stored for them): "auto" then tries the
        next personalizer, and the request is answered from memory alone."""

    def forget(self, store_user_id: str) -> int:
        """Remove what this personalizer keeps for a user; returns how many artifacts went."""
        return 0


# A factory gets the server's store (to find per-user artifacts) and returns a Personalizer.
PERSONALIZERS: Registry[Callable[[SQLiteUserStore], Personalizer]] = Registry("personalizer")
AUTO, NONE = "auto", "none"  # request values besides the registered names


MEMORY_PLACES = ("user", "system")


def memory_lines(memories: Sequence[ProfileItem], generator: Generator, *, budget: int,
                 item_tokens: int) -> tuple[list[str], list[str]]:
    """The user's memories as "- text" lines, best first, within `budget` tokens of the generator's
    tokenizer (each cut to `item_tokens`); returns the lines and the ids of the memories they hold."""
    from pllm.serve.memory import item_text

    used: list[str] = []
    lines: list[str] = []
    spent = 0
    for item in memories:
        line = "- " + generator.truncate_to_tokens(" ".join(item_text(item).split()), item_tokens)
        cost = generator.count_tokens(line)
        if spent + cost > budget:
            break
        lines.append(line)
        used.append(item.id)
        spent += cost
    return lines, used


def build_prompt(messages: Sequence[dict[str, str]], lines: Sequence[str], summary: str | None, *,
                 memory_in: str, request_id: str, store_user_id: str | None,
                 memories: Sequence[ProfileItem]) -> Prompt:
    """A chat `Prompt` for the whole conversation.

    One leading system turn (chat templates accept one, first) holds the personalization instruction, the
    profile summary and the client's own system message(s). The memory lines go into that system turn
    (memory_in="system") or in front of the last user message (memory_in="user", "Things I told you
    before: ..."); small models such as the embedded SmolLM2-135M read context in the user turn and ignore
    it in the system turn. `messages` is for chat-template backends, `text` a plain transcript for others.
    """
    if memory_in not in MEMORY_PLACES:
        raise ValueError(f"memory_in must be one of {MEMORY_PLACES}, got {memory_in!r}")
    parts = [BASE_INSTRUCTION] if lines or summary else []
    if summary:
        parts.append(f"About the user: {summary}")
    if lines and memory_in == "system":
        parts.append("What you know about the user:\n" + "\n".join(lines))
    client_system = [m["content"] for m in messages if m["role"] == "system"]
    merged = "\n\n".join([*parts, *client_system])
    turns = [dict(m) for m in messages if m["role"] != "system"]
    last_index = next((i for i in range(len(turns) - 1, -1, -1) if turns[i]["role"] == "user"), None)
    last_user = turns[last_index]["content"] if last_index is not None else ""
    if lines and memory_in == "user" and last_index is not None:
        turns[last_index]["content"] = "Things I told you before:\n" + "\n".join(lines) + "\n\n" + last_user
    full = ([{"role": "system", "content": merged}] if merged else []) + turns
    if len(turns) == 1 and turns[0]["role"] == "user":
        text = turns[0]["content"]
    else:
        text = "\n".join(f"{m['role']}: {m['content']}" for m in turns)
    question = Question(id=request_id, user_id=store_user_id or "", input=last_user, query={"input": last_user},
                        profile=list(memories))
    return Prompt(text=text, chat=True, system=merged or None, question=question, messages=full)


class StopScanner:
    """Cuts a stream at the first stop string, holding back just enough text to never emit part of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buffer = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.buffer += piece
        if not self.stops:
            out, self.buffer = self.buffer, ""
            return out
        cut = min((i for i in (self.buffer.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self.buffer = self.buffer[:cut], ""
            return out
        keep = len(self.buffer) - self.hold
        if keep <= 0:
            return ""
        out, self.buffer = self.buffer[:keep], self.buffer[keep:]
        return out

    def flush(self) -> str:
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out
