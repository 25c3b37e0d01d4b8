"""`pllm eval` (one method over a LaMP questions file) and `pllm run` (the main job)."""

from __future__ import annotations

from pathlib import Path

import typer

from pllm.cli.common import MODEL_HELP, DbOption, console, open_db, print_table, progress_bar, task_callback, tracker
from pllm.errors import InputError
from pllm.eval.report import Conclusion, MethodRow, conclude, method_table, summarize, write_predictions, write_report
from pllm.eval.runner import run_baseline, run_method
from pllm.io import save_config
from pllm.models import GENERATORS, load_generator
from pllm.pipeline import MethodConfig
from pllm.tasks.lamp import read_questions
from pllm.tasks.spec import TaskSpec, get_task


def print_rows(spec: TaskSpec, rows: list[MethodRow], title: str, conclusion: Conclusion | None = None) -> None:
    """The comparison table (80 columns when the rows allow) and the closing line naming the best method
    and baseline."""
    print_table(method_table(spec, rows, compact=True), title)
    if conclusion is not None:
        console.print(conclusion.text, markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(
        task: str = typer.Option(..., "--task", help="Task name (see `pllm tasks list`) or spec file.",
                                 callback=task_callback),
        questions: Path = typer.Option(..., "--questions", help="LaMP questions file."),
        outputs: Path | None = typer.Option(None, "--outputs", help="LaMP outputs file (gold answers) to score."),
        retriever: str = typer.Option("none", "--retriever", help="none|random|recency|bm25|dense|hybrid."),
        k: int = typer.Option(4, "--k", help="Items retrieved per question."),
        profile: bool = typer.Option(False, "--profile", help="Add a cached LLM-written profile summary."),
        stats: bool = typer.Option(False, "--stats", help="Add a statistical profile (the user's output "
                                   "distribution; no LLM call)."),
        method_name: str | None = typer.Option(None, "--method", help="A method by its report name, e.g. "
                                               "ft+bm25@4/median or stats+dense@8+cal: optional ft+, profile+, "
                                               "stats+ prefixes, a retriever@k, +cal, /readout (replaces "
                                               "--retriever/--k/--profile/--stats/--ft/--calibrate/--readout)."),
        style: str | None = typer.Option(None, "--style", help="demonstrations|instruction (default per task)."),
        predict: str = typer.Option("auto", "--predict", help="auto|score|generate."),
        readout: str = typer.Option("argmax", "--readout", help="argmax|expected|median (the last two: numeric "
                                    "labels). Choose it on a dev split."),
        calibrate: bool = typer.Option(False, "--calibrate", help="Contextual calibration of label scores."),
        ft: bool = typer.Option(False, "--ft", help="Learned: train (once, cached) a task adapter on the train "
                                "split with this method's retrieval in every prompt, and run on it."),
        train: Path | None = typer.Option(None, "--train", help="Train questions for --ft and the baselines (default: "
                                          "train_questions.json beside --questions)."),
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
        # Everything a user can mistype is checked before the model loads (seconds to minutes).
        if method_name is not None:
            from pllm.eval.bench import method_from_name

            method = method_from_name(method_name, style=style, predict=predict, max_prompt_tokens=max_prompt_tokens)
        else:
            method = MethodConfig(retriever=retriever, k=k, profile=profile, stats=stats, style=style,
                                  predict=predict, readout=readout, max_prompt_tokens=max_prompt_tokens,
                                  calibrate=calibrate, ft=ft)
        GENERATORS.get(backend)
        if spec.labels:
            from pllm.tasks.readouts import check_readout

            check_readout(spec, method.readout)
        if adapter != "none":
            from pllm.adapt.generator import ROUTE_MODES

            if adapter not in ROUTE_MODES:
                raise InputError(f"adapter mode must be one of {', '.join(ROUTE_MODES)}, got {adapter!r}",
                                 field="adapter")
        if soft is not None and not soft.exists():
            raise InputError("soft-prompt encoder not found (train one with `pllm soft train`)", source=str(soft))
        if (limit is not None and limit < 1) or batch_size < 1:
            raise InputError("--limit and --batch-size must be >= 1")
        qs = read_questions(questions, spec=spec, outputs=outputs)
        if limit is not None:
            qs = qs[:limit]
        train_qs, train_source = _train_questions(spec, questions, train, needed=method.ft)
        generator = load_generator(backend, model)
        with open_db(db) as store, progress_bar(unit="q") as bar:
            if adapter != "none":  # each question's user is routed to their adapter, many users per batch
                from pllm.adapt import AdapterGenerator, AdapterStore

                generator = AdapterGenerator(generator, spec.name, store=AdapterStore(adapters_dir, db=store),
                                             mode=adapter)
            if soft is not None:  # soft-fused prompting: the user encoder's vectors go before every prompt
                from pllm.soft.model import load_soft_generator

                generator = load_soft_generator(soft, generator, store=store)
            results = [run_method(spec, qs, generator, method, store=store, batch_size=batch_size,
                                  progress=tracker(bar), train=train_qs, train_source=train_source)]
            if baselines:
                results += [run_baseline(spec, qs, name, store=store, train=train_qs)
                            for name in _baseline_names(spec)]
        if soft is not None:
            from pllm.soft.model import soft_label

            results[0].method = soft_label(results[0].method)
        if adapter != "none":
            results[0].method = f"{adapter} adapter+{results[0].method}"
        for res in results:
            write_predictions(out, spec, res.method, res.records, outputs=outputs)
        save_config(method, out, "method_config.json")
        if results[0].config.get("adapter"):  # a learned method: which trained artifact produced it
            from pllm.io import atomic_write_json

            atomic_write_json(out / "learned.json", {k: v for k, v in results[0].config.items()
                                                      if k.startswith("adapter")})
        if all(r.target is not None for r in results[0].records):
            rows = summarize(spec, results)
            conclusion = conclude(spec, results, rows)
            write_report(out, spec, rows, title=f"pllm eval: {spec.name}", conclusion=conclusion,
                         meta={"questions": str(questions.resolve()), "model": generator.model_id})
            print_rows(spec, rows, f"{spec.name} ({len(qs)} questions)", conclusion)
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
        with progress_bar(unit="q") as bar:
            job = run_main_job(config, progress=tracker(bar))
        print_rows(get_task("movielens-rating"), job.rows, f"movielens-rating ({job.rows[0].n} test users)",
                   job.conclusion)
        console.print(f"report: {job.folder / 'report.md'}", markup=False, highlight=False, soft_wrap=True)


def _train_questions(spec: TaskSpec, questions: Path, train: Path | None, *, needed: bool
                     ) -> tuple[list, dict[str, str] | None]:
    """The train split: `--train`, else train_questions.json beside the questions file (with its outputs
    when present, for the baselines' fit), and its source record (a learned adapter made stale by a
    forgotten user is rebuilt from it). A learned method without one is an error."""
    path = train or questions.parent / "train_questions.json"
    if path.is_dir():
        path = path / "train_questions.json"
    if not path.is_file() or path.resolve() == questions.resolve():
        if needed:
            raise InputError("--ft learns from a train split: pass --train (a train_questions.json or its folder); "
                             "it must not be the questions scored", source=str(path))
        return [], None
    gold = path.with_name(path.name.replace("_questions", "_outputs"))
    return (read_questions(path, spec=spec, outputs=gold if gold.is_file() and gold != path else None),
            {"questions": str(path.resolve())})


def _baseline_names(spec: TaskSpec) -> list[str]:
    from pllm.eval.baselines import baselines_for

    return baselines_for(spec)
