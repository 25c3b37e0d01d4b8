"""A task is data, not branches: its spec holds the query fields, how items and queries are turned
into retrieval text, prompts and demonstrations, the label set, the output parser and the metrics.

Built-in specs live in `tasks/specs/*.yaml`; `load_task_spec(path)` reads a user's JSON/YAML spec.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from pllm.errors import InputError, UnknownNameError
from pllm.io import read_yaml
from pllm.metrics import METRICS
from pllm.registry import Registry
from pllm.types import JSONValue, ProfileItem, Question

KINDS = ("classification", "regression", "generation")


def _help(text: str, default: Any = None, factory: Any = None) -> Any:
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class TaskSpec:
    """Everything pllm needs to know about a task; every field is plain data (JSON/YAML)."""

    name: str = _help("Registry name, e.g. 'LaMP-3' or 'movielens-rating'.")
    official_name: str | None = _help(
        "The task's name in its benchmark's own files and scorer (LaMP's is 'LaMP_3'); None: `name`.")
    kind: str = _help("classification | regression | generation.")
    description: str = _help("One line shown in listings and reports.", "")
    labels: list[str] | None = _help("Closed label set (classification, and regression scored by labels).")
    query_pattern: str | None = _help(
        "Regex with named groups that extracts structured query fields from the raw input (DOTALL).")
    query_text: str = _help("Template over query fields giving the retrieval query.", "{input}")
    item_text: str = _help("Template over item fields giving an item's retrieval text.", "{text}")
    item_output: str | None = _help("Template over item fields giving the item's own output (demos, baselines).")
    item_template: str = _help("How one retrieved item is written in an instruction prompt (LaMP's shape).",
                               "{text}")
    item_join: str = _help("Separator between rendered items in an instruction prompt.", ", and ")
    prompt_template: str = _help("Instruction prompt with items; fields: profile, input.", "{profile}. {input}")
    demo_header: str = _help("First line of a demonstration-style prompt (may be empty).", "")
    demo_input: str | None = _help(
        "Template over item/query fields giving a demonstration's input; None disables the demo style.")
    demo_output_prefix: str = _help("Written after the input, before the output, e.g. 'Rating:'.", "Output:")
    label_texts: dict[str, str] | None = _help(
        "Choice tasks whose labels stand for candidate texts (LaMP-1's [1]/[2]): label -> template over query "
        "fields giving that candidate's text (used by the candidate-similarity baseline).")
    parser: str = _help("How generated text becomes a prediction: label | number | text.", "text")
    metrics: list[str] = _help("Metric names; the first is primary.", factory=list)
    max_new_tokens: int = _help("Generation length for this task.", 32)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"kind must be one of {KINDS}, got {self.kind!r}", field="kind")
        if not self.metrics:
            raise InputError("at least one metric is required", field="metrics")
        if self.kind in ("classification",) and not self.labels:
            raise InputError("a classification task needs a label set", field="labels")
        if self.labels is not None:
            self.labels = [str(x) for x in self.labels]
            if len(set(self.labels)) != len(self.labels):
                raise InputError("labels must be unique", field="labels")
        if self.label_texts is not None and set(self.label_texts) != set(self.labels or []):
            raise InputError(f"label_texts must name every label once ({self.labels}), got {sorted(self.label_texts)}",
                             field="label_texts")
        if self.parser not in PARSERS:
            raise InputError(f"unknown parser {self.parser!r}; known: {', '.join(PARSERS)}", field="parser")
        self._query_re: re.Pattern[str] | None = None
        if self.query_pattern:
            try:
                self._query_re = re.compile(self.query_pattern, re.DOTALL)
            except re.error as exc:
                raise InputError(f"invalid regex: {exc}", field="query_pattern") from None
        for m in self.metrics:  # checked here so a bad spec fails on loading, not after a run
            if m not in METRICS:
                raise InputError(f"unknown metric {m!r}; known: {', '.join(METRICS.names())}", field="metrics")

    # -- structured fields ----------------------------------------------------------------------
    def parse_query(self, raw_input: str) -> dict[str, str]:
        """Structured query fields from the benchmark's raw input (a data-loading step, done once)."""
        if self._query_re is None:
            return {"input": raw_input}
        m = self._query_re.search(raw_input)
        if not m:
            raise InputError(f"does not match the {self.name} query pattern {self.query_pattern!r}")
        return {"input": raw_input, **{k: v.strip() for k, v in m.groupdict().items() if v is not None}}

    def retrieval_query(self, question: Question) -> str:
        return render(self.query_text, question.query, what=f"{self.name} query_text")

    def retrieval_text(self, item: ProfileItem) -> str:
        return render(self.item_text, item.fields, what=f"{self.name} item_text")

    def item_key(self, item: ProfileItem) -> str:
        """The item's identity across users: the query a question about it would have (`query_text` over its
        fields; its retrieval text where fields are missing). Collaborative context and retrieval match items
        by it, so a spec-file task gets them with no code."""
        try:
            return render(self.query_text, item.fields, what=f"{self.name} query_text")
        except InputError:
            return self.retrieval_text(item)

    def output_of(self, item: ProfileItem) -> str | None:
        """The item's own answer to this task (its rating, tag, title), if the task defines one."""
        if self.item_output is None:
            return None
        return render(self.item_output, item.fields, what=f"{self.name} item_output")

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def numeric_labels(self) -> bool:
        if not self.labels:
            return False
        try:
            [float(x) for x in self.labels]
        except ValueError:
            return False
        return True

    def parse_output(self, text: str) -> str | None:
        """Generated text -> prediction, or None when it cannot be parsed (counted, never guessed)."""
        return PARSERS[self.parser](text, self)

    def to_dict(self) -> dict[str, JSONValue]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _Strict(dict):
    def __missing__(self, key: str) -> Any:
        raise KeyError(key)


def render(template: str, values: Mapping[str, object], *, what: str = "template") -> str:
    """`str.format_map` that names the missing field and the template when a field is absent."""
    try:
        return string.Formatter().vformat(template, (), _Strict(values))
    except KeyError as exc:
        raise InputError(f"{what}: field {exc.args[0]!r} is missing (have: {', '.join(sorted(values))})") from None
    except (IndexError, ValueError) as exc:
        raise InputError(f"{what}: bad template {template!r}: {exc}") from None


# -- output parsers -------------------------------------------------------------------------------
def _parse_label(text: str, spec: TaskSpec) -> str | None:
    low = text.strip().lower()
    if not low:
        return None
    labels = sorted(spec.labels or [], key=len, reverse=True)
    for label in labels:  # exact answer first
        if low == label.lower() or low.rstrip(".") == label.lower():
            return label
    best: tuple[int, str] | None = None
    for label in labels:  # otherwise the earliest label mentioned
        pos = low.find(label.lower())
        if pos >= 0 and (best is None or pos < best[0]):
            best = (pos, label)
    return best[1] if best else None


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _parse_number(text: str, spec: TaskSpec) -> str | None:
    m = _NUMBER.search(text)
    if not m:
        return None
    value = float(m.group())
    if spec.labels and spec.numeric_labels:
        lo, hi = min(float(x) for x in spec.labels), max(float(x) for x in spec.labels)
        if not lo <= value <= hi:
            return None
        if m.group() in spec.labels:
            return m.group()
    return m.group()


def _parse_text(text: str, spec: TaskSpec) -> str | None:
    out = text.strip()
    return out or None


PARSERS = {"label": _parse_label, "number": _parse_number, "text": _parse_text}

TASKS: Registry[TaskSpec] = Registry("task")
_SPEC_DIR = Path(__file__).parent / "specs"
_loaded = False


def spec_from_dict(data: object, *, source: str = "spec") -> TaskSpec:
    if not isinstance(data, dict):
        raise InputError("a task spec must be an object", source=source)
    known = {f.name for f in fields(TaskSpec)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown spec fields {unknown}; known: {sorted(known)}", source=source)
    for key in ("name", "kind"):
        if key not in data:
            raise InputError(f"missing {key!r}", source=source, field=key)
    try:
        return TaskSpec(**data)
    except InputError as exc:
        raise InputError(str(exc), source=source) from None


def load_task_spec(path: str | Path) -> TaskSpec:
    """Read a JSON or YAML task spec file (a new task, no code change)."""
    data = read_yaml(path, missing="task spec file not found", unparsable="cannot parse spec")
    return spec_from_dict(data, source=str(path))


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for path in sorted(_SPEC_DIR.glob("*.yaml")):
        spec = load_task_spec(path)
        TASKS.register(spec.name, spec)


def get_task(name_or_path: str | Path) -> TaskSpec:
    """A registered task by name (exact, else case-insensitive or its official name), or a spec file by path.

    The returned spec's `name` is the canonical one; callers report it when it differs from what was asked.
    """
    _load_builtin()
    if str(name_or_path) in TASKS:
        return TASKS.get(str(name_or_path))
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml", ".json") and p.exists():
        return load_task_spec(p)
    if (p / "task.yaml").is_file():
        return load_task_spec(p / "task.yaml")
    wanted = str(name_or_path).casefold()  # `lamp-3` and LaMP's own `LaMP_3` both mean LaMP-3
    matches = [TASKS.get(n) for n in TASKS.names()
               if wanted in (n.casefold(), (TASKS.get(n).official_name or n).casefold())]
    if len(matches) == 1:
        return matches[0]
    raise UnknownNameError(
        f"unknown task {str(name_or_path)!r}; known: {', '.join(TASKS.names())} (or a spec file path)")


def register_task(spec: TaskSpec, *, replace: bool = False) -> TaskSpec:
    _load_builtin()
    TASKS.register(spec.name, spec, replace=replace)
    return spec


def task_names() -> list[str]:
    _load_builtin()
    return TASKS.names()


def save_spec(spec: TaskSpec, path: str | Path) -> Path:
    from pllm.io import atomic_write_text

    return atomic_write_text(path, yaml.safe_dump(asdict(spec), sort_keys=False, allow_unicode=True))
