"""Time phrases in a query ("last May", "in 2023", "two weeks ago", "yesterday") as a period of time, relative
to when the question is asked; calendar arithmetic in UTC. Used by the `dated` retriever to rank the items
of that period first."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timezone

DAY = 86400.0
_UNITS = {"day": DAY, "week": 7 * DAY, "month": 30.44 * DAY, "year": 365.25 * DAY}
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
            "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "a couple of": 2, "a few": 3}
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
_MONTH = r"(january|february|march|april|may|june|july|august|september|october|november|december|jan|feb|mar|apr" \
         r"|jun|jul|aug|sep|sept|oct|nov|dec)"
_NUMBER = r"(\d+|" + "|".join(sorted(map(re.escape, _NUMBERS), key=len, reverse=True)) + r")"


@dataclass(frozen=True)
class Period:
    """[start, end) in epoch seconds, and the phrase it was read from."""

    start: float
    end: float
    phrase: str

    def __contains__(self, timestamp: object) -> bool:
        return isinstance(timestamp, (int, float)) and self.start <= float(timestamp) < self.end


def _month(year: int, month: int) -> tuple[float, float]:
    start = datetime(year, month, 1, tzinfo=timezone.utc)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=timezone.utc)
    return start.timestamp(), end.timestamp()


def _year(year: int) -> tuple[float, float]:
    return (datetime(year, 1, 1, tzinfo=timezone.utc).timestamp(),
            datetime(year + 1, 1, 1, tzinfo=timezone.utc).timestamp())


def parse_period(query: str, now: float) -> Period | None:
    """The first time phrase of `query` as a period relative to `now` (epoch seconds), or None."""
    q = query.lower()
    today = datetime.fromtimestamp(now, tz=timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    t0 = today.timestamp()
    m = re.search(_NUMBER + r"\s+(day|week|month|year)s?\s+ago\b", q)
    if m:
        n = int(m.group(1)) if m.group(1).isdigit() else _NUMBERS[m.group(1)]
        unit = _UNITS[m.group(2)]
        centre, half = now - n * unit, max(unit / 2, DAY)
        return Period(centre - half, centre + half, m.group(0))
    m = re.search(r"\b(?:in|during|from|of)?\s*" + _MONTH + r"\s+(?:of\s+)?((?:19|20)\d{2})\b", q)
    if m:
        return Period(*_month(int(m.group(2)), _MONTHS[m.group(1)]), m.group(0).strip())
    m = re.search(r"\blast\s+" + _MONTH + r"\b", q)
    if m:  # the most recent such month before the current one
        month = _MONTHS[m.group(1)]
        year = today.year if month < today.month else today.year - 1
        return Period(*_month(year, month), m.group(0))
    m = re.search(r"\b(?:in|during)\s+" + _MONTH + r"\b", q)
    if m:  # the most recent such month, this one included
        month = _MONTHS[m.group(1)]
        year = today.year if month <= today.month else today.year - 1
        return Period(*_month(year, month), m.group(0))
    m = re.search(r"\b(?:in|during|of)\s+((?:19|20)\d{2})\b", q)
    if m:
        return Period(*_year(int(m.group(1))), m.group(0))
    m = re.search(r"\b(yesterday|today|(?:last|this)\s+(?:week|month|year))\b", q)
    if m:
        phrase = m.group(1)
        if phrase == "yesterday":
            return Period(t0 - DAY, t0, phrase)
        if phrase == "today":
            return Period(t0, t0 + DAY, phrase)
        which, span = phrase.split()
        if span == "week":
            monday = t0 - today.weekday() * DAY
            start = monday - 7 * DAY if which == "last" else monday
            return Period(start, start + 7 * DAY, phrase)
        if span == "month":
            year, month = (today.year, today.month) if which == "this" else (
                (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12))
            return Period(*_month(year, month), phrase)
        return Period(*_year(today.year - (which == "last")), phrase)
    return None


def strip_phrase(query: str, period: Period) -> str:
    """The query without its time phrase (what the text retriever should match)."""
    cut = re.sub(re.escape(period.phrase), " ", query, count=1, flags=re.IGNORECASE)
    return " ".join(cut.split()) or query
