"""`pllm rec ...`: build the movielens-rec task and rank its candidates with classic and LLM rankers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from pllm.cli.common import MODEL_HELP, console, progress_bar, tracker
from pllm.errors import InputError

app = typer.Typer(no_args_is_help=True, help="Recommendation: movielens-rec candidate ranking and ranking metrics.")


@app.command("build")
def build(
    out: Path = typer.Option(..., "--out", help="Output task folder (replaced atomically)."),
    source: Path | None = typer.Option(None, "--source", help="MovieLens-100k folder (default: found nearby)."),
    negatives: int = typer.Option(19, "--negatives", help="Unrated movies per list (list = negatives + 1)."),
    split: str = typer.Option("time", "--split", help="time (latest liked movie is test) or user."),
    seed: int = typer.Option(0, "--seed", help="Seed for user sampling and negatives."),
    max_users: int | None = typer.Option(None, "--max-users", help="Sample at most this many users."),
    min_profile: int = typer.Option(5, "--min-profile", help="Ratings needed strictly before the target."),
) -> None:
    """Build a movielens-rec task folder (LaMP-shaped JSON; candidates in each question's query)."""
    from pllm.data.base import build_dataset
    from pllm.rec.data import TASK_NAME, RecBuildConfig

    config = RecBuildConfig(source=str(source) if source else None, out=str(out), split=split, seed=seed,  # type: ignore[arg-type]
                            max_users=max_users, negatives=negatives, min_profile=min_profile)
    result = build_dataset(TASK_NAME, config)
    counts = ", ".join(f"{k}: {v} questions / {result.users[k]} users" for k, v in result.counts.items())
    console.print(f"built {TASK_NAME} in {result.out} ({counts})")


@app.command("eval")
def eval_(
    task_dir: Path = typer.Argument(..., help="A folder built by `pllm rec build`."),
    rankers: str = typer.Option("popularity,itemknn,mf-als", "--rankers",
                                help="Comma-separated: random, popularity, itemknn, mf-als, mf-svd, "
                                     "llm-pointwise, llm-listwise, llm-pointwise-adapter, llm-pointwise-soft."),
    split: str = typer.Option("test", "--split", help="Which split's questions to rank."),
    limit: int | None = typer.Option(None, "--limit", help="Rank only the first N questions."),
    backend: str = typer.Option("hf", "--backend", help="Generator backend for the LLM rankers."),
    model: str | None = typer.Option(None, "--model", help="Model for the LLM rankers (default: embedded)."),
    retriever: str = typer.Option("bm25", "--retriever", help="History retriever of the LLM rankers."),
    k: int = typer.Option(4, "--k", help="History items per LLM prompt."),
    adapters: Path | None = typer.Option(None, "--adapters", help="llm-pointwise-adapter: the folder `pllm adapt "
                                         "train --task movielens-rec` wrote (default: adapters/ in PLLM_HOME)."),
    soft: Path | None = typer.Option(None, "--soft", help="llm-pointwise-soft: the encoder folder `pllm rec "
                                     "soft-train` wrote (its retrieval settings are used)."),
    out: Path | None = typer.Option(None, "--out", help="Write report.json and report.md to this folder."),
) -> None:
    """Rank each question's candidates and report Recall@1/5, NDCG@5, MRR with 95% bootstrap intervals."""
    from pllm.data.movielens import load_movielens
    from pllm.rec.data import ensure_task
    from pllm.rec.rankers import RANKERS, ListwiseConfig, PointwiseConfig, make_ranker, training_interactions
    from pllm.rec.runner import markdown_table, run_ranker, summarize, write_report
    from pllm.tasks.lamp import read_questions

    names = [n.strip() for n in rankers.split(",") if n.strip()]
    for name in names:  # every name checked before the first ranker runs or a model loads
        RANKERS.get(name)
    if any(n.startswith("llm-") for n in names):
        from pllm.models import GENERATORS
        from pllm.retrieval.base import RETRIEVERS

        GENERATORS.get(backend)
        RETRIEVERS.get(retriever)
        if k == 0 and retriever != "none":
            raise InputError(f"--k 0 shows no history with --retriever {retriever}: give --k >= 1, or "
                             "--retriever none", field="k")
    if "llm-pointwise-soft" in names and (soft is None or not soft.exists()):
        raise InputError("llm-pointwise-soft needs --soft ENCODER (from `pllm rec soft-train`)",
                         source=str(soft) if soft else None, field="soft")
    ensure_task()
    qfile, ofile = task_dir / f"{split}_questions.json", task_dir / f"{split}_outputs.json"
    if not qfile.is_file():
        raise InputError("no questions file; build the task with `pllm rec build`", source=str(qfile))
    questions = read_questions(qfile, outputs=ofile if ofile.is_file() else None)[:limit]
    cfg_file = task_dir / "build_config.json"
    build_cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    ml = load_movielens(build_cfg.get("source"))
    train = training_interactions(ml.ratings, questions, items=sorted(ml.movies, key=lambda m: int(m)))
    generator = None
    results = []
    with progress_bar("ranking", unit="q") as bar:
        update = tracker(bar)
        for name in names:
            if name.startswith("llm-"):
                from pllm.models import load_generator

                if name == "llm-pointwise-adapter":  # its own model copy: adapters wrap it
                    ranker = make_ranker(name, generator=load_generator(backend, model),
                                         config=PointwiseConfig(retriever=retriever, k=k), adapters=adapters)
                elif name == "llm-pointwise-soft":
                    generator = generator or load_generator(backend, model)
                    ranker = make_ranker(name, generator=generator, encoder=soft)
                else:
                    generator = generator or load_generator(backend, model)
                    cfg = PointwiseConfig(retriever=retriever, k=k) if name == "llm-pointwise" else \
                        ListwiseConfig(retriever=retriever, k=k)
                    ranker = make_ranker(name, generator=generator, config=cfg)
                results.append(run_ranker(ranker, questions, progress=update))
            else:
                ranker = make_ranker(name)
                t0 = time.perf_counter()
                ranker.fit(train)
                results.append(run_ranker(ranker, questions, progress=update, fit_seconds=time.perf_counter() - t0))
    rows = summarize(results)
    console.print(markdown_table(rows))
    if out:
        meta = {"task_dir": str(task_dir), "split": split, "users": len(questions)}
        json_path, md_path = write_report(out, rows, meta=meta)
        console.print(f"wrote {json_path} and {md_path}")


@app.command("soft-train")
def soft_train(
    task_dir: Path = typer.Argument(..., help="A folder built by `pllm rec build`."),
    out: Path = typer.Option(..., "--out", help="Encoder folder to write (replaced atomically)."),
    split: str = typer.Option("train", "--split", help="Split whose lists train the encoder (not the evaluated one)."),
    negatives: int = typer.Option(3, "--negatives", help="Unrated candidates (No) per list, beside its target (Yes)."),
    max_users: int | None = typer.Option(None, "--max-users", help="Train on at most this many users' lists."),
    epochs: int = typer.Option(1, "--epochs", help="Passes over the training questions."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate."),
    batch_size: int = typer.Option(8, "--batch-size", help="Questions per optimizer step."),
    n_tokens: int = typer.Option(4, "--n-tokens", help="User soft tokens."),
    pooling: str = typer.Option("attention", "--pooling", help="attention (candidate-aware) | mean."),
    retriever: str = typer.Option("none", "--retriever", help="Also show retrieved history as text (none|bm25|...)."),
    k: int = typer.Option(4, "--k", help="History items retrieved when --retriever is set."),
    embedder: str = typer.Option("minilm", "--embedder", help="History/candidate embedder."),
    model: str | None = typer.Option(None, "--model", help=MODEL_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed for users, negatives, shuffling and initialization."),
) -> None:
    """Train the llm-pointwise-soft user encoder (PPlug-style) on a split's ranked lists, model frozen."""
    from pllm.models import load_generator
    from pllm.rec.data import ensure_task
    from pllm.rec.rankers import train_soft_ranker
    from pllm.soft.train import SoftTrainConfig
    from pllm.tasks.lamp import read_questions

    ensure_task()
    qfile, ofile = task_dir / f"{split}_questions.json", task_dir / f"{split}_outputs.json"
    for f in (qfile, ofile):
        if not f.is_file():
            raise InputError("missing; build the task with `pllm rec build`", source=str(f))
    config = SoftTrainConfig(n_tokens=n_tokens, pooling=pooling, embedder=embedder, epochs=epochs, lr=lr,
                             batch_size=batch_size, max_users=max_users, seed=seed, retriever=retriever, k=k)
    questions = read_questions(qfile, outputs=ofile)
    with progress_bar() as bar:
        res = train_soft_ranker(load_generator("hf", model), questions, config, out, negatives=negatives,
                                progress=tracker(bar))
    for i, (loss, sec) in enumerate(zip(res.epoch_losses, res.epoch_seconds, strict=True), start=1):
        console.print(f"epoch {i}: loss {loss:.4f}, {sec:.1f} s")
    console.print(f"trained on {res.n_examples} yes/no questions of {res.n_users} users; encoder saved to {res.path}")
