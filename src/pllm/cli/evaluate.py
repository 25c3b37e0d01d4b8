"""`pllm eval` (one method over a LaMP questions file) and `pllm run` (the main job)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from pllm.cli.common import MODEL_HELP, DbOption, console, open_db, progress_bar, tracker
from pllm.eval.report import MethodRow, summarize, write_predictions, write_report
from pllm.eval.runner import run_baseline, run_method
from pllm.io import save_config
from pllm.models import load_generator
from pllm.pipeline import MethodConfig
from pllm.tasks.lamp import read_questions
from pllm.tasks.spec import TaskSpec, get_task


def print_rows(spec: TaskSpec, rows: list[MethodRow], title: str) -> None:
    table = Table(title=title)
    table.add_column("method")
    for m in spec.metrics:
        table.add_column(f"{m} [95% CI]")
    table.add_column(f"Δ{spec.primary_metric} vs none")
    table.add_column("unparseable")
    table.add_column("truncated")
    table.add_column("prompt tok")
    table.add_column("sec")
    for r in rows:
        d = r.vs_none.get(spec.primary_metric)
        table.add_row(r.method, *[r.metrics[m].fmt() for m in spec.metrics], d.fmt() if d else "—",
                      str(r.unparseable), str(r.truncated),
                      f"{r.mean_prompt_tokens:.0f}" if r.kind == "llm" else "—", f"{r.seconds:.1f}")
    console.print(table)


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(
        task: str = typer.Option(..., "--task", help="Task name (see `pllm tasks list`) or spec file."),
        questions: Path = typer.Option(..., "--questions", help="LaMP questions file."),
        outputs: Path | None = typer.Option(None, "--outputs", help="LaMP outputs file (gold answers) to score."),
        retriever: str = typer.Option("none", "--retriever", help="none|random|recency|bm25|dense|hybrid."),
        k: int = typer.Option(4, "--k", help="Items retrieved per question."),
        profile: bool = typer.Option(False, "--profile", help="Add a cached LLM-written profile summary."),
        style: str | None = typer.Option(None, "--style", help="demonstrations|instruction (default per task)."),
        predict: str = typer.Option("auto", "--predict", help="auto|score|generate."),
        readout: str = typer.Option("argmax", "--readout", help="argmax|expected (numeric labels)."),
        max_prompt_tokens: int = typer.Option(1024, "--max-prompt-tokens", help="Prompt budget in model tokens."),
        backend: str = typer.Option("hf", "--backend", help="Generator backend: hf|openai."),
        model: str | None = typer.Option(None, "--model", help=MODEL_HELP),
        limit: int | None = typer.Option(None, "--limit", help="Score only the first N questions."),
        batch_size: int = typer.Option(8, "--batch-size", help="Questions per model call."),
        baselines: bool = typer.Option(False, "--baselines", help="Also score the non-LLM baselines."),
        soft: Path | None = typer.Option(None, "--soft", help="Soft-prompt user encoder (pllm soft train) to add."),
        adapter: str = typer.Option("none", "--adapter", help="Per-user peft adapters: user (own, else group, "
                                    "else base) | group | none (see `pllm adapt train`)."),
        adapters_dir: Path | None = typer.Option(None, "--adapters-dir", help="Adapter folder (default: beside "
                                                 "the store)."),
        out: Path = typer.Option(Path("pllm-eval"), "--out", help="Output folder for predictions and metrics."),
        db: Path | None = DbOption,
    ) -> None:
        """Run one personalization method over a LaMP questions file; write predictions, metrics and a table."""
        spec = get_task(task)
        method = MethodConfig(retriever=retriever, k=k, profile=profile, style=style, predict=predict,
                              readout=readout, max_prompt_tokens=max_prompt_tokens)
        qs = read_questions(questions, spec=spec, outputs=outputs)
        if limit is not None:
            qs = qs[:limit]
        generator = load_generator(backend, model)
        with open_db(db) as store, progress_bar() as bar:
            if adapter != "none":  # each question's user is routed to their adapter, many users per batch
                from pllm.adapt import AdapterGenerator, AdapterStore

                generator = AdapterGenerator(generator, spec.name, store=AdapterStore(adapters_dir, db=store),
                                             mode=adapter)
            if soft is not None:  # soft-fused prompting: the user encoder's vectors go before every prompt
                from pllm.prompting.soft import load_soft_generator

                generator = load_soft_generator(soft, generator, store=store)
            results = [run_method(spec, qs, generator, method, store=store, batch_size=batch_size,
                                  progress=tracker(bar))]
            if baselines:
                results += [run_baseline(spec, qs, name, store=store) for name in _baseline_names(spec)]
        if soft is not None:
            from pllm.prompting.soft import soft_label

            results[0].method = soft_label(results[0].method)
        if adapter != "none":
            results[0].method = f"{adapter} adapter+{results[0].method}"
        for res in results:
            write_predictions(out, spec, res.method, res.records)
        save_config(method, out, "method_config.json")
        if all(r.target is not None for r in results[0].records):
            rows = summarize(spec, results)
            write_report(out, spec, rows, title=f"pllm eval: {spec.name}", meta={"questions": str(questions)})
            print_rows(spec, rows, f"{spec.name} ({len(qs)} questions)")
        else:
            console.print(f"wrote predictions for {len(qs)} questions to {out} (no --outputs: not scored)")

    @app.command("run")
    def run(
        data: Path | None = typer.Option(None, "--data", help="MovieLens-100k folder (default: found nearby)."),
        limit: int = typer.Option(200, "--limit", help="Test questions to score."),
        styles: bool = typer.Option(False, "--styles", help="Also run bm25@k in the instruction prompt style."),
        out: Path | None = typer.Option(None, "--out", help="Run folder (default: $PLLM_HOME/runs/main)."),
        model: str | None = typer.Option(None, "--model", help=MODEL_HELP),
    ) -> None:
        """The main job: personalized vs unpersonalized on movielens-rating with the embedded model."""
        from pllm.eval.main_job import MainJobConfig, run_main_job

        config = MainJobConfig(data=str(data) if data else None, limit=limit, out=str(out) if out else None,
                               model=model, styles=styles)
        with progress_bar() as bar:
            rows, folder = run_main_job(config, progress=tracker(bar))
        print_rows(get_task("movielens-rating"), rows, f"movielens-rating ({rows[0].n} test users)")
        console.print(f"report: {folder / 'report.md'}")


def _baseline_names(spec: TaskSpec) -> list[str]:
    from pllm.eval.baselines import baselines_for

    return baselines_for(spec)
