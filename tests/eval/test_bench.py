from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pllm.data import BuildConfig, build_dataset
from pllm.errors import InputError, UnknownNameError
from pllm.eval.bench import BenchRunner
from pllm.eval.bench_report import compare_reports
from pllm.eval.grid import BenchConfig, bench_config_from_dict, load_bench_config
from pllm.eval.log import CellLog
from pllm.eval.methods import parse_method
from pllm.stats import bootstrap_metric, fast_bootstrap, paired_difference
from pllm_testkit import write_recbole_movielens

GENRES = ["Action", "Comedy", "Drama", "Sci-Fi", "Romance"]


def write_raw_movielens(folder: Path, n_users: int = 10, n_movies: int = 24, per_user: int = 14) -> Path:
    """A small MovieLens-100k in RecBole's atomic format; each user prefers two genres (rates them 5)."""
    genres = [f"{GENRES[m % 5]} {GENRES[(m * 3 + 1) % 5]}" for m in range(1, n_movies + 1)]
    ratings = []
    for u in range(1, n_users + 1):
        liked = {GENRES[u % 5], GENRES[(u + 2) % 5]}
        for j in range(per_user):
            m = (u * 5 + j * 3) % n_movies + 1
            ratings.append((u, m, 5 if GENRES[m % 5] in liked else 2, 880000000 + u * 1000 + j * 10))
    return write_recbole_movielens(folder, genres, ratings)


@pytest.fixture
def rating_task(tmp_path: Path) -> Path:
    src = write_raw_movielens(tmp_path / "raw")
    out = tmp_path / "task"
    build_dataset("movielens-rating", BuildConfig(source=str(src), out=str(out), split="time", seed=0))
    return out


def grid(task: Path, **kw) -> BenchConfig:
    data = {"tasks": [{"data": str(task)}], "models": ["test-echo"], "embedder": "test-bow",
            "methods": ["none", "random", "recency", "bm25", "dense", "hybrid", "profile", "profile+bm25"],
            "k": [1, 3], "styles": ["demonstrations", "instruction"], "batch_size": 4, "n_resamples": 200, **kw}
    return bench_config_from_dict(data)


def _metrics(report: dict) -> dict:
    return {(t, r["cell"]): (r["metrics"], r["vs_none"]) for t, tr in report["tasks"].items() for r in tr["rows"]}


def test_grid_cells_cover_methods_k_styles_and_baselines(rating_task, echo_backend, bow_embedder, tmp_path):
    runner = BenchRunner(grid(rating_task), tmp_path / "run")
    (task,) = runner.load_tasks()
    cells = runner.cells(task)
    labels = [c.label for c in cells]
    assert len(labels) == len(set(labels))
    llm = [c for c in cells if c.kind == "llm"]
    # none and profile do not depend on k: 2 per style; six retrieval methods x 2 k: 12 per style
    assert len(llm) == 2 * (2 + 12)
    assert "bm25@3 [demonstrations]" in labels and "profile+bm25@1 [instruction]" in labels
    assert {c.label for c in cells if c.kind == "baseline"} == {"global-mean", "user-mean", "user-median", "bias",
                                                                  "item-knn", "knn", "most-frequent",
                                                                  "user-most-frequent"}
    with pytest.raises(InputError, match="unknown method 'bm42'"):
        grid(rating_task, methods=["bm42"])
    with pytest.raises(InputError, match="unknown grid fields"):
        bench_config_from_dict({"tasks": [{"data": "x"}], "method": ["none"]})
    with pytest.raises(UnknownNameError, match="prompt style"):
        grid(rating_task, styles=["fancy"])
    with pytest.raises(InputError, match="ft_recipe cannot set layers"):
        bench_config_from_dict({"tasks": [{"data": "x"}], "ft_recipe": {"layers": 3}})
    with pytest.raises(InputError, match="ft_recipe cannot set retriever"):  # the method's, not the recipe's
        bench_config_from_dict({"tasks": [{"data": "x"}], "ft_recipe": {"retriever": "bm25"}})
    with pytest.raises(InputError, match="top_layers must be >= 1"):
        bench_config_from_dict({"tasks": [{"data": "x"}], "ft_recipe": {"top_layers": 0}})
    with pytest.raises(InputError, match="soft_recipe cannot set style"):  # the method's rendering
        bench_config_from_dict({"tasks": [{"data": "x"}], "soft_recipe": {"style": "instruction"}})
    with pytest.raises(InputError, match="soft_recipe must be a mapping"):
        bench_config_from_dict({"tasks": [{"data": "x"}], "soft_recipe": [4]})
    assert parse_method("profile+dense", 2).retriever == "dense" and parse_method("profile", 2).k == 0


def test_run_report_and_per_question_predictions(rating_task, echo_backend, bow_embedder, tmp_path):
    out = tmp_path / "run"
    report = BenchRunner(grid(rating_task, k=[2]), out).run()
    t = report["tasks"]["movielens-rating"]
    n = t["n_questions"]
    assert n == 10 and not t["incomplete"]
    rows = {r["cell"]: r for r in t["rows"]}
    none = rows["none [demonstrations]"]
    assert none["vs_none"] == {} and rows["bm25@2 [demonstrations]"]["reference"] == "none [demonstrations]"
    assert rows["bm25@2 [instruction]"]["reference"] == "none [instruction]"
    for r in t["rows"]:
        for m in ("mae", "rmse"):
            iv = r["metrics"][m]
            assert iv["low"] <= iv["value"] <= iv["high"]
        assert r["n"] == n
    # the echo backend scores a label by how often it appears in the prompt: retrieval changes predictions
    assert rows["bm25@2 [demonstrations]"]["mean_prompt_tokens"] > none["mean_prompt_tokens"]
    lines = (out / "cells" / "movielens-rating" / "bm25_2_demonstrations.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    assert len(recs) == n and len({r["id"] for r in recs}) == n
    assert all(r["profile_size"] > 0 and r["label_scores"] and len(r["retrieved"]) <= 2 for r in recs)
    md = (out / "report.md").read_text()
    assert "Δmae vs none" in md and "(baseline)" in md and "plots/movielens-rating_by_method.png" in md
    assert (out / "plots" / "movielens-rating_by_method.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "plots" / "movielens-rating_vs_profile_size.png").is_file()
    saved = json.loads((out / "report.json").read_text())
    assert saved["tasks"] == report["tasks"]


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_identical_metrics(rating_task, echo_backend, bow_embedder, tmp_path):
    cfg = grid(rating_task, k=[2], methods=["none", "bm25", "recency", "profile"], styles=[None])
    full = BenchRunner(cfg, tmp_path / "full").run()
    calls = {"n": 0}

    def stop_after_a_few(label: str, done: int, total: int) -> None:
        calls["n"] += 1
        if calls["n"] == 7:  # mid-way through the grid, after some batches were written
            raise Interrupt

    with pytest.raises(Interrupt):
        BenchRunner(cfg, tmp_path / "resumed", progress=stop_after_a_few).run()
    cells = tmp_path / "resumed" / "cells" / "movielens-rating"
    partial = {p.name: len(p.read_text().splitlines()) for p in cells.glob("*.jsonl")}
    assert partial and any(v < 10 for v in partial.values())  # really stopped part-way
    # a torn last line (a crash mid-write) is dropped and that question scored again
    last = sorted(cells.glob("*.jsonl"))[-1]
    with last.open("a") as fh:
        fh.write('{"id": "torn')
    scored: list[int] = []
    resumed = BenchRunner(cfg, tmp_path / "resumed", progress=lambda lab, d, t: scored.append(d)).run()
    assert _metrics(resumed) == _metrics(full)
    for p in cells.glob("*.jsonl"):
        ids = [json.loads(x)["id"] for x in p.read_text().splitlines()]
        assert len(ids) == len(set(ids)) == 10  # every question exactly once
    # a third run has nothing left to score
    again: list[tuple[str, int]] = []
    BenchRunner(cfg, tmp_path / "resumed", progress=lambda lab, d, t: again.append((lab, d))).run()
    assert all(d == 10 for _, d in again)


def test_each_question_records_its_device_and_mixed_cells_say_so(rating_task, echo_backend, bow_embedder, tmp_path):
    """A grid finished on other hardware than it started on reports where each cell's questions ran."""
    from pllm_testkit import EchoGenerator

    def on(device: str):  # a generator factory whose generators compute on `device`
        def factory(backend: str, model: str | None) -> EchoGenerator:
            gen = EchoGenerator(model)
            gen.device = device  # type: ignore[attr-defined]
            return gen
        return factory

    cfg = grid(rating_task, k=[2], methods=["none", "bm25"], styles=[None])

    def stop(label: str, done: int, total: int) -> None:
        if label.endswith(": none") and done == 4:  # after the `none` cell's first batch
            raise Interrupt

    with pytest.raises(Interrupt):
        BenchRunner(cfg, tmp_path / "run", progress=stop, generator_factory=on("gpu-a")).run()
    report = BenchRunner(cfg, tmp_path / "run", generator_factory=on("cpu")).run()
    rows = {r["cell"]: r for r in report["tasks"]["movielens-rating"]["rows"]}
    devices = [r["devices"] for r in rows.values() if r["kind"] == "llm"]
    assert all(sum(d.values()) == 10 for d in devices)
    assert {"gpu-a": 4, "cpu": 6} in devices
    assert rows["global-mean"]["devices"] == {}  # no model, no device
    md = (tmp_path / "run" / "report.md").read_text()
    assert "| ran on |" in md and "cpu (6), gpu-a (4)" in md  # most questions first


def test_a_task_can_replace_the_grids_extra_cells(rating_task, echo_backend, bow_embedder, tmp_path):
    cfg = bench_config_from_dict({
        "tasks": [{"data": str(rating_task), "name": "a"},
                  {"data": str(rating_task), "name": "b", "extra_cells": ["none:instruction"]}],
        "models": ["test-echo"], "embedder": "test-bow", "methods": ["none"], "baselines": [],
        "extra_cells": ["none:instruction", "bm25@1:demonstrations"]})
    runner = BenchRunner(cfg, tmp_path / "run")
    a, b = runner.load_tasks()
    assert [c.label for c in runner.cells(a)] == ["none [demonstrations]", "none [instruction]",
                                                  "bm25@1 [demonstrations]"]
    assert [c.label for c in runner.cells(b)] == ["none [demonstrations]", "none [instruction]"]
    with pytest.raises(InputError, match="extra cell"):
        bench_config_from_dict({"tasks": [{"data": "x", "extra_cells": ["bm25"]}]})


def test_changed_settings_in_same_folder_are_refused(rating_task, echo_backend, bow_embedder, tmp_path):
    BenchRunner(grid(rating_task, k=[2], methods=["none", "bm25"], styles=[None]), tmp_path / "r").run()
    cfg = grid(rating_task, k=[2], methods=["none", "bm25"], styles=[None], max_prompt_tokens=64)
    with pytest.raises(InputError, match="other settings or questions"):
        BenchRunner(cfg, tmp_path / "r").run()


def test_cell_log_truncates_torn_tail(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"id": "a", "x": 1}\n{"id": "b", "x": 2}\n{"id": "c", "x"')
    log = CellLog(p)
    assert set(log.records) == {"a", "b"}
    log.append([{"id": "b", "x": 9}, {"id": "c", "x": 3}])
    assert [json.loads(x)["id"] for x in p.read_text().splitlines()] == ["a", "b", "c"]
    assert CellLog(p).records["b"]["x"] == 2


@pytest.mark.parametrize("metric", ["accuracy", "mae", "rmse", "rouge-1", "f1"])
def test_fast_bootstrap_equals_generic_resampling(metric):
    rng = np.random.default_rng(1)
    if metric in ("accuracy", "f1"):
        labels = ["a", "b", "c"]
        golds = [str(x) for x in rng.choice(labels, 40)]
        p1 = [str(x) for x in rng.choice(labels, 40)]
        p2 = [None if i % 7 == 0 else g for i, g in enumerate(golds)]
    elif metric in ("mae", "rmse"):
        labels = ["1", "2", "3", "4", "5"]
        golds = [str(x) for x in rng.integers(1, 6, 40)]
        p1 = [str(x) for x in rng.integers(1, 6, 40)]
        p2 = [None if i % 9 == 0 else f"{float(g) + 0.5:.1f}" for i, g in enumerate(golds)]
    else:
        labels = None
        words = "the cat sat on a mat with my dog today".split()
        golds = [" ".join(rng.choice(words, 6)) for _ in range(30)]
        p1 = [" ".join(rng.choice(words, 5)) for _ in range(30)]
        p2 = [None if i % 5 == 0 else g for i, g in enumerate(golds)]
    slow = bootstrap_metric(metric, p1, golds, labels, n_resamples=100, seed=3)
    fast = fast_bootstrap(metric, p1, golds, labels, n_resamples=100, seed=3)
    assert (fast.value, fast.low, fast.high) == pytest.approx((slow.value, slow.low, slow.high), abs=1e-9)
    slow_d = paired_difference(metric, p2, p1, golds, labels, n_resamples=100, seed=3)
    fast_d = fast_bootstrap(metric, p2, golds, labels, n_resamples=100, seed=3, ref_preds=p1)
    assert (fast_d.value, fast_d.low, fast_d.high) == pytest.approx((slow_d.value, slow_d.low, slow_d.high), abs=1e-9)


def test_yaml_grid_and_compare(rating_task, echo_backend, bow_embedder, tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(f"tasks:\n  - data: {rating_task}\n    limit: 6\nmodels: [test-echo]\nembedder: test-bow\n"
                    "methods: [none, bm25]\nk: [2]\nbaselines: [user-mean]\nn_resamples: 100\n")
    cfg = load_bench_config(path)
    runner = BenchRunner(cfg, tmp_path / "a")
    a = runner.run()
    assert runner.skipped["movielens-rating"] == []
    assert [r["cell"] for r in a["tasks"]["movielens-rating"]["rows"]] == ["none", "bm25@2", "user-mean"]
    b = json.loads(json.dumps(a))
    a_json = json.loads((tmp_path / "a" / "report.json").read_text())
    assert a_json["tasks"] == a["tasks"]
    b["tasks"]["movielens-rating"]["rows"][1]["metrics"]["mae"]["value"] += 10.0
    del b["tasks"]["movielens-rating"]["rows"][2]
    changes = compare_reports(a_json, b)
    by = {(c["cell"], c.get("metric")): c for c in changes}
    assert by[("bm25@2", "mae")]["change"] == "worse" and by[("none", "mae")]["change"] == "same"
    assert by[("user-mean", None)]["change"] == "only in A"
    with pytest.raises(InputError, match="grid file not found"):
        load_bench_config(tmp_path / "missing.yaml")


def test_learned_cell_trains_on_the_train_split_and_never_sees_a_test_target(tmp_path):
    """`ft+recency@2` in a grid: the task adapter is trained once from the train split and reused on
    resume; no test question's item (user-movie id: each user rates a movie once here) is a training text."""
    from pllm.adapt.store import AdapterStore

    rating_task = tmp_path / "task"
    build_dataset("movielens-rating", BuildConfig(source=str(write_raw_movielens(tmp_path / "raw", per_user=8)),
                                                  out=str(rating_task), split="time", seed=0))
    from pllm.adapt.train import TRAINING_TEXTS
    from pllm.models import GENERATORS
    from pllm.models.testing import make_tiny_generator

    golds = json.loads((rating_task / "test_outputs.json").read_text())
    planted = {g["id"] for g in golds["golds"]}
    train = json.loads((rating_task / "train_questions.json").read_text())
    GENERATORS.register("test-tiny", lambda model=None: make_tiny_generator(seed=0), replace=True)
    try:
        cfg = bench_config_from_dict({"tasks": [{"data": str(rating_task)}], "models": ["test-tiny"],
                                      "methods": ["ft+recency"], "k": [2], "baselines": ["bias", "user-median"],
                                      "batch_size": 4, "n_resamples": 100, "max_prompt_tokens": 128})
        report = BenchRunner(cfg, tmp_path / "run").run()
        rows = {r["cell"]: r for r in report["tasks"]["movielens-rating"]["rows"]}
        assert set(rows) == {"ft+recency@2", "bias", "user-median"}
        (record,) = AdapterStore(None).records("movielens-rating", "task")
        texts = (record.path / TRAINING_TEXTS).read_text()
        # item ids in training texts are the train questions' profile items only, never a test question's
        items = {json.loads(x)["item"].split("/", 1)[1] for x in texts.splitlines()}
        train_items = {p["id"] for q in train for p in q["profile"]}
        assert items <= train_items and not items & planted
        trained_at = record.created
        BenchRunner(cfg, tmp_path / "run").run()  # resumed: the adapter is reused, not retrained
        assert AdapterStore(None).records("movielens-rating", "task")[0].created == trained_at
        # A finished learned cell copied into a new folder is kept as logged: no adapter is trained for it
        # (here the store no longer has one), and the report reads it.
        shutil.copytree(tmp_path / "run" / "cells", tmp_path / "copy" / "cells")
        shutil.rmtree(record.path)
        copied = BenchRunner(cfg, tmp_path / "copy").run()
        assert AdapterStore(None).records("movielens-rating", "task") == []
        assert copied["tasks"]["movielens-rating"]["rows"] == report["tasks"]["movielens-rating"]["rows"]
        # ... but not under another training recipe: that cell is not the one logged
        swept = dataclasses.replace(cfg, ft_recipe={"top_layers": 1})
        with pytest.raises(InputError, match="other settings or questions"):
            BenchRunner(swept, tmp_path / "copy").run()
        assert AdapterStore(None).records("movielens-rating", "task") == []  # refused before any training
    finally:
        GENERATORS.unregister("test-tiny")
