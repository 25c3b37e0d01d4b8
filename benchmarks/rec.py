"""Recommendation benchmark on MovieLens-100k (`movielens-rec`): classic recommenders and LLM rankers
ranked by Recall@1/5, NDCG@5 and MRR with 95% bootstrap intervals over users, the paired NDCG@5
difference against popularity, and scoring time per user; plus the personalized judge's agreement with
known-truth pairs on `persona-chat-reply`.

    python benchmarks/rec.py --out-dir docs/results/rec            # the committed report
    python benchmarks/rec.py --quick                                # 20 users, 40 judge pairs

LLM rankers checkpoint per user under --work (JSONL), so an interrupted run resumes where it stopped;
`--rankers`/`--shard` let several processes share the work, and a last run without them assembles it.
Timings are measured on the machine that ran it (see meta.machine in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

ALL_RANKERS = ["random", "popularity", "itemknn", "mf-als", "mf-svd", "llm-pointwise", "llm-listwise",
               "llm-pointwise-adapter", "llm-pointwise-soft"]


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="MovieLens-100k folder (default: ../shared/data/movielens-100k).")
    p.add_argument("--persona-data", default=None, help="Synthetic-Persona-Chat folder for the judge section.")
    p.add_argument("--users", type=int, default=300, help="Test users (one question each).")
    p.add_argument("--negatives", type=int, default=19, help="Unrated movies per list (list = negatives + 1).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rankers", default=",".join(ALL_RANKERS), help="Comma-separated rankers to run.")
    p.add_argument("--backend", default="hf")
    p.add_argument("--model", default=None, help="Model for the LLM rankers and the judge (default: embedded).")
    p.add_argument("--retriever", default="bm25", help="History retriever of the LLM rankers.")
    p.add_argument("--k", type=int, default=4, help="History items per pointwise prompt.")
    p.add_argument("--listwise-k", type=int, default=8, help="History items in the listwise prompt.")
    p.add_argument("--listwise-permutations", type=int, default=2, help="Candidate orders asked (1 or 2).")
    p.add_argument("--adapters", default=None,
                   help="Adapter folder written by `pllm adapt train --task movielens-rec` (llm-pointwise-adapter; "
                        "without it that ranker is skipped and noted).")
    p.add_argument("--adapter-task", default="movielens-rec", help="Task the adapters were trained under.")
    p.add_argument("--cold-start-items", type=int, default=None,
                   help="History items a user needs to use their own adapter (default: the adapter's min_items).")
    p.add_argument("--soft", default=None,
                   help="Encoder folder written by `pllm rec soft-train` (llm-pointwise-soft; without it that "
                        "ranker is skipped and noted).")
    p.add_argument("--assemble", action="store_true",
                   help="Score no LLM question: read the LLM rankers' and judge's checkpoints and write the report.")
    p.add_argument("--judge-pairs", type=int, default=200, help="Known-truth pairs for the judge (0: skip).")
    p.add_argument("--shard", default=None, help="i/n: score only every n-th question starting at i (LLM rankers).")
    p.add_argument("--work", default="/tmp/pllm-rec-bench", help="Checkpoint folder (resume).")
    p.add_argument("--out-dir", default=None, help="Write report.json and report.md here.")
    p.add_argument("--out", default=None, help="Write the JSON here.")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    p.add_argument("--quick", action="store_true", help="20 users, 40 judge pairs, separate work folder.")
    a = p.parse_args(argv)
    if a.quick:
        a.users, a.judge_pairs = min(a.users, 20), min(a.judge_pairs, 40)
        a.work = a.work.rstrip("/") + "-quick"
    return a


def rec_splits(args: argparse.Namespace) -> tuple[dict[str, list[Any]], Any, dict[str, Any]]:
    """Every split of the seeded time-split build, the MovieLens data, and the build settings."""
    from pllm.data.movielens import load_movielens
    from pllm.rec.data import MovieLensRecBuilder, RecBuildConfig

    config = RecBuildConfig(source=args.data or "", out="-", split="time", seed=args.seed, negatives=args.negatives,
                            min_profile=5)
    if not args.data:
        config.source = None  # type: ignore[assignment]  # find_movielens looks in the usual places
    build = {k: v for k, v in vars(config).items() if k != "out"}
    return MovieLensRecBuilder().questions(config), load_movielens(args.data), build


def sample_test_lists(splits: dict[str, list[Any]], args: argparse.Namespace) -> list[Any]:
    """The seeded sample of `args.users` test lists every recommendation report ranks."""
    rng = random.Random(args.seed)
    return sorted(rng.sample(splits["test"], min(args.users, len(splits["test"]))), key=lambda q: int(q.user_id))


def rec_questions(args: argparse.Namespace) -> tuple[list, Any, dict[str, Any]]:
    splits, ml, build = rec_splits(args)
    return sample_test_lists(splits, args), ml, build


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _args(argv)
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from pllm.rec.rankers import ListwiseConfig, PointwiseConfig, make_ranker, training_interactions
    from pllm.rec.runner import run_ranker, summarize, write_report

    t0 = time.perf_counter()
    questions, ml, build = rec_questions(args)
    names = [n.strip() for n in args.rankers.split(",") if n.strip()]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    shard_i, shard_n = (int(x) for x in args.shard.split("/")) if args.shard else (0, 1)
    train = training_interactions(ml.ratings, questions, items=sorted(ml.movies, key=int))
    generator = None
    results, notes = [], {}
    for name in names:
        if name == "llm-pointwise-adapter" and not args.adapters:
            notes[name] = ("not done: no --adapters folder given (train one adapter per test user with "
                           "`pllm adapt train --task movielens-rec`, see docs/recommendation.md)")
            continue
        if name == "llm-pointwise-soft" and not args.soft:
            notes[name] = ("not done: no --soft encoder folder given (train one on the training users' lists with "
                           "`pllm rec soft-train`, see docs/recommendation.md)")
            continue
        if name.startswith("llm-"):
            if generator is None and name != "llm-pointwise-adapter":
                from pllm.models import load_generator

                generator = load_generator(args.backend, args.model)
            if name == "llm-pointwise-adapter":
                from pllm.models import load_generator

                # its own copy of the model: adapters wrap it and a task adapter is merged into its weights
                ranker = make_ranker(name, generator=load_generator(args.backend, args.model),
                                     config=PointwiseConfig(retriever=args.retriever, k=args.k),
                                     adapters=args.adapters, task=args.adapter_task,
                                     cold_start_items=args.cold_start_items)
            elif name == "llm-pointwise-soft":
                ranker = make_ranker(name, generator=generator, encoder=args.soft)
            elif name == "llm-pointwise":
                ranker = make_ranker(name, generator=generator,
                                     config=PointwiseConfig(retriever=args.retriever, k=args.k))
            else:
                ranker = make_ranker(name, generator=generator,
                                     config=ListwiseConfig(retriever=args.retriever, k=args.listwise_k,
                                                           permutations=args.listwise_permutations))
            qs = questions[shard_i::shard_n]
            ckpt = work / (f"{name}.s{shard_i}.jsonl" if args.shard else f"{name}.jsonl")
            res = run_ranker(ranker, qs, checkpoint=ckpt, progress=_progress, score_missing=not args.assemble)
        else:
            ranker = make_ranker(name)
            f0 = time.perf_counter()
            ranker.fit(train)
            res = run_ranker(ranker, questions, fit_seconds=time.perf_counter() - f0)
        results.append(res)
        print(f"[rec] {name}: {len(res.ranks)} users", file=sys.stderr)
    rows = summarize(results, n_resamples=1000, seed=args.seed)
    # does personalizing the LLM (own adapter, soft user tokens) beat the same LLM with retrieved history?
    llm = [r for r in results if r.ranker.startswith("llm-pointwise")]
    vs_pointwise = summarize(llm, reference="llm-pointwise", n_resamples=1000, seed=args.seed) \
        if len(llm) > 1 and any(r.ranker == "llm-pointwise" for r in llm) else []
    judge = run_judge(args, generator) if args.judge_pairs > 0 and not args.shard else None
    meta = {
        "command": "python benchmarks/rec.py " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--assemble"),
        "assembled_from_checkpoints": bool(args.assemble),
        "users": len(questions), "candidates_per_user": args.negatives + 1, "build": build,
        "train_interactions": int(train.matrix.nnz), "train_users": len(train.users),
        "not_done": notes, "wall_seconds": round(time.perf_counter() - t0, 1),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "note": "the machine that assembled this report; LLM rows record their own device"},
    }
    out: dict[str, Any] = {"meta": meta, "rankers": rows, "llm_vs_pointwise": vs_pointwise, "judge": judge}
    from pllm.io import to_jsonable

    payload = to_jsonable(out)
    text = json.dumps(payload, indent=2)
    print(text if len(text) < 20000 else json.dumps(payload["meta"], indent=2))
    from pllm.rec.runner import markdown_table

    print(markdown_table(rows))
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    if args.out_dir and not args.shard:
        write_report(args.out_dir, rows, meta={**meta, "judge": judge, "llm_vs_pointwise": vs_pointwise},
                     extra_md=_extra_md(meta, judge, rows, vs_pointwise))
    _ = np  # numpy imported early so torch threads apply before BLAS loads
    return payload


def _progress(label: str, done: int, total: int) -> None:
    if done == total or done % 10 == 0:
        print(f"[rec] {label}: {done}/{total}", file=sys.stderr, flush=True)


def run_judge(args: argparse.Namespace, generator: Any) -> dict[str, Any] | None:
    """Agreement of the personalized judge with known-truth pairs (real reply vs another user's reply)."""
    try:
        from pllm.judge.agreement import known_truth_agreement
    except ImportError:
        return None
    if generator is None:
        from pllm.models import load_generator

        generator = load_generator(args.backend, args.model)
    return known_truth_agreement(generator, source=args.persona_data, n_pairs=args.judge_pairs, seed=args.seed,
                                 checkpoint=Path(args.work) / "judge.jsonl", progress=_progress,
                                 score_missing=not args.assemble)


def _opt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _extra_md(meta: dict[str, Any], judge: dict[str, Any] | None, rows: list[Any],
              vs_pointwise: list[Any] | None = None) -> str:
    from pllm.eval.tables import devices_text
    from pllm.rec.runner import markdown_table

    lines = ["", f"Users: {meta['users']} test users of MovieLens-100k, one question each; "
             f"{meta['candidates_per_user']} candidates per user (the held-out latest liked movie, rating >= 4, "
             "plus unrated movies sampled with a seed, shuffled). History = ratings strictly before the target.",
             "Intervals: 95% percentile bootstrap over users (1,000 resamples); Δ is the paired difference "
             "against popularity on the same users.",
             f"Classic rankers are fitted on {meta['train_interactions']:,} interactions: every rating except each "
             "test user's target and anything they rated after it.",
             "Seconds per user are wall time of one `score` call (all candidates of one user in one batch) on the "
             "device in the `ran on` column (the LLM rankers' checkpoints record it per user; classic rankers run "
             f"on the CPU of the machine that assembled the report: {meta['machine']['platform']}, "
             f"{meta['machine']['cpus']} CPUs), so compare timings only within one device.",
             f"Reproduce: `{meta['command']}`."]
    partial = [(r.ranker, r.n) for r in rows if 0 < r.n < meta["users"]]
    if partial:
        lines.append("Partial runs (the LLM rankers are scored per user with checkpoints; these rows cover only "
                     "the users finished when the report was assembled, a subset of the same seeded sample; their "
                     "Δ is paired on those users): "
                     + ", ".join(f"`{n}` {k} users" for n, k in partial) + ".")
    for name, why in meta.get("not_done", {}).items():
        lines.append(f"- `{name}`: {why}.")
    if vs_pointwise:
        lines += ["", "## Personalized LLM rankers against plain `llm-pointwise`", "",
                  "The same model: `llm-pointwise-adapter` reads the same prompts through each user's own adapter; "
                  "`llm-pointwise-soft` reads the user's soft tokens and whatever history text its encoder was "
                  "trained with. Δ is paired on the users both rankers finished.", "",
                  markdown_table(vs_pointwise, reference="llm-pointwise")]
    if judge and judge.get("n"):
        lines += ["", "## Personalized LLM-as-judge: agreement with known truth", "",
                  f"Pairs: {judge['n']} `{judge['task']}` test questions; A = the user's real reply, B = another "
                  "user's reply at a turn of another conversation, shown with the same dialogue context; judge = "
                  f"`{judge['judge_model']}` ({judge['readout']}), both orders asked.", "",
                  "| agreement (real wins both orders) [95% CI] | ties | other wins | position-consistent | "
                  "votes for the first-shown output | summed-margin agreement | s/pair | ran on |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| {judge['agreement']['fmt']} | {judge['tie_rate']:.3f} | {judge['loss_rate']:.3f} | "
                  f"{1 - judge['tie_rate']:.3f} | {judge['first_position_rate']:.3f} | "
                  f"{_opt(judge.get('debiased_margin_agreement'))} | {judge['seconds_per_pair']:.3f} | "
                  f"{devices_text(judge.get('devices'))} |", "",
                  "Summed-margin agreement: share of pairs where log p(real) - log p(other), summed over both "
                  "orders, favours the real reply (a constant position bias cancels in the sum)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
