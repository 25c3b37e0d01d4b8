"""`pllm bench`: run (or resume) a benchmark grid and write its report, or compare two reports."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pllm.cli.common import console, print_table, progress_bar, tracker
from pllm.errors import InputError


def _task_entries(tasks: list[str], limit: int | None, split: str) -> list[dict]:
    out = []
    for t in tasks:
        name, sep, folder = t.partition("=")
        entry = {"data": folder if sep else name, "split": split, "limit": limit}
        if sep:
            entry["name"] = name
        out.append(entry)
    return out


def _judge_section(judge: str, against: str, max_questions: int | None) -> dict:
    backend, _, model = judge.partition(":")
    return {"backend": backend, "model": model or None, "against": against, "max_questions": max_questions}


def print_compare(rows: list[dict]) -> None:
    from pllm.eval.tables import compare_table

    print_table(compare_table(rows), "bench: A -> B", width=200)
    changed = [r for r in rows if r["change"] not in ("same",)]
    console.print(f"{len(changed)} of {len(rows)} entries changed beyond A's 95% interval or exist on one side only.")


def print_summary(report: dict) -> None:
    from pllm.eval.tables import bench_table

    for name, t in report["tasks"].items():
        print_table(bench_table(t, compact=True), f"{name} ({t['n_questions']} questions)")
        if t["incomplete"]:
            console.print(f"[yellow]{len(t['incomplete'])} cell(s) of {name} not finished[/yellow]")


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        config: Path | None = typer.Option(None, "--config", "-c", help="Grid YAML (see benchmarks/grids/)."),
        task: list[str] = typer.Option([], "--task", help="Task folder, or NAME=FOLDER (repeatable; no --config)."),
        method: list[str] = typer.Option([], "--method", help="Method (repeatable): none, a retriever, profile, "
                                                              "profile+<retriever>."),
        k: list[int] = typer.Option([], "--k", help="Items retrieved (repeatable)."),
        style: list[str] = typer.Option([], "--style", help="Prompt style (repeatable): demonstrations|instruction."),
        model: list[str] = typer.Option([], "--model", help="Generator 'backend' or 'backend:model' (repeatable)."),
        baseline: list[str] = typer.Option([], "--baseline", help="Baseline names (repeatable; default: all)."),
        limit: int | None = typer.Option(None, "--limit", help="Score only the first N questions per task."),
        split: str = typer.Option("test", "--split", help="Split scored (with --task)."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Questions per model call."),
        out: Path = typer.Option(Path("pllm-bench"), "--out", help="Run folder (resumed if it exists)."),
        report_only: bool = typer.Option(False, "--report-only", help="Only rewrite the report from the cells."),
        compare: tuple[Path, Path] | None = typer.Option(None, "--compare", help="Compare two report.json files."),
        judge: str | None = typer.Option(None, "--judge", help="Judge generation cells with this generator "
                                         "('backend' or 'backend:model'), both orders asked."),
        judge_against: str = typer.Option("none", "--judge-against",
                                          help="Reference cell label for --judge (none: the none cell)."),
        judge_max_questions: int | None = typer.Option(None, "--judge-max-questions",
                                                       help="Judge only the first N questions."),
    ) -> None:
        """Run a grid of tasks x methods x k x styles x models next to the non-LLM baselines; resumable.

        Predictions go to OUT/cells/ (one fsynced JSONL per cell); a killed run restarted with the same
        arguments scores only what is missing. Writes OUT/report.json, OUT/report.md and OUT/plots/*.png.
        """
        from pllm.eval.bench import BenchRunner
        from pllm.eval.bench_report import compare_reports
        from pllm.eval.grid import bench_config_from_dict, load_bench_config

        if compare:
            reports = []
            for p in compare:
                try:
                    reports.append(json.loads(Path(p).read_text(encoding="utf-8")))
                except (OSError, json.JSONDecodeError) as exc:
                    raise InputError(f"cannot read bench report: {exc}", source=str(p)) from None
            print_compare(compare_reports(*reports))
            return
        overrides: dict[str, list[str] | list[int]] = {"methods": method, "k": k, "styles": style, "models": model,
                                                       "baselines": baseline}
        if config is not None:
            cfg = load_bench_config(config)
            for name, value in overrides.items():
                if value:
                    setattr(cfg, name, list(value))
            if limit is not None:
                for t in cfg.tasks:
                    t.limit = limit
            if batch_size is not None:
                cfg.batch_size = batch_size
            if judge is not None:
                cfg.judge = _judge_section(judge, judge_against, judge_max_questions)  # type: ignore[assignment]
            cfg.__post_init__()
        else:
            if not task:
                raise InputError("give --config GRID.yaml or at least one --task FOLDER")
            data: dict = {"tasks": _task_entries(task, limit, split)}
            for name, value in overrides.items():
                if value:
                    data[name] = list(value)
            if batch_size is not None:
                data["batch_size"] = batch_size
            if judge is not None:
                data["judge"] = _judge_section(judge, judge_against, judge_max_questions)
            cfg = bench_config_from_dict(data, source="command line")
        with progress_bar("bench", unit="q") as bar:
            runner = BenchRunner(cfg, out, progress=tracker(bar))
            report = runner.run(only_report=report_only)
        print_summary(report)
        console.print(f"report: {out / 'report.md'} (JSON: {out / 'report.json'}, plots: {out / 'plots'})")
