"""Memory from chats: what a chat turn leaves in the user's memory, written after the answer is sent.

A mode (`ChatRequest.memory`, default `ServeConfig.chat_memory`) is a `MemoryMode` in `MEMORY_MODES`:
`off` keeps nothing; `raw` stores the new user turn as an item (session, turn index, time); `extract`
stores the turn too and then has the served model write short `slot: fact` lines about the user, each
stored with the turn id it came from through the update rules of `serve/updates.py`. The raw turn is
always written first, so a failed extraction loses nothing; failures are counted per tenant and shown by
`GET /v1/memory/stats`.

`ChatMemory.after_reply` is called on the event loop once the answer is out (a background task of the
response, or the end of a stream, dropped or not); the writes run as tasks the server drains at shutdown.
Extraction is background model work: one at a time, in its own thread, taking no generation slot, and
paused between steps while any request runs or waits (`Generator.generate_in_gaps` with the limiter's
`wait_idle`), so a chat never waits behind an extraction for more than one step of it (one prefill chunk
or one token).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Protocol, TypeVar

from pllm.models.base import Generator, Prompt
from pllm.registry import Registry
from pllm.serve.limits import GenerationLimiter
from pllm.serve.memory import MemoryService
from pllm.serve.updates import Fact, FactUpdater
from pllm.types import ProfileItem

log = logging.getLogger(__name__)
T = TypeVar("T")


class RunIO(Protocol):
    """The server's way to run store work off the event loop (`ServerState.run_io`)."""

    def __call__(self, fn: Callable[[], T]) -> Awaitable[T]: ...


@dataclass(frozen=True)
class MemoryMode:
    """What a chat turn leaves in memory: the raw turn, and facts extracted from it by the model."""

    store_turn: bool
    extract: bool


MEMORY_MODES: Registry[MemoryMode] = Registry("chat memory mode")
MEMORY_MODES.register("off", MemoryMode(store_turn=False, extract=False))
MEMORY_MODES.register("raw", MemoryMode(store_turn=True, extract=False))
MEMORY_MODES.register("extract", MemoryMode(store_turn=True, extract=True))

# A few-shot completion prompt: the embedded SmolLM2-135M, asked by instruction alone, answered the message
# instead of writing facts (5 of 5 tried); with examples it writes 'slot: fact' lines, though it may copy an
# example's fact, which `grounded` drops.
EXTRACT_HEADER = "Write what each message says about its author as lines 'slot: fact'; 'none' if nothing."
EXTRACT_EXAMPLES = ("Message: I live in Paris and my dog is called Rex.\nNotes:\ncity: Paris\ndog: Rex\n\n"
                    "Message: What time is it?\nNotes:\nnone\n\n"
                    "Message: I work as a teacher and my brother Sam plays chess.\nNotes:\njob: teacher\nbrother: Sam")
MAX_FACTS = 8
_FACT_LINE = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])?\s*([A-Za-z][A-Za-z _'-]{0,39}?)\s*:\s*(\S.{0,199}?)\s*$")


@dataclass
class MemoryStats:
    """Counters of one tenant's memory-from-chat writes since the server started."""

    turns_stored: int = 0
    turn_failures: int = 0
    extractions: int = 0
    extraction_errors: int = 0
    extraction_unparsed: int = 0
    facts_added: int = 0
    facts_merged: int = 0
    facts_superseded: int = 0
    facts_ungrounded: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def chat_turn(messages: list[dict[str, str]], session: str | None, *, now: float | None = None) -> ProfileItem | None:
    """The request's new user turn as a memory item: the last user message, its index among the user
    messages, the session and the time. A session's turn has a stable id (`chat-<session>-<turn>`), so a
    retried request replaces its turn instead of adding it twice."""
    said = [m["content"] for m in messages if m["role"] == "user"]
    if not said or not said[-1].strip():
        return None
    turn = len(said) - 1
    fields: dict[str, str | int] = {"text": said[-1], "source": "chat", "turn": turn}
    if session is not None:
        fields["session"] = session
    item_id = f"chat-{session}-{turn}" if session is not None else f"chat-{uuid.uuid4().hex}"
    return ProfileItem(id=item_id, fields=dict(fields), timestamp=time.time() if now is None else now)


def extraction_prompt(text: str) -> Prompt:
    message = " ".join(text.split())  # one line, like the examples
    return Prompt(text=f"{EXTRACT_HEADER}\n\n{EXTRACT_EXAMPLES}\n\nMessage: {message}\nNotes:\n", chat=False)


def grounded(facts: list[Fact], text: str) -> list[Fact]:
    """The facts whose value's words all occur in the message they cite (a model's copy of an example or an
    invented value is dropped)."""
    said = set(re.findall(r"\w+", text.lower()))
    return [f for f in facts if set(re.findall(r"\w+", f.value.lower())) <= said]


def parse_facts(output: str, *, sources: tuple[str, ...], timestamp: float | None) -> list[Fact] | None:
    """The `slot: fact` lines of a model's output (at most MAX_FACTS); [] for an explicit 'none', None when
    nothing in the output could be read (counted as a failure by the caller)."""
    facts = []
    for line in output.splitlines():
        m = _FACT_LINE.match(line)
        if m and m.group(1).strip().lower() not in ("none", "slot", "fact"):
            slot = " ".join(m.group(1).lower().replace("_", " ").split())
            facts.append(Fact(slot=slot, value=m.group(2).strip().rstrip("."), sources=sources, timestamp=timestamp))
    if facts:
        return facts[:MAX_FACTS]
    return [] if output.strip().strip(".").lower() == "none" else None


class ChatMemory:
    """Schedules and performs the writes of memory from chats, and counts them per tenant."""

    def __init__(self, memory: MemoryService, limiter: GenerationLimiter, generator: Callable[[], Generator], *,
                 run_io: RunIO, merge_similarity: float, extract_max_tokens: int) -> None:
        self.memory, self.limiter, self.generator, self.io = memory, limiter, generator, run_io
        self.updater = FactUpdater(memory, merge_similarity=merge_similarity)
        self.extract_max_tokens = extract_max_tokens
        self.background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pllm-extract")
        self._stats: dict[str, MemoryStats] = {}
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def stats(self, tenant: str) -> MemoryStats:
        with self._lock:
            return MemoryStats(**self._stats.get(tenant, MemoryStats()).to_dict())

    def _count(self, tenant: str, **add: int) -> None:
        with self._lock:
            s = self._stats.setdefault(tenant, MemoryStats())
            for name, n in add.items():
                setattr(s, name, getattr(s, name) + n)

    def after_reply(self, mode: MemoryMode, *, tenant: str, user_id: str, turn: ProfileItem) -> None:
        """Schedule the turn's writes (call on the event loop; returns at once)."""
        if not mode.store_turn:
            return
        task = asyncio.get_running_loop().create_task(self._write(mode, tenant, user_id, turn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every scheduled write (server shutdown), then stop the extraction thread."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self.background.shutdown(wait=True)

    async def _write(self, mode: MemoryMode, tenant: str, user_id: str, turn: ProfileItem) -> None:
        try:
            await self.io(lambda: self.memory.add(user_id, [turn]))
            self._count(tenant, turns_stored=1)
        except Exception:  # noqa: BLE001 - the answer is already out: counted and logged
            log.exception("storing chat turn %s failed", turn.id)
            self._count(tenant, turn_failures=1)
        if mode.extract:
            await self._extract(tenant, user_id, turn)

    async def _extract(self, tenant: str, user_id: str, turn: ProfileItem) -> None:
        """One extraction, counted once it is over whatever its outcome: a reader that sees `extractions`
        reach N also sees every other counter of those N."""
        try:
            await self._extract_facts(tenant, user_id, turn)
        finally:
            self._count(tenant, extractions=1)

    async def _extract_facts(self, tenant: str, user_id: str, turn: ProfileItem) -> None:
        text = str(turn.fields.get("text", ""))
        try:  # the model is shared with the chats: it runs in their gaps
            gen = await asyncio.get_running_loop().run_in_executor(self.background, lambda: self.generator(
                ).generate_in_gaps(extraction_prompt(text), max_new_tokens=self.extract_max_tokens, stop=["\n\n"],
                                   yield_to=self.limiter.wait_idle))
        except Exception:  # noqa: BLE001 - a failing model: counted, the raw turn is kept
            log.exception("extracting facts from chat turn %s failed", turn.id)
            self._count(tenant, extraction_errors=1)
            return
        facts = parse_facts(gen.text, sources=(turn.id,), timestamp=turn.timestamp)
        if facts is None:
            log.warning("no 'slot: fact' line in the extraction of chat turn %s: %r", turn.id, gen.text[:200])
            self._count(tenant, extraction_unparsed=1)
            return
        kept = grounded(facts, text)
        self._count(tenant, facts_ungrounded=len(facts) - len(kept))
        if not kept:
            return
        facts = kept
        try:
            report = await self.io(lambda: self.updater.apply(user_id, facts))
        except Exception:  # noqa: BLE001
            log.exception("storing the facts of chat turn %s failed", turn.id)
            self._count(tenant, extraction_errors=1)
            return
        self._count(tenant, facts_added=len(report.added), facts_merged=len(report.merged),
                    facts_superseded=len(report.superseded))
