"""The adapter pool: one peft model holding named adapters for the routing generator and alignment serving.
Whether a batch runs per row is read from peft; a mixed batch equals each adapter alone; bad inputs refused."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from adapt_helpers import WORDS

from pllm.adapt.pool import BASE, AdapterPool, PoolConfig
from pllm.adapt.store import AdapterStore, named_record
from pllm.errors import ArtifactError, InputError, NotFoundError
from pllm.models.base import Prompt
from pllm.models.testing import make_tiny_generator
from pllm_testkit import EchoGenerator, random_lora

PROMPTS = [Prompt(text=t, chat=False) for t in ("Heat Comedy", "Fargo", "Alien Drama Horror", "Babe Crime")]
LABELS = [" 1", " 2", " 3", " 4", " 5"]


def _save_lora(base, store: AdapterStore, name: str, seed: int, r: int = 4):
    model = random_lora(base, seed, r=r, alpha=2 * r)
    return store.write(named_record(name, "dpo", base.model_id), lambda tmp: model.save_pretrained(str(tmp)))


def _save_ia3(base, store: AdapterStore, name: str, seed: int):
    from peft import IA3Config, get_peft_model

    model = get_peft_model(copy.deepcopy(base.model), IA3Config(target_modules=["k_proj", "v_proj"],
                                                                feedforward_modules=[], task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "ia3_" in n:
                p.copy_(1 + torch.randn(p.shape, generator=gen) * 0.5)
    return store.write(named_record(name, "ia3", base.model_id), lambda tmp: model.save_pretrained(str(tmp)))


@pytest.fixture
def store(tmp_path) -> AdapterStore:
    return AdapterStore(tmp_path / "adapters")


def test_lora_runs_per_row_stacked_and_a_mixed_batch_equals_each_adapter_alone(tiny, store):
    recs = {r.name: r for r in (_save_lora(tiny, store, "a", 1, r=2), _save_lora(tiny, store, "b", 2, r=8))}
    pool = AdapterPool(tiny, PoolConfig(private=True))
    names = ["a", BASE, "b", "a"]
    mixed = pool.score(PROMPTS, names, LABELS, records=recs)
    assert pool.per_row() and pool.adapter_names() == ["a", "b"] and pool.stats["loads"] == 2
    alone = np.concatenate([pool.generator(n if n != BASE else None).score([p], LABELS)
                            for p, n in zip(PROMPTS, names)])
    np.testing.assert_allclose(mixed, alone, rtol=0, atol=1e-5)
    np.testing.assert_allclose(mixed[1], tiny.score([PROMPTS[1]], LABELS)[0], rtol=0, atol=1e-5)
    assert np.abs(mixed[0] - mixed[2]).max() > 1e-3
    texts = [g.text for g in pool.generate(PROMPTS, names, max_new_tokens=4)]
    assert texts == [pool.generate([p], [n], max_new_tokens=4)[0].text for p, n in zip(PROMPTS, names)]
    assert not any("lora_" in n for n, _ in tiny.model.named_parameters())  # private: the caller's model is bare


def test_ia3_has_no_per_row_path_in_peft_so_rows_run_adapter_by_adapter(tiny, store):
    rec = _save_ia3(tiny, store, "i", 3)
    pool = AdapterPool(tiny, PoolConfig(private=True))
    names = ["i", BASE, "i", BASE]
    mixed = pool.score(PROMPTS, names, LABELS, records={"i": rec})
    assert not pool.per_row()
    alone = np.concatenate([pool.score([p], [n], LABELS) for p, n in zip(PROMPTS, names)])
    np.testing.assert_allclose(mixed, alone, rtol=0, atol=1e-5)
    np.testing.assert_allclose(mixed[1], tiny.score([PROMPTS[1]], LABELS)[0], rtol=0, atol=1e-5)
    assert np.abs(mixed[0] - mixed[1]).max() > 1e-3
    with pytest.raises(ArtifactError, match="one peft type"):
        pool.load(_save_lora(tiny, store, "l", 4))
    assert pool.adapter_names() == ["i"]


def test_bad_inputs_are_refused(tiny, store):
    with pytest.raises(InputError, match="memory_budget_mb must be > 0"):
        PoolConfig(memory_budget_mb=0)
    with pytest.raises(InputError, match="local 'hf' generator"):
        AdapterPool(EchoGenerator())  # type: ignore[arg-type]
    pool = AdapterPool(tiny, PoolConfig(private=True))
    with pytest.raises(NotFoundError, match="'ghost' is not loaded"):
        pool.score(PROMPTS[:1], ["ghost"], LABELS)
    other = make_tiny_generator(seed=1, vocab_words=WORDS)
    other.model_id = "another-model"
    with pytest.raises(ArtifactError, match="trained on 'another-model'"):
        pool.load(_save_lora(other, store, "x", 5))
    assert pool.adapter_names() == [] and pool.model is None  # nothing loaded by the refused calls
