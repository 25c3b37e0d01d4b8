"""The personalized pairwise judge as a metric of a grid's generation cells: every judged cell against
its reference cell (by default the `none` cell of its prompt style and model), both orders asked;
verdicts go to `judge/<task>/<cell>__vs__<reference>.jsonl`, one line per (question, pair of
predictions), fsynced per batch, so a resumed run never asks the judge twice."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pllm.errors import InputError
from pllm.eval.datasets import LoadedTask
from pllm.eval.log import CellLog, judge_key, verdict_line
from pllm.eval.runner import Cell, slug
from pllm.io import atomic_write_json, to_jsonable
from pllm.types import Question

if TYPE_CHECKING:
    from pllm.eval.bench import BenchRunner


class GridJudge:
    """Judges the cells of one grid run (`runner`), into its folder."""

    def __init__(self, runner: BenchRunner) -> None:
        self.runner = runner
        self.config = runner.config
        self.out = runner.out

    def pairs(self, task: LoadedTask) -> list[tuple[Cell, Cell]]:
        """(cell, reference cell) for every judged cell of a generation task; [] without a judge section."""
        j = self.config.judge
        if j is None or task.spec.kind != "generation":
            return []
        cells = self.runner.cells(task)
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

    def path(self, cell: Cell, ref: Cell) -> Path:
        return self.out / "judge" / slug(cell.task) / f"{cell.slug}__vs__{ref.slug}.jsonl"

    def questions(self, task: LoadedTask) -> list[Question]:
        j = self.config.judge
        return task.questions[: j.max_questions] if j is not None else []

    def _predictions(self, cell: Cell, questions: Sequence[Question]) -> list[str] | None:
        """The cell's predictions for these questions, or None while any is missing."""
        lines = CellLog(self.runner.cell_path(cell), repair=False).lines(questions)
        return None if lines is None else [line.get("prediction") or "" for line in lines]

    def _check_judge(self, cell: Cell, ref: Cell) -> None:
        """Verdicts in a folder may only be reused by the same judge (backend, model and settings)."""
        j = self.config.judge
        assert j is not None
        meta = {"task": cell.task, "cell": cell.label, "against": ref.label, "backend": j.backend, "model": j.model,
                "judge": dataclasses.asdict(j.judge_config(self.config.embedder))}
        path = self.path(cell, ref).with_suffix(".json")
        if path.is_file():
            if json.loads(path.read_text(encoding="utf-8")) != to_jsonable(meta):
                raise InputError(f"{self.out} already holds judge verdicts for {cell.label!r} vs {ref.label!r} of "
                                 f"task {cell.task!r} from another judge or settings; use a new --out folder (or "
                                 "delete the judge/ folder)", source=str(path))
        else:
            atomic_write_json(path, meta)

    def run(self, task: LoadedTask) -> None:
        """Judge every finished cell against its reference on the judged questions, skipping verdicts
        already in the logs; batches are fixed by question position (as for cells)."""
        pairs = self.pairs(task)
        j = self.config.judge
        if not pairs or j is None:
            return
        qs = self.questions(task)
        judge = None
        for cell, ref in pairs:
            preds, refs = self._predictions(cell, qs), self._predictions(ref, qs)
            if preds is None or refs is None:
                continue  # judged once both cells are finished
            self._check_judge(cell, ref)
            log = CellLog(self.path(cell, ref))
            keys = [judge_key(q.id, a, b) for q, a, b in zip(qs, preds, refs)]
            label = f"{cell.task}: judge {cell.label} vs {ref.label}"
            if self.runner.progress:
                self.runner.progress(label, sum(k in log.records for k in keys), len(qs))
            for start in range(0, len(qs), j.batch_size):
                todo = [i for i in range(start, min(start + j.batch_size, len(qs))) if keys[i] not in log.records]
                if not todo:
                    continue
                if judge is None:
                    from pllm.judge.judge import Judge

                    judge = Judge(self.runner.generator(j.generator_key), j.judge_config(self.config.embedder),
                                  spec=task.spec, store=self.runner.store())
                verdicts = judge.compare_many([(qs[i], preds[i], refs[i]) for i in todo], batch_size=j.batch_size)
                log.append([verdict_line(keys[i], qs[i].id, v) for i, v in zip(todo, verdicts)])
                if self.runner.progress:
                    self.runner.progress(label, sum(k in log.records for k in keys), len(qs))

    def results(self, task: LoadedTask) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        """{cell label: {against, verdict lines}} for every fully judged cell; progress of the others."""
        done: dict[str, dict[str, Any]] = {}
        incomplete: list[dict[str, Any]] = []
        qs = self.questions(task)
        for cell, ref in self.pairs(task):
            preds, refs = self._predictions(cell, qs), self._predictions(ref, qs)
            log = CellLog(self.path(cell, ref), repair=False)
            have = [] if preds is None or refs is None else \
                [log.records.get(judge_key(q.id, a, b)) for q, a, b in zip(qs, preds, refs)]
            if not have or any(h is None for h in have):
                incomplete.append({"cell": cell.label, "against": ref.label,
                                   "done": sum(h is not None for h in have), "total": len(qs)})
                continue
            done[cell.label] = {"against": ref.label, "verdicts": have}
        return done, incomplete

