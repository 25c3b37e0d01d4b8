"""Reading and writing the LaMP benchmark's file formats, with validation that names the file,
record index and field of the first problem found.

Questions: `[{"id", "input", "profile": [{"id", ...}], "user_id"?, "query"?, "timestamp"?}]`.
Outputs: `{"task": "LaMP_3", "golds": [{"id", "output"}]}` (predictions use the same shape, and LaMP's
scorer requires their `task` to equal the gold file's).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pllm.errors import InputError
from pllm.io import atomic_write_json
from pllm.types import ProfileItem, Question, parse_timestamp

ITEM_TIME_FIELDS = ("timestamp", "date", "time")


def read_json(path: str | Path) -> Any:
    """Load JSON, turning missing files, non-UTF-8 bytes and syntax errors into InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", source=str(path))
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not valid UTF-8 (byte {exc.start})", source=str(path)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                         source=str(path)) from None


def _as_id(value: Any, *, source: str, index: int, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"must be a string or integer, got {type(value).__name__}",
                         source=source, index=index, field=field)
    text = str(value)
    if not text.strip():
        raise InputError("must not be empty", source=source, index=index, field=field)
    return text


def parse_profile_item(raw: Any, *, user_id: str, source: str, index: int, position: int) -> ProfileItem:
    field = f"profile[{position}]"
    if not isinstance(raw, Mapping):
        raise InputError(f"must be an object, got {type(raw).__name__}", source=source, index=index, field=field)
    if "id" not in raw:
        raise InputError("missing 'id'", source=source, index=index, field=field)
    item_id = _as_id(raw["id"], source=source, index=index, field=f"{field}.id")
    fields = {k: v for k, v in raw.items() if k != "id"}
    ts = next((parse_timestamp(raw[k]) for k in ITEM_TIME_FIELDS if k in raw), None)
    return ProfileItem(id=item_id, fields=fields, user_id=user_id, timestamp=ts)


def parse_question(raw: Any, *, source: str, index: int, spec: Any | None = None) -> Question:
    """Validate one LaMP question record; `spec` (a TaskSpec) extracts structured query fields."""
    if not isinstance(raw, Mapping):
        raise InputError(f"must be an object, got {type(raw).__name__}", source=source, index=index)
    for key in ("id", "input", "profile"):
        if key not in raw:
            raise InputError(f"missing {key!r}", source=source, index=index, field=key)
    qid = _as_id(raw["id"], source=source, index=index, field="id")
    if not isinstance(raw["input"], str):
        raise InputError(f"must be a string, got {type(raw['input']).__name__}",
                         source=source, index=index, field="input")
    if not isinstance(raw["profile"], list):
        raise InputError(f"must be a list, got {type(raw['profile']).__name__}",
                         source=source, index=index, field="profile")
    user_id = _as_id(raw["user_id"], source=source, index=index, field="user_id") if raw.get(
        "user_id") is not None else qid
    profile = [parse_profile_item(p, user_id=user_id, source=source, index=index, position=i)
               for i, p in enumerate(raw["profile"])]
    query = raw.get("query")
    if query is not None and not isinstance(query, Mapping):
        raise InputError("must be an object", source=source, index=index, field="query")
    query = dict(query or {})
    if spec is not None:
        try:
            query = {**spec.parse_query(raw["input"]), **query}
        except InputError as exc:
            raise InputError(str(exc), source=source, index=index, field="input") from None
    query.setdefault("input", raw["input"])
    ts = parse_timestamp(raw.get("timestamp", raw.get("date")))
    return Question(id=qid, user_id=user_id, input=raw["input"], query=query, profile=profile,
                    target=None, timestamp=ts)


def read_questions(path: str | Path, *, spec: Any | None = None,
                   outputs: str | Path | None = None) -> list[Question]:
    data = read_json(path)
    source = str(path)
    if not isinstance(data, list):
        raise InputError(f"top level must be a list of questions, got {type(data).__name__}", source=source)
    questions = [parse_question(r, source=source, index=i, spec=spec) for i, r in enumerate(data)]
    seen: set[str] = set()
    for i, q in enumerate(questions):
        if q.id in seen:
            raise InputError(f"duplicate question id {q.id!r}", source=source, index=i, field="id")
        seen.add(q.id)
    if outputs is not None:
        golds = read_outputs(outputs)
        for q in questions:
            q.target = golds.get(q.id)
    return questions


def read_outputs(path: str | Path) -> dict[str, str]:
    data = read_json(path)
    source = str(path)
    if isinstance(data, Mapping) and "golds" in data:
        golds = data["golds"]
    elif isinstance(data, list):
        golds = data
    else:
        raise InputError("expected {'task', 'golds': [...]} or a list of {'id', 'output'}", source=source)
    if not isinstance(golds, list):
        raise InputError("must be a list", source=source, field="golds")
    out: dict[str, str] = {}
    for i, g in enumerate(golds):
        if not isinstance(g, Mapping):
            raise InputError("must be an object", source=source, index=i)
        for key in ("id", "output"):
            if key not in g:
                raise InputError(f"missing {key!r}", source=source, index=i, field=key)
        out[_as_id(g["id"], source=source, index=i, field="id")] = str(g["output"])
    return out


def question_to_json(q: Question, *, with_user: bool = True) -> dict[str, Any]:
    record: dict[str, Any] = {"id": q.id, "input": q.input}
    if with_user:
        record["user_id"] = q.user_id
    extra_query = {k: v for k, v in q.query.items() if k != "input"}
    if extra_query:
        record["query"] = extra_query
    if q.timestamp is not None:
        record["timestamp"] = q.timestamp
    record["profile"] = [{"id": p.id, **p.fields} for p in q.profile]
    return record


def write_questions(path: str | Path, questions: Iterable[Question]) -> Path:
    return atomic_write_json(path, [question_to_json(q) for q in questions])


def write_outputs(path: str | Path, task: str, outputs: Mapping[str, str]) -> Path:
    """Official `{"task", "golds": [{"id", "output"}]}` shape, used for gold files and predictions."""
    return atomic_write_json(path, {"task": task, "golds": [{"id": k, "output": v} for k, v in outputs.items()]})


def predictions_task(spec: Any, outputs: str | Path | None = None) -> str:
    """The `task` string a predictions file carries: the gold file's own (LaMP's scorer asserts the two
    are equal), else the spec's `official_name` (`LaMP_3`), else the spec's name."""
    if outputs is not None:
        data = read_json(outputs)
        if isinstance(data, Mapping) and isinstance(data.get("task"), str) and data["task"].strip():
            return data["task"]
    return spec.official_name or spec.name
