"""The checkpoint log of a cell (and of the judge's verdicts): one JSON line per question, appended,
flushed and fsynced per batch, so a killed run resumes by scoring only the ids not yet there."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pllm.io import sha1_text
from pllm.pipeline import PredictionRecord
from pllm.types import Question

if TYPE_CHECKING:
    from pllm.judge.judge import Verdict


class CellLog:
    """The append-only, fsynced per-question record of one cell; `path=None` keeps it in memory (a
    one-off `pllm eval` has nothing to resume)."""

    def __init__(self, path: Path | None = None, *, repair: bool = True) -> None:
        """`repair=False` only reads (a report written while another process still appends must not
        cut the line being written); the runner repairs a torn tail before appending."""
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        if path is not None and path.is_file():
            self._read(repair)

    def _read(self, repair: bool) -> None:
        assert self.path is not None
        raw = self.path.read_bytes()
        good = 0  # bytes up to the last complete, parseable line
        for line in raw.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # a torn last write: dropped (the question is scored again)
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break
            self.records.setdefault(str(rec["id"]), rec)
            good += len(line)
        if repair and good < len(raw):
            with open(self.path, "r+b") as fh:
                fh.truncate(good)
                fh.flush()
                os.fsync(fh.fileno())

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        fresh = [r for r in records if r["id"] not in self.records]
        if not fresh:
            return
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fresh))
                fh.flush()
                os.fsync(fh.fileno())
        for r in fresh:
            self.records[r["id"]] = r

    def lines(self, questions: Sequence[Question]) -> list[dict[str, Any]] | None:
        """The lines of these questions in their order, or None while any is missing."""
        have = [self.records.get(q.id) for q in questions]
        return None if any(h is None for h in have) else have  # type: ignore[return-value]


def record_line(record: PredictionRecord, question: Question, wall: float, timings: dict[str, float],
                device: str | None = None) -> dict[str, Any]:
    """One JSONL line: the prediction record, the question's profile size, its share of the batch time and
    the device that computed it (a resumed grid may finish on other hardware; timings say where)."""
    line = record.to_json()
    if line.get("label_scores"):
        line["label_scores"] = {k: round(v, 4) for k, v in line["label_scores"].items()}
    line["profile_size"] = len(question.profile)
    line["wall"] = wall
    line["timings"] = timings
    if device:
        line["device"] = device
    return line


def judge_key(question_id: str, prediction: str, reference: str) -> str:
    """A judge log line's id: the question and the two texts judged (a changed prediction is judged anew)."""
    return f"{question_id}|{sha1_text(prediction, reference)[:12]}"


def verdict_line(key: str, question_id: str, verdict: Verdict) -> dict[str, Any]:
    return {"id": key, "question": question_id, "winner": verdict.winner, "unparseable": verdict.unparseable,
            "seconds": verdict.seconds, "votes": [dataclasses.asdict(v) for v in verdict.votes]}
