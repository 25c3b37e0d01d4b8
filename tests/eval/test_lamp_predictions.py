"""pllm's predictions files pass the two checks of LaMP's official scorer (eval/evaluation.py,
`LaMPEvaluation.evaluate_task`): the predictions' `task` equals the gold file's, and the id sets are equal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pllm.cli import app
from pllm.eval.report import write_predictions
from pllm.pipeline import PredictionRecord
from pllm.tasks.spec import get_task
from pllm_testkit import lamp3_outputs


def lamp_scorer_checks(predictions: Path, golds: Path) -> None:
    """LaMP's own asserts, as evaluate_task runs them with task_name taken from the gold file."""
    preds, gold = json.loads(predictions.read_text()), json.loads(golds.read_text())
    task_name = gold["task"]
    assert preds["task"] == task_name, "The provided task_name and the results do not match."
    assert {g["id"] for g in gold["golds"]} == {p["id"] for p in preds["golds"]}, \
        "Predictions ids and gold ids do not match."


@pytest.mark.parametrize("gold_task", ["LaMP_3", "LaMP-3"])
def test_eval_predictions_pass_lamps_scorer(tmp_path, lamp3_files, echo_backend, gold_task):
    questions, _ = lamp3_files
    golds = tmp_path / "dev_outputs_official.json"
    golds.write_text(json.dumps({**lamp3_outputs(), "task": gold_task}))
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["eval", "--task", "LaMP-3", "--questions", str(questions), "--outputs", str(golds),
                                   "--backend", echo_backend, "--retriever", "bm25", "--k", "1", "--baselines",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    files = sorted(out.glob("predictions_*.json"))
    assert len(files) > 1  # the method and every baseline
    for path in files:
        lamp_scorer_checks(path, golds)


def test_without_gold_file_lamp_tasks_take_lamps_own_name(tmp_path, lamp3_files, echo_backend):
    questions, _ = lamp3_files
    res = CliRunner().invoke(app, ["eval", "--task", "LaMP-3", "--questions", str(questions), "--backend",
                                   echo_backend, "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "run" / "predictions_none.json").read_text())["task"] == "LaMP_3"


def test_other_tasks_keep_their_name(tmp_path):
    records = [PredictionRecord(id="1-10", user_id="1", prediction="4", target="5")]
    write_predictions(tmp_path, get_task("movielens-rating"), "none", records)
    data = json.loads((tmp_path / "predictions_none.json").read_text())
    assert data == {"task": "movielens-rating", "golds": [{"id": "1-10", "output": "4"}]}
    assert [get_task(f"LaMP-{k}").official_name for k in range(1, 8)] == [f"LaMP_{k}" for k in range(1, 8)]
