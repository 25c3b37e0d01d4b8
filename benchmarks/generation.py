"""Generation and label-scoring throughput of the embedded model (SmolLM2-135M-Instruct).

Measures greedy tokens/s one prompt at a time vs one batch, and rating-label scoring prompts/s
(the single-token fast path). Prints a JSON object, then a small table. Numbers are measured, never
estimated; on a shared machine other load shows up in them, so the load average is recorded too.

    python benchmarks/generation.py [--quick] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

_SRC = Path(__file__).resolve().parents[1] / "src"
if str(_SRC) not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(_SRC))

TOPICS = ["the ocean", "a rainy city", "coffee", "mountain hiking", "old books", "electric cars",
          "a summer garden", "learning to cook", "space travel", "a busy train station"]
REVIEWS = ["I loved every page of this book.", "Terrible product, it broke after a day.",
           "It was fine, nothing special.", "Great value and fast shipping!", "Not what I expected at all.",
           "The best movie I have seen this year.", "Average at best, a bit boring.",
           "Awful customer service and a late delivery."]


def _timed(fn):  # -> (result, seconds)
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run(n_prompts: int, new_tokens: int, batch_size: int, n_score: int) -> dict:
    import torch

    from pllm.models import Prompt
    from pllm.models.embedded import embedded_model_path
    from pllm.models.hf import HFGenerator

    embedded_model_path()  # convert outside the timed load, if this is the first run
    gen, load_s = _timed(lambda: HFGenerator())
    prompts = [Prompt(f"Write a long, detailed paragraph about {TOPICS[i % len(TOPICS)]}.")
               for i in range(n_prompts)]
    gen.generate(prompts[:2], max_new_tokens=4, batch_size=2)  # warm-up

    single, single_s = _timed(lambda: [gen.generate([p], max_new_tokens=new_tokens)[0] for p in prompts])
    batched, batched_s = _timed(lambda: gen.generate(prompts, max_new_tokens=new_tokens, batch_size=batch_size))
    single_tok = sum(g.completion_tokens for g in single)
    batched_tok = sum(g.completion_tokens for g in batched)
    same = [a.text for a in single] == [b.text for b in batched]

    rate = [Prompt(f"Rate this review from 1 to 5. Answer with one digit.\nReview: {REVIEWS[i % len(REVIEWS)]}")
            for i in range(n_score)]
    labels = ["1", "2", "3", "4", "5"]
    gen.score(rate[:2], labels)  # warm-up
    scores, score_s = _timed(lambda: gen.score(rate, labels, batch_size=8))
    _, general_s = _timed(lambda: gen.score(rate, labels, batch_size=8, _fast_path=False))
    single_tps = single_tok / single_s
    batched_tps = batched_tok / batched_s
    return {
        "model": gen.model_id, "device": str(gen.device), "dtype": str(gen.model.dtype).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "load_s": round(load_s, 2),
        "prompts": n_prompts, "max_new_tokens": new_tokens, "batch_size": batch_size,
        "single_tokens": single_tok, "single_s": round(single_s, 2), "single_tok_per_s": round(single_tps, 1),
        "batched_tokens": batched_tok, "batched_s": round(batched_s, 2),
        "batched_tok_per_s": round(batched_tps, 1), "batched_over_single": round(batched_tps / single_tps, 2),
        "batched_text_equals_single": same,
        "score_prompts": n_score, "score_labels": len(labels),
        "score_prompts_per_s": round(n_score / score_s, 1),
        "score_general_path_prompts_per_s": round(n_score / general_s, 1),
        "score_argmax_labels": [labels[int(i)] for i in scores.argmax(axis=1)],
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 prompts x 8 new tokens, 8 scored prompts")
    parser.add_argument("--json-out", type=Path, help="also write the JSON result here")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); 1 avoids spin-wait slowdowns "
                             "when other processes share the cores")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.quick:
        result = run(n_prompts=8, new_tokens=8, batch_size=8, n_score=8)
    else:
        result = run(n_prompts=8, new_tokens=32, batch_size=8, n_score=32)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n", encoding="utf-8")
    rows = [("load (s)", result["load_s"]),
            ("single-stream tok/s", result["single_tok_per_s"]),
            (f"batched (bs={result['batch_size']}) tok/s", result["batched_tok_per_s"]),
            ("batched / single", result["batched_over_single"]),
            ("label scoring prompts/s (fast path)", result["score_prompts_per_s"]),
            ("label scoring prompts/s (general path)", result["score_general_path_prompts_per_s"])]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return result


if __name__ == "__main__":
    main()
