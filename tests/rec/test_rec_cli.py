import json

from typer.testing import CliRunner

from pllm.cli import app

runner = CliRunner()


def test_rec_build_and_eval(ml_dir, tmp_path):
    task = tmp_path / "task"
    res = runner.invoke(app, ["rec", "build", "--out", str(task), "--source", str(ml_dir), "--negatives", "6"])
    assert res.exit_code == 0, res.output
    assert "test:" in res.output
    out = tmp_path / "report"
    res = runner.invoke(app, ["rec", "eval", str(task), "--rankers", "popularity,itemknn", "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert [r["ranker"] for r in report["rankers"]] == ["popularity", "itemknn"]
    assert "recall@5" in report["rankers"][0]["metrics"]
    assert "| popularity |" in (out / "report.md").read_text()


def test_rec_eval_bad_folder_is_one_line_error(tmp_path):
    res = runner.invoke(app, ["rec", "eval", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "pllm rec build" in res.output


def test_judge_help():
    for sub in ("compare", "agreement"):
        res = runner.invoke(app, ["judge", sub, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output
