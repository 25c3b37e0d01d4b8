from __future__ import annotations

from pllm.eval.plots import plot_by_method, plot_report, plot_vs_k, plot_vs_profile_size


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
