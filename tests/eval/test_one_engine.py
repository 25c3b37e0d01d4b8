"""One evaluation engine: `pllm run` (the main job), `pllm eval` and `pllm bench` score a method through the
same runner, so the same method on the same questions gives the same predictions from all three."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_bench import write_raw_movielens
from typer.testing import CliRunner

from pllm.cli import app
from pllm.eval.main_job import MainJobConfig, run_main_job
from pllm.models import GENERATORS
from pllm.models.testing import make_tiny_generator
from pllm.retrieval.embedders import EMBEDDERS, clear_loaded_embedders
from pllm_testkit import BowEmbedder

N = 10  # questions scored (two batches of 8: batches are fixed by position in every path)
COMPARED = {"none": "none", "bm25@4": "bm25_4", "dense@4": "dense_4", "user-mean": "user-mean", "bias": "bias",
            "knn": "knn"}  # method -> bench cell file


@pytest.fixture
def tiny_and_bow(one_torch_thread) -> Iterator[None]:
    """The tiny random model as a backend, and the bag-of-words embedder in place of minilm (the main job's
    dense method and knn baseline use the default embedder), both through their registries."""
    minilm = EMBEDDERS.get("minilm")
    GENERATORS.register("test-tiny", lambda model=None: make_tiny_generator(seed=0), replace=True)
    EMBEDDERS.register("minilm", BowEmbedder, replace=True)
    clear_loaded_embedders()
    yield
    EMBEDDERS.register("minilm", minilm, replace=True)
    clear_loaded_embedders()
    GENERATORS.unregister("test-tiny")


def _seen(r: dict) -> tuple:
    """What a method produced for one question (label scores at the cell log's precision)."""
    return r["prediction"], r["retrieved"], {k: round(v, 4) for k, v in (r["label_scores"] or {}).items()}


def _details(folder: Path, method: str) -> dict[str, tuple]:
    safe = method.replace("@", "-")
    return {r["id"]: _seen(r) for r in json.loads((folder / f"details_{safe}.json").read_text())}


def test_main_job_eval_and_bench_give_the_same_predictions(tiny_and_bow, tmp_path, pllm_home):
    raw = write_raw_movielens(tmp_path / "raw", n_users=60)
    job = run_main_job(MainJobConfig(data=str(raw), out=str(tmp_path / "main"), limit=N, backend="test-tiny",
                                     summary_items=2, summary_tokens=4))
    task = pllm_home / "tasks" / "movielens-rating-user-s0"  # the folder the main job built
    assert {r.method for r in job.rows} >= set(COMPARED) | {"ft+stats+crowd/median"}  # the learned cell by default
    (training,) = job.training  # its one-time cost, in the report too
    assert training.startswith("ft+stats+crowd/median: task adapter trained on ") and "in this run" in training
    assert f"- one-time training: {training}" in (tmp_path / "main" / "report.md").read_text()

    evals = {}
    for method in ("none", "bm25@4", "dense@4"):
        out = tmp_path / f"eval-{method}"
        res = CliRunner().invoke(app, ["eval", "--task", "movielens-rating", "--questions",
                                       str(task / "test_questions.json"), "--outputs", str(task / "test_outputs.json"),
                                       "--method", method, "--backend", "test-tiny", "--limit", str(N),
                                       *(["--baselines"] if method == "none" else []), "--out", str(out)])
        assert res.exit_code == 0, res.output
        evals[method] = out
    res = CliRunner().invoke(app, ["bench", "--task", str(task), "--method", "none", "--method", "bm25", "--method",
                                   "dense", "--k", "4", "--model", "test-tiny", "--limit", str(N), "--baseline",
                                   "user-mean", "--baseline", "bias", "--baseline", "knn", "--out",
                                   str(tmp_path / "bench")])
    assert res.exit_code == 0, res.output

    for method, cell in COMPARED.items():
        main = _details(tmp_path / "main", method)
        assert len(main) == N
        lines = (tmp_path / "bench" / "cells" / "movielens-rating" / f"{cell}.jsonl").read_text().splitlines()
        bench = {r["id"]: _seen(r) for r in map(json.loads, lines)}
        assert bench == main, method
        assert _details(evals.get(method, evals["none"]), method) == main, method  # baselines: beside `none`
    method_config = json.loads((evals["bm25@4"] / "method_config.json").read_text())
    assert method_config["retriever"] == "bm25" and method_config["adapter"] == "none" and method_config["soft"] is None
