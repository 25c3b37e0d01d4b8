"""`pllm bench`: run (or resume) a grid (`eval.grid`) into a folder and write its report.

Every cell (one task, one method setting) is scored by the one runner (`eval.runner`) into its own
log (`cells/<task>/<cell>.jsonl`, `eval.log`), one line per question, fsynced after every batch. A
killed run restarted on the same folder scores only the question ids not yet there, in the same
batches (identical predictions, identical final metrics). A cell's `cell.json` records its settings; a
changed setting in the same folder is an error, never a silent mix of two configurations. With a
`judge` section, generation cells are then judged (`eval.judging`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pllm.errors import InputError
from pllm.eval.datasets import LoadedTask, load_task
from pllm.eval.grid import BenchConfig, TaskEntry, grid_cells
from pllm.eval.judging import GridJudge
from pllm.eval.log import CellLog
from pllm.eval.report import MethodResult
from pllm.eval.runner import Cell, CellRunner, Progress, cell_result, slug
from pllm.io import atomic_write_json, atomic_write_text, save_config, sha1_text, to_jsonable
from pllm.models.base import Generator
from pllm.pipeline import MethodConfig
from pllm.prompting.profile import SummaryConfig
from pllm.users.store import SQLiteUserStore

# What a finished learned cell's file names it was scored with: its task adapter's content hash, and for
# `ft+soft+` its soft encoder (folder and content hash).
SCORED_WITH = ("adapter", "soft_encoder", "soft_digest")


def split_model(model: str) -> tuple[str, str | None]:
    backend, _, name = model.partition(":")
    return backend, (name or None)


class BenchRunner:
    """Runs (or resumes) every cell of a grid into `out`, then writes the reports and plots."""

    def __init__(self, config: BenchConfig, out: str | Path, *, progress: Progress | None = None,
                 generator_factory: Callable[[str, str | None], Generator] | None = None) -> None:
        self.config = config
        self.out = Path(out)
        self.progress = progress
        self._factory = generator_factory
        self._generators: dict[str, Generator] = {}
        self._store: SQLiteUserStore | None = None
        self._engine: CellRunner | None = None
        self.tasks: list[LoadedTask] = []
        self._entries: dict[str, TaskEntry] = {}
        self.skipped: dict[str, list[str]] = {}
        self.judge = GridJudge(self)

    def load_tasks(self) -> list[LoadedTask]:
        if self.tasks:
            return self.tasks
        for entry in self.config.tasks:
            task = load_task(entry)
            if task.name in self._entries:
                raise InputError(f"two grid tasks are named {task.name!r}; give one a `name`", field="tasks")
            self._entries[task.name] = entry
            self.tasks.append(task)
        return self.tasks

    def cells(self, task: LoadedTask) -> list[Cell]:
        """Every cell of one task, in run order (see `grid.grid_cells`)."""
        cells, self.skipped[task.name] = grid_cells(self.config, self._entries[task.name], task)
        return cells

    def cell_path(self, cell: Cell) -> Path:
        return self.out / "cells" / slug(cell.task) / f"{cell.slug}.jsonl"

    def _meta(self, cell: Cell, task: LoadedTask) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(this cell's settings and questions, the settings its folder holds, or None)."""
        meta = {"task": cell.task, "label": cell.label, "kind": cell.kind, "config": cell.config,
                "questions": sha1_text(*[q.id for q in task.questions])}
        c = self.config
        soft = c.soft_recipe if cell.config.get("ft_soft") else None
        training = {k: v for k, v in (("ft_pairs", c.ft_pairs), ("ft_recipe", c.ft_recipe), ("soft_recipe", soft)) if v}
        if cell.kind == "llm" and cell.config.get("ft") and training:  # (the defaults are left out, as before)
            meta["training"] = training
        path = self.cell_path(cell).with_suffix(".json")
        if not path.is_file():
            return meta, None
        old = json.loads(path.read_text(encoding="utf-8"))
        if cell.kind == "llm":  # a method field added after this cell was run reads as its default
            defaults = {f.name: f.default for f in dataclasses.fields(MethodConfig)}
            old["config"] = {**{k: v for k, v in defaults.items() if k in cell.config}, **old.get("config", {})}
        return meta, old

    def _finished_learned(self, cell: Cell, task: LoadedTask) -> bool:
        """A learned cell already scored on every question with these settings (training recipe included):
        it is kept as logged (its .json names the adapter it was scored with), so resuming or extending a grid
        never retrains the adapter of a finished cell. Delete the cell's files to score it again with a new
        adapter. Other settings in the folder fail here, before any training."""
        meta, old = self._meta(cell, task)
        if old is None:
            return False
        self._refuse_other(cell, {k: v for k, v in old.items() if k not in SCORED_WITH}, meta)
        return "adapter" in old and CellLog(self.cell_path(cell), repair=False).lines(task.questions) is not None

    def _refuse_other(self, cell: Cell, old: dict[str, Any], meta: dict[str, Any]) -> None:
        if old != to_jsonable(meta):
            raise InputError(f"{self.out} already holds cell {cell.label!r} of task {cell.task!r} with other "
                             "settings or questions; use a new --out folder (or delete that cell's files)",
                             source=str(self.cell_path(cell).with_suffix(".json")))

    def _check_cell(self, cell: Cell, task: LoadedTask, extra: dict[str, Any] | None = None) -> None:
        """The folder may only be resumed with the same settings and questions for this cell (and, for a
        learned method, the same trained adapter)."""
        meta, old = self._meta(cell, task)
        meta = {**meta, **(extra or {})}
        if old is not None:
            self._refuse_other(cell, old, meta)
        else:
            atomic_write_json(self.cell_path(cell).with_suffix(".json"), meta)

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

    def generator(self, model: str) -> Generator:
        """The generator of a grid key ('backend' or 'backend:model'), loaded once."""
        if model not in self._generators:
            backend, name = split_model(model)
            if self._factory is not None:
                self._generators[model] = self._factory(backend, name)
            else:
                from pllm.models import load_generator

                self._generators[model] = load_generator(backend, name)
        return self._generators[model]

    def store(self) -> SQLiteUserStore:
        if self._store is None:
            from pllm.paths import pllm_home

            # Item embeddings and profile summaries (caches a resumed run reuses) live outside the run
            # folder, so a committed report folder holds only results.
            key = sha1_text(str(self.out.resolve()))[:12]
            self._store = SQLiteUserStore(pllm_home() / "bench-stores" / f"{slug(self.out.name)}-{key}.sqlite3")
        return self._store

    def engine(self) -> CellRunner:
        if self._engine is None:
            c = self.config
            self._engine = CellRunner(self.generator, store=self.store(), batch_size=c.batch_size,
                                      summary=SummaryConfig(max_items=c.summary_items, batch_size=c.batch_size),
                                      progress=self.progress, ft_pairs=c.ft_pairs,
                                      ft_recipe=c.ft_recipe, soft_recipe=c.soft_recipe)
        return self._engine

    def run_cell(self, cell: Cell, task: LoadedTask) -> CellLog:
        """Score the questions of `cell` not yet in its log."""
        learned: dict[str, Any] = {}
        if cell.kind == "llm" and cell.config.get("ft") and self._finished_learned(cell, task):
            return CellLog(self.cell_path(cell))
        if cell.kind == "llm" and cell.config.get("ft"):
            _, learned = self.engine().generator(cell, task)
        self._check_cell(cell, task, {"adapter": learned["adapter_data_hash"],
                                      **{k: learned[k] for k in SCORED_WITH[1:] if k in learned}} if learned else None)
        log = CellLog(self.cell_path(cell))
        self.engine().run(cell, task, log)
        return log

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
                    self.judge.pairs(task)  # a bad judge.against fails before any cell runs
                for cell, task in self.schedule():
                    self.run_cell(cell, task)
                for task in self.load_tasks():
                    self.judge.run(task)
            return self.write_reports()
        finally:
            if self._store is not None:
                self._store.close()
                self._store, self._engine = None, None

    def schedule(self) -> list[tuple[Cell, LoadedTask]]:
        """Run order: every task's baselines (cheap) first, then the LLM cells round-robin across tasks
        in grid order, so a run stopped early has comparable cells on every task."""
        per_task = [(t, self.cells(t)) for t in self.load_tasks()]
        order = [(c, t) for t, cells in per_task for c in cells if c.kind == "baseline"]
        llm = [[c for c in cells if c.kind == "llm"] for _, cells in per_task]
        for i in range(max((len(x) for x in llm), default=0)):
            order += [(cells[i], t) for (t, _), cells in zip(per_task, llm) if i < len(cells)]
        return order

    def task_results(self, task: LoadedTask) -> tuple[list[tuple[Cell, MethodResult]], list[dict[str, Any]]]:
        """(cell, MethodResult) for every complete cell; progress of the incomplete ones."""
        done, incomplete = [], []
        for cell in self.cells(task):
            log = CellLog(self.cell_path(cell), repair=False)
            lines = log.lines(task.questions)
            if lines is None:
                incomplete.append({"cell": cell.label, "done": sum(q.id in log.records for q in task.questions),
                                   "total": len(task.questions)})
            else:
                done.append((cell, cell_result(cell, lines)))
        return done, incomplete

    def write_reports(self) -> dict[str, Any]:
        from pllm.eval.bench_report import bench_markdown, bench_task_report
        from pllm.eval.plots import plot_report

        reports = {}
        for task in self.load_tasks():
            done, incomplete = self.task_results(task)
            judged, judge_meta = None, None
            j = self.config.judge
            if j is not None and task.spec.kind == "generation":
                judged, judge_incomplete = self.judge.results(task)
                judge_meta = {"backend": j.backend, "model": j.model, "against": j.against,
                              "questions": len(self.judge.questions(task)),
                              "config": dataclasses.asdict(j.judge_config(self.config.embedder)),
                              "incomplete": judge_incomplete}
            reports[task.name] = bench_task_report(
                task.spec, done, task.questions, incomplete=incomplete, skipped=self.skipped.get(task.name, []),
                n_resamples=self.config.n_resamples, seed=self.config.seed, profile_bins=self.config.profile_bins,
                judged=judged, judge=judge_meta, data=str(task.folder), split=task.split)
        report = to_jsonable({"kind": "pllm-bench", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "machine": machine_info(), "config": self.config, "tasks": reports})
        atomic_write_json(self.out / "report.json", report)
        plots = plot_report(report, self.out / "plots")
        atomic_write_text(self.out / "report.md", bench_markdown(report, plots, base=self.out))
        return report


def machine_info() -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}
