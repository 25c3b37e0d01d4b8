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


def test_fine_tuned_ranker_and_hybrid_from_the_command_line(ml_dir_16, tmp_path, tiny_model_dir, one_torch_thread):
    ml = ml_dir_16
    task = tmp_path / "task"
    res = runner.invoke(app, ["rec", "build", "--out", str(task), "--source", str(ml), "--negatives", "5",
                              "--split", "user"])
    assert res.exit_code == 0, res.output
    adapters = tmp_path / "adapters"
    train = ["rec", "ft-train", str(task), "--adapters", str(adapters), "--k", "1", "--pairs", "8", "--negatives",
             "1", "--model", str(tiny_model_dir)]
    res = runner.invoke(app, train)
    assert res.exit_code == 0, res.output
    assert "8 texts from 4 lists, trained" in res.output
    assert "up to date" in runner.invoke(app, train).output  # cached by content
    out = tmp_path / "report"
    # another sample size in the same folder is its own adapter: neither replaces the other
    res = runner.invoke(app, train[:-6] + ["--pairs", "6", "--negatives", "2", "--model", str(tiny_model_dir)])
    assert res.exit_code == 0 and "6 texts from 2 lists, trained" in res.output, res.output
    assert "up to date" in runner.invoke(app, train).output
    res = runner.invoke(app, ["rec", "eval", str(task), "--rankers", "llm-pointwise-ft", "--adapters", str(adapters),
                              "--k", "1", "--model", str(tiny_model_dir)])  # the default size was never trained
    assert res.exit_code == 2 and "--ft-pairs" in res.output and "-n8" not in res.output
    res = runner.invoke(app, ["rec", "eval", str(task), "--rankers", "popularity,llm-pointwise-ft,hybrid",
                              "--adapters", str(adapters), "--k", "1", "--model", str(tiny_model_dir),
                              "--ft-pairs", "8", "--ft-negatives", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = {r["ranker"]: r for r in json.loads((out / "report.json").read_text())["rankers"]}
    assert list(rows) == ["popularity", "llm-pointwise-ft", "hybrid", "hybrid-cf"]
    assert rows["hybrid"]["kind"] == "hybrid" and "llm-pointwise-ft" in rows["hybrid"]["config"]["weights"]
    assert "llm-pointwise-ft" not in rows["hybrid-cf"]["config"]["weights"]
    assert rows["llm-pointwise-ft"]["config"]["train_pairs"] == 8

    # an adapter trained with other prompt settings, no adapter folder, a time-split folder: clear errors
    res = runner.invoke(app, ["rec", "eval", str(task), "--rankers", "llm-pointwise-ft", "--adapters", str(adapters),
                              "--k", "2", "--model", str(tiny_model_dir), "--ft-pairs", "8",
                              "--ft-negatives", "1"])
    assert res.exit_code == 2 and "pllm rec ft-train" in res.output
    res = runner.invoke(app, ["rec", "eval", str(task), "--rankers", "llm-pointwise-ft", "--adapters", str(adapters),
                              "--k", "1", "--crowd-rank", "--model", str(tiny_model_dir), "--ft-pairs", "8",
                              "--ft-negatives", "1"])
    assert res.exit_code == 2 and "--crowd-rank" in res.output  # trained without the standing in the crowd line
    res = runner.invoke(app, ["rec", "eval", str(task), "--rankers", "hybrid"])
    assert res.exit_code == 2 and "--adapters" in res.output
    res = runner.invoke(app, ["rec", "eval", str(task), "--rankers", "hybrid", "--adapters", str(adapters),
                              "--fit-split", "test"])
    assert res.exit_code == 2 and "fit-split" in res.output
    timed = tmp_path / "timed"
    assert runner.invoke(app, ["rec", "build", "--out", str(timed), "--source", str(ml), "--negatives", "5"]
                         ).exit_code == 0
    res = runner.invoke(app, ["rec", "ft-train", str(timed), "--adapters", str(tmp_path / "a2"), "--model",
                              str(tiny_model_dir)])
    assert res.exit_code == 2 and "--split user" in res.output
