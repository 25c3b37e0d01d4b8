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


def _rotation(tiny, store, n: int, r: int = 4) -> dict:
    return {f"u{i}": _save_lora(tiny, store, f"u{i}", 10 + i, r=r if i % 2 else 2 * r) for i in range(n)}


def test_lru_evicts_the_least_recently_used_and_reuses_its_zeroed_slot(tiny, store):
    recs = _rotation(tiny, store, 3)
    budget = 2.5 * max(r.bytes for r in recs.values())
    pool = AdapterPool(tiny, PoolConfig(private=True, memory_budget_mb=budget / 2**20))
    pool.score(PROMPTS[:2], ["u0", "u1"], LABELS, records=recs)
    pool.score(PROMPTS[:1], ["u0"], LABELS, records=recs)  # u0 used last: u1 is the least recently used
    slot_u1 = pool.stacks.slots["u1"]
    pool.score(PROMPTS[:1], ["u2"], LABELS, records=recs)
    assert pool.adapter_names() == ["u0", "u2"] and pool.stats["evictions"] == 1
    assert pool.stacks.slots["u2"] == slot_u1 and pool.stacks.capacity == 2  # the freed slot, no growth
    assert pool.loaded_bytes <= budget


def test_budget_holds_over_a_rotation_and_weights_live_only_in_their_slot(tiny, store):
    recs = _rotation(tiny, store, 6)
    one = max(r.bytes for r in recs.values())
    pool = AdapterPool(tiny, PoolConfig(private=True, memory_budget_mb=2.5 * one / 2**20))
    roomy = AdapterPool(make_tiny_generator(seed=0, vocab_words=WORDS), PoolConfig(private=True))
    for start in (0, 2, 4, 1, 3, 5):
        names = [f"u{start}", f"u{(start + 1) % 6}", BASE, f"u{start}"]
        got = pool.score(PROMPTS, names, LABELS, records=recs)
        assert pool.loaded_bytes <= 2.5 * one and len(pool.adapter_names()) == 2
        np.testing.assert_allclose(got, roomy.score(PROMPTS, names, LABELS, records=recs), rtol=0, atol=1e-5)
    assert pool.stacks.capacity == 2 and len(roomy.adapter_names()) == 6 and roomy.stacks.capacity == 6
    for layer, stack in pool.stacks.layers.items():  # peft's weights are views of the stack: no second copy
        for name, slot in stack.slot.items():
            assert layer.lora_A[name].weight.data_ptr() == stack.a[slot].data_ptr()
            assert layer.lora_B[name].weight.untyped_storage().data_ptr() == stack.b.untyped_storage().data_ptr()
        free = [s for s in range(1, stack.a.shape[0]) if s not in stack.slot.values()]
        assert all(not stack.a[s].any() and not stack.b[s].any() for s in free)


def test_outputs_are_unchanged_after_eviction_and_reload_and_equal_peft(tiny, store):
    recs = _rotation(tiny, store, 3)
    one = max(r.bytes for r in recs.values())
    names = ["u0", BASE, "u0", "u0"]
    pool = AdapterPool(tiny, PoolConfig(private=True, memory_budget_mb=1.5 * one / 2**20))
    first = pool.score(PROMPTS, names, LABELS, records=recs)
    texts = [g.text for g in pool.generate(PROMPTS, names, records=recs, max_new_tokens=4)]
    pool.score(PROMPTS[:2], ["u1", "u2"], LABELS, records=recs)  # u0 evicted, its slot reused
    assert "u0" not in pool
    np.testing.assert_allclose(pool.score(PROMPTS, names, LABELS, records=recs), first, rtol=0, atol=1e-6)
    assert [g.text for g in pool.generate(PROMPTS, names, records=recs, max_new_tokens=4)] == texts
    peft = AdapterPool(make_tiny_generator(seed=0, vocab_words=WORDS),
                       PoolConfig(private=True, batched_lora=False))
    mixed = ["u2", "u0", BASE, "u1"]
    assert peft.stacks is None
    np.testing.assert_allclose(pool.score(PROMPTS, mixed, LABELS, records=recs),
                               peft.score(PROMPTS, mixed, LABELS, records=recs), rtol=0, atol=1e-4)


def _conversation(answer, user: str) -> list[str]:
    """Three turns of one chat (system turn, history, new message), each answered by `answer(prompt)`."""
    from pllm.types import Question

    question = Question(id="q", user_id=user, input="", query={})
    messages = [{"role": "system", "content": "you are a movie critic"}, {"role": "user", "content": "great movie"}]
    answers = []
    for follow_up in ("and the book is bad", "what about the movie", "I love this movie"):
        prompt = Prompt(text=messages[-1]["content"], messages=[dict(m) for m in messages], question=question)
        answers.append(answer(prompt))
        messages += [{"role": "assistant", "content": answers[-1]}, {"role": "user", "content": follow_up}]
    return answers


def test_a_chat_through_an_adapter_streams_and_reuses_its_prefix_cache_apart_from_the_bare_models(tiny, store):
    from pllm.models.prefix_cache import PrefixCache

    recs = {r.name: r for r in (_save_lora(tiny, store, "a", 1), _save_lora(tiny, store, "b", 2))}
    pool = AdapterPool(tiny, PoolConfig(private=True))
    plain = {n: _conversation(lambda p, n=n: pool.generate([p], [n], records=recs, max_new_tokens=6)[0].text, "u1")
             for n in ("a", "b", BASE)}
    assert plain["a"] != plain[BASE] and plain["a"] != plain["b"]
    pool.gen.prefix_cache = cache = PrefixCache(max_users=8)
    for name in ("a", "b", BASE):  # streamed and cached: word for word the uncached answers, per adapter
        pieces = []

        def stream(p, name=name, pieces=pieces):
            out = list(pool.stream(p, name, records=recs, max_new_tokens=6))
            pieces.append(len(out))
            return "".join(out)

        assert _conversation(stream, "u1") == plain[name]
        assert max(pieces) > 1  # token by token, not the whole answer at once
    assert cache.stats["hits"] == 6 and cache.stats["misses"] == 3  # one entry per (user, adapter)
    assert len(cache) == 3
    pool.unload("a")
    pool.load(recs["a"])  # loaded again (maybe retrained): its entries were computed by other weights
    assert len(cache) == 2 and cache.forget("u1") == 2 and len(cache) == 0
    with pytest.raises(NotFoundError, match="not loaded"):
        list(pool.stream(PROMPTS[0], "nope"))
