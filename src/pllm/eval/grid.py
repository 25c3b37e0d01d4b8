"""The grid of `pllm bench`: tasks x methods x k x prompt style x model, next to the non-LLM baselines
(dataclasses with help text, validated on construction and saved as bench_config.json), and the cells
it expands to on one task."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pllm.errors import InputError
from pllm.eval.datasets import LoadedTask
from pllm.eval.methods import parse_method
from pllm.eval.runner import Cell, baseline_cells, llm_cell
from pllm.io import read_yaml
from pllm.pipeline import MethodConfig

ALL_METHODS = ["none", "random", "recency", "bm25", "dense", "hybrid", "profile", "profile+bm25"]
ALL_BASELINES = "all"


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
    ft_pairs: int | None = field(default=None, metadata={
        "help": "Training texts a learned (ft+) cell's task adapter samples from the train split (default: "
                "pllm.adapt.learned.FT_PAIRS)."})
    ft_recipe: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "Overrides of the learned cells' training recipe (pllm.adapt.learned.FT_DEFAULTS), e.g. "
                "{top_layers: null, target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]} "
                "for a layer or module sweep; a changed recipe trains adapters under their own names."})
    soft_recipe: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "Overrides of the ft+soft+ cells' encoder recipe (pllm.soft.train.SoftTrainConfig), e.g. "
                "{n_tokens: 8, epochs: 3, lr: 3.0e-3}; the rendering stays the method's."})
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
        if self.ft_recipe:  # a bad key or value fails now, not after the baselines have run
            from pllm.adapt.config import check_recipe_overrides

            if not isinstance(self.ft_recipe, dict):
                raise InputError(f"ft_recipe must be a mapping of recipe fields, got {self.ft_recipe!r}",
                                 field="ft_recipe")
            check_recipe_overrides(self.ft_recipe)
        if self.soft_recipe:
            from pllm.adapt.learned import soft_recipe

            if not isinstance(self.soft_recipe, dict):
                raise InputError(f"soft_recipe must be a mapping of SoftTrainConfig fields, got {self.soft_recipe!r}",
                                 field="soft_recipe")
            soft_recipe(MethodConfig(), self.soft_recipe)
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


def load_bench_config(path: str | Path) -> BenchConfig:
    data = read_yaml(path, missing="grid file not found", unparsable="cannot parse grid YAML")
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


def grid_cells(config: BenchConfig, entry: TaskEntry, task: LoadedTask) -> tuple[list[Cell], list[str]]:
    """Every cell of one task, in run order: per model, per style, the methods (k only where it matters),
    the extra cells, then the baselines; and what was skipped (a style or baseline the task cannot take)."""
    from pllm.eval.baselines import baselines_for
    from pllm.prompting.styles import default_style, get_style

    c = config
    extras = entry.extra_cells if entry.extra_cells is not None else c.extra_cells
    out: list[Cell] = []
    skipped: list[str] = []
    multi_model = len(c.models) > 1

    def add(m: str, k: int, style: str, model: str, label_style: bool) -> None:
        mc = parse_method(m, k, style=style, predict=c.predict, readout=c.readout,
                          max_prompt_tokens=c.max_prompt_tokens, embedder=c.embedder, seed=c.seed)
        label = mc.label + (f" [{style}]" if label_style else "") + (f" <{model}>" if multi_model else "")
        if not any(x.label == label for x in out):
            out.append(llm_cell(mc, model=model, task=task.name, label=label, name=m))

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
            for m in entry.methods if entry.methods is not None else c.methods:
                for k in (c.k if parse_method(m, 1).retriever != "none" else [0]):
                    add(m, k, style, model, len(styles) > 1 or len(c.styles) > 1 or bool(extras))
    for extra in extras:
        m, k, style = parse_extra(extra)
        try:
            get_style(style).check(task.spec)
        except InputError as exc:
            skipped.append(f"{extra}: {exc}")
            continue
        for model in c.models:
            add(m, k, style, model, True)
    applicable = baselines_for(task.spec)
    names = applicable if c.baselines == ALL_BASELINES else [b for b in c.baselines if b in applicable]
    if c.baselines != ALL_BASELINES:
        skipped.extend(f"baseline {b}: does not apply to {task.spec.name}" for b in c.baselines if b not in names)
    out += baseline_cells(task.spec, names, task=task.name, knn_k=c.knn_k, embedder=c.embedder)
    return out, skipped
