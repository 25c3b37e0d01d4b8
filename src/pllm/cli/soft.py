"""`pllm soft ...`: train a soft-prompt user encoder (PPlug-style), inspect it, and compare it against
text prompting on a task folder's test split."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import typer

from pllm.cli.common import DbOption, console, open_db, progress_bar, tracker
from pllm.errors import InputError

app = typer.Typer(no_args_is_help=True, help="Soft-fused prompting: a learned user embedding read as soft tokens.")


def _split_file(data: Path, split: str, kind: str) -> Path:
    path = data / f"{split}_{kind}.json"
    if not path.is_file():
        raise InputError(f"no {split}_{kind}.json in the task folder (build one with `pllm data build`)",
                         source=str(data))
    return path


@app.command("train")
def train(
    task: str = typer.Option(..., "--task", help="Task name (see `pllm tasks list`) or spec file."),
    data: Path = typer.Option(..., "--data", help="Task folder with train_questions.json and train_outputs.json."),
    out: Path = typer.Option(..., "--out", help="Output folder for the encoder (replaced atomically)."),
    split: str = typer.Option("train", "--split", help="Which split of the folder to train on."),
    max_users: int | None = typer.Option(None, "--max-users", help="Train on at most this many users."),
    epochs: int = typer.Option(1, "--epochs", help="Passes over the training questions."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate."),
    batch_size: int = typer.Option(8, "--batch-size", help="Questions per optimizer step."),
    n_tokens: int = typer.Option(4, "--n-tokens", help="User soft tokens."),
    pooling: str = typer.Option("attention", "--pooling", help="attention (query-aware) | mean."),
    instruction: bool = typer.Option(True, "--instruction/--no-instruction",
                                     help="Add a learned task-level instruction vector."),
    retriever: str = typer.Option("none", "--retriever", help="Retrieval in training prompts (none|bm25|...)."),
    k: int = typer.Option(4, "--k", help="Items retrieved when --retriever is set."),
    style: str | None = typer.Option(None, "--style", help="Prompt style (default per task)."),
    embedder: str = typer.Option("minilm", "--embedder", help="Item/query embedder."),
    model: str | None = typer.Option(None, "--model", help="Model id/path (default: embedded SmolLM2)."),
    seed: int = typer.Option(0, "--seed", help="Seed for user sampling, shuffling, init."),
    db: Path | None = DbOption,
) -> None:
    """Train a user encoder against the frozen generator on a task folder's training users."""
    from pllm.models import load_generator
    from pllm.prompting.soft_train import SoftTrainConfig, train_soft_encoder
    from pllm.tasks.lamp import read_questions
    from pllm.tasks.spec import get_task

    spec = get_task(task)
    config = SoftTrainConfig(n_tokens=n_tokens, pooling=pooling, instruction=instruction, embedder=embedder,
                             epochs=epochs, lr=lr, batch_size=batch_size, max_users=max_users, seed=seed,
                             retriever=retriever, k=k, style=style)
    qs = read_questions(_split_file(data, split, "questions"), spec=spec, outputs=_split_file(data, split, "outputs"))
    base = load_generator("hf", model)
    with open_db(db) as store, progress_bar() as bar:
        res = train_soft_encoder(spec, base, qs, config, out, store=store, progress=tracker(bar))
    for i, (loss, sec) in enumerate(zip(res.epoch_losses, res.epoch_seconds, strict=True), start=1):
        console.print(f"epoch {i}: loss {loss:.4f}, {sec:.1f} s")
    console.print(f"trained on {res.n_examples} questions of {res.n_users} users; encoder saved to {res.path}")


@app.command("info")
def info(path: Path = typer.Argument(..., help="Encoder folder written by `pllm soft train`.")) -> None:
    """Show an encoder's config and training log."""
    from pllm.prompting.soft import load_soft_encoder

    encoder, spec = load_soft_encoder(path)
    console.print_json(json.dumps({"config": json.loads((path / "config.json").read_text()), "task": spec.name,
                                   "parameters": sum(p.numel() for p in encoder.parameters())}))
    log = path / "train_log.json"
    if log.is_file():
        data = json.loads(log.read_text())
        seconds = [round(s, 1) for s in data["epoch_seconds"]]
        console.print(f"trained on {data['n_examples']} questions of {data['n_users']} users; "
                      f"epoch losses {data['epoch_losses']}, epoch seconds {seconds}")


def _train_summary(log_path: Path) -> dict | None:
    if not log_path.is_file():
        return None
    data = json.loads(log_path.read_text())
    return {k: data[k] for k in ("train_config", "n_users", "n_examples", "epoch_losses", "epoch_seconds")}


@app.command("compare")
def compare(
    task: str = typer.Option(..., "--task", help="Task name or spec file."),
    data: Path = typer.Option(..., "--data", help="Task folder with test_questions.json and test_outputs.json."),
    encoder: Path = typer.Option(..., "--encoder", help="Encoder folder (pllm soft train)."),
    out: Path = typer.Option(..., "--out", help="Report folder."),
    split: str = typer.Option("test", "--split", help="Split to score."),
    limit: int | None = typer.Option(None, "--limit", help="Score only the first N questions."),
    retriever: str = typer.Option("bm25", "--retriever", help="Retriever for the text and combined methods."),
    k: int = typer.Option(4, "--k", help="Items retrieved per question."),
    model: str | None = typer.Option(None, "--model", help="Model id/path (default: embedded SmolLM2)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Questions per model call."),
    db: Path | None = DbOption,
) -> None:
    """Score none, retrieval, soft and soft + retrieval on the same questions; write a bench report.

    'prompt tok' counts every input position: the soft rows include their soft vectors.
    """
    from pllm.cli.evaluate import print_rows
    from pllm.eval.report import summarize, write_predictions, write_report
    from pllm.eval.runner import run_method
    from pllm.io import save_config
    from pllm.models import load_generator
    from pllm.pipeline import MethodConfig
    from pllm.prompting.soft import load_soft_generator, soft_label
    from pllm.tasks.lamp import read_questions
    from pllm.tasks.spec import get_task

    spec = get_task(task)
    qs = read_questions(_split_file(data, split, "questions"), spec=spec, outputs=_split_file(data, split, "outputs"))
    if limit is not None:
        qs = qs[:limit]
    base = load_generator("hf", model)
    methods = [MethodConfig(), MethodConfig(retriever=retriever, k=k)]
    t0 = time.perf_counter()
    results = []
    with open_db(db) as store, progress_bar() as bar:
        soft = load_soft_generator(encoder, base, store=store)
        for gen in (base, soft):
            for method in methods:
                name = method.label if gen is base else soft_label(method.label)
                res = run_method(spec, qs, gen, method, store=store, batch_size=batch_size,
                                 progress=tracker(bar), name=name)
                if gen is soft:  # the soft vectors occupy input positions like tokens
                    for r in res.records:
                        r.prompt_tokens += soft.config.n_soft
                res.config["soft_encoder"] = str(encoder) if gen is soft else None
                results.append(res)
                write_predictions(out, spec, name, res.records)
    rows = summarize(spec, results)
    save_config(soft.config, out, "soft_config.json")
    log_path = encoder / "train_log.json"
    meta = {"model": base.model_id, "questions": len(qs), "split": split, "task_dir": str(data),
            "encoder": str(encoder), "seconds": round(time.perf_counter() - t0, 1),
            "command": "pllm " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "train_log": _train_summary(log_path)}
    write_report(out, spec, rows, title=f"soft-fused prompting: {spec.name}", meta=meta)
    print_rows(spec, rows, f"{spec.name} ({len(qs)} questions)")
    console.print(f"report: {out / 'report.md'}")
