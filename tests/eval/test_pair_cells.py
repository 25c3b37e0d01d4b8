"""benchmarks/pair_cells.py: two logged cells paired on the same questions; mismatched logs are refused."""

import importlib.util
import json
from pathlib import Path

import pytest

from pllm.errors import InputError

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pair_cells.py"


def _module():
    spec = importlib.util.spec_from_file_location("pair_cells", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _log(path: Path, preds: list[str], golds: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": f"q{i}", "prediction": p, "target": g}) + "\n"
                            for i, (p, g) in enumerate(zip(preds, golds))))
    return path


def test_two_cells_are_paired_question_by_question(tmp_path):
    golds = ["a", "b"] * 10
    a = _log(tmp_path / "a.jsonl", golds, golds)  # all right
    b = _log(tmp_path / "b.jsonl", ["a"] * 20, golds)  # half right
    out = _module().main([str(a), str(b), "--metric", "accuracy", "--out", str(tmp_path / "pair.json")])
    assert (out["a_score"]["value"], out["b_score"]["value"], out["questions"]) == (1.0, 0.5, 20)
    assert out["a_minus_b"]["value"] == 0.5 and 0 < out["a_minus_b"]["low"] <= 0.5 <= out["a_minus_b"]["high"]
    assert json.loads((tmp_path / "pair.json").read_text()) == out


def test_logs_of_other_questions_or_targets_are_refused(tmp_path):
    pair = _module().pair
    a = _log(tmp_path / "a.jsonl", ["a", "b"], ["a", "b"])
    with pytest.raises(InputError, match="different questions: 1 only in A"):
        pair(a, _log(tmp_path / "b.jsonl", ["a"], ["a"]), "accuracy")
    with pytest.raises(InputError, match="different targets"):
        pair(a, _log(tmp_path / "c.jsonl", ["a", "b"], ["a", "a"]), "accuracy")
    with pytest.raises(InputError, match="cell log not found"):
        pair(a, tmp_path / "none.jsonl", "accuracy")
    (tmp_path / "bad.jsonl").write_text("not json\n")
    with pytest.raises(InputError, match="line 1 is not a cell log record"):
        pair(a, tmp_path / "bad.jsonl", "accuracy")
    with pytest.raises(SystemExit):  # the command line: a clear error, exit 2
        _module().main([str(a), str(tmp_path / "none.jsonl"), "--metric", "accuracy"])


def test_a_side_is_re_read_from_its_label_scores_with_the_readout_chosen_on_dev(tmp_path):
    """`--readouts median,-`: A's predictions come from its logged label scores (here: argmax 1, median 3),
    B's stay as logged; a readout without the task's label set, or without scores, is refused."""
    import math

    scores = {"1": math.log(0.4), "2": math.log(0.05), "3": math.log(0.1), "4": math.log(0.05), "5": math.log(0.4)}
    a = tmp_path / "a.jsonl"
    a.write_text("".join(json.dumps({"id": f"q{i}", "prediction": "1", "target": "3", "label_scores": scores}) + "\n"
                         for i in range(10)))
    b = _log(tmp_path / "b.jsonl", ["2"] * 10, ["3"] * 10)
    out = _module().main([str(a), str(b), "--metric", "mae", "--readouts", "median,-", "--task", "movielens-rating"])
    assert (out["a_score"]["value"], out["b_score"]["value"], out["readouts"]) == (0.0, 1.0, ["median", None])
    assert _module().pair(a, b, "mae")["a_score"]["value"] == 2.0  # as logged: the argmax
    with pytest.raises(InputError, match="label set"):
        _module().pair(a, b, "mae", readouts=("median", None))
    with pytest.raises(InputError, match="no logged label scores"):
        _module().pair(a, b, "mae", readouts=(None, "median"), task="movielens-rating")
    with pytest.raises(SystemExit):
        _module().main([str(a), str(b), "--metric", "mae", "--readouts", "median", "--task", "movielens-rating"])
