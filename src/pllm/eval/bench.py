"""`pllm bench`: a resumable grid of tasks x methods x k x prompt style x model, next to the non-LLM
baselines, reported with bootstrap intervals and paired differences against no personalization.

Every cell (one task, one method setting) appends its per-question predictions to its own JSONL file
(`cells/<task>/<cell>.jsonl`), one line per question, flushed and fsynced after every batch. A killed
run restarted on the same folder reads those files and scores only the question ids not yet there:
no question is scored twice, and batches are fixed by position in the question list, so a resumed run
puts the same questions in the same batches as an uninterrupted one (identical predictions, identical
final metrics). A cell's `cell.json` records its settings; a changed setting in the same folder is an
error, never a silent mix of two configurations.

With a `judge` section, every cell of a generation task is also judged against a reference cell (by
default the `none` cell of its prompt style and model) by the personalized pairwise judge, both orders
asked; verdicts go to `judge/<task>/<cell>__vs__<reference>.jsonl`, one line per (question, pair of
predictions), fsynced per batch, so a resumed run never asks the judge twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pllm.errors import InputError
from pllm.io import atomic_write_json, save_config, sha1_text, to_jsonable
from pllm.models.base import device_label
from pllm.pipeline import MethodConfig, Personalizer, PredictionRecord
from pllm.tasks.lamp import read_questions
from pllm.tasks.spec import TaskSpec, get_task
from pllm.types import Question

ALL_METHODS = ["none", "random", "recency", "bm25", "dense", "hybrid", "profile", "profile+bm25"]
ALL_BASELINES = "all"
Progress = Callable[[str, int, int], None]  # (cell label, done, total)


# -- configuration ------------------------------------------------------------------------------
@dataclass
class BuildSpec:
    """How to build a task folder when it is missing (so one command reproduces the whole report)."""

    builder: str = field(metadata={"help": "Dataset builder name (see `pllm data list`)."})
    source: str = field(metadata={"help": "Raw data folder or file."})
    split: str = field(default="user", metadata={"help": "user | time."})
    seed: int = field(default=0, metadata={"help": "Build seed."})
    max_users: int | None = field(default=None, metadata={"help": "Sample at most this many users."})
    questions_per_user: int = field(default=1, metadata={"help": "Latest items per user as questions."})


@dataclass
class TaskEntry:
    """One task of the grid: a built LaMP-format folder, and which split of it is scored."""

    data: str | None = field(default=None, metadata={"help": "Task folder (built if missing and `build` given)."})
    name: str | None = field(default=None, metadata={"help": "Label in reports (default: the spec's name)."})
    split: str = field(default="test", metadata={"help": "Split scored: train | dev | test."})
    train_split: str | None = field(default="train", metadata={"help": "Split the baselines are fitted on."})
    limit: int | None = field(default=None, metadata={"help": "Score only the first N questions."})
    build: BuildSpec | None = field(default=None, metadata={"help": "Build settings used when data is missing."})
    extra_cells: list[str] | None = field(default=None, metadata={
        "help": "This task's extra cells, replacing the grid's `extra_cells` (e.g. a k sweep only where it is "
                "cheap); None: the grid's."})
    methods: list[str] | None = field(default=None, metadata={
        "help": "This task's methods, replacing the grid's (e.g. calibration only on a classification task); "
                "None: the grid's."})

    def __post_init__(self) -> None:
        for m in self.methods or []:
            parse_method(m, 1)  # fail early on a bad method name
        for extra in self.extra_cells or []:
            parse_extra(extra)
        if isinstance(self.build, dict):
            try:
                self.build = BuildSpec(**self.build)
            except TypeError as exc:
                raise InputError(f"bad build section: {exc}", field="build") from None
        if self.data is None and self.build is None:
            raise InputError("a task needs `data` (a task folder) or a `build` section", field="data")
        if self.split not in ("train", "dev", "test"):
            raise InputError(f"split must be train, dev or test, got {self.split!r}", field="split")
        if self.limit is not None and self.limit < 1:
            raise InputError("limit must be >= 1", field="limit")


@dataclass
class BenchJudge:
    """The personalized LLM-as-judge as a metric of generation cells (see `pllm.judge`)."""

    backend: str = field(default="hf", metadata={"help": "Judge generator backend (hf = the embedded model)."})
    model: str | None = field(default=None, metadata={"help": "Judge model id (default: the backend's)."})
    against: str = field(default="none", metadata={
        "help": "Reference cell: 'none' (the none cell of the same style and model) or a cell label."})
    max_questions: int | None = field(default=None, metadata={"help": "Judge only the first N questions."})
    retriever: str = field(default="bm25", metadata={"help": "How the judge picks profile items to show."})
    k: int = field(default=4, metadata={"help": "Profile items shown to the judge."})
    readout: str = field(default="auto", metadata={"help": "auto | score (' A' vs ' B') | generate."})
    input_field: str | None = field(default=None, metadata={
        "help": "Question.query field shown as the input (default: the question's input)."})
    batch_size: int = field(default=8, metadata={"help": "Pairs per judge call (each asked in both orders)."})

    def __post_init__(self) -> None:
        if self.max_questions is not None and self.max_questions < 1:
            raise InputError("judge.max_questions must be >= 1", field="judge")
        if self.batch_size < 1:
            raise InputError("judge.batch_size must be >= 1", field="judge")
        if not self.against:
            raise InputError("judge.against must name a cell (or 'none')", field="judge")
        self.judge_config()

    @property
    def generator_key(self) -> str:
        return f"{self.backend}:{self.model}" if self.model else self.backend

    def judge_config(self, embedder: str = "minilm") -> Any:
        from pllm.judge.judge import JudgeConfig

        return JudgeConfig(retriever=self.retriever, k=self.k, readout=self.readout, input_field=self.input_field,
                           embedder=embedder)


@dataclass
class BenchConfig:
    """The grid. Methods: `none`, a retriever name, `profile`, or `profile+<retriever>`."""

    tasks: list[TaskEntry] = field(metadata={"help": "Tasks (task folders) scored."})
    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS), metadata={
        "help": "none | random | recency | bm25 | dense | hybrid | profile | profile+<retriever>."})
    k: list[int] = field(default_factory=lambda: [4], metadata={"help": "Items retrieved (one cell per value)."})
    styles: list[str | None] = field(default_factory=lambda: [None], metadata={
        "help": "Prompt styles (null = the task's default: demonstrations where the task defines them)."})
    models: list[str] = field(default_factory=lambda: ["hf"], metadata={
        "help": "Generators as 'backend' or 'backend:model' (hf = the embedded SmolLM2-135M-Instruct)."})
    baselines: list[str] | str = field(default=ALL_BASELINES, metadata={
        "help": "Non-LLM baselines: 'all' (every one that applies to the task) or a list of names."})
    knn_k: int = field(default=5, metadata={"help": "Neighbours the knn baseline votes or averages over."})
    batch_size: int = field(default=8, metadata={"help": "Questions per model call (and per fsynced write)."})
    max_prompt_tokens: int = field(default=1024, metadata={"help": "Prompt budget in generator tokens."})
    predict: str = field(default="auto", metadata={"help": "auto | score | generate."})
    readout: str = field(default="argmax", metadata={"help": "argmax | expected (numeric labels)."})
    embedder: str = field(default="minilm", metadata={"help": "Embedder for dense/hybrid/knn."})
    seed: int = field(default=0, metadata={"help": "Seed for the random retriever and the bootstrap."})
    n_resamples: int = field(default=1000, metadata={"help": "Bootstrap resamples for every interval."})
    profile_bins: int = field(default=4, metadata={"help": "Profile-size bins (quantiles) in the size plot."})
    extra_cells: list[str] = field(default_factory=list, metadata={
        "help": "Cells added on top of the product, as 'method[@k]:style' (e.g. 'bm25@4:instruction'), so a "
                "second prompt style can be compared on a few methods without doubling the grid."})
    summary_items: int = field(default=10, metadata={"help": "Most recent items a profile summary reads."})
    threads: int | None = field(default=None, metadata={
        "help": "torch CPU threads (1 is fastest on a crowded machine); default: torch's choice."})
    judge: BenchJudge | None = field(default=None, metadata={
        "help": "Judge generation cells against a reference cell: {backend, model, against, max_questions, ...}."})

    def __post_init__(self) -> None:
        if isinstance(self.judge, dict):
            try:
                self.judge = BenchJudge(**self.judge)
            except TypeError as exc:
                raise InputError(f"bad judge section: {exc}", field="judge") from None
        self.tasks = [TaskEntry(**t) if isinstance(t, dict) else t for t in self.tasks]
        if not self.tasks:
            raise InputError("the grid has no tasks", field="tasks")
        if isinstance(self.k, int):
            self.k = [self.k]
        if isinstance(self.methods, str):
            self.methods = [self.methods]
        if isinstance(self.styles, str) or self.styles is None:
            self.styles = [self.styles]
        if isinstance(self.models, str):
            self.models = [self.models]
        for name in ("methods", "k", "styles", "models"):
            if not getattr(self, name):
                raise InputError(f"{name} must not be empty", field=name)
        if any(not isinstance(k, int) or k < 1 for k in self.k):
            raise InputError(f"k values must be integers >= 1, got {self.k}", field="k")
        for m in self.methods:
            parse_method(m, 1)  # fail early on a bad method name
        from pllm.prompting.styles import PROMPT_STYLES

        for s in self.styles:
            if s is not None:
                PROMPT_STYLES.get(s)
        if self.baselines != ALL_BASELINES:
            from pllm.eval.baselines import BASELINES

            if isinstance(self.baselines, str):
                self.baselines = [self.baselines]
            for b in self.baselines:
                BASELINES.get(b)
        if self.batch_size < 1 or self.n_resamples < 10 or self.profile_bins < 1:
            raise InputError("batch_size >= 1, n_resamples >= 10 and profile_bins >= 1 are required")
        MethodConfig(predict=self.predict, readout=self.readout, max_prompt_tokens=self.max_prompt_tokens)
        for extra in self.extra_cells:
            parse_extra(extra)
        if self.summary_items < 1 or (self.threads is not None and self.threads < 1):
            raise InputError("summary_items and threads must be >= 1")


def parse_extra(text: str) -> tuple[str, int, str]:
    """'method[@k]:style' -> (method, k, style)."""
    head, sep, style = text.partition(":")
    method, _, k = head.partition("@")
    if not sep or not style:
        raise InputError(f"extra cell {text!r} must look like 'method[@k]:style'", field="extra_cells")
    try:
        kk = int(k) if k else 0
    except ValueError:
        raise InputError(f"extra cell {text!r}: k must be an integer", field="extra_cells") from None
    from pllm.prompting.styles import PROMPT_STYLES

    PROMPT_STYLES.get(style)
    mc = parse_method(method, kk)
    if mc.retriever != "none" and kk < 1:
        raise InputError(f"extra cell {text!r}: a retrieval method needs @k", field="extra_cells")
    return method, kk, style


def parse_method(name: str, k: int, **common: Any) -> MethodConfig:
    """`[ft+][profile+][stats+]<retriever>[+cal][/readout]` (or `none`, `profile`, `stats`, `ft`) -> a
    MethodConfig at this k.

    `stats+` prepends the user's output distribution, `ft+` is the learned method (task adapter trained on
    the train split with this rendering), `+cal` contextual calibration, `/median` (etc.) a readout for
    this cell instead of the grid's."""
    from pllm.retrieval.base import RETRIEVERS

    head, _, readout = name.partition("/")
    parts = head.split("+")
    ft = parts[0] == "ft"
    parts = parts[1:] if ft else parts
    calibrate = parts[-1:] == ["cal"]
    parts = parts[:-1] if calibrate else parts
    profile = parts[:1] == ["profile"]
    parts = parts[1:] if profile else parts
    stats = parts[:1] == ["stats"]
    parts = parts[1:] if stats else parts
    retriever = parts[0] if len(parts) == 1 else "none" if not parts else ""
    if retriever not in RETRIEVERS:
        raise InputError(f"unknown method {name!r}; use [ft+][profile+][stats+]<retriever>[+cal][/readout] with "
                         f"a retriever among {', '.join(RETRIEVERS.names())} (or none, profile, stats, ft)",
                         field="methods")
    if readout:
        common = {**common, "readout": readout}
    if calibrate:
        common = {**common, "calibrate": True}
    return MethodConfig(retriever=retriever, k=k if retriever != "none" else 0, profile=profile, stats=stats, ft=ft,
                        **common)


def method_from_name(name: str, **common: Any) -> MethodConfig:
    """A method written the way reports label it, k included: `ft+bm25@4/median`, `stats+dense@8+cal`."""
    head, slash, readout = name.partition("/")
    match = re.fullmatch(r"(.*?)@(\d+)(\+cal)?", head)
    if match:
        return parse_method(f"{match[1]}{match[3] or ''}{slash}{readout}", int(match[2]), **common)
    return parse_method(name, 4, **common)


def load_bench_config(path: str | Path) -> BenchConfig:
    path = Path(path)
    if not path.is_file():
        raise InputError("grid file not found", source=str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"cannot parse grid YAML: {exc}", source=str(path)) from None
    return bench_config_from_dict(data, source=str(path))


def bench_config_from_dict(data: Any, *, source: str = "grid") -> BenchConfig:
    if not isinstance(data, dict):
        raise InputError("a grid must be a mapping", source=source)
    known = {f.name for f in dataclasses.fields(BenchConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown grid fields {unknown}; known: {sorted(known)}", source=source)
    try:
        return BenchConfig(**data)
    except InputError as exc:
        raise InputError(str(exc), source=source) from None
    except TypeError as exc:
        raise InputError(f"bad grid: {exc}", source=source) from None


# -- cells --------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One grid point on one task: an LLM method setting or a baseline."""

    task: str
    label: str  # shown in reports, unique within the task
    kind: str  # llm | baseline
    method: str  # grid method name or baseline name
    k: int = 0
    style: str | None = None
    model: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.label).strip("_")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def split_model(model: str) -> tuple[str, str | None]:
    backend, _, name = model.partition(":")
    return backend, (name or None)


@dataclass
class LoadedTask:
    entry: TaskEntry
    name: str
    spec: TaskSpec
    folder: Path
    questions: list[Question]
    train: list[Question]  # what baselines fit on (never the scored split)
    learn: list[Question] = field(default_factory=list)  # what learned cells train on (profiles only)


class CellLog:
    """The append-only, fsynced per-question record of one cell."""

    def __init__(self, path: Path, *, repair: bool = True) -> None:
        """`repair=False` only reads (a report written while another process still appends must not
        cut the line being written); the runner repairs a torn tail before appending."""
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        if path.is_file():
            self._read(repair)

    def _read(self, repair: bool) -> None:
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fresh))
            fh.flush()
            os.fsync(fh.fileno())
        for r in fresh:
            self.records[r["id"]] = r


def record_line(record: PredictionRecord, question: Question, wall: float, timings: dict[str, float],
                device: str | None = None) -> dict[str, Any]:
    """One JSONL line: the prediction record, the question's profile size, its share of the batch time and
    the device that computed it (a resumed grid may finish on other hardware; timings say where)."""
    line = to_jsonable(record)
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


def verdict_line(key: str, question_id: str, verdict: Any) -> dict[str, Any]:
    return {"id": key, "question": question_id, "winner": verdict.winner, "unparseable": verdict.unparseable,
            "seconds": verdict.seconds, "votes": [dataclasses.asdict(v) for v in verdict.votes]}


def line_record(line: dict[str, Any]) -> PredictionRecord:
    names = {f.name for f in dataclasses.fields(PredictionRecord)}
    return PredictionRecord(**{k: v for k, v in line.items() if k in names})


# -- the runner ---------------------------------------------------------------------------------
class BenchRunner:
    """Runs (or resumes) every cell of a grid into `out`, then writes the reports and plots."""

    def __init__(self, config: BenchConfig, out: str | Path, *, progress: Progress | None = None,
                 generator_factory: Callable[[str, str | None], Any] | None = None) -> None:
        self.config = config
        self.out = Path(out)
        self.progress = progress
        self._factory = generator_factory
        self._generators: dict[str, Any] = {}
        self._learned: dict[str, tuple[Any, dict[str, Any]]] = {}  # learned cells' merged copies
        self._store: Any = None
        self.tasks: list[LoadedTask] = []
        self.skipped: dict[str, list[str]] = {}

    # tasks ------------------------------------------------------------------------------------
    def _task_folder(self, entry: TaskEntry) -> Path:
        if entry.build is None:
            folder = Path(entry.data or "")
            if not (folder / f"{entry.split}_questions.json").is_file():
                raise InputError(f"no {entry.split}_questions.json in the task folder (build it with "
                                 "`pllm data build`, or give the task a `build` section)", source=str(folder))
            return folder
        from pllm.data import BuildConfig, build_dataset
        from pllm.data.base import config_record
        from pllm.paths import pllm_home

        b = entry.build
        folder = Path(entry.data) if entry.data else pllm_home() / "bench-tasks" / _slug(
            f"{b.builder}-{b.split}-s{b.seed}-u{b.max_users}-q{b.questions_per_user}")
        build = BuildConfig(source=b.source, out=str(folder), split=b.split, seed=b.seed, max_users=b.max_users,
                            questions_per_user=b.questions_per_user)
        saved = folder / "build_config.json"
        if not saved.is_file() or json.loads(saved.read_text(encoding="utf-8")) != config_record(build):
            build_dataset(b.builder, build)
        return folder

    def load_tasks(self) -> list[LoadedTask]:
        if self.tasks:
            return self.tasks
        seen: set[str] = set()
        for entry in self.config.tasks:
            folder = self._task_folder(entry)
            spec = get_task(folder)
            name = entry.name or spec.name
            if name in seen:
                raise InputError(f"two grid tasks are named {name!r}; give one a `name`", field="tasks")
            seen.add(name)
            qs = read_questions(folder / f"{entry.split}_questions.json", spec=spec,
                                outputs=folder / f"{entry.split}_outputs.json")
            if entry.limit is not None:
                qs = qs[: entry.limit]
            if not qs:
                raise InputError(f"no questions in the {entry.split} split", source=str(folder))
            learn: list[Question] = []
            if entry.train_split and (folder / f"{entry.train_split}_questions.json").is_file():
                learn = read_questions(folder / f"{entry.train_split}_questions.json", spec=spec,
                                       outputs=folder / f"{entry.train_split}_outputs.json")
            # Baselines never fit on the questions they score; learned cells read only profiles, so a
            # grid may score the train split itself (e.g. to fit a hybrid on it) with the same adapter.
            train = learn if entry.train_split != entry.split else []
            self.tasks.append(LoadedTask(entry, name, spec, folder, qs, train, learn))
        return self.tasks

    # cells ------------------------------------------------------------------------------------
    def cells(self, task: LoadedTask) -> list[Cell]:
        """Every cell of one task, in run order: per model, per style, the methods (k only where it
        matters), then the baselines."""
        from pllm.eval.baselines import BASELINES, baselines_for
        from pllm.prompting.styles import default_style, get_style

        c = self.config
        extras = task.entry.extra_cells if task.entry.extra_cells is not None else c.extra_cells
        out: list[Cell] = []
        skipped = self.skipped[task.name] = []  # recomputed on every call (cells() is called per phase)
        multi_model = len(c.models) > 1
        for model in c.models:
            styles = []
            for s in c.styles:
                style = s or default_style(task.spec)
                try:
                    get_style(style).check(task.spec)
                except InputError as exc:
                    skipped.append(f"style {style}: {exc}")
                    continue
                if style not in styles:
                    styles.append(style)
            for style in styles:
                for m in task.entry.methods if task.entry.methods is not None else c.methods:
                    for k in (c.k if parse_method(m, 1).retriever != "none" else [0]):
                        mc = parse_method(m, k, style=style, predict=c.predict, readout=c.readout,
                                          max_prompt_tokens=c.max_prompt_tokens, embedder=c.embedder, seed=c.seed)
                        label = mc.label
                        if len(styles) > 1 or len(c.styles) > 1 or extras:
                            label += f" [{style}]"
                        if multi_model:
                            label += f" <{model}>"
                        if any(x.label == label for x in out):
                            continue
                        out.append(Cell(task.name, label, "llm", m, k, style, model,
                                        {**dataclasses.asdict(mc), "model": model}))
        for extra in extras:
            m, k, style = parse_extra(extra)
            try:
                get_style(style).check(task.spec)
            except InputError as exc:
                skipped.append(f"{extra}: {exc}")
                continue
            for model in c.models:
                mc = parse_method(m, k, style=style, predict=c.predict, readout=c.readout,
                                  max_prompt_tokens=c.max_prompt_tokens, embedder=c.embedder, seed=c.seed)
                label = f"{mc.label} [{style}]" + (f" <{model}>" if multi_model else "")
                if not any(x.label == label for x in out):
                    out.append(Cell(task.name, label, "llm", m, mc.k, style, model,
                                    {**dataclasses.asdict(mc), "model": model}))
        names = baselines_for(task.spec) if c.baselines == ALL_BASELINES else \
            [b for b in c.baselines if b in baselines_for(task.spec)]
        if c.baselines != ALL_BASELINES:
            skipped.extend(f"baseline {b}: does not apply to {task.spec.name}" for b in c.baselines
                           if b not in names)
        for b in names:
            grid_options = {"k": c.knn_k, "embedder": c.embedder}
            opts = {o: grid_options[o] for o in BASELINES.get(b).options}
            out.append(Cell(task.name, b, "baseline", b, config={"baseline": b, **opts}))
        return out

    def cell_path(self, cell: Cell) -> Path:
        return self.out / "cells" / _slug(cell.task) / f"{cell.slug}.jsonl"

    def _check_cell(self, cell: Cell, task: LoadedTask, extra: dict[str, Any] | None = None) -> None:
        """The folder may only be resumed with the same settings and questions for this cell (and, for a
        learned method, the same trained adapter)."""
        meta = {"task": cell.task, "label": cell.label, "kind": cell.kind, "config": cell.config,
                "questions": sha1_text(*[q.id for q in task.questions]), **(extra or {})}
        path = self.cell_path(cell).with_suffix(".json")
        if path.is_file():
            old = json.loads(path.read_text(encoding="utf-8"))
            if cell.kind == "llm":  # a method field added after this cell was run reads as its default
                defaults = {f.name: f.default for f in dataclasses.fields(MethodConfig)}
                old["config"] = {**{k: v for k, v in defaults.items() if k in cell.config}, **old.get("config", {})}
            if old != to_jsonable(meta):
                raise InputError(f"{self.out} already holds cell {cell.label!r} of task {cell.task!r} with other "
                                 "settings or questions; use a new --out folder (or delete that cell's files)",
                                 source=str(path))
        else:
            atomic_write_json(path, meta)

    def check_generators(self) -> None:
        """Every backend the grid names (models and judge) is registered: a typo in the second model or
        the judge fails now, not after the first model's cells have run for an hour."""
        if self._factory is not None:  # a caller-supplied factory knows its own names
            return
        from pllm.models import GENERATORS

        for model in self.config.models:
            GENERATORS.get(split_model(model)[0])
        if self.config.judge is not None:
            GENERATORS.get(self.config.judge.backend)

    def _generator(self, model: str) -> Any:
        if model not in self._generators:
            backend, name = split_model(model)
            if self._factory is not None:
                self._generators[model] = self._factory(backend, name)
            else:
                from pllm.models import load_generator

                self._generators[model] = load_generator(backend, name)
        return self._generators[model]

    def _learned_generator(self, cell: Cell, task: LoadedTask) -> tuple[Any, dict[str, Any]]:
        """The base model with this cell's task adapter merged (trained on the task's train split once;
        cached by content, so a resumed grid reuses it)."""
        from pllm.eval.runner import method_generator

        mc = MethodConfig(**{k: v for k, v in cell.config.items() if k != "model"})
        # One merged copy per adapter: the splits of one task folder, and readouts, share it.
        plain = dataclasses.replace(mc, readout="argmax", calibrate=False)
        key = f"{cell.model or 'hf'}|{task.folder}|{task.entry.train_split}|{plain.label}"
        if key not in self._learned:
            if not task.learn:
                raise InputError(f"learned cell {cell.label!r} needs the task's train split (train_split) to "
                                 "learn from", source=str(task.folder))
            source = {"questions": str((task.folder / f"{task.entry.train_split}_questions.json").resolve())}
            self._learned[key] = method_generator(task.spec, self._generator(cell.model or "hf"), mc,
                                                  train=task.learn, progress=self.progress, train_source=source)
        return self._learned[key]

    def _store_handle(self) -> Any:
        if self._store is None:
            from pllm.paths import pllm_home
            from pllm.users.store import SQLiteUserStore

            # Item embeddings and profile summaries (caches a resumed run reuses) live outside the run
            # folder, so a committed report folder holds only results.
            key = sha1_text(str(self.out.resolve()))[:12]
            self._store = SQLiteUserStore(pllm_home() / "bench-stores" / f"{_slug(self.out.name)}-{key}.sqlite3")
        return self._store

    def run_cell(self, cell: Cell, task: LoadedTask) -> CellLog:
        """Score the questions of `cell` not yet in its log, batch by batch (fixed positions)."""
        learned: dict[str, Any] = {}
        if cell.kind == "llm" and cell.config.get("ft"):
            generator, learned = self._learned_generator(cell, task)
        self._check_cell(cell, task, {"adapter": learned["adapter_data_hash"]} if learned else None)
        log = CellLog(self.cell_path(cell))
        qs = task.questions
        total = len(qs)
        if self.progress:
            self.progress(f"{cell.task}: {cell.label}", sum(q.id in log.records for q in qs), total)
        if all(q.id in log.records for q in qs):
            return log
        bs = self.config.batch_size
        if cell.kind == "llm":
            mc = MethodConfig(**{k: v for k, v in cell.config.items() if k != "model"})
            from pllm.prompting.profile import SummaryConfig

            if not learned:
                generator = self._generator(cell.model or "hf")
            device = device_label(generator)
            pers = Personalizer(task.spec, generator, mc, store=self._store_handle(),
                                summary_config=SummaryConfig(max_items=self.config.summary_items,
                                                             batch_size=self.config.batch_size))
        else:
            from pllm.eval.baselines import make_baseline

            opts = {k: v for k, v in cell.config.items() if k != "baseline"}
            base = make_baseline(cell.method, task.spec, store=self._store_handle(), **opts)
            # Without training questions, fit on the scored questions' histories only, never their targets.
            base.fit(task.train or [dataclasses.replace(q, target=None) for q in qs])
            device = None
        for start in range(0, total, bs):
            todo = [q for q in qs[start:start + bs] if q.id not in log.records]
            if not todo:
                continue
            t0 = time.perf_counter()
            if cell.kind == "llm":
                before = pers.timings.as_dict()
                records = pers.predict(todo, batch_size=bs)
                after = pers.timings.as_dict()
                timings = {k: (after[k] - before[k]) / len(todo) for k in after}
            else:
                records = base.predict(todo)
                timings = {}
            wall = (time.perf_counter() - t0) / len(todo)
            log.append([record_line(r, q, wall, timings, device) for r, q in zip(records, todo)])
            if self.progress:
                self.progress(f"{cell.task}: {cell.label}", sum(q.id in log.records for q in qs), total)
        return log

    # judge ------------------------------------------------------------------------------------
    def judge_pairs(self, task: LoadedTask) -> list[tuple[Cell, Cell]]:
        """(cell, reference cell) for every judged cell of a generation task; [] without a judge section."""
        j = self.config.judge
        if j is None or task.spec.kind != "generation":
            return []
        cells = self.cells(task)
        if j.against != "none":
            ref = next((c for c in cells if c.label == j.against), None)
            if ref is None:
                raise InputError(f"judge.against {j.against!r} is not a cell of task {task.name!r}; cells: "
                                 f"{', '.join(c.label for c in cells)}", field="judge")
            return [(c, ref) for c in cells if c is not ref]
        nones = [c for c in cells if c.kind == "llm" and c.method == "none"]
        pairs = []
        for c in cells:
            if c in nones:
                continue
            # as for Δ vs none: the none cell of the same style and model; baselines: the first none cell
            ref = next((n for n in nones if n.style == c.style and n.model == c.model), None) \
                if c.kind == "llm" else (nones[0] if nones else None)
            if ref is not None:
                pairs.append((c, ref))
        return pairs

    def judge_path(self, cell: Cell, ref: Cell) -> Path:
        return self.out / "judge" / _slug(cell.task) / f"{cell.slug}__vs__{ref.slug}.jsonl"

    def _judged_questions(self, task: LoadedTask) -> list[Question]:
        j = self.config.judge
        return task.questions[: j.max_questions] if j is not None else []

    def _predictions(self, cell: Cell, questions: Sequence[Question]) -> list[str] | None:
        """The cell's predictions for these questions, or None while any is missing."""
        log = CellLog(self.cell_path(cell), repair=False)
        have = [log.records.get(q.id) for q in questions]
        if any(h is None for h in have):
            return None
        return [h.get("prediction") or "" for h in have]  # type: ignore[union-attr]

    def _check_judge(self, cell: Cell, ref: Cell) -> None:
        """Verdicts in a folder may only be reused by the same judge (backend, model and settings)."""
        j = self.config.judge
        assert j is not None
        meta = {"task": cell.task, "cell": cell.label, "against": ref.label, "backend": j.backend, "model": j.model,
                "judge": dataclasses.asdict(j.judge_config(self.config.embedder))}
        path = self.judge_path(cell, ref).with_suffix(".json")
        if path.is_file():
            if json.loads(path.read_text(encoding="utf-8")) != to_jsonable(meta):
                raise InputError(f"{self.out} already holds judge verdicts for {cell.label!r} vs {ref.label!r} of "
                                 f"task {cell.task!r} from another judge or settings; use a new --out folder (or "
                                 "delete the judge/ folder)", source=str(path))
        else:
            atomic_write_json(path, meta)

    def judge_task(self, task: LoadedTask) -> None:
        """Judge every finished cell against its reference on the judged questions, skipping verdicts
        already in the logs; batches are fixed by question position (as for cells)."""
        pairs = self.judge_pairs(task)
        j = self.config.judge
        if not pairs or j is None:
            return
        qs = self._judged_questions(task)
        judge = None
        for cell, ref in pairs:
            preds, refs = self._predictions(cell, qs), self._predictions(ref, qs)
            if preds is None or refs is None:
                continue  # judged once both cells are finished
            self._check_judge(cell, ref)
            log = CellLog(self.judge_path(cell, ref))
            keys = [judge_key(q.id, a, b) for q, a, b in zip(qs, preds, refs)]
            label = f"{cell.task}: judge {cell.label} vs {ref.label}"
            if self.progress:
                self.progress(label, sum(k in log.records for k in keys), len(qs))
            for start in range(0, len(qs), j.batch_size):
                todo = [i for i in range(start, min(start + j.batch_size, len(qs))) if keys[i] not in log.records]
                if not todo:
                    continue
                if judge is None:
                    from pllm.judge.judge import Judge

                    judge = Judge(self._generator(j.generator_key), j.judge_config(self.config.embedder),
                                  spec=task.spec, store=self._store_handle())
                verdicts = judge.compare_many([(qs[i], preds[i], refs[i]) for i in todo], batch_size=j.batch_size)
                log.append([verdict_line(keys[i], qs[i].id, v) for i, v in zip(todo, verdicts)])
                if self.progress:
                    self.progress(label, sum(k in log.records for k in keys), len(qs))

    def judge_results(self, task: LoadedTask) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        """{cell label: {against, verdict lines}} for every fully judged cell; progress of the others."""
        done: dict[str, dict[str, Any]] = {}
        incomplete: list[dict[str, Any]] = []
        qs = self._judged_questions(task)
        for cell, ref in self.judge_pairs(task):
            preds, refs = self._predictions(cell, qs), self._predictions(ref, qs)
            log = CellLog(self.judge_path(cell, ref), repair=False)
            have = [] if preds is None or refs is None else \
                [log.records.get(judge_key(q.id, a, b)) for q, a, b in zip(qs, preds, refs)]
            if not have or any(h is None for h in have):
                incomplete.append({"cell": cell.label, "against": ref.label,
                                   "done": sum(h is not None for h in have), "total": len(qs)})
                continue
            done[cell.label] = {"against": ref.label, "verdicts": have}
        return done, incomplete

    def run(self, *, only_report: bool = False) -> dict[str, Any]:
        """Run every cell still missing questions (unless `only_report`), judge generation cells when
        the grid has a judge section, then write the reports."""
        if not only_report:
            self.check_generators()  # before anything is written
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.out, "bench_config.json")
        if self.config.threads is not None:
            import torch

            torch.set_num_threads(self.config.threads)
        try:
            if not only_report:
                for task in self.load_tasks():
                    self.judge_pairs(task)  # a bad judge.against fails before any cell runs
                for cell, task in self.schedule():
                    self.run_cell(cell, task)
                for task in self.load_tasks():
                    self.judge_task(task)
            return self.write_reports()
        finally:
            if self._store is not None:
                self._store.close()
                self._store = None

    def schedule(self) -> list[tuple[Cell, LoadedTask]]:
        """Run order: every task's baselines (cheap) first, then the LLM cells round-robin across tasks
        in grid order, so a run stopped early has comparable cells on every task."""
        per_task = [(t, self.cells(t)) for t in self.load_tasks()]
        order = [(c, t) for t, cells in per_task for c in cells if c.kind == "baseline"]
        llm = [[c for c in cells if c.kind == "llm"] for _, cells in per_task]
        for i in range(max((len(x) for x in llm), default=0)):
            order += [(cells[i], t) for (t, _), cells in zip(per_task, llm) if i < len(cells)]
        return order

    # reports ----------------------------------------------------------------------------------
    def task_results(self, task: LoadedTask) -> tuple[list[tuple[Cell, Any]], list[dict[str, Any]]]:
        """(cell, MethodResult) for every complete cell; progress of the incomplete ones."""
        from pllm.eval.report import MethodResult

        done, incomplete = [], []
        for cell in self.cells(task):
            log = CellLog(self.cell_path(cell), repair=False)
            have = [log.records.get(q.id) for q in task.questions]
            if any(h is None for h in have):
                incomplete.append({"cell": cell.label, "done": sum(h is not None for h in have),
                                   "total": len(have)})
                continue
            timings: dict[str, float] = {}
            for h in have:
                for k, v in (h.get("timings") or {}).items():
                    timings[k] = timings.get(k, 0.0) + v
            devices = Counter(h["device"] for h in have if h.get("device"))
            res = MethodResult(method=cell.label, records=[line_record(h) for h in have],
                               seconds=sum(h.get("wall", 0.0) for h in have), kind=cell.kind,
                               config=cell.config, timings={k: round(v, 3) for k, v in timings.items()},
                               devices=dict(devices.most_common()))
            done.append((cell, res))
        return done, incomplete

    def write_reports(self) -> dict[str, Any]:
        from pllm.eval.report import bench_markdown, bench_task_report

        reports = {}
        for task in self.load_tasks():
            done, incomplete = self.task_results(task)
            judged, judge_meta = None, None
            j = self.config.judge
            if j is not None and task.spec.kind == "generation":
                judged, judge_incomplete = self.judge_results(task)
                judge_meta = {"backend": j.backend, "model": j.model, "against": j.against,
                              "questions": len(self._judged_questions(task)),
                              "config": dataclasses.asdict(j.judge_config(self.config.embedder)),
                              "incomplete": judge_incomplete}
            reports[task.name] = bench_task_report(
                task.spec, done, task.questions, incomplete=incomplete, skipped=self.skipped.get(task.name, []),
                n_resamples=self.config.n_resamples, seed=self.config.seed, profile_bins=self.config.profile_bins,
                judged=judged, judge=judge_meta, data=str(task.folder), split=task.entry.split)
        report = to_jsonable({"kind": "pllm-bench", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "machine": machine_info(), "config": self.config, "tasks": reports})
        atomic_write_json(self.out / "report.json", report)
        from pllm.eval.plots import plot_report

        plots = plot_report(report, self.out / "plots")
        from pllm.io import atomic_write_text

        atomic_write_text(self.out / "report.md", bench_markdown(report, plots, base=self.out))
        return report


def machine_info() -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}
