"""`pllm judge ...`: a personalized pairwise judge (both orders asked, ties reported)."""

from __future__ import annotations

from pathlib import Path

import typer

from pllm.cli.common import TaskOption, console, progress_bar, tracker
from pllm.errors import NotFoundError

app = typer.Typer(no_args_is_help=True, help="Personalized LLM-as-judge: which of two outputs fits this user better.")


@app.command("compare")
def compare(
    task: str = TaskOption,
    questions: Path = typer.Option(..., "--questions", help="LaMP-format questions file holding the user's profile."),
    question_id: str = typer.Option(..., "--id", help="The question to judge for."),
    a: str = typer.Option(..., "--a", help="Output A."),
    b: str = typer.Option(..., "--b", help="Output B."),
    backend: str = typer.Option("hf", "--backend", help="Judge backend: hf (embedded/any HF model), openai, ..."),
    model: str | None = typer.Option(None, "--model", help="Judge model (default: the embedded model)."),
    retriever: str = typer.Option("bm25", "--retriever", help="How profile items are picked."),
    k: int = typer.Option(4, "--k", help="Profile items shown."),
    input_field: str | None = typer.Option(None, "--input-field", help="Query field shown as the input."),
) -> None:
    """Judge A vs B for one user, in both orders; prints the verdict (A, B or tie) and each order's vote."""
    from pllm.judge import Judge, JudgeConfig
    from pllm.models import load_generator
    from pllm.tasks.lamp import read_questions
    from pllm.tasks.spec import get_task

    spec = get_task(task)
    config = JudgeConfig(retriever=retriever, k=k, input_field=input_field)  # checked before the model loads
    found = [q for q in read_questions(questions, spec=spec) if q.id == question_id]
    if not found:
        raise NotFoundError(f"question {question_id!r} not in {questions}")
    judge = Judge(load_generator(backend, model), config, spec=spec)
    verdict = judge.compare(found[0], a, b)
    console.print(f"verdict: {verdict.winner}")
    for v in verdict.votes:
        margin = "" if v.margin is None else f" (log p(A) - log p(B) = {v.margin:+.3f})"
        slot = "first" if v.shown_first == "A" else "second"
        console.print(f"  A shown {slot}: prefers {v.preferred or 'neither'}{margin}")


@app.command("agreement")
def agreement(
    pairs: int = typer.Option(100, "--pairs", help="Known-truth pairs."),
    source: Path | None = typer.Option(None, "--source", help="synthetic-persona-chat folder (default: found nearby)."),
    backend: str = typer.Option("hf", "--backend", help="Judge backend."),
    model: str | None = typer.Option(None, "--model", help="Judge model (default: the embedded model)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the pairs."),
) -> None:
    """Agreement with known truth on persona-chat-reply: the user's real reply vs another user's reply."""
    from pllm.judge.agreement import known_truth_agreement
    from pllm.models import load_generator

    with progress_bar("judging", unit="pairs") as bar:
        result = known_truth_agreement(load_generator(backend, model), source=source, n_pairs=pairs, seed=seed,
                                       progress=tracker(bar))
    console.print(f"agreement {result['agreement']['fmt']}, ties {result['tie_rate']:.3f}, "
                  f"other wins {result['loss_rate']:.3f} over {result['n']} pairs ({result['readout']})")
