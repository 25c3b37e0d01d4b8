"""What a user sees: progress lines in a log, a table that fits 80 columns, the closing line, report.md."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from pllm.cli import app
from pllm.cli.common import PlainProgress, tracker
from pllm.eval.report import MethodRow
from pllm.eval.tables import method_table
from pllm.stats import Interval
from pllm.tasks.spec import get_task

runner = CliRunner()


def eval_args(tmp_path, q, o, backend):
    return ["eval", "--task", "LaMP-3", "--questions", str(q), "--outputs", str(o), "--retriever", "bm25", "--k", "1",
            "--backend", backend, "--baselines", "--batch-size", "1", "--out", str(tmp_path / "out"),
            "--db", str(tmp_path / "s.db")]


def test_progress_is_plain_lines_when_not_a_terminal(tmp_path, lamp3_files, echo_backend, monkeypatch):
    monkeypatch.setenv("PLLM_PROGRESS_SECONDS", "0")  # a line per update
    res = runner.invoke(app, eval_args(tmp_path, *lamp3_files, echo_backend))
    assert res.exit_code == 0, res.output
    lines = [x for x in res.output.splitlines() if x.startswith("[pllm] bm25@1:")]
    assert [x.split(": ")[1].split(" (")[0] for x in lines] == ["0/3", "1/3", "2/3", "3/3"]
    assert re.search(r"2/3 \(67%\) [\d.]+ q/s, ETA \d+s$", lines[2]) and "done in" in lines[3]


def test_plain_progress_writes_at_most_every_interval_and_at_completion():
    now = [0.0]
    out = io.StringIO()
    with PlainProgress(out, every=10, unit="q", clock=lambda: now[0]) as bar:
        update = tracker(bar)
        bar._stop.set()  # no heartbeat thread lines in this test: the clock is fake
        for done in range(1, 201):
            now[0] = done * 0.5  # 2 q/s: a line every 20 questions, then the final one
            update("bm25@4", done, 200)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("[pllm] bm25@4: 200/200 (100%)")
    assert lines[0] == "[pllm] bm25@4: 21/200 (10%) 2.0 q/s, ETA 1m30s"


def test_eval_prints_markdown_table_within_80_columns_and_the_best_method(tmp_path, lamp3_files, echo_backend):
    res = runner.invoke(app, eval_args(tmp_path, *lamp3_files, echo_backend))
    assert res.exit_code == 0, res.output
    table = [x for x in res.output.splitlines() if x.startswith("|")]
    from pllm.eval.baselines import baselines_for
    from pllm.tasks.spec import get_task

    n_rows = 1 + len(baselines_for(get_task("LaMP-3")))  # the method, then every baseline
    assert table[0].startswith("| method") and set(table[1]) <= {"|", "-"} and len(table) == 2 + n_rows
    assert all(len(x) <= 80 for x in table)
    assert "| bm25@1 " in res.output and "±" in res.output
    closing = res.output.strip().splitlines()[-1]
    assert closing.startswith("best LLM method: bm25@1 mae 0.000; best baseline: ")
    assert re.search(r"difference -[\d.]+ \[-[\d.]+, -[\d.]+\] \(bm25@1 better\)$", closing)


def test_report_md_names_model_data_machine_and_links_the_plot(tmp_path, lamp3_files, echo_backend):
    q, o = lamp3_files
    res = runner.invoke(app, eval_args(tmp_path, q, o, echo_backend))
    assert res.exit_code == 0, res.output
    md = (tmp_path / "out" / "report.md").read_text()
    assert "- model: echo" in md and f"- data: `{q.resolve()}`" in md
    assert re.search(r"- machine: \d+ CPUs", md) and "Best LLM method: bm25@1" in md
    link = re.search(r"!\[[^]]*\]\(([^)]+\.png)\)", md).group(1)
    assert (tmp_path / "out" / link).stat().st_size > 1000


def _main_job_rows() -> list[MethodRow]:
    """Rows shaped like `pllm run --styles` (names, value ranges, seconds) for width checks."""
    def iv(v):
        return Interval(v, v - 0.13, v + 0.12)

    names = [("none", "llm"), ("bm25@4", "llm"), ("dense@4", "llm"), ("profile", "llm"),
             ("bm25@4 (instruction)", "llm"), ("global-mean", "baseline"), ("user-mean", "baseline"),
             ("knn", "baseline")]
    return [MethodRow(n, kind, 200, {"mae": iv(1.995), "rmse": iv(2.41)},
                      vs_none={} if n == "none" else {"mae": iv(-1.345), "rmse": iv(-1.1)}, unparseable=12,
                      truncated=0, mean_prompt_tokens=145, seconds=1402.3) for n, kind in names]


def test_compact_table_fits_80_columns_with_intervals_as_plus_minus():
    table = method_table(get_task("movielens-rating"), _main_job_rows(), compact=True).fit(80)
    md = table.markdown(pad=True)
    assert all(len(x) <= 80 for x in md.splitlines())
    assert "| 1.995 ±0.12" in md and "-1.345 ±0.12" in md and "unparsed" in table.head


@pytest.mark.parametrize("terminal", [True, False])
def test_console_table_on_a_terminal_and_piped(terminal, monkeypatch):
    from pllm.cli import common, evaluate

    buf = io.StringIO()
    out = Console(file=buf, force_terminal=terminal, width=80)
    monkeypatch.setattr(common, "console", out)  # the CLI's stdout, as a terminal or a pipe
    monkeypatch.setattr(evaluate, "console", out)
    evaluate.print_rows(get_task("movielens-rating"), _main_job_rows(), "movielens-rating (200 test users)")
    lines = re.sub(r"\x1b\[[0-9;]*m", "", buf.getvalue()).splitlines()
    assert all(len(x) <= 80 for x in lines)
    rows = [x for x in lines if "bm25@4 (instruction)" in x]
    assert len(rows) == 1  # one line per row, not wrapped
    assert rows[0].startswith("|") != terminal  # markdown only when piped


def test_plain_progress_heartbeat_reports_a_task_that_does_not_move():
    """A training run without step updates still leaves lines in a log, and a final one at the end."""
    import time

    out = io.StringIO()
    with PlainProgress(out, every=0.05) as bar:
        bar.add_task("RiC adapter", total=None)
        time.sleep(0.5)  # > 6 intervals: at least one still-running line
    lines = out.getvalue().splitlines()
    assert any(x.startswith("[pllm] RiC adapter: running, ") for x in lines)
    assert lines[-1].startswith("[pllm] RiC adapter: done in ")
