from __future__ import annotations

import json

from typer.testing import CliRunner

from pllm.cli import app
from pllm.data import BuildConfig, build_dataset
from pllm_testkit import write_persona_csv

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_bench_help_and_bad_input(tmp_path):
    res = invoke("bench", "--help")
    assert res.exit_code == 0 and "--compare" in res.output and "resum" in res.output
    res = invoke("bench", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "give --config" in res.output
    res = invoke("bench", "--task", tmp_path / "missing", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "no test_questions.json" in res.output


def test_bench_generation_task_then_compare(tmp_path, echo_backend, bow_embedder):
    write_persona_csv(tmp_path / "raw" / "valid.csv")
    task = tmp_path / "persona"
    build_dataset("persona-chat-reply", BuildConfig(source=str(tmp_path / "raw"), out=str(task), split="time",
                                                    min_profile=3))
    out = tmp_path / "run"
    args = ["bench", "--task", f"chat={task}", "--model", "test-echo", "--method", "none", "--method", "recency",
            "--k", "2", "--limit", "6", "--out", out]
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    t = report["tasks"]["chat"]
    assert t["task"] == "persona-chat-reply" and t["n_questions"] == 6
    # generation: ROUGE with intervals; the only baseline that applies is the nearest item (knn)
    assert [r["cell"] for r in t["rows"]] == ["none", "recency@2", "knn"]
    assert all(set(r["metrics"]) == {"rouge-1", "rouge-L"} for r in t["rows"])
    assert t["rows"][1]["generated_tokens_per_second"] and t["rows"][1]["timings"]["model"] >= 0
    assert "knn" in res.output and "report:" in res.output
    # resuming the finished grid changes nothing; compare reports the same numbers
    res = invoke(*args)
    assert res.exit_code == 0
    res = invoke("bench", "--compare", out / "report.json", out / "report.json")
    assert res.exit_code == 0 and "0 of" in res.output and "recency@2" in res.output
