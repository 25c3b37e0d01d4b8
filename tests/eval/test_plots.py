from __future__ import annotations

from pllm.eval.plots import plot_by_method, plot_report, plot_vs_k, plot_vs_profile_size, profile_size_series


def _iv(v: float) -> dict:
    return {"value": v, "low": v - 0.05, "high": v + 0.05}


def _report(ks: list[int]) -> dict:
    rows = [{"cell": "none", "kind": "llm", "method": "none", "k": 0, "style": "demonstrations", "model": "hf",
             "metrics": {"accuracy": _iv(0.3)}}]
    for method in ("bm25", "dense"):
        for k in ks:
            rows.append({"cell": f"{method}@{k}", "kind": "llm", "method": method, "k": k, "style": "demonstrations",
                         "model": "hf", "metrics": {"accuracy": _iv(0.3 + 0.02 * k)}})
    rows.append({"cell": "user-most-frequent", "kind": "baseline", "method": "user-most-frequent", "k": 0,
                 "style": None, "model": None, "metrics": {"accuracy": _iv(0.4)}})
    by_size = {"metric": "accuracy", "bins": [{"low": 5, "high": 20, "closed": False, "n": 10},
                                             {"low": 20, "high": 90, "closed": True, "n": 12}],
               "methods": {r["cell"]: [0.2, 0.5] for r in rows}}
    return {"tasks": {"genre task": {"task": "movielens-genre", "primary_metric": "accuracy", "n_questions": 22,
                                     "higher_is_better": {"accuracy": True}, "rows": rows,
                                     "by_profile_size": by_size}}}


def test_plot_report_writes_every_plot(tmp_path):
    made = plot_report(_report([1, 4]), tmp_path / "plots")
    assert set(made["genre task"]) == {"by method", "against k", "against profile size"}
    for path in made["genre task"].values():
        data = open(path, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert made["genre task"]["by method"].endswith("genre_task_by_method.png")


def test_single_k_has_no_k_plot_and_empty_bins_no_size_plot(tmp_path):
    task = _report([4])["tasks"]["genre task"]
    assert plot_vs_k(task, tmp_path / "k.png") is None and not (tmp_path / "k.png").exists()
    assert plot_by_method(task, tmp_path / "m.png").is_file()
    assert plot_vs_profile_size({**task, "by_profile_size": {}}, tmp_path / "s.png") is None


def test_profile_size_plot_draws_intervals_from_the_report(tmp_path):
    task = _report([1, 4])["tasks"]["genre task"]
    task["by_profile_size"]["intervals"] = {c: [[0.1, 0.3], [0.4, 0.6]] for c in task["by_profile_size"]["methods"]}
    series = profile_size_series(task)
    assert series[0]["cell"] == "none" and series[0]["low"] == [0.1, 0.4] and series[0]["high"] == [0.3, 0.6]
    assert plot_vs_profile_size(task, tmp_path / "s.png").stat().st_size > 5000
    del task["by_profile_size"]["intervals"]  # reports written before intervals still plot, without bars
    assert profile_size_series(task)[0]["low"] is None and plot_vs_profile_size(task, tmp_path / "t.png").is_file()


def test_bench_report_has_profile_size_intervals_and_lists_every_device():
    from types import SimpleNamespace

    from pllm.eval.bench_report import bench_markdown, bench_task_report
    from pllm.eval.report import MethodResult
    from pllm.pipeline import PredictionRecord
    from pllm.tasks.spec import get_task

    spec = get_task("movielens-rating")
    qs = [SimpleNamespace(id=f"q{i}", target=str(1 + i % 5), profile=[None] * (1 + i)) for i in range(40)]

    def cell(label, method, device, n):
        preds = [q.target if i % 3 else "3" for i, q in enumerate(qs)]
        recs = [PredictionRecord(id=q.id, user_id=q.id, prediction=p, target=q.target) for q, p in zip(qs, preds)]
        c = SimpleNamespace(label=label, kind="llm", method=method, k=4, style=None, model="hf", config={})
        return c, MethodResult(label, recs, seconds=1.0, devices=device and {device: n})

    done = [cell("none", "none", "NVIDIA H200", 40), cell("bm25@4", "bm25", "cpu", 40)]
    task = bench_task_report(spec, done, qs, n_resamples=50, profile_bins=2)
    by = task["by_profile_size"]
    for name, values in by["methods"].items():
        for v, (lo, hi) in zip(values, by["intervals"][name]):
            assert lo <= v <= hi
    md = bench_markdown({"tasks": {"movielens-rating": task}, "config": {"models": ["hf"]}, "machine": {"cpus": 2}})
    assert "Rows computed on: NVIDIA H200 (40 questions), cpu (40 questions)." in md


def test_pareto_front_is_joined_along_the_front_not_in_weight_order():
    from pllm.align.report import pareto_front

    # weights 0, .25, .5, .75, 1: zigzag in weight order; the front is (.1, .9) -> (.5, .6) -> (.9, .2)
    points = [(0.1, 0.9), (0.5, 0.6), (0.3, 0.3), (0.9, 0.2), (0.4, 0.5)]
    assert pareto_front(points) == [0, 1, 3]
