"""`pllm soft ...`: train a soft-prompt user encoder (PPlug-style), inspect it, and compare it against
text prompting on a task folder's test split."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import typer

from pllm.cli.common import MODEL_HELP, DbOption, TaskOption, console, open_db, progress_bar, tracker
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
    task: str = TaskOption,
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
    model: str | None = typer.Option(None, "--model", help=MODEL_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed for user sampling, shuffling, init."),
    db: str | None = DbOption,
) -> None:
    """Train a user encoder against the frozen generator on a task folder's training users."""
    from pllm.models import load_generator
    from pllm.models.hf import HFGenerator
    from pllm.soft.train import SoftTrainConfig, train_soft_encoder
    from pllm.tasks.lamp import read_questions
    from pllm.tasks.spec import get_task

    spec = get_task(task)
    config = SoftTrainConfig(n_tokens=n_tokens, pooling=pooling, instruction=instruction, embedder=embedder,
                             epochs=epochs, lr=lr, batch_size=batch_size, max_users=max_users, seed=seed,
                             retriever=retriever, k=k, style=style)
    qs = read_questions(_split_file(data, split, "questions"), spec=spec, outputs=_split_file(data, split, "outputs"))
    base = load_generator("hf", model)
    if not isinstance(base, HFGenerator):
        raise InputError("soft prompts need a local transformers model (the hf backend)", field="model")
    with open_db(db) as store, progress_bar() as bar:
        res = train_soft_encoder(spec, base, qs, config, out, store=store, progress=tracker(bar))
    for i, (loss, sec) in enumerate(zip(res.epoch_losses, res.epoch_seconds, strict=True), start=1):
        console.print(f"epoch {i}: loss {loss:.4f}, {sec:.1f} s")
    console.print(f"trained on {res.n_examples} questions of {res.n_users} users; encoder saved to {res.path}")


@app.command("info")
def info(path: Path = typer.Argument(..., help="Encoder folder written by `pllm soft train`.")) -> None:
    """Show an encoder's config and training log."""
    from pllm.soft.model import load_soft_encoder

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


METHOD_KINDS = ("none", "retrieval", "soft", "soft+retrieval")


def _result_file(out: Path, name: str) -> Path:
    return out / f"result_{name.replace('@', '-').replace('+', '_')}.json"


def _load_result(path: Path, ids: list[str]):  # -> MethodResult | None
    """A method result cached by an earlier `compare` run, if it was scored on exactly these questions."""
    from pllm.eval.report import MethodResult
    from pllm.pipeline import PredictionRecord

    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    records = [PredictionRecord.from_json(r) for r in data["records"]]
    if [r.id for r in records] != ids:
        return None
    return MethodResult(method=data["method"], records=records, seconds=data["seconds"], kind=data["kind"],
                        config=data["config"], timings=data["timings"])


@app.command("compare")
def compare(
    task: str = TaskOption,
    data: Path = typer.Option(..., "--data", help="Task folder with test_questions.json and test_outputs.json."),
    encoder: Path | None = typer.Option(None, "--encoder", help="Encoder folder (needed for the soft methods)."),
    out: Path = typer.Option(..., "--out", help="Report folder (method results are cached there)."),
    methods: str = typer.Option(",".join(METHOD_KINDS), "--methods",
                                help="Comma list of none, retrieval, soft, soft+retrieval to score in this run."),
    split: str = typer.Option("test", "--split", help="Split to score."),
    limit: int | None = typer.Option(None, "--limit", help="Score only the first N questions."),
    retriever: str = typer.Option("bm25", "--retriever", help="Retriever for the text and combined methods."),
    k: int = typer.Option(4, "--k", help="Items retrieved per question."),
    model: str | None = typer.Option(None, "--model", help=MODEL_HELP),
    batch_size: int = typer.Option(8, "--batch-size", help="Questions per model call."),
    db: str | None = DbOption,
) -> None:
    """Score none, retrieval, soft and soft + retrieval on the same questions; write a bench report.

    Each method's result is cached in --out, so methods can run in separate (parallel) invocations; the
    report covers every cached method scored on the same questions. 'prompt tok' counts every input
    position: the soft rows include their soft vectors.
    """
    from pllm.cli.evaluate import print_rows
    from pllm.eval.report import conclude, summarize, write_predictions, write_report
    from pllm.eval.runner import run_method
    from pllm.io import atomic_write_json
    from pllm.models import load_generator
    from pllm.pipeline import MethodConfig
    from pllm.soft.model import load_soft_generator, soft_label
    from pllm.tasks.lamp import read_questions
    from pllm.tasks.spec import get_task

    wanted = [m.strip() for m in methods.split(",") if m.strip()]
    bad = sorted(set(wanted) - set(METHOD_KINDS))
    if bad:
        raise InputError(f"unknown methods {bad}; choose from {', '.join(METHOD_KINDS)}", field="methods")
    if any(m.startswith("soft") for m in wanted) and encoder is None:
        raise InputError("the soft methods need --encoder", field="encoder")
    if encoder is not None and not encoder.exists():  # checked before the model loads
        raise InputError("soft-prompt encoder not found (train one with `pllm soft train`)", source=str(encoder))
    spec = get_task(task)
    qs = read_questions(_split_file(data, split, "questions"), spec=spec, outputs=_split_file(data, split, "outputs"))
    if limit is not None:
        qs = qs[:limit]
    text_methods = {"none": MethodConfig(), "retrieval": MethodConfig(retriever=retriever, k=k)}
    names = {"none": "none", "retrieval": text_methods["retrieval"].label, "soft": "soft",
             "soft+retrieval": soft_label(text_methods["retrieval"].label)}
    t0 = time.perf_counter()
    if wanted:
        base = load_generator("hf", model)
        with open_db(db) as store, progress_bar(unit="q") as bar:
            soft = load_soft_generator(encoder, base, store=store) if encoder is not None else None
            for kind in wanted:
                soft_gen = soft if kind.startswith("soft") else None  # set for soft kinds: --encoder was checked
                method = text_methods["none" if kind in ("none", "soft") else "retrieval"]
                gen = soft_gen if soft_gen is not None else base
                res = run_method(spec, qs, gen, method, store=store, batch_size=batch_size,
                                 progress=tracker(bar), name=names[kind])
                if soft_gen is not None:  # the soft vectors occupy input positions like tokens
                    for r in res.records:
                        r.prompt_tokens += soft_gen.config.n_soft
                    res.config["soft_encoder"] = str(encoder)
                    res.config["soft"] = dataclasses.asdict(soft_gen.config)
                write_predictions(out, spec, res.method, res.records, outputs=_split_file(data, split, "outputs"))
                atomic_write_json(_result_file(out, res.method), res)
    ids = [q.id for q in qs]
    results = [r for kind in METHOD_KINDS if (r := _load_result(_result_file(out, names[kind]), ids)) is not None]
    rows = summarize(spec, results)
    meta = {"questions": len(qs), "split": split, "task_dir": str(data), "encoder": str(encoder) if encoder else None,
            "seconds_this_run": round(time.perf_counter() - t0, 1),
            "command": "pllm " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "train_log": _train_summary(encoder / "train_log.json") if encoder else None}
    conclusion = conclude(spec, results, rows)
    write_report(out, spec, rows, title=f"soft-fused prompting: {spec.name}", meta=meta, conclusion=conclusion)
    print_rows(spec, rows, f"{spec.name} ({len(qs)} questions)", conclusion)
    console.print(f"report: {out / 'report.md'}")
