"""Per-user adapters on the embedded model (SmolLM2-135M-Instruct), measured on this machine.

1. train: seconds to train one user's LoRA adapter from 100 of their MovieLens items, and its bytes.
2. throughput: label scoring of a batch with 8 different users' adapters in one forward pass (peft's
   per-row `adapter_names`) vs the same 8 rows one user at a time (switching the active adapter),
   both with all adapters already loaded; the ratio is what matters on a shared machine.
   --batched (alone): generation for batches of 8 users' adapters on the bare model, through peft's mixed
   path (a loop over adapters in every LoRA layer) and through `pllm.adapt.batched_lora` (stacked, two bmm),
   with 8, 64 (or `--rotation N ...`) adapters in rotation.
3. --movielens: on the `movielens-rating` test users (20+ items each): no personalization, RAG alone
   (bm25@k), user adapter alone, adapter + RAG; and for the same users cut to their latest few items
   (cold start): none, RAG, and the group adapter they are routed to. Metrics with 95% bootstrap CIs,
   written to --results (report.md / report.json).

    python benchmarks/adapters.py --quick
    python benchmarks/adapters.py --batched --threads 1 --rotation 8 64
    python benchmarks/adapters.py --movielens --users 50 --results docs/results/adapters --out bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np


def _task_questions(seed: int) -> tuple[Any, list, list]:
    from pllm.data import BuildConfig, build_dataset
    from pllm.data.base import config_record
    from pllm.data.movielens import find_movielens
    from pllm.paths import pllm_home
    from pllm.tasks.lamp import read_questions
    from pllm.tasks.spec import get_task

    spec = get_task("movielens-rating")
    task_dir = pllm_home() / "tasks" / f"movielens-rating-user-s{seed}"
    build = BuildConfig(source=str(find_movielens(None)), out=str(task_dir), split="user", seed=seed)
    saved = task_dir / "build_config.json"
    if not saved.is_file() or json.loads(saved.read_text()) != config_record(build):
        build_dataset("movielens-rating", build)
    test = read_questions(task_dir / "test_questions.json", spec=spec, outputs=task_dir / "test_outputs.json")
    train = read_questions(task_dir / "train_questions.json", spec=spec, outputs=task_dir / "train_outputs.json")
    return spec, test, train


def _timeit(fn: Any, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_train_and_throughput(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from pllm.adapt import AdaptConfig, AdapterGenerator, AdapterStore, train_adapter
    from pllm.adapt.data import user_items
    from pllm.models import load_generator
    from pllm.pipeline import MethodConfig, Personalizer

    spec, test, _ = _task_questions(args.seed)
    gen = load_generator("hf")
    store = AdapterStore(root)
    items = user_items(test)
    rich = sorted((u for u in items if len(items[u]) >= args.items), key=lambda u: (-len(items[u]), u))
    user = rich[0]
    config = AdaptConfig(max_items=args.items, epochs=args.epochs, min_items=1, top_layers=args.top_layers,
                         lr=args.lr)
    record, _ = train_adapter(gen, spec, kind="user", owner=user, items_by_user={user: items[user]},
                              config=config, store=store, force=True)
    out: dict[str, Any] = {
        "train": {"user": user, "items": record.n_pairs, "epochs": config.epochs, "steps": len(record.losses),
                  "seconds": record.train_seconds, "adapter_bytes": record.bytes,
                  "loss_first": record.losses[0], "loss_last": record.losses[-1], "method": config.method,
                  "r": config.r, "top_layers": config.top_layers,
                  "target_modules": sorted(config.peft_config(gen.model.config.num_hidden_layers).target_modules)}}
    print(json.dumps({"train": out["train"]}), file=sys.stderr, flush=True)  # kept even if a later part dies
    if args.train_only:
        return out
    # 8 users' adapters for the throughput test: one optimizer step each on one pair (real, distinct
    # adapters; their values do not change the speed being measured).
    eight = [u for u in sorted(items, key=lambda u: (-len(items[u]), u)) if u != user][:8]
    quick = replace(config, max_steps=1, batch_size=1)
    for u in eight:
        train_adapter(gen, spec, kind="user", owner=u, items_by_user={u: items[u]}, config=quick, store=store)
    agen = AdapterGenerator(gen, spec.name, store=store, cold_start_items=1)
    qs = [next(q for q in test if q.user_id == u) for u in eight]
    built = Personalizer(spec, agen, MethodConfig(retriever="recency", k=args.k)).build_prompts(qs)
    prompts = [b.prompt for b in built]
    labels = [" " + lab for lab in spec.labels]
    agen.score(prompts, labels)  # loads all 8 adapters
    peft_model = gen.model
    names = [agen.route(q).name for q in qs]

    def mixed() -> None:
        gen.score(prompts, labels, batch_size=8, adapter_names=names)

    def switching() -> None:
        for p, name in zip(prompts, names):
            peft_model.set_adapter(name)
            gen.score([p], labels, batch_size=1)

    def base_batch() -> None:
        with peft_model.disable_adapter():
            gen.score(prompts, labels, batch_size=8)

    t_mixed, t_switch, t_base = (_timeit(f, args.repeats) for f in (mixed, switching, base_batch))
    out["throughput"] = {"users": len(eight), "prompt_tokens_mean": float(np.mean([b.prompt_tokens for b in built])),
                         "mixed_batch_s": round(t_mixed, 4), "one_user_at_a_time_s": round(t_switch, 4),
                         "base_batch_no_adapters_s": round(t_base, 4),
                         "mixed_rows_per_s": round(len(eight) / t_mixed, 2),
                         "switching_rows_per_s": round(len(eight) / t_switch, 2),
                         "speedup_mixed_vs_switching": round(t_switch / t_mixed, 2),
                         "mixed_overhead_vs_base": round(t_mixed / t_base, 2), "repeats": args.repeats}
    print(json.dumps({"throughput": out["throughput"]}), file=sys.stderr, flush=True)

    # The serving case: generating for 8 users at once (decoding is per-step bound, so batching pays)
    # vs one user at a time. Tokens/s counts the tokens each row really produced.
    new_tokens = 8 if args.quick else 32

    def gen_mixed() -> int:
        return sum(g.completion_tokens for g in gen.generate(prompts, max_new_tokens=new_tokens, batch_size=8,
                                                              adapter_names=names))

    def gen_switching() -> int:
        total = 0
        for p, name in zip(prompts, names):
            peft_model.set_adapter(name)
            total += gen.generate([p], max_new_tokens=new_tokens, batch_size=1)[0].completion_tokens
        return total

    gen_repeats = max(1, args.repeats // 2)
    tok_mixed, tok_switch = gen_mixed(), gen_switching()
    g_mixed, g_switch = _timeit(gen_mixed, gen_repeats), _timeit(gen_switching, gen_repeats)
    out["generation_throughput"] = {
        "users": len(eight), "max_new_tokens": new_tokens, "mixed_tokens": tok_mixed, "switching_tokens": tok_switch,
        "mixed_batch_s": round(g_mixed, 3), "one_user_at_a_time_s": round(g_switch, 3),
        "mixed_tok_per_s": round(tok_mixed / g_mixed, 1), "switching_tok_per_s": round(tok_switch / g_switch, 1),
        "speedup_mixed_vs_switching": round((tok_mixed / g_mixed) / (tok_switch / g_switch), 2),
        "repeats": gen_repeats}
    return out


REVIEW_PROMPTS = ["Write a long review of the movie {0}: the plot, the actors, the music and the ending.",
                  "Tell a friend about {0} in detail: who should watch it and why, scene by scene."]
BATCHED_MODES = ("bare", "peft_mixed", "batched")
MOVIES = ["Heat", "Fargo", "Alien", "Casablanca", "Vertigo", "Jaws", "Rocky", "Amelie"]


def bench_batched(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Generation for batches of 8 rows, each row a different user's LoRA adapter (r=8 on q/v, the default
    recipe's shape; random small weights, which do not change the speed), on the bare model, through peft's
    mixed path and through batched LoRA (both `AdapterPool`s), with N adapters in rotation: a pass runs N/8
    batches so every adapter serves once. Modes alternate pass by pass (in reversed order every other pass),
    so the machine's other load, and its drift, falls on all three alike; tok/s is the median over timed
    passes (after one warm-up pass that loads the adapters)."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    from pllm.adapt.pool import AdapterPool, PoolConfig
    from pllm.adapt.store import AdapterStore, named_record
    from pllm.models import load_generator
    from pllm.models.base import Prompt
    from pllm.models.hf import HFGenerator

    bare = load_generator("hf")  # device and dtype: PLLM_DEVICE / PLLM_DTYPE (the GPU script sets bfloat16)
    assert isinstance(bare, HFGenerator)
    prompts = [Prompt(text=REVIEW_PROMPTS[i % 2].format(MOVIES[i % len(MOVIES)])) for i in range(args.batch)]
    if any(n % args.batch for n in args.rotation):
        raise SystemExit(f"--rotation {args.rotation}: each must be a multiple of --batch {args.batch}")
    store = AdapterStore(root)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, task_type="CAUSAL_LM")
    model = get_peft_model(copy.deepcopy(bare.model), lora)
    records = {}
    t0 = time.perf_counter()
    for i in range(max(args.rotation)):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.normal_(0, 0.02)
        records[f"u{i}"] = store.write(named_record(f"u{i}", "lora", bare.model_id),
                                       model.save_pretrained)
    print(f"wrote {len(records)} adapters in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    pools = {mode: AdapterPool(bare, PoolConfig(private=True, batched_lora=mode == "batched",
                                                memory_budget_mb=args.budget_mb))
             for mode in ("peft_mixed", "batched") if mode in args.modes}

    def one_pass(mode: str, n: int) -> tuple[int, float]:
        tokens, t0 = 0, time.perf_counter()
        for b in range(n // len(prompts)):
            names = [f"u{(b * len(prompts) + j) % n}" for j in range(len(prompts))]
            kw = {"max_new_tokens": args.new_tokens, "batch_size": len(prompts)}
            gens = (bare.generate(prompts, **kw) if mode == "bare" else
                    pools[mode].generate(prompts, names, records=records, **kw))
            tokens += sum(g.completion_tokens for g in gens)
        return tokens, time.perf_counter() - t0

    out: dict[str, Any] = {"batch": len(prompts), "device": str(bare.model.device),
                           "dtype": str(bare.model.dtype).removeprefix("torch."), "max_new_tokens": args.new_tokens,
                           "adapter_bytes": records["u0"].bytes, "budget_mb": args.budget_mb, "rotations": {}}
    for n in args.rotation:
        runs: dict[str, list[float]] = {m: [] for m in args.modes}
        tokens: dict[str, int] = {}
        for rep in range(args.rotation_repeats + 1):
            for mode in (list(runs) if rep % 2 else list(runs)[::-1]):  # alternate the order: load drifts
                tok, secs = one_pass(mode, n)
                if rep:  # the first pass warms up (and loads the adapters)
                    runs[mode].append(tok / secs)
                    tokens[mode] = tok
        row: dict[str, Any] = {f"{m}_tok_per_s": round(statistics.median(v), 1) for m, v in runs.items()}
        if {"bare", "batched"} <= set(runs):
            row["batched_vs_bare_slowdown"] = round(row["bare_tok_per_s"] / row["batched_tok_per_s"], 2)
        if {"peft_mixed", "batched"} <= set(runs):
            row["batched_vs_peft_speedup"] = round(row["batched_tok_per_s"] / row["peft_mixed_tok_per_s"], 2)
        row.update(tokens_per_pass=tokens, passes=args.rotation_repeats,
                   resident={m: len(p.adapter_names()) for m, p in pools.items() if m in runs},
                   loads={m: p.stats["loads"] for m, p in pools.items() if m in runs},
                   load_avg_1min=round(os.getloadavg()[0], 2))
        out["rotations"][str(n)] = row
        print(json.dumps({f"rotation_{n}": row}), file=sys.stderr, flush=True)
    return out


def bench_movielens(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from pllm.adapt import AdaptConfig, AdapterGenerator, AdapterStore
    from pllm.adapt.data import user_items
    from pllm.adapt.jobs import source_for, train_groups, train_users
    from pllm.eval.report import summarize, write_predictions, write_report
    from pllm.eval.runner import run_method
    from pllm.models import load_generator
    from pllm.paths import pllm_home
    from pllm.pipeline import MethodConfig

    spec, test, train = _task_questions(args.seed)
    test = [q for q in test if len(q.profile) >= 20][: args.users]
    if len(test) < args.users:
        print(f"note: only {len(test)} test users with 20+ items", file=sys.stderr)
    config = AdaptConfig(max_items=args.ml_items, epochs=args.epochs, min_items=10, top_layers=args.top_layers,
                         lr=args.lr)
    store = AdapterStore(root)
    gen = load_generator("hf")
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    rag = MethodConfig(retriever="bm25", k=args.k)
    results = [run_method(spec, test, gen, MethodConfig(), name="none", batch_size=8),
               run_method(spec, test, gen, rag, name=f"RAG bm25@{args.k}", batch_size=8)]
    # Cold start: the same questions, each user cut to their latest `cold_items` items.
    cold = [replace(q, profile=q.profile[-args.cold_items:]) for q in test]
    cold_results = [run_method(spec, cold, gen, MethodConfig(), name="none", batch_size=8),
                    run_method(spec, cold, gen, rag, name=f"RAG bm25@{args.k}", batch_size=8)]
    timings["base_methods_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    report = train_users(gen, spec, user_items(test), config, store,
                         progress=lambda label, d, n: print(f"\r{label} {d}/{n}", end="", file=sys.stderr))
    timings["user_adapters_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    groups = []
    if args.groups:
        groups = train_groups(gen, spec, user_items(train), replace(config, max_items=args.group_items), store,
                              n_groups=args.groups, embedder=args.embedder,
                              source=source_for(pllm_home() / "tasks" / f"movielens-rating-user-s{args.seed}",
                                                "train"),
                              max_pairs=args.group_pairs)
    timings["group_adapters_s"] = time.perf_counter() - t2
    agen = AdapterGenerator(gen, spec.name, store=store, cold_start_items=10)
    results += [run_method(spec, test, agen, MethodConfig(), name="user adapter", batch_size=8),
                run_method(spec, test, agen, rag, name=f"user adapter + RAG bm25@{args.k}", batch_size=8)]
    if groups:  # cold users have < 10 items: the router sends them to their group's adapter
        cold_results += [run_method(spec, cold, agen, MethodConfig(), name="group adapter", batch_size=8),
                         run_method(spec, cold, agen, rag, name=f"group adapter + RAG bm25@{args.k}", batch_size=8)]
    routes = {q.user_id: agen.route(q).kind for q in cold}
    out_dir = Path(args.results)
    rows = summarize(spec, results)
    cold_rows = summarize(spec, cold_results)
    meta = {"model": gen.model_id, "users": len(test), "adapter_config": config.__dict__,
            "trained_user_adapters": len(report.trained) + len(report.skipped),
            "mean_user_adapter_train_s": float(np.mean([r.train_seconds for r in report.records.values()])),
            "groups": {g.owner: len(g.members) for g in groups}, "group_embedder": args.embedder,
            "group_pairs": args.group_pairs, "timings_s": {k: round(v, 1) for k, v in timings.items()},
            "machine": "shared 2-core CPU (other jobs running), fp32"}
    write_report(out_dir / "warm", spec, rows, title="Per-user adapters on movielens-rating (20+ items)", meta=meta)
    write_report(out_dir / "cold", spec, cold_rows, title=f"Cold start: the same users cut to their latest "
                 f"{args.cold_items} items", meta={**meta, "routes": dict(sorted(
                     {k: sum(1 for v in routes.values() if v == k) for k in set(routes.values())}.items()))})
    for res in results:
        write_predictions(out_dir / "warm", spec, res.method, res.records)
    for res in cold_results:
        write_predictions(out_dir / "cold", spec, res.method, res.records)

    def table(rs: list) -> list[dict[str, Any]]:
        return [{"method": r.method, **{m: r.metrics[m].fmt() for m in spec.metrics},
                 "vs_none": r.vs_none[spec.primary_metric].fmt() if r.vs_none else "—"} for r in rs]

    return {"warm": table(rows), "cold": table(cold_rows), "meta": meta}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="Fewer repeats and a shorter adapter training.")
    parser.add_argument("--items", type=int, default=100, help="Items the timed user adapter is trained on.")
    parser.add_argument("--epochs", type=int, default=2, help="Epochs of adapter training.")
    parser.add_argument("--top-layers", type=int, default=None,
                        help="Adapt only the top N layers (default: all; see AdaptConfig.top_layers).")
    parser.add_argument("--k", type=int, default=4, help="Retrieved demonstrations (RAG and throughput prompts).")
    parser.add_argument("--repeats", type=int, default=5, help="Timing repeats (median).")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads.")
    parser.add_argument("--seed", type=int, default=0, help="Dataset split seed.")
    parser.add_argument("--skip-speed", action="store_true", help="Skip parts 1-2 (train time, throughput).")
    parser.add_argument("--train-only", action="store_true", help="Part 1 only: time one adapter's training.")
    parser.add_argument("--batched", action="store_true",
                        help="Only compare generation: bare model / peft's mixed path / batched LoRA.")
    parser.add_argument("--batch", type=int, default=8, help="--batched: rows per batch, each a different adapter.")
    parser.add_argument("--rotation", type=int, nargs="+", default=[8, 64],
                        help="--batched: adapters in rotation (multiples of --batch).")
    parser.add_argument("--rotation-repeats", type=int, default=2, help="--batched: timed passes per rotation.")
    parser.add_argument("--modes", nargs="+", choices=BATCHED_MODES, default=list(BATCHED_MODES),
                        help="--batched: which to time (leave peft_mixed out for a long rotation).")
    parser.add_argument("--new-tokens", type=int, default=32, help="--batched: tokens generated per row.")
    parser.add_argument("--budget-mb", type=float, default=1024.0, help="--batched: the pools' memory budget.")
    parser.add_argument("--movielens", action="store_true", help="Also run the movielens-rating comparison.")
    parser.add_argument("--users", type=int, default=50, help="movielens: test users (20+ items each).")
    parser.add_argument("--ml-items", type=int, default=40, help="movielens: latest items per user adapter.")
    parser.add_argument("--cold-items", type=int, default=8, help="movielens: items kept for cold-start users.")
    parser.add_argument("--groups", type=int, default=4, help="movielens: k-means groups (0: no group adapters).")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adapter learning rate.")
    parser.add_argument("--group-items", type=int, default=20, help="movielens: latest items per group member.")
    parser.add_argument("--group-pairs", type=int, default=240, help="movielens: training pairs per group.")
    parser.add_argument("--embedder", default="minilm", help="Embedder for grouping users.")
    parser.add_argument("--results", default="docs/results/adapters", help="movielens report folder.")
    parser.add_argument("--out", default=None, help="Write the JSON result here.")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.items = 2, min(args.items, 40)
        args.users, args.ml_items, args.group_pairs = min(args.users, 8), min(args.ml_items, 16), 48
    import torch

    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"threads": args.threads, "cpu_count": os.cpu_count(),
                              "load_avg_1min_at_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="pllm-bench-adapters-") as tmp:
        if args.batched:
            result["batched_generation"] = bench_batched(args, Path(tmp) / "batched")
        elif not args.skip_speed:
            result.update(bench_train_and_throughput(args, Path(tmp) / "speed"))
        if args.movielens:
            result["movielens"] = bench_movielens(args, Path(tmp) / "movielens")
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if "throughput" in result:
        t, th = result["train"], result["throughput"]
        print(f"\n| measure | value |\n|---|---|\n| train 1 user ({t['items']} items, {t['steps']} steps) | "
              f"{t['seconds']:.1f} s |\n| adapter bytes | {t['adapter_bytes']:,} |\n| mixed batch of 8 users | "
              f"{th['mixed_batch_s']:.3f} s |\n| one user at a time | {th['one_user_at_a_time_s']:.3f} s |\n"
              f"| speed-up (label scoring) | {th['speedup_mixed_vs_switching']}x |")
        g = result.get("generation_throughput")
        if g:
            print(f"| generation, mixed batch of 8 users | {g['mixed_tok_per_s']} tok/s |\n"
                  f"| generation, one user at a time | {g['switching_tok_per_s']} tok/s |\n"
                  f"| speed-up (generation) | {g['speedup_mixed_vs_switching']}x |")
    batched = result.get("batched_generation", {})
    for n, b in batched.get("rotations", {}).items():
        modes = [m for m in BATCHED_MODES if f"{m}_tok_per_s" in b]
        print(f"| batch {batched['batch']}, {n} adapters in rotation: {' / '.join(modes)} | "
              f"{' / '.join(str(b[f'{m}_tok_per_s']) for m in modes)} tok/s |")
    if args.out:
        Path(args.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
