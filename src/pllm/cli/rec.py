"""`pllm rec ...`: build the movielens-rec task and rank its candidates with classic and LLM rankers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pllm.cli.common import MODEL_HELP, console, progress_bar, tracker
from pllm.errors import InputError

if TYPE_CHECKING:
    from pllm.adapt.store import AdapterRecord
    from pllm.data.movielens import MovieLens
    from pllm.models.base import Generator
    from pllm.rec.rankers import PointwiseConfig
    from pllm.types import Question

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


def _split(task_dir: Path, split: str, *, outputs: bool = False) -> list[Question]:
    """A split's questions (with targets when its outputs file is there, or required by `outputs`)."""
    from pllm.tasks.lamp import read_questions

    qfile, ofile = task_dir / f"{split}_questions.json", task_dir / f"{split}_outputs.json"
    for f in (qfile, ofile) if outputs else (qfile,):
        if not f.is_file():
            raise InputError("missing; build the task with `pllm rec build`", source=str(f))
    return read_questions(qfile, outputs=ofile if ofile.is_file() else None)


def _movielens(task_dir: Path) -> MovieLens:
    from pllm.data.movielens import load_movielens

    cfg_file = task_dir / "build_config.json"
    return load_movielens(json.loads(cfg_file.read_text()).get("source") if cfg_file.is_file() else None)


def _ft_adapter(adapters: Path, config: PointwiseConfig, generator: Generator, *, pairs: int | None,
                negatives: int | None) -> AdapterRecord:
    """The `llm-pointwise-ft` adapter trained with these prompt settings and sample on this model, else a clear
    error."""
    from pllm.adapt.store import AdapterStore
    from pllm.rec.data import POINTWISE_SPEC
    from pllm.rec.rankers import FT_RANK_NEGATIVES, FT_RANK_PAIRS

    owner = config.owner(generator.model_id, pairs=FT_RANK_PAIRS if pairs is None else pairs,
                         negatives=FT_RANK_NEGATIVES if negatives is None else negatives)
    record = AdapterStore(adapters).get(POINTWISE_SPEC.name, "task", owner)
    if record is None:
        raise InputError(f"no llm-pointwise-ft adapter {owner!r} here: train it with `pllm rec ft-train` and the "
                         "same --retriever/--k/--crowd/--crowd-rank, and --pairs/--negatives as --ft-pairs/"
                         "--ft-negatives here", source=str(adapters), field="adapters")
    return record


@app.command("eval")
def eval_(
    task_dir: Path = typer.Argument(..., help="A folder built by `pllm rec build`."),
    rankers: str = typer.Option("popularity,itemknn,mf-als", "--rankers",
                                help="Comma-separated: random, popularity, itemknn, mf-als, mf-svd, "
                                     "llm-pointwise, llm-listwise, llm-pointwise-adapter, llm-pointwise-soft, "
                                     "llm-pointwise-ft, hybrid (with its twin hybrid-cf)."),
    split: str = typer.Option("test", "--split", help="Which split's questions to rank."),
    limit: int | None = typer.Option(None, "--limit", help="Rank only the first N questions."),
    backend: str = typer.Option("hf", "--backend", help="Generator backend for the LLM rankers."),
    model: str | None = typer.Option(None, "--model", help="Model for the LLM rankers (default: embedded)."),
    retriever: str = typer.Option("bm25", "--retriever", help="History retriever of the LLM rankers."),
    k: int = typer.Option(4, "--k", help="History items per LLM prompt."),
    crowd: bool = typer.Option(False, "--crowd/--no-crowd", help="llm-pointwise(-ft): add the crowd line (how many "
                               "other users rated the candidate, what share liked it)."),
    crowd_rank: bool = typer.Option(False, "--crowd-rank", help="With the crowd line: also the candidate's standing "
                                    "by raters ('top 8% of items'); llm-pointwise-ft needs an adapter trained so."),
    adapters: Path | None = typer.Option(None, "--adapters", help="llm-pointwise-adapter: the folder `pllm adapt "
                                         "train --task movielens-rec` wrote (default: adapters/ in PLLM_HOME); "
                                         "llm-pointwise-ft and hybrid: the folder `pllm rec ft-train` wrote."),
    soft: Path | None = typer.Option(None, "--soft", help="llm-pointwise-soft: the encoder folder `pllm rec "
                                     "soft-train` wrote (its retrieval settings are used)."),
    ft_pairs: int | None = typer.Option(None, "--ft-pairs", help="llm-pointwise-ft and hybrid: the adapter "
                                        "trained on this many texts (`pllm rec ft-train --pairs`; default: "
                                        "ft-train's)."),
    ft_negatives: int | None = typer.Option(None, "--ft-negatives", help="llm-pointwise-ft and hybrid: the adapter "
                                            "trained with this many negatives per list (`ft-train --negatives`)."),
    fit_split: str = typer.Option("dev", "--fit-split", help="hybrid: the split whose lists fit the blend "
                                  "(never the ranked one)."),
    out: Path | None = typer.Option(None, "--out", help="Write report.json and report.md to this folder."),
) -> None:
    """Rank each question's candidates and report Recall@1/5, NDCG@5, MRR with 95% bootstrap intervals."""
    from pllm.rec.data import ensure_task
    from pllm.rec.hybrid import CF_FEATURES, RecordedRanker, fit_hybrids, fit_stage
    from pllm.rec.rankers import RANKERS, ListwiseConfig, PointwiseConfig, PointwiseRanker, make_ranker
    from pllm.rec.runner import markdown_table, run_ranker, summarize, write_report

    names = [n.strip() for n in rankers.split(",") if n.strip()]
    for name in names:  # every name checked before the first ranker runs or a model loads
        RANKERS.get(name)
    if any(n.startswith("llm-") or n == "hybrid" for n in names):
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
    wants_ft = "llm-pointwise-ft" in names or "hybrid" in names
    if wants_ft and (adapters is None or not adapters.is_dir()):
        raise InputError("llm-pointwise-ft and hybrid need --adapters FOLDER (from `pllm rec ft-train`)",
                         source=str(adapters) if adapters else None, field="adapters")
    if "hybrid" in names and fit_split == split:
        raise InputError(f"the hybrid is fitted on --fit-split lists, which must not be the ranked split {split!r}",
                         field="fit_split")
    ensure_task()
    questions = _split(task_dir, split)[:limit]
    fit_lists = _split(task_dir, fit_split, outputs=True) if "hybrid" in names else []
    ml = _movielens(task_dir)
    classic = [n for n in names if not n.startswith("llm-") and n != "hybrid"]
    # one collaborative side for the ranked lists: the classic rows and the hybrid's components alike
    test_stage = fit_stage(ml, questions, list(dict.fromkeys(classic + (list(CF_FEATURES) if "hybrid" in names
                                                                        else []))))
    point_cfg = PointwiseConfig(retriever=retriever, k=k, crowd=crowd or wants_ft or crowd_rank,
                                crowd_rank=crowd_rank)
    generator = None
    ft = None  # the fine-tuned ranker, its scores kept: the hybrid reads them instead of scoring again
    results = []
    with progress_bar("ranking", unit="q") as bar:
        update = tracker(bar)
        for name in names:
            if name.startswith("llm-") or name == "hybrid":
                from pllm.models import load_generator

                if name == "llm-pointwise-adapter":  # its own model copy: adapters wrap it
                    ranker = make_ranker(name, generator=load_generator(backend, model),
                                         config=PointwiseConfig(retriever=retriever, k=k), adapters=adapters)
                elif name == "llm-pointwise-soft":
                    generator = generator or load_generator(backend, model)
                    ranker = make_ranker(name, generator=generator, encoder=soft)
                elif name in ("llm-pointwise-ft", "hybrid"):
                    generator = generator or load_generator(backend, model)
                    ft = ft or RecordedRanker("llm-pointwise-ft", {}, fallback=make_ranker(
                        "llm-pointwise-ft", generator=generator, config=point_cfg, crowd=test_stage.crowd,
                        adapter=_ft_adapter(adapters, point_cfg, generator,  # type: ignore[arg-type]
                                            pairs=ft_pairs, negatives=ft_negatives)))
                    ranker = ft
                else:
                    generator = generator or load_generator(backend, model)
                    cfg = PointwiseConfig(retriever=retriever, k=k, crowd=crowd or crowd_rank,
                                          crowd_rank=crowd_rank) if name == "llm-pointwise" else \
                        ListwiseConfig(retriever=retriever, k=k)
                    ranker = make_ranker(name, generator=generator, config=cfg,
                                         **({"crowd": test_stage.crowd} if name == "llm-pointwise" else {}))
                if name == "hybrid":
                    fit_side = fit_stage(ml, list(questions) + list(fit_lists))
                    merged = ft.fallback.generator  # type: ignore[union-attr]
                    llm = {"test": ranker, "fit": PointwiseRanker(merged, point_cfg, crowd=fit_side.crowd)}
                    stages = {"test": test_stage, "fit": fit_side}
                    for hybrid in fit_hybrids("llm-pointwise-ft", llm, stages, fit_lists):
                        results.append(run_ranker(hybrid, questions, label=hybrid.label, progress=update))
                else:
                    results.append(run_ranker(ranker, questions, progress=update))
            else:
                results.append(run_ranker(test_stage.rankers[name], questions, progress=update,
                                          fit_seconds=test_stage.fit_seconds[name]))
    rows = summarize(results)
    console.print(markdown_table(rows))
    if out:
        meta = {"task_dir": str(task_dir), "split": split, "users": len(questions)}
        json_path, md_path = write_report(out, rows, meta=meta)
        console.print(f"wrote {json_path} and {md_path}")


@app.command("ft-train")
def ft_train(
    task_dir: Path = typer.Argument(..., help="A folder built by `pllm rec build` (use --split user, so that "
                                    "training users are not the ranked ones)."),
    adapters: Path = typer.Option(..., "--adapters", help="Adapter folder to train into (cached by content)."),
    split: str = typer.Option("train", "--split", help="Split whose lists train the ranker."),
    holdout: str = typer.Option("test", "--holdout", help="The split that will be ranked: its users are left out "
                                "of training and its targets out of the crowd line."),
    retriever: str = typer.Option("bm25", "--retriever", help="History retriever inside every prompt."),
    k: int = typer.Option(4, "--k", help="History items per prompt."),
    crowd: bool = typer.Option(True, "--crowd/--no-crowd", help="Add the crowd line to every prompt."),
    crowd_rank: bool = typer.Option(False, "--crowd-rank", help="With the crowd line: also the candidate's standing "
                                    "by raters ('top 8% of items')."),
    pairs: int | None = typer.Option(None, "--pairs", help="Training texts: lists x (1 + negatives); default 1200."),
    negatives: int | None = typer.Option(None, "--negatives", help="Unrated candidates (No) per list, beside its "
                                         "target; default 3."),
    model: str | None = typer.Option(None, "--model", help=MODEL_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed for lists, negatives, order and initialization."),
) -> None:
    """Fine-tune the llm-pointwise-ft ranker: one LoRA on other users' lists, with the prompts it ranks with."""
    from pllm.adapt.store import AdapterStore
    from pllm.models import load_generator
    from pllm.rec.data import ensure_task, rec_crowd
    from pllm.rec.rankers import FT_RANK_NEGATIVES, FT_RANK_PAIRS, PointwiseConfig, train_pointwise_adapter

    pairs = FT_RANK_PAIRS if pairs is None else pairs
    negatives = FT_RANK_NEGATIVES if negatives is None else negatives
    ensure_task()
    if pairs < 1 + negatives:
        raise InputError(f"--pairs {pairs} is less than one list (1 + {negatives} texts)", field="pairs")
    held = _split(task_dir, holdout)
    held_users = {q.user_id for q in held}
    lists = [q for q in _split(task_dir, split, outputs=True) if q.user_id not in held_users]
    if not lists:
        raise InputError(f"no {split} lists of users outside the {holdout} split: build the task with "
                         "`pllm rec build --split user`", source=str(task_dir), field="split")
    config = PointwiseConfig(retriever=retriever, k=k, crowd=crowd, crowd_rank=crowd_rank)
    with progress_bar("training", unit="step") as bar:
        update = tracker(bar)
        record, trained = train_pointwise_adapter(
            load_generator("hf", model), lists, config, store=AdapterStore(adapters),
            crowd=rec_crowd(_movielens(task_dir), held) if crowd else None, negatives=negatives, max_pairs=pairs,
            seed=seed, progress=lambda i, n: update("training steps", i, n))
    state = f"trained in {record.train_seconds:.0f} s" if trained else "up to date (cached)"
    console.print(f"llm-pointwise-ft adapter {record.path}: {record.n_pairs} texts from {record.source.get('lists')} "
                  f"lists, {state}")


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
