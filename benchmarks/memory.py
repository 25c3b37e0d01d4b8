"""Conversation memory: can each retriever option find the turn that holds the answer in a long history?

On `pllm data build persona-chat-memory` (built here into a temporary folder from Synthetic-Persona-Chat
unless `--data` names a built one; `--builder persona-chat-memory-paraphrased` asks the same questions in other
words than the facts), every test user's turns (30 dated sessions, ~430 turns) are indexed once
per retriever and searched with each of the user's questions at the question's time. Reported per question
type (single, update, temporal, multi) and overall, with 95% bootstrap intervals over questions:

- recall@k: the share of the question's gold evidence turns in the top k;
- hit@k: at least one evidence turn in the top k;
- full@k: every evidence turn in the top k (differs from hit only for two-turn facts).

Options that ask a model (the re-rankers, query rewriting) use the embedded SmolLM2-135M; `NAME:BASE` in
`--retrievers` builds a composite option on another base (`rerank-llm:bm25`). Each option's cost is its search
time per question, and its counters (model fallbacks, unparsable answers) are reported.

Also the paired difference in recall@10 of each option against bm25 and against its base; (`--answers N`)
answer accuracy of the embedded model (SmolLM2-135M, greedy) on N questions spread over the types, through the
pipeline's prompts with k=5 memories of each `--answer-retrievers` option (the answer counts when the planted
value is in it); and (`--ingest N`) raw-memory ingestion speed: N chat turns written through the memory API
(`POST /v1/users/{u}/items`, in-process, `--batch` turns per request, embeddings batched per request) into a
fresh store.

    python benchmarks/memory.py --users 48 --answers 24 --ingest 2000 --out docs/results/memory  # 12 test users
    python benchmarks/memory.py --quick                                      # 16 users (4 test), bag of words
    python benchmarks/memory.py --ingest 2000 --latency 10 --skip-retrieval
    python benchmarks/memory.py --ingest 2000 --skip-retrieval --threads 2   # ingestion alone, 2 threads
    python benchmarks/memory.py --ingest 2000 --skip-retrieval --threads 1 --embed-precision bfloat16
    python benchmarks/memory.py --retrievers bm25 dense --embed-precision bfloat16 --out docs/results/memory \
        --name recall-bf16                                                  # bf16 vectors' recall
    python benchmarks/memory.py --retrievers bm25 hybrid rerank-llm rerank-llm:bm25 rewrite rewrite:bm25 \
        --data persona-chat-memory --out docs/results/memory --name rerank       # model-based options
    python benchmarks/memory.py --builder persona-chat-memory-paraphrased --retrievers bm25 dense hybrid dated \
        window --out docs/results/memory --name paraphrased                     # questions in other words
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pllm.data import BuildConfig, build_dataset  # noqa: E402
from pllm.models.base import Generator  # noqa: E402
from pllm.retrieval import Doc, Embedder, MemoryEmbeddingCache, load_embedder, make_retriever  # noqa: E402
from pllm.retrieval.base import RETRIEVERS as REGISTRY  # noqa: E402
from pllm.retrieval.base import item_group, merge_counters, retriever_options
from pllm.retrieval.embedders import PRECISIONS  # noqa: E402
from pllm.stats import mean_interval, paired_mean_difference  # noqa: E402
from pllm.tasks.lamp import read_questions  # noqa: E402
from pllm.types import Question  # noqa: E402

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthetic-persona-chat"
RETRIEVERS = ("bm25", "dense", "hybrid", "dated", "window")
BUILDERS = ("persona-chat-memory", "persona-chat-memory-paraphrased")
KS = (1, 5, 10)
TYPES = ("single", "update", "temporal", "multi")


def load_test_questions(data: Path, split: str = "test") -> list[Question]:
    return read_questions(data / f"{split}_questions.json", outputs=data / f"{split}_outputs.json")


def option_parts(option: str) -> tuple[str, str | None]:
    """`NAME` or `NAME:BASE` (a composite retriever on another base)."""
    name, _, base = option.partition(":")
    return name, base or None


def evaluate(questions: Sequence[Question], retrievers: Sequence[str], embedder: Embedder | None,
             ks: Sequence[int], generator: Generator | None = None,
             on_result: Callable[[dict[str, dict[str, Any]]], None] | None = None) -> dict[str, dict[str, Any]]:
    """Per retriever option: per-question scores (recall/hit/full at each k), types, timings, counters and the
    name of its base (composites); `on_result` sees the results so far after each option."""
    by_user: dict[str, list[Question]] = {}
    for q in questions:
        by_user.setdefault(q.user_id, []).append(q)
    cache = MemoryEmbeddingCache()  # item vectors shared by dense, hybrid and dated (window's texts differ)
    out: dict[str, dict[str, Any]] = {}
    kmax = max(ks)
    for option in retrievers:
        name, base = option_parts(option)
        scores: dict[str, list[float]] = {f"{m}@{k}": [] for m in ("recall", "hit", "full") for k in ks}
        types: list[str] = []
        build_s = search_s = 0.0
        counters: dict[str, int] = {}
        base_name: str | None = None
        for user, qs in by_user.items():
            docs = [Doc(text=str(p.fields["text"]), timestamp=p.timestamp, group=item_group(p.fields))
                    for p in qs[0].profile]
            ids = [p.id for p in qs[0].profile]
            t0 = time.perf_counter()
            options = retriever_options(name, embedder=embedder, cache=cache, user_id=user, generator=generator)
            retriever = make_retriever(name, **options, **({"base": base} if base else {}))
            base_of = getattr(retriever, "base", None)  # a composite's base retriever
            base_name = base_of.name if base_of is not None else None
            index = retriever.build(docs)
            build_s += time.perf_counter() - t0
            for q in qs:
                t0 = time.perf_counter()
                hits = index.search(str(q.query["question"]), kmax, query_timestamp=q.timestamp, seed_key=q.id)
                search_s += time.perf_counter() - t0
                ranked = [ids[h.index] for h in hits]
                gold = set(q.query["evidence"])
                for k in ks:
                    found = len(gold & set(ranked[:k]))
                    scores[f"recall@{k}"].append(found / len(gold))
                    scores[f"hit@{k}"].append(float(found > 0))
                    scores[f"full@{k}"].append(float(found == len(gold)))
                types.append(str(q.query["type"]))
            counters = merge_counters([counters, index.counters()])
        out[option] = {"scores": scores, "types": types, "build_s": build_s, "search_s": search_s,
                       "counters": counters, "base": base_name}
        if on_result is not None:
            on_result(out)
    return out


def summarize(results: dict[str, dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    base = results.get("bm25")
    for name, r in results.items():
        types = np.array(r["types"])
        row: dict[str, Any] = {"build_s": round(r["build_s"], 2), "search_ms_per_question":
                               round(1000 * r["search_s"] / max(1, len(types)), 2), "metrics": {}}
        if r.get("base"):
            row["base"] = r["base"]
        if r.get("counters"):
            row["counters"] = r["counters"]
        for metric, values in r["scores"].items():
            v = np.asarray(values)
            row["metrics"][metric] = {"all": _iv(mean_interval(v, seed=seed))}
            for t in TYPES:
                if (types == t).any():
                    row["metrics"][metric][t] = _iv(mean_interval(v[types == t], seed=seed))
        if base is not None and name != "bm25" and "recall@10" in r["scores"]:
            row["recall@10_minus_bm25"] = _iv(paired_mean_difference(r["scores"]["recall@10"],
                                                                     base["scores"]["recall@10"], seed=seed))
        own_base = results.get(str(r.get("base")))
        if own_base is not None and r.get("base") != "bm25":
            row["recall@10_minus_base"] = {m: _iv(paired_mean_difference(r["scores"][m], own_base["scores"][m],
                                                                         seed=seed))
                                           for m in ("recall@10", "recall@5", "recall@1") if m in r["scores"]}
        summary[name] = row
    return summary


def answer_accuracy(questions: Sequence[Question], n: int, retrievers: Sequence[str], seed: int = 0
                    ) -> dict[str, Any]:
    """Share of `n` questions (round-robin over the types) whose generated answer contains the planted value,
    per retriever ('none': no memories), through `pipeline.Personalizer` in the task's instruction prompt."""
    from pllm.models.base import load_generator
    from pllm.pipeline import MethodConfig, Personalizer
    from pllm.tasks.spec import get_task

    by_type = {t: [q for q in questions if q.query["type"] == t] for t in TYPES}
    picked = [by_type[t][i] for i in range(max(map(len, by_type.values()))) for t in TYPES
              if i < len(by_type[t])][:n]
    generator = load_generator("hf", None)
    spec = get_task("persona-chat-memory")
    out: dict[str, Any] = {"questions": len(picked), "model": generator.model_id, "by_retriever": {}}
    for name in retrievers:
        method = MethodConfig(retriever=name, k=5 if name != "none" else 0, style="instruction", predict="generate")
        t0 = time.perf_counter()
        records = Personalizer(spec, generator, method).predict(picked, batch_size=4)
        correct = [float(bool(r.prediction) and str(r.target).lower() in str(r.prediction).lower())
                   for r in records]
        types = np.array([str(q.query["type"]) for q in picked])
        out["by_retriever"][name] = {
            "accuracy": _iv(mean_interval(correct, seed=seed)),
            "by_type": {t: round(float(np.mean(np.asarray(correct)[types == t])), 3) for t in TYPES
                        if (types == t).any()},
            "seconds": round(time.perf_counter() - t0, 1),
            "examples": [{"question": q.input, "target": r.target, "answer": r.prediction}
                         for q, r in list(zip(picked, records, strict=True))[:4]]}
    return out


def _iv(iv: Any) -> dict[str, float]:
    return {"value": round(iv.value, 3), "low": round(iv.low, 3), "high": round(iv.high, 3)}


def ingest(n_turns: int, batch: int, embedder_name: str, threads: int | None = None,
           precision: str = "float32") -> dict[str, Any]:
    """Raw-memory ingestion through the memory API in-process: `n_turns` chat turns of one user in requests
    of `batch` items (ids, session and turn fields as `memory: raw` writes them), the server on `threads`
    torch threads and its embedder in `precision`. Also the process's CPU seconds: on a shared machine they
    move less with the load than the wall clock does."""
    from fastapi.testclient import TestClient

    from pllm.serve import ServeConfig, create_app

    texts = [f"turn {i}: " + t for i, t in enumerate(_sample_turns(n_turns))]
    with tempfile.TemporaryDirectory() as tmp:
        config = ServeConfig(db=str(Path(tmp) / "bench.sqlite3"), embedder=embedder_name, preload=False,
                             torch_threads=threads, embed_precision=precision)
        with TestClient(create_app(config)) as client:
            key = client.app.state.pllm.keys.create(tenant="bench")[0]
            headers = {"Authorization": f"Bearer {key}"}
            client.app.state.pllm.embedder()  # load the model before the clock starts
            t0, cpu0 = time.perf_counter(), time.process_time()
            for start in range(0, n_turns, batch):
                items = [{"id": f"chat-s{i // 20}-{i % 20}", "text": texts[i],
                          "fields": {"source": "chat", "session": f"s{i // 20}", "turn": i % 20}}
                         for i in range(start, min(n_turns, start + batch))]
                r = client.post("/v1/users/bench-user/items", json={"items": items}, headers=headers)
                assert r.status_code == 201, r.text
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"turns": n_turns, "batch": batch, "embedder": embedder_name, "precision": precision,
            "threads": threads, "seconds": round(elapsed, 2), "turns_per_s": round(n_turns / elapsed, 1),
            "cpu_seconds": round(cpu, 2), "turns_per_cpu_s": round(n_turns / cpu, 1)}


def chat_latency(n: int) -> dict[str, Any]:
    """Reply latency of the embedded model through `POST /v1/chat/completions` (in-process, 16 new tokens), with
    `memory: off`, `raw` and `extract` taking turns on the same server, so load drifts hit all alike; the
    write (and the extraction, a generation by the same model) runs after each reply, beside the next request,
    as in a live server."""
    from fastapi.testclient import TestClient

    from pllm.serve import ServeConfig, create_app

    modes = ("off", "raw", "extract")
    turns = _sample_turns(len(modes) * (n + 1))
    lat: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        config = ServeConfig(db=str(Path(tmp) / "bench.sqlite3"), embedder="minilm")
        with TestClient(create_app(config)) as client:
            key = client.app.state.pllm.keys.create(tenant="bench")[0]
            headers = {"Authorization": f"Bearer {key}"}
            model = client.app.state.pllm.model_id()
            for i in range(len(turns)):
                mode = modes[i % len(modes)]
                body = {"model": model, "user": "bench-user", "memory": mode, "session": "s", "max_tokens": 16,
                        "temperature": 0, "k": 0, "messages": [{"role": "user", "content": turns[i]}]}
                t0 = time.perf_counter()
                r = client.post("/v1/chat/completions", json=body, headers=headers)
                assert r.status_code == 200, r.text
                if i >= len(modes):  # the first round warms the model up
                    lat[mode].append(time.perf_counter() - t0)
            # Extraction runs in the gaps between chats: how many were still under way when the last reply
            # came, and how long the rest took once the server was idle.
            sent = sum(1 for i in range(len(turns)) if modes[i % len(modes)] == "extract")
            t_end = time.perf_counter()
            stats = client.get("/v1/memory/stats", headers=headers).json()
            done_at_end = stats["extractions"]
            while stats["extractions"] < sent and time.perf_counter() - t_end < 300:
                time.sleep(0.05)
                stats = client.get("/v1/memory/stats", headers=headers).json()
            drain_s = time.perf_counter() - t_end
    med = {m: float(np.median(v)) for m, v in lat.items()}
    return {"pairs": n, "median_s": {m: round(v, 3) for m, v in med.items()},
            "p90_s": {m: round(float(np.quantile(v, 0.9)), 3) for m, v in lat.items()},
            "raw_over_off": round(med["raw"] / med["off"], 3),
            "extract_over_off": round(med["extract"] / med["off"], 3),
            "extractions": {"sent": sent, "done_at_last_reply": done_at_end, "drain_s": round(drain_s, 2),
                            **{k: v for k, v in stats.items() if k != "object"}}}


def _sample_turns(n: int) -> list[str]:
    from pllm.data.persona_chat import load_conversations

    turns = [t for c in load_conversations(SOURCE)[:400] for _, t in c.turns] if SOURCE.exists() else []
    turns = turns or [f"I like topic number {i} and talk about it" for i in range(100)]
    return [turns[i % len(turns)] for i in range(n)]


def markdown(report: dict[str, Any]) -> str:
    made = f"Made by `{report['command']}` (seed {report.get('seed', 0)}). " if report.get("command") else ""
    data = f"Data: {report['data']}. " if report.get("data") else ""
    lines = [f"# Conversation memory benchmark ({report['questions']} questions, {report['users']} "
             f"{report.get('split', 'test')} users)",
             "", f"{made}{data}Embedder: {report['embedder']} ({report.get('embed_precision', 'float32')}). "
             f"{report['note']}", ""]
    summary = report["summary"]
    for metric in ("recall@10", "hit@10", "full@10", "recall@1", "recall@5"):
        lines += [f"## {metric}", "", "| retriever | all | " + " | ".join(TYPES) + " |",
                  "|---|---|" + "---|" * len(TYPES)]
        for name, row in summary.items():
            cells = row["metrics"].get(metric, {})
            lines.append(f"| {name} | " + " | ".join(_fmt(cells.get(c)) for c in ("all", *TYPES)) + " |")
        lines.append("")
    lines += ["## recall@10 minus bm25 (paired)", ""]
    lines += [f"- {name}: {_fmt(row['recall@10_minus_bm25'], signed=True)}" for name, row in summary.items()
              if "recall@10_minus_bm25" in row]
    against_base = {name: row for name, row in summary.items() if "recall@10_minus_base" in row}
    if against_base:
        lines += ["", "## Against the option's own base (paired)", "", "| option | base | recall@10 | recall@5 | "
                  "recall@1 |", "|---|---|---|---|---|"]
        for name, row in against_base.items():
            d = row["recall@10_minus_base"]
            lines.append(f"| {name} | {row['base']} | " + " | ".join(_fmt(d.get(m), signed=True) for m in
                                                                   ("recall@10", "recall@5", "recall@1")) + " |")
    lines += ["", "## Cost", "", "| retriever | ms per search | build s (all users) | counters |", "|---|---|---|---|"]
    for name, row in summary.items():
        counters = ", ".join(f"{k} {v}" for k, v in sorted(row.get("counters", {}).items())) or "-"
        lines.append(f"| {name} | {row['search_ms_per_question']} | {row['build_s']} | {counters} |")
    if report.get("answers"):
        a = report["answers"]
        lines += ["", f"## Answer accuracy ({a['questions']} questions, {a['model']}, k=5)", "",
                  "| retriever | accuracy | " + " | ".join(TYPES) + " |", "|---|---|" + "---|" * len(TYPES)]
        for name, row in a["by_retriever"].items():
            lines.append(f"| {name} | {_fmt(row['accuracy'])} | "
                         + " | ".join(f"{row['by_type'].get(t, float('nan')):.3f}" for t in TYPES) + " |")
    if report.get("latency"):
        la = report["latency"]
        lines += ["", "## Chat latency, memory off vs raw vs extract", "",
                  f"{la['pairs']} rounds of the three modes in turn, embedded model, 16 new tokens: median "
                  f"{la['median_s']['off']} s off, {la['median_s']['raw']} s raw ({la['raw_over_off']}x), "
                  f"{la['median_s']['extract']} s extract ({la['extract_over_off']}x)."]
        if la.get("extractions"):
            e = la["extractions"]
            lines[-1] += (f" Extractions: {e['sent']} asked, {e['done_at_last_reply']} done by the last reply, the "
                          f"rest in {e['drain_s']} s after it; {e['facts_added']} facts added, "
                          f"{e['extraction_errors']} errors, {e['extraction_unparsed']} unparsed.")
    if report.get("ingest"):
        g = report["ingest"]
        lines += ["", "## Raw-memory ingestion", "",
                  f"{g['turns']} turns through `POST /v1/users/{{u}}/items` in requests of {g['batch']}, embedder "
                  f"{g['embedder']} ({g.get('precision', 'float32')}), {g['threads'] or 'default'} torch threads: "
                  f"{g['seconds']} s, **{g['turns_per_s']} turns/s** ({g['cpu_seconds']} CPU s)."]
    return "\n".join(lines) + "\n"


def _fmt(iv: dict[str, float] | None, signed: bool = False) -> str:
    if iv is None:
        return "-"
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(iv['value'])} [{f.format(iv['low'])}, {f.format(iv['high'])}]"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None, help="a built persona-chat-memory folder (default: build "
                                                           "one into a temporary folder)")
    p.add_argument("--source", type=Path, default=SOURCE, help="Synthetic-Persona-Chat CSV folder")
    p.add_argument("--builder", choices=BUILDERS, default=BUILDERS[0], help="the builder of the data when there is "
                   "no --data (paraphrased: every question in other words than its fact)")
    p.add_argument("--users", type=int, default=48, help="users to build (a quarter are test users)")
    p.add_argument("--split", choices=("test", "dev"), default="test",
                   help="whose questions to search: the test users', or the dev users' (for choosing a default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retrievers", nargs="+", default=list(RETRIEVERS),
                   help="retriever options: NAME, or NAME:BASE for a composite on another base (rerank-llm:bm25)")
    p.add_argument("--embedder", default="minilm", help="embedder name, or 'bow' for a hashed bag of words")
    p.add_argument("--embed-precision", choices=PRECISIONS, default="float32",
                   help="the embedder's forward-pass precision for retrieval and ingestion, not --answers "
                        "(bfloat16: autocast)")
    p.add_argument("--quick", action="store_true", help="16 users (4 test) and the bag-of-words embedder")
    p.add_argument("--answers", type=int, default=0, help="also the embedded model's answer accuracy on this "
                                                          "many questions")
    p.add_argument("--answer-retrievers", nargs="+", default=["none", "hybrid", "dated"])
    p.add_argument("--ingest", type=int, default=0, help="also time writing this many raw chat turns")
    p.add_argument("--latency", type=int, default=0,
                   help="also time this many rounds of chats, memory off / raw / extract")
    p.add_argument("--batch", type=int, default=64, help="turns per write request when ingesting")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the server when ingesting "
                                                             "(default: torch's, i.e. OMP_NUM_THREADS)")
    p.add_argument("--skip-retrieval", action="store_true", help="only the ingestion timing")
    p.add_argument("--out", type=Path, default=None, help="folder for NAME.json and NAME.md")
    p.add_argument("--name", default="report", help="file stem of the report in --out (default: report)")
    args = p.parse_args(argv)
    for option in args.retrievers:
        name, base = option_parts(option)
        REGISTRY.get(name)  # an unknown name fails here, listing the known ones
        if base is not None:
            REGISTRY.get(base)
    if args.quick:
        args.users, args.embedder = 16, "bow"
    report: dict[str, Any] = {"benchmark": "memory", "python": platform.python_version(),
                              "threads": os.environ.get("OMP_NUM_THREADS", "unset"), "embedder": args.embedder,
                              "embed_precision": args.embed_precision,
                              "note": "", "loadavg_start": os.getloadavg()[0], "seed": args.seed,
                              "data": str(args.data) if args.data else args.builder, "split": args.split,
                              "command": " ".join(["python", "benchmarks/memory.py", *(argv if argv is not None
                                                                                         else sys.argv[1:])])}
    if not args.skip_retrieval:
        if args.data is None and not args.source.exists():
            print(f"no source data at {args.source}; pass --source or --data")
            return {"skipped": f"no source data at {args.source}"}
        embedder = _embedder(args.embedder, args.embed_precision)
        with tempfile.TemporaryDirectory() as tmp:
            data = args.data
            if data is None:
                data = Path(tmp) / args.builder
                build_dataset(args.builder, BuildConfig(source=str(args.source), out=str(data), max_users=args.users,
                                                        seed=args.seed))
            questions = load_test_questions(data, args.split)
        t0 = time.perf_counter()
        generator = None
        if any(REGISTRY.get(option_parts(o)[0]).needs_generator for o in args.retrievers):
            from pllm.models.base import load_generator

            generator = load_generator("hf", None)  # the embedded SmolLM2-135M-Instruct

        def partial(results: dict[str, dict[str, Any]]) -> None:  # a long run leaves its finished options
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                done = {**report, "summary": summarize(results, args.seed), "partial": True,
                        "loadavg_now": os.getloadavg()[0]}
                (args.out / f"{args.name}.partial.json").write_text(json.dumps(done, indent=2) + "\n",
                                                                    encoding="utf-8")
            print(f"done: {list(results)} ({time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f})",
                  flush=True)

        results = evaluate(questions, args.retrievers, embedder, KS, generator, partial)
        report.update(questions=len(questions), users=len({q.user_id for q in questions}),
                      turns_per_user=round(float(np.mean([len(q.profile) for q in questions])), 1),
                      seconds=round(time.perf_counter() - t0, 1), summary=summarize(results, args.seed))
        if args.answers:
            report["answers"] = answer_accuracy(questions, args.answers, args.answer_retrievers, args.seed)
    if args.ingest:
        report["ingest"] = ingest(args.ingest, args.batch, "minilm" if args.embedder == "bow" else args.embedder,
                                  args.threads, args.embed_precision)
    if args.latency:
        report["latency"] = chat_latency(args.latency)
    report["loadavg_end"] = os.getloadavg()[0]
    report["note"] = (f"Load average {report['loadavg_start']:.1f} at the start and {report['loadavg_end']:.1f} at "
                      f"the end (2 cores shared with other agents); OMP_NUM_THREADS={report['threads']}.")
    if "summary" in report:
        print(markdown(report))
    print(json.dumps({k: report[k] for k in ("ingest", "latency") if k in report}))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        if "summary" in report:
            (args.out / f"{args.name}.md").write_text(markdown(report), encoding="utf-8")
        (args.out / f"{args.name}.partial.json").unlink(missing_ok=True)
    return report


def _embedder(name: str, precision: str = "float32") -> Embedder:
    if name != "bow":
        return load_embedder(name, precision=precision)
    import importlib.util

    # The retrieval benchmark's hashed bag of words (no model to load; --quick).
    spec = importlib.util.spec_from_file_location("bench_retrieval", Path(__file__).with_name("retrieval.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.HashedBowEmbedder()


if __name__ == "__main__":
    main()
