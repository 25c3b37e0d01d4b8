"""Update rules for facts learned from chats, so an update never loses what was known.

A fact is a `slot: value` line with the chat turns it came from. Writing one to a user's memory:

- **merge**: a fact whose text is the same as a stored fact's after normalization (case, punctuation,
  spacing), or whose embedding has cosine >= `merge_similarity` with it, is not stored twice: the stored
  fact's `count` goes up and the new turn ids join its `sources`;
- **supersede**: otherwise, a fact with the slot of a stored fact replaces that fact's value in place (same
  item id), with count and sources restarted;
- **add**: anything else is a new item `fact-<slot>`.

Every write goes through `MemoryService.add`, which archives the replaced version in the same transaction,
so `GET /v1/users/{u}/items/{id}/history` shows every value a fact had; deleting the item or forgetting the
user removes the history with it (the store does both).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pllm.serve.memory import MemoryService
from pllm.types import ProfileItem

FACT_SOURCE = "extract"  # `fields["source"]` of a learned fact; raw chat turns have "chat"


@dataclass(frozen=True)
class Fact:
    slot: str
    value: str
    sources: tuple[str, ...]
    timestamp: float | None = None

    @property
    def text(self) -> str:
        return f"{self.slot}: {self.value}"


@dataclass
class UpdateReport:
    added: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)


def normalize(text: str) -> str:
    """Text compared for an identical fact: lower case, punctuation dropped, spaces collapsed."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def fact_id(slot: str) -> str:
    return "fact-" + ("-".join(re.sub(r"[^\w]", " ", slot.lower()).split()) or "fact")


class FactUpdater:
    """Applies the rules above to one user's facts, one fact at a time (a later fact of a batch sees the
    earlier ones, and each replaced version reaches the history)."""

    def __init__(self, memory: MemoryService, *, merge_similarity: float) -> None:
        self.memory = memory
        self.merge_similarity = merge_similarity

    def apply(self, user_id: str, facts: Sequence[Fact]) -> UpdateReport:
        report = UpdateReport()
        for fact in facts:
            stored = [it for it in self.memory.items(user_id) if it.fields.get("source") == FACT_SOURCE]
            same = self._same(user_id, fact, stored)
            if same is not None:
                sources = list(dict.fromkeys([*_str_list(same.fields.get("sources")), *fact.sources]))
                count = same.fields.get("count")
                fields = {**same.fields, "count": (count if isinstance(count, int) else 1) + 1,
                          "sources": sources, "last_seen": fact.timestamp}
                self.memory.add(user_id, [ProfileItem(id=same.id, fields=fields, timestamp=same.timestamp)])
                report.merged.append(same.id)
                continue
            item_id = fact_id(fact.slot)
            fields = {"text": fact.text, "slot": fact.slot, "value": fact.value, "source": FACT_SOURCE,
                      "sources": list(fact.sources), "count": 1, "last_seen": fact.timestamp}
            self.memory.add(user_id, [ProfileItem(id=item_id, fields=fields, timestamp=fact.timestamp)])
            (report.superseded if any(it.id == item_id for it in stored) else report.added).append(item_id)
        return report

    def _same(self, user_id: str, fact: Fact, stored: list[ProfileItem]) -> ProfileItem | None:
        """The stored fact this one repeats: identical after normalization first, else the most similar
        embedding at or above the threshold (no embedder: text only)."""
        key = normalize(fact.text)
        for it in stored:
            if normalize(_text(it)) == key:
                return it
        if not stored:
            return None
        old = self.memory.vectors(user_id, [_text(it) for it in stored], stored=True)
        new = self.memory.vectors(user_id, [fact.text], stored=False)
        if old is None or new is None:
            return None
        sims = old @ new[0]  # (n_stored,) cosines of unit vectors
        best = int(np.argmax(sims))
        return stored[best] if float(sims[best]) >= self.merge_similarity else None


def _text(item: ProfileItem) -> str:
    value = item.fields.get("text")
    return value if isinstance(value, str) else ""


def _str_list(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
