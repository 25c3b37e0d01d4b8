"""`pllm eval` (one method, and optionally the baselines, over a LaMP questions file) and `pllm run` (the main
job): both run cells through the one runner, `pllm.eval.runner`."""

from __future__ import annotations

from pathlib import Path

import typer

from pllm.cli.common import MODEL_HELP, DbOption, TaskOption, console, open_db, print_table, progress_bar, tracker
from pllm.errors import InputError
from pllm.eval.baselines import baselines_for
from pllm.eval.datasets import questions_task
from pllm.eval.methods import method_from_name
from pllm.eval.report import Conclusion, MethodRow, conclude, summarize, write_predictions, write_report
from pllm.eval.runner import CellRunner, GeneratorOptions, baseline_cells, llm_cell
from pllm.eval.tables import method_table
from pllm.io import atomic_write_json, to_jsonable
from pllm.models import GENERATORS, load_generator
from pllm.pipeline import MethodConfig
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
        task: str = TaskOption,
        questions: Path = typer.Option(..., "--questions", help="LaMP questions file."),
        outputs: Path | None = typer.Option(None, "--outputs", help="LaMP outputs file (gold answers) to score."),
        retriever: str = typer.Option("none", "--retriever", help="none|random|recency|bm25|dense|hybrid."),
        k: int = typer.Option(4, "--k", help="Items retrieved per question."),
        profile: bool = typer.Option(False, "--profile", help="Add a cached LLM-written profile summary."),
        stats: bool = typer.Option(False, "--stats", help="Add a statistical profile (the user's output "
                                   "distribution; no LLM call)."),
        method_name: str | None = typer.Option(None, "--method", help="A method by its report name, e.g. "
                                               "ft+bm25@4/median or stats+dense@8+cal: optional ft+ (ft+user+, "
                                               "ft+soft+), profile+, stats+, crowd+ prefixes, a retriever@k, +cal, "
                                               "/readout "
                                               "(replaces --retriever/--k/--profile/--stats/--ft/--ft-user/"
                                               "--calibrate/--readout)."),
        style: str | None = typer.Option(None, "--style", help="demonstrations|instruction (default per task)."),
        predict: str = typer.Option("auto", "--predict", help="auto|score|generate."),
        readout: str = typer.Option("argmax", "--readout", help="argmax|expected|median (the last two: numeric "
                                    "labels). Choose it on a dev split."),
        calibrate: bool = typer.Option(False, "--calibrate", help="Contextual calibration of label scores."),
        ft: bool = typer.Option(False, "--ft", help="Learned: train (once, cached) a task adapter on the train "
                                "split with this method's retrieval in every prompt, and run on it."),
        ft_user: bool = typer.Option(False, "--ft-user", help="Learned, second stage (implies --ft): a private "
                                     "adapter per scored user on top of the task adapter, trained on their own "
                                     "earlier items (cached by content); users with too few items run on the task "
                                     "adapter alone."),
        train: Path | None = typer.Option(None, "--train", help="Train questions for --ft and the baselines (default: "
                                          "train_questions.json beside --questions)."),
        max_prompt_tokens: int = typer.Option(1024, "--max-prompt-tokens", help="Prompt budget in model tokens."),
        embedder: str = typer.Option("minilm", "--embedder", help="Embedder (EMBEDDERS) for dense/hybrid retrieval "
                                     "and the items an ft+soft+ encoder reads."),
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
        db: str | None = DbOption,
    ) -> None:
        """Run one personalization method over a LaMP questions file; write predictions, metrics and a table."""
        spec = get_task(task)
        # Everything a user can mistype is checked before the model loads (seconds to minutes).
        if method_name is not None:
            method = method_from_name(method_name, style=style, predict=predict, max_prompt_tokens=max_prompt_tokens,
                                      embedder=embedder)
        else:
            method = MethodConfig(retriever=retriever, k=k, profile=profile, stats=stats, style=style,
                                  predict=predict, readout=readout, max_prompt_tokens=max_prompt_tokens,
                                  calibrate=calibrate, ft=ft or ft_user, ft_user=ft_user, embedder=embedder)
        GENERATORS.get(backend)
        if spec.labels:
            from pllm.tasks.readouts import check_readout

            check_readout(spec, method.readout)
        options = GeneratorOptions(adapter=adapter, adapters_dir=str(adapters_dir) if adapters_dir else None,
                                   soft=str(soft) if soft else None)
        if method.ft and (options.adapter != "none" or options.soft is not None):
            raise InputError("a learned method runs on its own merged copy of the model, not with --adapter or "
                             "--soft; for private per-user adapters on it, use ft+user+... (--ft-user)",
                             field="adapter")
        if (limit is not None and limit < 1) or batch_size < 1:
            raise InputError("--limit and --batch-size must be >= 1")
        data = questions_task(spec, questions, outputs=outputs, train=train, limit=limit,
                              needs_train=method.ft or method.reads_crowd)
        base = load_generator(backend, model)
        cells = [llm_cell(method, label=options.label(method.label))]
        if baselines:
            cells += baseline_cells(spec, baselines_for(spec), embedder=embedder)
        with open_db(db) as store, progress_bar(unit="q") as bar:
            generator = options.wrap(base, spec, store)
            # Learned adapters beside the store and indexed in it: `pllm users forget` reaches private ones.
            from pllm.adapt.store import AdapterStore

            runner = CellRunner(lambda key: generator, store=store, batch_size=batch_size, progress=tracker(bar),
                                adapters=AdapterStore(options.adapters_dir, db=store))
            results = [runner.result(cell, data) for cell in cells]
        for res in results:
            write_predictions(out, spec, res.method, res.records, outputs=outputs)
        atomic_write_json(out / "method_config.json", {**to_jsonable(method), **to_jsonable(options)})
        if results[0].config.get("adapter"):  # a learned method: which trained artifact produced it
            atomic_write_json(out / "learned.json", {k: v for k, v in results[0].config.items()
                                                      if k.startswith(("adapter", "private", "soft_"))})
        if all(r.target is not None for r in results[0].records):
            rows = summarize(spec, results)
            conclusion = conclude(spec, results, rows)
            write_report(out, spec, rows, title=f"pllm eval: {spec.name}", conclusion=conclusion,
                         meta={"questions": str(questions.resolve()), "model": generator.model_id})
            print_rows(spec, rows, f"{spec.name} ({len(data.questions)} questions)", conclusion)
        else:
            console.print(f"wrote predictions for {len(data.questions)} questions to {out} (no --outputs: not scored)")

    @app.command("run")
    def run(
        data: Path | None = typer.Option(None, "--data", help="MovieLens-100k folder (default: found nearby)."),
        limit: int = typer.Option(200, "--limit", help="Test questions to score."),
        styles: bool = typer.Option(False, "--styles", help="Also run bm25@k in the instruction prompt style."),
        out: Path | None = typer.Option(None, "--out", help="Run folder (default: $PLLM_HOME/runs/main)."),
        model: str | None = typer.Option(None, "--model", help=MODEL_HELP),
        learned: list[str] = typer.Option([], "--learned", help="Learned methods by name, in place of the default "
                                          "'ft+stats+crowd/median' (its task adapter is trained once and cached), "
                                          "e.g. 'ft+user+stats+crowd/median' (plus a private adapter per test user)."),
        prompting_only: bool = typer.Option(False, "--prompting-only", help="No learned method (nothing trained)."),
        ft_pairs: int | None = typer.Option(None, "--ft-pairs", help="Training texts per learned task adapter."),
    ) -> None:
        """The main job: learned and prompted personalization against the non-LLM baselines on movielens-rating
        with the embedded model."""
        from pllm.eval.main_job import MAIN_LEARNED, MainJobConfig, run_main_job

        if prompting_only and learned:
            raise InputError("--prompting-only runs no learned method; drop --learned", field="learned")
        chosen = [] if prompting_only else list(learned or MAIN_LEARNED)
        config = MainJobConfig(data=str(data) if data else None, limit=limit, out=str(out) if out else None,
                               model=model, styles=styles, learned=chosen, ft_pairs=ft_pairs)
        with progress_bar(unit="q") as bar:
            job = run_main_job(config, progress=tracker(bar))
        print_rows(get_task("movielens-rating"), job.rows, f"movielens-rating ({job.rows[0].n} test users)",
                   job.conclusion)
        for line in job.training:
            console.print(f"one-time training: {line}", markup=False, highlight=False, soft_wrap=True)
        console.print(f"report: {job.folder / 'report.md'}", markup=False, highlight=False, soft_wrap=True)
