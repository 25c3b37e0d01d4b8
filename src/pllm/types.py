"""Structured records that flow end to end: a question's `query` fields, its `profile` items and its
`target`. Prompts are rendered from these, and nothing is ever parsed back out of a rendered prompt."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeAlias

JSONValue: TypeAlias = str | int | float | bool | None | list["JSONValue"] | dict[str, "JSONValue"]
"""A value that survives `json.dumps`/`json.loads`: what stores, specs and reports write."""


@dataclass
class ProfileItem:
    """One item of a user's history (a review, a rating, a paper, an utterance).

    `fields` holds the typed fields as given (title, text, score, ...); `id` is unique per user.
    """

    id: str
    fields: dict[str, Any]
    user_id: str | None = None
    timestamp: float | None = None

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


@dataclass
class Question:
    """One evaluation or serving request for one user.

    `input` is the raw task input as the benchmark ships it; `query` holds the structured fields the
    task spec extracts from it (or that a builder wrote directly), and retrieval reads only `query`.
    """

    id: str
    user_id: str
    input: str
    query: dict[str, Any]
    profile: list[ProfileItem] = field(default_factory=list)
    target: str | None = None
    timestamp: float | None = None


def parse_timestamp(value: Any) -> float | None:
    """Epoch seconds from a number or an ISO-ish date string; None if absent or unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        for fmt in (None, "%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%Y/%m/%d"):
            try:
                dt = datetime.fromisoformat(text) if fmt is None else datetime.strptime(text, fmt)
            except ValueError:
                continue
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            return dt.timestamp()
    return None
