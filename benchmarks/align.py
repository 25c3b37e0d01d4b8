"""Alignment costs: DPO training seconds per 100 pairs, and the time to build a soup for a new vector.

    python benchmarks/align.py [--quick] [--threads 2] [--out FILE]

DPO runs trl's DPOTrainer (LoRA r=8 on q/k/v/o) on the embedded SmolLM2-135M with DSP pairs (or
synthetic pairs of the same token lengths when the shared data is absent). Its baseline, measured in
the same run, is scoring the same pairs once (policy log-probs of chosen and rejected): the ratio says
what one DPO epoch costs in scoring passes, which is stable across machines where seconds are not.
Soups: four dimension adapters; building the soup for a new vector (peft add_weighted_adapter, cat) is
compared with loading one adapter from disk and with a cached-vector lookup.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DSP = ROOT.parent / "shared" / "data" / "dsp" / "domain_specific_preference.test.json"


def _pairs(n: int):  # noqa: ANN202
    from pllm.align.importers import dsp_pairs, read_dsp
    from pllm.align.store import PreferencePair

    if DSP.is_file():
        return dsp_pairs(read_dsp(DSP), "academy")[:n], "dsp academy"
    text = " ".join(["the answer to this question is given here in some detail"] * 12)
    return [PreferencePair(id=str(i), prompt=f"question {i}: explain this", chosen=text, rejected=text[::-1])
            for i in range(n)], "synthetic"


def run(*, n_pairs: int, epochs: float, prompt_tokens: int, answer_tokens: int, threads: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from pllm.adapt.pool import AdapterPool, PoolConfig
    from pllm.adapt.store import AdapterStore, named_record
    from pllm.align.config import DPOSettings, LoraSettings
    from pllm.align.dpo import train_dpo, truncate_pairs
    from pllm.align.soup import Soup, SoupSpec
    from pllm.models import load_generator
    from pllm.models.base import Prompt

    torch.set_num_threads(threads)
    base = load_generator("hf")
    pairs, source = _pairs(n_pairs)
    settings = DPOSettings(epochs=epochs, batch_size=4, learning_rate=1e-3, max_prompt_tokens=prompt_tokens,
                           max_answer_tokens=answer_tokens, lora=LoraSettings(r=8, alpha=16))
    cut = truncate_pairs(pairs, base, settings)
    with tempfile.TemporaryDirectory(prefix="pllm-align-bench-") as work:
        store = AdapterStore(Path(work) / "adapters")
        # baseline: one scoring pass over the same pairs
        t0 = time.perf_counter()
        base.score([Prompt(text=p.prompt) for p in cut], [[p.chosen, p.rejected] for p in cut], batch_size=4)
        score_s = time.perf_counter() - t0
        result = train_dpo(base, pairs, name="bench-dpo", users=["bench"], settings=settings, store=store)
        dpo_per_100 = 100 * result.seconds / result.n_rows / epochs
        # soups: four dimension adapters (random LoRA weights: build cost does not depend on the values)
        for i in range(4):
            cfg = LoraConfig(r=8, lora_alpha=16, target_modules=list(settings.lora.target_modules),
                             task_type="CAUSAL_LM")
            model = get_peft_model(copy.deepcopy(base.model), cfg)
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "lora_" in name:
                        p.normal_(0, 0.02)
            store.write(named_record(f"dim{i}", "dpo", base.model_id),
                        lambda tmp, model=model: model.save_pretrained(str(tmp)))
            del model
        pool = AdapterPool(base, PoolConfig(private=True))
        t0 = time.perf_counter()
        pool.load(store.get_named("bench-dpo"))
        load_s = time.perf_counter() - t0
        soup = Soup(pool, SoupSpec(name="bench", dimensions={f"d{i}": f"dim{i}" for i in range(4)}, max_cached=64),
                    store)
        builds, lookups = [], []
        for k in range(5):
            vec = {f"d{i}": float((i + k) % 4 + 1) for i in range(4)}
            t0 = time.perf_counter()
            soup.adapter_for(vec)
            builds.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            soup.adapter_for(vec)
            lookups.append(time.perf_counter() - t0)
    builds.sort()
    build_s = builds[len(builds) // 2]
    return {
        "machine": f"CPU, {os.cpu_count()} cores, torch threads={threads}, load average {os.getloadavg()[0]:.2f} "
                   "at the end (other jobs on the machine show up in absolute seconds)",
        "pairs_source": source, "pairs": result.n_rows, "epochs": epochs,
        "tokens": {"prompt_max": prompt_tokens, "answer_max": answer_tokens},
        "dpo_train_seconds": round(result.seconds, 2),
        "dpo_seconds_per_100_pairs_per_epoch": round(dpo_per_100, 2),
        "baseline_score_seconds_per_100_pairs": round(100 * score_s / max(1, len(cut)), 2),
        "dpo_epoch_cost_in_scoring_passes": round(result.seconds / epochs / score_s, 2),
        "soup_build_seconds_new_vector_median": round(build_s, 4),
        "soup_cached_lookup_seconds_median": round(sorted(lookups)[len(lookups) // 2], 6),
        "baseline_adapter_load_seconds": round(load_s, 4),
        "soup_build_vs_adapter_load": round(build_s / load_s, 3),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 pairs x 1 epoch, 32-token prompts and answers")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the figure asked for is 2 cores)")
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    args = parser.parse_args(argv)
    if args.quick:
        result = run(n_pairs=8, epochs=1, prompt_tokens=32, answer_tokens=32, threads=args.threads)
    else:
        result = run(n_pairs=32, epochs=1, prompt_tokens=48, answer_tokens=64, threads=args.threads)
    print(json.dumps(result, indent=1))
    width = max(map(len, result))
    for k, v in result.items():
        if not isinstance(v, dict):
            print(f"{k:<{width}}  {v}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
