"""Helpers shared by the alignment tests: preference pairs over words the tiny tokenizer knows, and
stored random LoRA adapters (fast, distinct per seed, stored exactly like trained ones)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from pllm.align.adapters import AdapterRecord, AdapterStore, new_record
from pllm.align.store import PreferencePair
from pllm.io import atomic_dir

# tests/conftest.py's SHARED_DATA: ../shared/data relative to the repo
DSP_PATH = Path(__file__).resolve().parents[3] / "shared" / "data" / "dsp" / "domain_specific_preference.test.json"

STYLES = {
    "academy": "the paper gives the following answer based on previous examples",
    "business": "our product gives great value , please rate it",
    "entertainment": "I love this movie , it is great fun",
    "literature": "her words are like a poem , a summary of our history",
    "normal": "the answer is this one",
}


def movie_pairs(n: int = 8, flip: bool = False) -> list[PreferencePair]:
    good, bad = "great movie , I love it", "bad movie , I hate it"
    if flip:
        good, bad = bad, good
    return [PreferencePair(id=f"p{i}", prompt=f"what is the rating of this movie {i} ?", chosen=good, rejected=bad)
            for i in range(n)]


def save_random_adapter(base, store: AdapterStore, name: str, seed: int, *, kind: str = "dpo",
                        users: list[str] | None = None, dimensions: list[str] | None = None,
                        r: int = 4, alpha: float = 8.0) -> AdapterRecord:
    """A LoRA adapter with random (non-zero) A and B, stored like a trained one: fast and distinct per seed."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                     task_type="CAUSAL_LM")
    model = get_peft_model(copy.deepcopy(base.model), cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "lora_" in pname:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    record = new_record(name, kind, base, users=users or [], dimensions=dimensions or [])
    with atomic_dir(store.path(name)) as tmp:
        model.save_pretrained(str(tmp / "adapter"))
        store.write_meta(tmp, record)
    return store.get(name)
