"""The cheap commands of README.md and examples/README.md run for real, in document order: `pllm users`
import/list/show/export/forget, `pllm tasks`, `pllm data example` and `pllm eval` on the files in
`examples/` (a built-in task and the spec-file task), in a temp folder holding a copy of `examples/`, with a
temp PLLM_HOME.

Each `pllm eval` scores `--limit 4` questions. The fast test points it at a tiny random model saved to disk
(`--model PATH`) and leaves out `--baselines` (the knn baseline loads MiniLM); the `slow` test runs the
commands as written, with the embedded SmolLM2 and MiniLM (about 15 s). Commands that train adapters or
encoders, build datasets from ../shared/data, run benchmarks for hours or start servers are only parsed
(test_doc_commands.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from docs_helpers import ROOT, pllm_commands, resolve, variants
from typer.testing import CliRunner

from pllm.cli import app

WALKTHROUGH_DOCS = ("README.md", "examples/README.md")
EXECUTED = {("users", "import"), ("users", "list"), ("users", "show"), ("users", "export"), ("users", "forget"),
            ("tasks", "list"), ("tasks", "show"), ("data", "example"), ("data", "list"), ("eval",)}
EVAL_LIMIT = "4"


def walkthrough(*, tiny_model: Path | None = None) -> list[list[str]]:
    """The executed commands as argv lists: every optional part in, the first of each `a|b` choice."""
    runs = []
    for c in pllm_commands():
        if c.inline or c.partial or c.doc not in WALKTHROUGH_DOCS:
            continue
        argv = variants(c.argv)[0]
        if resolve(argv)[0] not in EXECUTED:
            continue
        if argv[0] == "eval":
            argv = [*argv, "--limit", EVAL_LIMIT]
            if tiny_model is not None:
                argv = [a for a in argv if a != "--baselines"] + ["--model", str(tiny_model)]
        runs.append(argv)
    return runs


def run_walkthrough(tmp_path: Path, runs: list[list[str]]) -> list[tuple[str, str]]:
    """Run each command in-process in a temp folder with a copy of examples/; (command, output) per run."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples")
    runner = CliRunner()
    outputs = []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        for argv in runs:
            res = runner.invoke(app, argv)
            assert res.exit_code == 0, f"`pllm {' '.join(argv)}` failed:\n{res.output}"
            outputs.append((" ".join(argv), res.output))
    return outputs


def test_walkthrough_covers_users_tasks_and_eval():
    runs = walkthrough(tiny_model=Path("tiny"))
    assert {("users", "import"), ("users", "list"), ("users", "show"), ("users", "export"), ("users", "forget"),
            ("tasks", "list"), ("tasks", "show"), ("data", "example"), ("eval",)} <= {resolve(a)[0] for a in runs}
    evals = [a for a in runs if a[0] == "eval"]
    assert any("examples/email_folder.yaml" in a for a in evals), "the spec-file task is evaluated"
    assert any("LaMP-3" in a for a in evals)


def test_walkthrough_runs(tmp_path: Path, tiny_model_dir: Path, one_torch_thread: None):
    runs = walkthrough(tiny_model=tiny_model_dir)
    outputs = run_walkthrough(tmp_path, runs)
    text = "\n".join(out for _, out in outputs)
    assert "imported 10 questions, 4 new users" in text and "imported 6 questions, 3 new users" in text
    assert "forgot user ada" in text and "forgot user gia" in text
    assert "email-folder" in text  # tasks show on the spec file
    reports = list((tmp_path / "work").glob("runs/*/report.json"))
    assert len(reports) == sum(a[0] == "eval" for a in runs) >= 3  # each eval scored into its own --out


@pytest.mark.slow
def test_walkthrough_runs_as_written_with_the_embedded_model(tmp_path: Path):
    outputs = run_walkthrough(tmp_path, walkthrough())
    evals = [out for cmd, out in outputs if cmd.startswith("eval")]
    assert len(evals) == 3 and all("knn" in out for out in evals)
