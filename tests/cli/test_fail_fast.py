"""A newcomer's mistakes fail in well under a second, before any model loads: every case runs with the
`hf` backend replaced (through the real GENERATORS registry) by one that fails the test if constructed.
Also: task names matched case-insensitively, `pllm --version`, and the environment variables listed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pllm
from pllm.cli import ENVIRONMENT, app
from pllm.models.base import GENERATORS
from pllm.tasks.spec import get_task
from pllm_testkit import lamp3_outputs, lamp3_records

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


class ModelLoaded(Exception):
    pass


class NoModel:
    """A generator backend that must never be built in these tests."""

    def __init__(self, **options: object) -> None:
        raise ModelLoaded(f"a model was loaded ({options})")


@pytest.fixture
def no_model() -> Iterator[None]:
    real = GENERATORS.get("hf")
    GENERATORS.register("hf", NoModel, replace=True)
    GENERATORS.register("test-no-model", NoModel, replace=True)
    yield
    GENERATORS.register("hf", real, replace=True)
    GENERATORS.unregister("test-no-model")


@pytest.fixture
def task_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "task"
    folder.mkdir()
    for split in ("train", "test"):
        (folder / f"{split}_questions.json").write_text(json.dumps(lamp3_records()))
        (folder / f"{split}_outputs.json").write_text(json.dumps(lamp3_outputs()))
    return folder


EVAL = ["eval", "--task", "LaMP-3", "--questions", "{questions}"]
BENCH = ["bench", "--task", "{folder}", "--out", "{out}"]
ADAPT = ["adapt", "train", "--task", "LaMP-3"]


@pytest.mark.parametrize(("args", "needle"), [
    ([*EVAL, "--retriever", "bm42"],
     "unknown retriever 'bm42'; known: bm25, cf, dated, dense, hybrid, none, random, recency, rerank-ce, rerank-llm, "
     "rewrite, window"),
    ([*EVAL, "--retriever", "bm25", "--k", "0"], "k=0 retrieves nothing with retriever 'bm25'"),
    ([*EVAL, "--style", "fancy"], "unknown prompt style 'fancy'"),
    ([*EVAL, "--adapter", "everyone"], "adapter mode must be one of user, group, none"),
    ([*EVAL, "--soft", "{missing}"], "soft-prompt encoder not found"),
    ([*EVAL, "--backend", "nope"], "unknown generator 'nope'"),
    ([*EVAL, "--batch-size", "0"], "--batch-size must be >= 1"),
    (["eval", "--task", "lamp-99", "--questions", "{questions}"], "unknown task 'lamp-99'"),
    ([*BENCH, "--method", "bm42"], "unknown method 'bm42'"),
    ([*BENCH, "--model", "hf", "--model", "nope"], "unknown generator 'nope'"),
    ([*BENCH, "--judge", "nope"], "unknown generator 'nope'"),
    ([*ADAPT, "--retriever", "bm42"], "unknown retriever 'bm42'"),
    ([*ADAPT, "--retriever", "bm25", "--k", "0"], "--k 0 puts no demonstrations"),
    ([*ADAPT, "--groups", "2"], "--task-adapter and --groups read the train split: pass --data"),
    ([*ADAPT, "--groups", "2", "--data", "{folder}", "--embedder", "nope"], "unknown embedder 'nope'"),
    ([*ADAPT, "--data", "{missing}"], "no test_questions.json"),
    ([*ADAPT, "--backend", "nope"], "unknown generator 'nope'"),
    (["adapt", "list", "--task", "LaMP-99"], "unknown task 'LaMP-99'"),
    (["soft", "train", "--task", "LaMP-3", "--data", "{folder}", "--out", "{missing}", "--retriever", "bm42"],
     "unknown retriever 'bm42'"),
    (["soft", "train", "--task", "LaMP-3", "--data", "{folder}", "--out", "{missing}", "--retriever", "bm25",
      "--k", "0"], "k=0 retrieves nothing"),
    (["soft", "compare", "--task", "LaMP-3", "--data", "{folder}", "--out", "{out}", "--encoder", "{missing}"],
     "soft-prompt encoder not found"),
    (["judge", "compare", "--task", "LaMP-3", "--questions", "{questions}", "--id", "q1", "--a", "x", "--b", "y",
      "--retriever", "bm42"], "unknown retriever 'bm42'"),
    (["serve", "--embed-precision", "fp16"], "must be one of float32, bfloat16"),
    (["run", "--limit", "0"], "limit must be >= 1"),
    (["run", "--learned", "bm25@4"], "takes a learned method"),
    (["run", "--learned", "ft+bm42@4"], "unknown method"),
    (["run", "--prompting-only", "--learned", "ft+stats+crowd"], "--prompting-only runs no learned method"),
    (["rec", "eval", "{folder}", "--rankers", "popularity,llm-pointwse"], "unknown ranker 'llm-pointwse'"),
    (["rec", "eval", "{folder}", "--rankers", "llm-pointwise", "--retriever", "bm42"], "unknown retriever 'bm42'"),
    (["rec", "eval", "{folder}", "--rankers", "llm-pointwise", "--k", "0"], "--k 0 shows no history"),
    (["rec", "eval", "{folder}", "--rankers", "llm-pointwise-soft"], "llm-pointwise-soft needs --soft"),
])
def test_mistakes_fail_before_any_model_loads(no_model, tmp_path, lamp3_files, task_folder, args, needle):
    subs = {"{questions}": str(lamp3_files[0]), "{folder}": str(task_folder), "{missing}": str(tmp_path / "nope"),
            "{out}": str(tmp_path / "out")}
    res = runner.invoke(app, [subs.get(a, a) for a in args])
    assert not isinstance(res.exception, ModelLoaded), res.exception
    assert res.exit_code == 2, res.output
    assert needle in res.output, res.output


def test_task_names_match_case_insensitively_and_report_the_canonical_name(tmp_path, lamp3_files, echo_backend):
    assert get_task("lamp-3").name == "LaMP-3" and get_task("LaMP_3").name == "LaMP-3"
    assert get_task("MovieLens-Rating").name == "movielens-rating"
    res = runner.invoke(app, ["eval", "--task", "lamp-3", "--questions", str(lamp3_files[0]), "--outputs",
                              str(lamp3_files[1]), "--backend", echo_backend, "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "task: LaMP-3 (from 'lamp-3')" in res.output
    assert json.loads((tmp_path / "run" / "report.json").read_text())["task"] == "LaMP-3"


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"pllm {pllm.__version__}"


def test_every_environment_variable_is_listed_in_help_and_readme():
    read = set()
    for path in (ROOT / "src" / "pllm").rglob("*.py"):
        read |= set(re.findall(r"\"(PLLM_[A-Z_]+)\"", path.read_text(encoding="utf-8")))
    listed = [name for name, _ in ENVIRONMENT]
    assert read == set(listed)
    help_text = " ".join(runner.invoke(app, ["--help"], terminal_width=200).output.split())
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Install and use"):readme.index("### Users and their history")]
    for name in listed:
        assert f"{name}:" in help_text, name
        assert f"`{name}`" in table, name


def test_align_eval_checks_adapter_and_judge_before_loading(no_model, tmp_path):
    styles = ["academy", "business", "entertainment", "literature", "normal"]
    rows = [{"query": f"question {i}", "responses": {s: f"{s} answer {i}" for s in styles}} for i in range(10)]
    dsp = tmp_path / "dsp.json"
    dsp.write_text(json.dumps(rows))
    db = str(tmp_path / "s.db")
    assert runner.invoke(app, ["align", "import-dsp", str(dsp), "--test-fraction", "0.3", "--db", db]).exit_code == 0
    for args, needle in [(["--adapter", "nope"], "nope"), (["--judge", str(tmp_path / "nojudge")], "nojudge")]:
        res = runner.invoke(app, ["align", "eval", "dsp-business", *args, "--db", db])
        assert not isinstance(res.exception, ModelLoaded), res.exception
        assert res.exit_code == 2 and needle in res.output, res.output
