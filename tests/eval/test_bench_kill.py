"""Kill `pllm bench` with SIGKILL mid-run, restart it, and get the same final metrics as a run that was
never interrupted (a tiny random model saved to disk, so the CLI loads it like any local model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_bench import write_raw_movielens

from pllm.data import BuildConfig, build_dataset
from pllm.eval.bench import BenchRunner
from pllm.eval.grid import load_bench_config


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from pllm.cli import main; sys.argv = ['pllm'] + sys.argv[1:]; main()",
            *args]


def _rows(report: dict) -> dict:
    return json.loads(json.dumps({r["cell"]: [r["metrics"], r["vs_none"], r["unparseable"], r["truncated"]]
                                  for r in report["tasks"]["rating"]["rows"]}))


def test_sigkill_then_restart_matches_uninterrupted(tmp_path, tiny_generator):
    model_dir = tmp_path / "tiny-model"
    tiny_generator.model.save_pretrained(model_dir)
    tiny_generator.tokenizer.save_pretrained(model_dir)
    task = tmp_path / "task"
    build_dataset("movielens-rating", BuildConfig(source=str(write_raw_movielens(tmp_path / "raw", n_users=24)),
                                                  out=str(task), split="time"))
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"tasks: [{{data: {task}, name: rating}}]\nmodels: ['hf:{model_dir}']\n"
                    "methods: [none, recency, bm25]\nk: [1, 3]\npredict: generate\nbatch_size: 2\n"
                    "baselines: [global-mean, user-mean, most-frequent]\nn_resamples: 200\nthreads: 1\n")
    full = BenchRunner(load_bench_config(grid), tmp_path / "full").run()

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli("bench", "--config", str(grid), "--out", str(out)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=os.environ.copy())
    cells = out / "cells" / "rating"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            llm_lines = sum(len(p.read_text().splitlines()) for p in cells.glob("*.jsonl")
                            if p.stem in ("none", "recency_1"))
            if llm_lines >= 4:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the grid finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "report.json").exists()
    partial = {p.stem: len(p.read_text().splitlines()) for p in cells.glob("*.jsonl")}
    assert sum(partial.values()) < 24 * 8  # really stopped part-way (8 cells of 24 questions)

    res = subprocess.run(_cli("bench", "--config", str(grid), "--out", str(out)), capture_output=True, text=True,
                         env=os.environ.copy(), timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    resumed = json.loads((out / "report.json").read_text())
    assert _rows(resumed) == _rows(full)
    for p in cells.glob("*.jsonl"):
        ids = [json.loads(x)["id"] for x in p.read_text().splitlines()]
        assert len(ids) == len(set(ids)) == 24, p.name  # every question scored exactly once
    assert Path(out / "report.md").read_text().count("(baseline)") == 3
