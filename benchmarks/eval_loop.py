"""End-to-end speed of the evaluation loop (`Personalizer.predict`) with the embedded model.

Two workloads, each with no personalization and with bm25@4 retrieval (the ratio between the two, measured
in the same run, is what transfers across machines):

- classification by label scoring: `movielens-genre` (18 genres, multi-token labels scored by log-likelihood);
- generation: `persona-chat-reply` (greedy, up to the task's max_new_tokens).

For each it reports questions/s, where the time goes (retrieval, prompt building, model; from
`Personalizer.timings`), mean prompt tokens, and the process's peak resident memory. Tasks are built
from ../shared/data when present; otherwise from a small synthetic raw dataset written to a temp folder.

    python benchmarks/eval_loop.py --quick        # 8 + 4 questions
    python benchmarks/eval_loop.py --out eval_loop.json
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pllm.data import BuildConfig, build_dataset  # noqa: E402
from pllm.pipeline import MethodConfig, Personalizer  # noqa: E402
from pllm.tasks.lamp import read_questions  # noqa: E402
from pllm.tasks.spec import get_task  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if platform.system() == "Darwin" else peak / 1024, 1)


def _synthetic_sources(folder: Path) -> tuple[Path, Path]:
    """A small MovieLens-shaped and Persona-Chat-shaped raw dataset (used when ../shared/data is absent)."""
    genres = ["Action", "Comedy", "Drama", "Sci-Fi", "Romance", "Thriller"]
    ml = folder / "ml"
    ml.mkdir(parents=True)
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    items += [f"{m}\tMovie number {m}\t{1970 + m % 30}\t{genres[m % 6]} {genres[(m * 5 + 1) % 6]}"
              for m in range(1, 121)]
    (ml / "ml-100k.item").write_text("\n".join(items) + "\n")
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(1, 81):
        for j in range(40):
            m = (u * 11 + j * 7) % 120 + 1
            inter.append(f"{u}\t{m}\t{1 + (u * j + m) % 5}\t{880000000 + u * 10000 + j * 60}")
    (ml / "ml-100k.inter").write_text("\n".join(inter) + "\n")
    pc = folder / "pc"
    pc.mkdir()
    with open(pc / "valid.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user 1 personas", "user 2 personas", "Best Generated Conversation"])
        for c in range(80):
            turns = [f"User {1 + t % 2}: This is turn {t} of talk {c}, about hobby {(c + t) % 9} and my plans."
                     for t in range(12)]
            w.writerow([f"I like hobby {c % 9}.\nI am {c} years old.\nI live in town {c % 5}.",
                        f"I play game {c % 7}.\nI have {c % 4} dogs.\nI work at place {c}.", "\n".join(turns)])
    return ml, pc


def build_tasks(work: Path) -> dict[str, Path]:
    ml, pc = SHARED / "movielens-100k", SHARED / "synthetic-persona-chat"
    if not (ml / "ml-100k.inter").is_file() or not (pc / "valid.csv").is_file():
        ml, pc = _synthetic_sources(work / "raw")
    out = {"movielens-genre": work / "genre", "persona-chat-reply": work / "persona"}
    build_dataset("movielens-genre", BuildConfig(source=str(ml), out=str(out["movielens-genre"]), split="time",
                                                 max_users=64))
    build_dataset("persona-chat-reply", BuildConfig(source=str(pc), out=str(out["persona-chat-reply"]),
                                                    split="time", max_users=64, min_profile=3))
    return out


def run_workload(generator: Any, folder: Path, n: int, method: MethodConfig, batch_size: int) -> dict[str, Any]:
    spec = get_task(folder)
    qs = read_questions(folder / "test_questions.json", spec=spec, outputs=folder / "test_outputs.json")[:n]
    pers = Personalizer(spec, generator, method)
    pers.predict(qs[:1], batch_size=1)  # warm-up (tokenizer caches, first-call allocations)
    pers.timings = type(pers.timings)()
    t0 = time.perf_counter()
    records = pers.predict(qs, batch_size=batch_size)
    wall = time.perf_counter() - t0
    timings = pers.timings.as_dict()
    accounted = sum(timings.values())
    return {"task": spec.name, "method": method.label, "mode": pers.mode, "questions": len(qs),
            "seconds": round(wall, 3), "questions_per_second": round(len(qs) / wall, 3),
            "time_split_seconds": timings,
            "time_split_share": {k: round(v / accounted, 3) for k, v in timings.items()} if accounted else {},
            "mean_prompt_tokens": round(sum(r.prompt_tokens for r in records) / len(records), 1),
            "generated_tokens": sum(r.completion_tokens for r in records),
            "peak_rss_mb": peak_rss_mb()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 classification + 4 generation questions.")
    ap.add_argument("--questions", type=int, default=None, help="Questions per workload (default 48/16).")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    ap.add_argument("--out", type=Path, default=None, help="Write the JSON here.")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    n_cls = args.questions or (8 if args.quick else 48)
    n_gen = args.questions or (4 if args.quick else 16)
    rss_start = peak_rss_mb()
    from pllm.models import load_generator

    t0 = time.perf_counter()
    generator = load_generator("hf")
    load_s = time.perf_counter() - t0
    rss_model = peak_rss_mb()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tasks = build_tasks(Path(tmp))
        for task, n in (("movielens-genre", n_cls), ("persona-chat-reply", n_gen)):
            for method in (MethodConfig(), MethodConfig(retriever="bm25", k=4)):
                rows.append(run_workload(generator, tasks[task], n, method, args.batch_size))
    ratios = {}
    for task in ("movielens-genre", "persona-chat-reply"):
        none, bm25 = [r for r in rows if r["task"] == task]
        ratios[f"{task}: bm25@4 / none questions/s"] = round(bm25["questions_per_second"] /
                                                             none["questions_per_second"], 3)
    result = {"benchmark": "eval_loop", "quick": args.quick, "model": generator.model_id,
              "machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                          "note": "absolute numbers as measured on this (possibly shared) machine"},
              "model_load_seconds": round(load_s, 2), "peak_rss_mb": {"start": rss_start, "model_loaded": rss_model,
                                                                    "end": peak_rss_mb()},
              "workloads": rows, "ratios": ratios}
    print(json.dumps(result, indent=2))
    print(f"\n{'task':<20} {'method':<8} {'mode':<9} {'q/s':>7} {'retr%':>6} {'prompt%':>8} {'model%':>7} "
          f"{'prompt tok':>10}")
    for r in rows:
        s = r["time_split_share"]
        print(f"{r['task']:<20} {r['method']:<8} {r['mode']:<9} {r['questions_per_second']:>7.3f} "
              f"{100 * s.get('retrieval', 0):>5.1f}% {100 * s.get('prompt', 0):>7.1f}% "
              f"{100 * s.get('model', 0):>6.1f}% "
              f"{r['mean_prompt_tokens']:>10.0f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
