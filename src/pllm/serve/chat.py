"""Personalized chat. The prompt comes from the pipeline (`pllm.pipeline.Personalizer` in the `chat` prompt
style, `pllm.prompting.chat`): the conversation with the user's retrieved memories and an optional cached
summary of them. A named personalizer is applied last, and generation streams through `StopScanner`.

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

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pllm.models.base import Generator, Prompt
from pllm.registry import Registry
from pllm.retrieval.embedders import Embedder
from pllm.serve.config import ServeConfig
from pllm.types import ProfileItem
from pllm.users.store import UserStore


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


class ChatPersonalizer(ABC):
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


# A factory gets the server's store (to find per-user artifacts) and returns a ChatPersonalizer.
PERSONALIZERS: Registry[Callable[[UserStore], ChatPersonalizer]] = Registry("personalizer")
AUTO, NONE = "auto", "none"  # request values besides the registered names


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
