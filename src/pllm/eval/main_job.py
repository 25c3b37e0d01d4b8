"""The main job (`pllm run` / `make run`): on the real MovieLens-100k `movielens-rating` task with the
embedded SmolLM2-135M-Instruct, compare the learned cell (a task adapter trained once on the train split's
users, `MAIN_LEARNED`) with no personalization, bm25 and dense retrieval (k=4) and profile summaries, next
to the non-LLM baselines, and print the table with the learned cell's one-time training cost."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pllm.data import BuildConfig
from pllm.data.movielens import find_movielens
from pllm.errors import InputError
from pllm.eval.datasets import ensure_built, load_task
from pllm.eval.grid import TaskEntry
from pllm.eval.methods import method_from_name
from pllm.eval.report import Conclusion, MethodResult, MethodRow, conclude, summarize, write_predictions, write_report
from pllm.eval.runner import CellRunner, Progress, baseline_cells, llm_cell
from pllm.io import save_config
from pllm.models import GENERATORS, load_generator
from pllm.paths import pllm_home
from pllm.pipeline import MethodConfig
from pllm.prompting.profile import SummaryConfig
from pllm.users.store import SQLiteUserStore

# The learned cell of the main job: LoRA trained on the train split's users with the user's rating distribution
# and other train users' ratings of the movie in every prompt, read out by the median (docs/learned.md).
MAIN_LEARNED = ("ft+stats+crowd/median",)


@dataclass
class MainJobConfig:
    data: str | None = field(default=None, metadata={"help": "MovieLens-100k folder (default: found nearby)."})
    out: str | None = field(default=None, metadata={"help": "Run folder (default: $PLLM_HOME/runs/main)."})
    limit: int = field(default=200, metadata={"help": "Test questions scored (the test split has ~236)."})
    k: int = field(default=4, metadata={"help": "Items retrieved per question."})
    seed: int = field(default=0, metadata={"help": "Split seed."})
    backend: str = field(default="hf", metadata={"help": "Generator backend."})
    model: str | None = field(default=None, metadata={"help": "Model id or path (default: embedded SmolLM2)."})
    batch_size: int = field(default=8, metadata={"help": "Questions per model call."})
    summary_items: int = field(default=6, metadata={
        "help": "Latest items each profile summary reads (summaries dominate the job's time on CPU)."})
    summary_tokens: int = field(default=32, metadata={
        "help": "Length of each profile summary in tokens (decoding them is the job's slowest step on CPU)."})
    styles: bool = field(default=False, metadata={"help": "Also run bm25 in the instruction style, to compare."})
    learned: list[str] = field(default_factory=lambda: list(MAIN_LEARNED), metadata={
        "help": "Learned methods, by name (default: 'ft+stats+crowd/median'; [] for prompting only): each task "
                "adapter is trained once on the train split's users and cached (see docs/learned.md)."})
    ft_pairs: int | None = field(default=None, metadata={
        "help": "Training texts per learned method's task adapter (default: pllm.adapt.learned.FT_PAIRS)."})

    def __post_init__(self) -> None:
        for name in ("limit", "k", "batch_size", "summary_items", "summary_tokens"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}", field=name)
        GENERATORS.get(self.backend)  # a typo fails before the data is built or a model loads
        if self.ft_pairs is not None and self.ft_pairs < 1:
            raise InputError(f"ft_pairs must be >= 1, got {self.ft_pairs}", field="ft_pairs")
        for name in self.learned:
            if not method_from_name(name).ft:
                raise InputError(f"--learned takes a learned method (ft+...), got {name!r}", field="learned")


# The honest bars: the user median is the best constant for MAE, the bias model adds what other users
# say about the movie.
MAIN_BASELINES = ("global-mean", "user-mean", "user-median", "bias", "knn")


def main_methods(config: MainJobConfig) -> list[tuple[str, MethodConfig]]:
    k = config.k
    methods = [("none", MethodConfig()), (f"bm25@{k}", MethodConfig(retriever="bm25", k=k)),
               (f"dense@{k}", MethodConfig(retriever="dense", k=k)), ("profile", MethodConfig(profile=True))]
    if config.styles:
        methods.append((f"bm25@{k} (instruction)", MethodConfig(retriever="bm25", k=k, style="instruction")))
    learned = [method_from_name(name) for name in config.learned]
    return methods + [(m.label, m) for m in learned]


@dataclass
class MainJobResult:
    rows: list[MethodRow]
    folder: Path
    conclusion: Conclusion | None
    training: list[str] = field(default_factory=list)


def run_main_job(config: MainJobConfig, progress: Progress | None = None) -> MainJobResult:
    """The fixed set of cells (`main_methods`, then `MAIN_BASELINES`) on the built task, by the one runner."""
    out = Path(config.out) if config.out else pllm_home() / "runs" / "main"
    source = find_movielens(config.data)
    task_dir = pllm_home() / "tasks" / f"movielens-rating-user-s{config.seed}"
    ensure_built("movielens-rating", BuildConfig(source=str(source), out=str(task_dir), split="user", seed=config.seed))
    task = load_task(TaskEntry(data=str(task_dir), limit=config.limit))
    generator = load_generator(config.backend, config.model)
    cells = [llm_cell(method, label=name) for name, method in main_methods(config)]
    cells += baseline_cells(task.spec, MAIN_BASELINES)
    t0 = time.perf_counter()
    with SQLiteUserStore(out / "store.sqlite3") as store:
        runner = CellRunner(lambda key: generator, store=store, batch_size=config.batch_size, progress=progress,
                            summary=SummaryConfig(max_items=config.summary_items, max_new_tokens=config.summary_tokens),
                            ft_pairs=config.ft_pairs)
        results = [runner.result(cell, task) for cell in cells]
    for res in results:
        write_predictions(out, task.spec, res.method, res.records)
    rows = summarize(task.spec, results)
    conclusion = conclude(task.spec, results, rows)
    data = str(Path(source).resolve())
    save_config(dataclasses.replace(config, data=data), out, "main_job_config.json")
    training = training_lines(results)
    write_report(out, task.spec, rows, title="pllm main job: movielens-rating", conclusion=conclusion,
                 meta={"model": generator.model_id, "data": data, "questions": len(task.questions),
                       "seconds": time.perf_counter() - t0, "task_dir": str(task_dir), "training": training})
    return MainJobResult(rows, out, conclusion, training)


def training_lines(results: Sequence[MethodResult]) -> list[str]:
    """What each learned cell's task adapter cost, once (a rerun finds it cached)."""
    out = []
    for res in results:
        c = res.config
        if c.get("adapter_pairs"):
            when = "in this run" if c.get("adapter_trained_now") else "in an earlier run, cached"
            out.append(f"{res.method}: task adapter trained on {c['adapter_pairs']:,} train-split texts in "
                       f"{c['adapter_train_seconds']:.0f} s ({when}: {c['adapter']})")
    return out
