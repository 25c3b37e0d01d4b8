"""Soft-fused prompting cost: encoder training time per epoch, and inference questions/s against bm25
k=4 text prompting, with the embedded SmolLM2 on MovieLens-100k `movielens-rating`, on this machine's CPUs.

Training: one epoch over `--users` training users (one question each; the encoder learns, the generator is
frozen). History embeddings are computed once before the epoch (they persist in the store in real use)
and timed separately. Inference: the same test questions scored by label likelihood with bm25@4 prompts
(the baseline), soft tokens alone, and soft + bm25@4, all in the same run; ratios are against bm25@4.

    .venv/bin/python benchmarks/soft.py --quick            # ~32 users, 32 questions
    .venv/bin/python benchmarks/soft.py --users 1000 --out soft.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pllm.data import BuildConfig, build_dataset
from pllm.data.movielens import find_movielens
from pllm.models import load_generator
from pllm.pipeline import MethodConfig, Personalizer
from pllm.retrieval import MemoryEmbeddingCache, load_embedder
from pllm.soft.model import SoftPromptGenerator, load_soft_generator
from pllm.soft.train import SoftTrainConfig, train_soft_encoder
from pllm.tasks.lamp import read_questions
from pllm.tasks.spec import get_task
from pllm.users.store import SQLiteUserStore


def _time_scoring(spec: Any, gen: Any, method: MethodConfig, questions: list, batch_size: int) -> dict[str, float]:
    pers = Personalizer(spec, gen, method)
    pers.predict(questions[:batch_size], batch_size=batch_size)  # warm-up (allocations, retriever indexes)
    t0 = time.perf_counter()
    records = pers.predict(questions, batch_size=batch_size)
    sec = time.perf_counter() - t0
    extra = gen.config.n_soft if isinstance(gen, SoftPromptGenerator) else 0
    return {"seconds": round(sec, 3), "questions_per_s": round(len(questions) / sec, 3),
            "mean_input_positions": round(sum(r.prompt_tokens + extra for r in records) / len(records), 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 training users, 32 test questions.")
    parser.add_argument("--users", type=int, default=1000, help="Training users in the timed epoch (capped by data).")
    parser.add_argument("--questions", type=int, default=128, help="Test questions for the inference timing.")
    parser.add_argument("--batch-size", type=int, default=8, help="Questions per step / model call.")
    parser.add_argument("--n-tokens", type=int, default=4, help="User soft tokens.")
    parser.add_argument("--data", default=None, help="MovieLens-100k folder (default: found nearby).")
    parser.add_argument("--model", default=None, help="Generator (default: embedded SmolLM2-135M-Instruct).")
    parser.add_argument("--db", default=None,
                        help="User store to cache history embeddings in (default: in memory, so they are computed).")
    parser.add_argument("--out", default=None, help="Write the JSON result here.")
    args = parser.parse_args(argv)
    users, n_questions = (32, 32) if args.quick else (args.users, args.questions)
    spec = get_task("movielens-rating")
    work = Path(tempfile.mkdtemp(prefix="pllm-bench-soft-"))
    # Nearly every user in training (ML-100k has 943), a small test split for the inference timing.
    build_dataset("movielens-rating", BuildConfig(source=str(find_movielens(args.data)), out=str(work / "task"),
                                                  dev_fraction=0.0, test_fraction=0.05))
    train = read_questions(work / "task" / "train_questions.json", spec=spec,
                           outputs=work / "task" / "train_outputs.json")
    test = read_questions(work / "task" / "test_questions.json", spec=spec, outputs=work / "task" / "test_outputs.json")
    test = (test * (n_questions // max(len(test), 1) + 1))[:n_questions]
    base = load_generator("hf", args.model)
    embedder = load_embedder("minilm")
    cache = SQLiteUserStore(args.db) if args.db else MemoryEmbeddingCache()
    config = SoftTrainConfig(n_tokens=args.n_tokens, epochs=1, batch_size=args.batch_size, max_users=users)
    t0 = time.perf_counter()
    embed_steps: list[float] = []  # build training prompts + embed every history once

    def progress(label: str, done: int, total: int) -> None:
        if label == "embed histories" and done == total:
            embed_steps.append(time.perf_counter() - t0)

    res = train_soft_encoder(spec, base, train, config, work / "encoder", store=cache, embedder=embedder,
                             progress=progress)
    epoch = res.epoch_seconds[0]
    soft = load_soft_generator(res.path, base, store=cache, embedder=embedder)
    for q in test:  # served users' history embeddings are already in the store
        soft._item_matrix(q)
    k4 = MethodConfig(retriever="bm25", k=4)
    timing = {"bm25@4": _time_scoring(spec, base, k4, test, args.batch_size),
              "soft": _time_scoring(spec, soft, MethodConfig(), test, args.batch_size),
              "soft+bm25@4": _time_scoring(spec, soft, k4, test, args.batch_size)}
    ref = timing["bm25@4"]["questions_per_s"]
    for row in timing.values():
        row["speed_vs_bm25@4"] = round(row["questions_per_s"] / ref, 3)
    result = {
        "machine": "shared CPU machine (noisy; ratios measured in the same run)",
        "torch_threads": torch.get_num_threads(), "model": base.model_id, "quick": args.quick,
        "train": {"users_requested": users, "users": res.n_users, "examples": res.n_examples,
                  "prepare_seconds": round(embed_steps[0], 2) if embed_steps else None,
                  "epoch_seconds": round(epoch, 2), "seconds_per_user": round(epoch / res.n_users, 3),
                  "loss": round(res.epoch_losses[0], 4), "n_tokens": args.n_tokens,
                  "batch_size": args.batch_size},
        "inference": {"questions": len(test), "batch_size": args.batch_size, "methods": timing},
    }
    print(json.dumps(result, indent=2))
    print(f"\ntraining: {res.n_users} users, one epoch {epoch:.1f} s ({epoch / res.n_users:.2f} s/user)")
    print(f"{'method':<14}{'q/s':>8}{'vs bm25@4':>11}{'input positions':>17}")
    for name, row in timing.items():
        print(f"{name:<14}{row['questions_per_s']:>8.2f}{row['speed_vs_bm25@4']:>11.2f}"
              f"{row['mean_input_positions']:>17.1f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
