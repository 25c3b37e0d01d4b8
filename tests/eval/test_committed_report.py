"""The committed example report (docs/results/bench) reproduces through the runner: every baseline cell of
the example grid, and the first questions of one LLM cell, give the committed predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pllm.eval.bench import BenchRunner
from pllm.eval.grid import load_bench_config
from pllm_testkit import SHARED_DATA

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "results" / "bench"
pytestmark = pytest.mark.slow


def _committed(task: str, cell: str) -> dict[str, dict]:
    lines = (COMMITTED / "cells" / task / f"{cell}.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


@pytest.fixture
def example_grid(monkeypatch):
    if not (SHARED_DATA / "movielens-100k" / "ml-100k.inter").is_file():
        pytest.skip(f"real MovieLens-100k not present at {SHARED_DATA}")
    monkeypatch.chdir(ROOT)  # the grid names its raw data relative to the repository root
    cfg = load_bench_config(ROOT / "benchmarks" / "grids" / "example.yaml")
    cfg.tasks = [t for t in cfg.tasks if t.name == "movielens-rating"]
    return cfg


def test_example_grid_baselines_reproduce_the_committed_predictions(example_grid, tmp_path):
    example_grid.methods, example_grid.extra_cells = ["none"], []
    runner = BenchRunner(example_grid, tmp_path / "run")
    (task,) = runner.load_tasks()
    committed = [c for c in runner.cells(task) if c.kind == "baseline"
                 and (COMMITTED / "cells" / task.name / f"{c.slug}.jsonl").is_file()]  # later baselines are not
    assert len(committed) >= 4
    for cell in committed:
        log = runner.run_cell(cell, task)
        want = _committed(task.name, cell.slug)
        assert {i: r["prediction"] for i, r in log.records.items()} == \
            {i: want[i]["prediction"] for i in log.records}, cell.label


def test_example_grid_llm_cell_reproduces_the_committed_predictions(example_grid, tmp_path):
    example_grid.methods, example_grid.baselines = ["bm25"], []
    example_grid.tasks[0].limit = 16  # two batches of the committed cell (batches are fixed by position)
    runner = BenchRunner(example_grid, tmp_path / "run")
    (task,) = runner.load_tasks()
    cell = next(c for c in runner.cells(task) if c.label == "bm25@4 [demonstrations]")
    log = runner.run_cell(cell, task)
    want = _committed(task.name, cell.slug)
    assert len(log.records) == 16
    for i, r in log.records.items():
        assert r["prediction"] == want[i]["prediction"] and r["retrieved"] == want[i]["retrieved"], i
        assert r["label_scores"] == pytest.approx(want[i]["label_scores"], abs=0.02), i
