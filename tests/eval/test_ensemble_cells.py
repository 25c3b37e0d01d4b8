"""benchmarks/ensemble_cells.py: the mean of logged label distributions, read like any cell; mismatches refused."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from pllm.errors import InputError
from pllm.tasks.readouts import read_out
from pllm.tasks.spec import get_task

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _module():
    sys.path.insert(0, str(BENCH))  # it reads logs through pair_cells, as when run as a script
    try:
        spec = importlib.util.spec_from_file_location("ensemble_cells", BENCH / "ensemble_cells.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def _log(path: Path, dists: list[list[float]], targets: list[str]) -> Path:
    labels = ["1", "2", "3", "4", "5"]
    path.write_text("".join(json.dumps({"id": f"q{i}", "target": t, "prediction": "3",
                                        "label_scores": {lab: math.log(p) for lab, p in zip(labels, d)}}) + "\n"
                            for i, (d, t) in enumerate(zip(dists, targets))))
    return path


def test_members_are_averaged_as_distributions_and_read_out_like_one_cell(tmp_path):
    a = _log(tmp_path / "a.jsonl", [[0.6, 0.1, 0.1, 0.1, 0.1], [0.0001, 0.0001, 0.0001, 0.0001, 0.9996]], ["1", "5"])
    b = _log(tmp_path / "b.jsonl", [[0.1, 0.1, 0.1, 0.1, 0.6], [0.0001, 0.0001, 0.0001, 0.0001, 0.9996]], ["1", "5"])
    out = tmp_path / "e.jsonl"
    rows = _module().main([str(a), str(b), "--task", "movielens-rating", "--out", str(out)])
    first = {lab: math.exp(s) for lab, s in rows[0]["label_scores"].items()}
    assert first == pytest.approx({"1": 0.35, "2": 0.1, "3": 0.1, "4": 0.1, "5": 0.35})
    spec = get_task("movielens-rating")
    assert read_out(spec, rows[0]["label_scores"], "median") == "3"  # half the mass on each side of 3
    assert [r["prediction"] for r in rows] == ["1", "5"] and [r["target"] for r in rows] == ["1", "5"]
    assert [json.loads(x) for x in out.read_text().splitlines()] == rows


def test_members_on_other_questions_or_without_scores_are_refused(tmp_path):
    ensemble = _module().ensemble
    a = _log(tmp_path / "a.jsonl", [[0.2] * 5, [0.2] * 5], ["1", "2"])
    with pytest.raises(InputError, match="at least two"):
        ensemble([a], "movielens-rating")
    with pytest.raises(InputError, match="other questions"):
        ensemble([a, _log(tmp_path / "b.jsonl", [[0.2] * 5], ["1"])], "movielens-rating")
    with pytest.raises(InputError, match="different targets"):
        ensemble([a, _log(tmp_path / "c.jsonl", [[0.2] * 5, [0.2] * 5], ["1", "3"])], "movielens-rating")
    bare = tmp_path / "d.jsonl"
    bare.write_text("".join(json.dumps({"id": f"q{i}", "target": t, "prediction": t}) + "\n"
                            for i, t in enumerate(["1", "2"])))
    with pytest.raises(InputError, match="no label scores"):
        ensemble([a, bare], "movielens-rating")
    with pytest.raises(SystemExit):
        _module().main([str(a), "--task", "movielens-rating", "--out", str(tmp_path / "e.jsonl")])
