"""A fine-tuned LLM ranker and a two-stage hybrid on `movielens-rec` (docs/results/rec-learned/).

Three disjoint groups of users, all from one seeded build (time split, 20 candidates per list):
- **test**: the same 300 test lists as docs/results/rec (each user's latest liked movie);
- **fit**: dev lists (the second-latest liked movie) of other users, for fitting the hybrid's blend;
- **train**: train lists (the third-latest) of the remaining users, for fine-tuning the LLM ranker.

`llm-pointwise-ft` is SmolLM2 with one LoRA trained on the train group's lists (target "Yes", sampled unrated
candidates "No"), prompted with bm25@k history (`--retriever cf`: the user's history items most co-rated with
the candidate by the other users, the asker left out) and the crowd line (how many other users rated the candidate,
what share liked it, read from exactly the ratings the classic rankers are fitted on). LLM alone.
`hybrid` blends its score with mf-als, itemknn and popularity (`pllm.rec.hybrid.Stacker`, logistic regression
on within-list z-scores and ranks, fixed beforehand); `hybrid-cf` is the same blend without the LLM. Both are
fitted on the fit group's lists, scored by classic rankers fitted without those lists' targets and by the same
fine-tuned LLM; nothing is chosen on the test lists.

    python benchmarks/rec_learned.py --out-dir docs/results/rec-learned --threads 1
    python benchmarks/rec_learned.py --quick   # 20 test, 20 fit lists, 40 training texts
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

LLM = "llm-pointwise-ft"


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="MovieLens-100k folder (default: ../shared/data/movielens-100k).")
    p.add_argument("--users", type=int, default=300, help="Test users (one list each), as docs/results/rec.")
    p.add_argument("--fit-users", type=int, default=150, help="Users whose dev lists fit the hybrid blend.")
    p.add_argument("--ft-pairs", type=int, default=1200, help="Training texts (lists x (1 + train negatives)).")
    p.add_argument("--train-negatives", type=int, default=3, help="Unrated candidates (No) per training list.")
    p.add_argument("--negatives", type=int, default=19, help="Unrated movies per list (list = negatives + 1).")
    p.add_argument("--retriever", default="bm25", help="History retriever of the LLM ranker.")
    p.add_argument("--k", type=int, default=4, help="History items per prompt.")
    p.add_argument("--no-crowd", action="store_true", help="Leave the crowd line out of the LLM prompt.")
    p.add_argument("--crowd-rank", action="store_true", help="Crowd line with the candidate's standing by raters "
                                                              "('top 8%% of items').")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="/tmp/pllm-rec-learned", help="Adapters and per-list checkpoints (resume).")
    p.add_argument("--out-dir", default=None, help="Write report.json and report.md here.")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    p.add_argument("--train-only", action="store_true", help="Stop once the LLM ranker's adapter is trained.")
    p.add_argument("--shard", default=None, help="i/n: score only every n-th list with the LLM (parallel processes; "
                                                  "a last run without it assembles the report).")
    p.add_argument("--stages", default="test,fit", help="With --shard: which lists to score (fit lists first lets "
                                                        "a variant be judged on them before any test list; "
                                                        "'untrained': the base model on the test lists).")
    p.add_argument("--untrained", type=int, default=0, help="Also rank the first N test lists with the base model "
                                                             "and the same prompt (what fine-tuning adds).")
    p.add_argument("--no-hybrid", action="store_true", help="LLM-alone rows only: no fit-list scoring, no blend.")
    p.add_argument("--also", action="append", default=[], metavar="LABEL=CHECKPOINT",
                   help="Add a row from another run's recorded test-list scores (e.g. an earlier variant), paired "
                        "on the same lists; repeatable.")
    p.add_argument("--ensemble", action="append", default=[], metavar="LABEL=CHECKPOINT",
                   help="Add a row LABEL: the mean of this run's fine-tuned ranker and another run's recorded scores "
                        "(standardized within each list; LLM alone when that run was one too); repeat with the same "
                        "LABEL to add members.")
    p.add_argument("--dev", action="store_true", help="Report on the fit (dev) lists instead of the test lists: "
                                                     "LLM-alone rows against the classic rankers fitted without "
                                                     "them, to choose a variant before any test list is scored "
                                                     "(--also then names fit-list checkpoints).")
    p.add_argument("--quick", action="store_true", help="20 test lists, 20 fit lists, 40 training texts.")
    a = p.parse_args(argv)
    if a.quick:
        a.users, a.fit_users, a.ft_pairs = min(a.users, 20), min(a.fit_users, 20), min(a.ft_pairs, 40)
        a.work = a.work.rstrip("/") + "-quick"
    return a


def groups(args: argparse.Namespace) -> tuple[dict[str, list[Any]], Any, dict[str, Any]]:
    """test / fit / train lists from one build, users disjoint; test = rec.py's seeded sample."""
    from rec import rec_splits, sample_test_lists

    splits, ml, build = rec_splits(args)
    test = sample_test_lists(splits, args)
    taken = {q.user_id for q in test}
    dev = [q for q in splits["dev"] if q.user_id not in taken]
    fit = sorted(random.Random(args.seed + 1).sample(dev, min(args.fit_users, len(dev))), key=lambda q: int(q.user_id))
    taken |= {q.user_id for q in fit}
    train = [q for q in splits["train"] if q.user_id not in taken]
    return {"test": test, "fit": fit, "train": train}, ml, build


def _progress(label: str, done: int, total: int) -> None:
    if done == total or done % 10 == 0:
        print(f"[rec-learned] {label}: {done}/{total}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from pllm.adapt.store import AdapterStore
    from pllm.io import to_jsonable
    from pllm.models import load_generator
    from pllm.rec.hybrid import MeanRanker, RecordedRanker, fit_hybrids, fit_stage
    from pllm.rec.rankers import FinetunedPointwiseRanker, PointwiseConfig, PointwiseRanker, train_pointwise_adapter
    from pllm.rec.runner import markdown_table, recorded_scores, run_ranker, summarize, write_report

    t_start = time.perf_counter()
    lists, ml, build = groups(args)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    # Test-stage collaborative data hides the test lists' targets and later; fit-stage also the fit lists'.
    stages = {"test": fit_stage(ml, lists["test"], ("random", "popularity", "itemknn", "mf-als")),
              "fit": fit_stage(ml, lists["test"] + lists["fit"])}
    crowd = {s: None if args.no_crowd else st.crowd for s, st in stages.items()}

    config = PointwiseConfig(retriever=args.retriever, k=args.k, crowd=not args.no_crowd, crowd_rank=args.crowd_rank)
    base = load_generator("hf")
    t0 = time.perf_counter()
    record, trained = train_pointwise_adapter(
        base, lists["train"], config, store=AdapterStore(work / "adapters"), crowd=crowd["test"],
        negatives=args.train_negatives, max_pairs=args.ft_pairs, seed=args.seed,
        progress=lambda i, n: _progress("training steps", i, n))
    train_wall = time.perf_counter() - t0
    if args.train_only:
        print(f"adapter {record.path} ({'trained' if trained else 'cached'}, {record.train_seconds:.0f} s)")
        return {}
    ft = FinetunedPointwiseRanker(base, config, adapter=record, crowd=crowd["test"])
    ft_fit = PointwiseRanker(ft.generator, config, crowd=crowd["fit"])  # the same merged model, fit-stage crowd

    ck = {**{s: work / f"{LLM}.{s}.jsonl" for s in stages}, "untrained": work / "llm-pointwise.test.jsonl"}
    untrained = PointwiseRanker(base, config, crowd=crowd["test"])  # the base model: `ft` merged into a copy
    if args.shard:
        i, n = (int(x) for x in args.shard.split("/"))
        for s, ranker, qs in (("fit", ft_fit, lists["fit"]), ("test", ft, lists["test"]),
                              ("untrained", untrained, lists["test"][:args.untrained])):
            if s in args.stages.split(","):
                run_ranker(ranker, qs[i::n], label=f"{s}, shard {i}/{n}", checkpoint=ck[s].with_suffix(f".s{i}.jsonl"),
                           progress=_progress)
        return {}
    scored = "fit" if args.dev else "test"  # the lists this report ranks
    stage = stages[scored]
    results = [run_ranker(r, lists[scored], fit_seconds=stage.fit_seconds[n])
               for n, r in stage.rankers.items()]
    results.append(run_ranker(ft_fit if args.dev else ft, lists[scored], label=LLM, checkpoint=ck[scored],
                              progress=_progress, fit_seconds=record.train_seconds))
    if args.untrained and not args.dev:
        results.append(run_ranker(untrained, lists["test"][:args.untrained], progress=_progress,
                                  label="llm-pointwise (same prompt, untrained)", checkpoint=ck["untrained"]))
    also = dict(a.partition("=")[::2] for a in args.also)  # label -> checkpoint
    for label, path in also.items():
        results.append(run_ranker(RecordedRanker(label, recorded_scores(path)), lists[scored], label=label))
    ensembles: dict[str, list[str]] = {}
    for entry in args.ensemble:  # label -> other runs' checkpoints, each averaged with this run's ranker
        label, _, path = entry.partition("=")
        ensembles.setdefault(label, []).append(path)
    for label, paths in ensembles.items():
        members = [RecordedRanker(LLM, recorded_scores(ck[scored]))]
        members += [RecordedRanker(p, recorded_scores(p)) for p in paths]
        results.append(run_ranker(MeanRanker(label, members, kind="llm"), lists[scored], label=label))
        also[label] = ",".join(paths)  # paired against this run's ranker below
    stacks = []
    if not (args.no_hybrid or args.dev):
        run_ranker(ft_fit, lists["fit"], label=f"{LLM} (fit lists)", checkpoint=ck["fit"], progress=_progress)
        llm = {s: RecordedRanker(LLM, recorded_scores(ck[s])) for s in stages}
        stacks = fit_hybrids(LLM, llm, stages, lists["fit"])
        results += [run_ranker(h, lists["test"], label=h.label) for h in stacks]

    vs_pop = summarize(results, reference="popularity")
    vs_mf = summarize(results, reference="mf-als")
    vs_cf = summarize([r for r in results if r.ranker in ("hybrid", "hybrid-cf")], reference="hybrid-cf")
    vs_llm = summarize([r for r in results if r.ranker == LLM or r.ranker in also], reference=LLM) if also else []
    meta = {
        "command": "python benchmarks/rec_learned.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "scored_lists": scored, "users": {s: len(q) for s, q in lists.items()},
        "candidates_per_user": args.negatives + 1, "build": build,
        "interactions": {s: int(st.interactions.matrix.nnz) for s, st in stages.items()},
        "ranker_config": dataclasses.asdict(config),
        "adapter": {"path": str(record.path), "trained_now": trained, "train_seconds": record.train_seconds,
                    "train_wall_seconds": round(train_wall, 1), "pairs": record.n_pairs,
                    "lists": record.source.get("lists"), "losses_first_last": [record.losses[:5], record.losses[-5:]],
                    "recipe": record.config},
        "stack_weights": {h.label: h.stacker.weights() for h in stacks},
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
    }
    payload = to_jsonable({"meta": meta, "rankers": vs_pop, "vs_mf": vs_mf, "hybrid_vs_cf": vs_cf, "vs_llm": vs_llm})
    print(markdown_table(vs_pop))
    if args.out_dir:
        extra = ["", "## Against MF (mf-als)", "", markdown_table(vs_mf, reference="mf-als")]
        if stacks:
            extra += ["## The hybrid against its twin without the LLM", "",
                      markdown_table(vs_cf, reference="hybrid-cf")]
        if vs_llm:
            extra += [f"## Against this run's {LLM}", "", markdown_table(vs_llm, reference=LLM)]
        extra.append(_notes(meta))
        write_report(args.out_dir, vs_pop, meta=payload["meta"], extra_md="\n".join(extra),
                     title="Recommendation on MovieLens-100k: a fine-tuned LLM ranker and a two-stage hybrid"
                     + (" (fit lists: dev, for choosing a variant)" if args.dev else ""))
    _ = np
    return payload


def _notes(meta: dict[str, Any]) -> str:
    a = meta["adapter"]
    return "\n".join([
        "", f"Lists: {meta['users']['test']} test users (the sample of docs/results/rec), "
        f"{meta['users']['fit']} fit users (their dev list), {meta['users']['train']} train lists of the remaining "
        f"users; {meta['candidates_per_user']} candidates per list. Users never cross groups.",
        f"`llm-pointwise-ft`: one LoRA (recipe in report.json) trained on {a['pairs']} texts from {a['lists']} "
        f"train lists in {a['train_seconds']:.0f} s; the crowd line reads the ratings the classic rankers are "
        "fitted on, never the asking user's.",
        ("`hybrid` / `hybrid-cf`: logistic regression over within-list z-scores and ranks of the components "
         f"(weights: {meta['stack_weights']}), fitted on the fit lists, scored by classic rankers fitted without "
         "those lists' targets; hybrid rows are not LLM-alone results." if meta["stack_weights"] else
         "No hybrid in this run (`--no-hybrid`): LLM-alone rows only."),
        "Intervals: 95% percentile bootstrap over users (1,000 resamples); Δ paired on the same users.",
        f"Machine: {meta['machine']}; whole run {meta['wall_seconds']:.0f} s.",
        f"Reproduce: `{meta['command']}`."])


if __name__ == "__main__":
    main()
