"""Serving adapters: per-user routing, mixed batches equal to one-user-at-a-time, LRU budget, refusal of
corrupt or half-written adapter folders."""

from __future__ import annotations

import numpy as np
import pytest
from adapt_helpers import WORDS, make_items, make_question

from pllm.adapt import AdaptConfig, AdapterGenerator, train_adapter
from pllm.errors import ArtifactError
from pllm.models.testing import make_tiny_generator
from pllm.pipeline import MethodConfig, Personalizer

LABELS = [" 1", " 2", " 3", " 4", " 5"]


def _train(tiny, spec, store, config, users: dict[str, int]) -> dict:
    items = {u: make_items(u, 8, rating=r) for u, r in users.items()}
    for u, its in items.items():
        train_adapter(tiny, spec, kind="user", owner=u, items_by_user={u: its}, config=config, store=store)
    return items


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_users_differ_and_a_mixed_batch_equals_each_user_alone(method, tiny, spec, store):
    config = AdaptConfig(method=method, epochs=3, batch_size=4, lr=5e-2, max_items=8, min_items=4)
    items = _train(tiny, spec, store, config, {"low": 1, "high": 5, "mid": 3})
    gen = AdapterGenerator(tiny, spec.name, store=store, cold_start_items=4)
    questions = [make_question(u, items[u]) for u in ("low", "high", "mid")] + [make_question("new", [])]
    built = Personalizer(spec, gen, MethodConfig()).build_prompts(questions)
    prompts = [b.prompt for b in built]
    assert [gen.route(q).kind for q in questions] == ["user", "user", "user", "base"]
    mixed = gen.score(prompts, LABELS)  # (4, 5)
    alone = np.concatenate([gen.score([p], LABELS) for p in prompts])
    np.testing.assert_allclose(mixed, alone, rtol=0, atol=1e-5)
    assert np.abs(mixed[0] - mixed[1]).max() > 1e-3  # two users, two different adapters
    # Each user's adapter learnt their own rating habit.
    assert LABELS[int(np.argmax(mixed[0]))] == " 1" and LABELS[int(np.argmax(mixed[1]))] == " 5"
    plain = make_tiny_generator(seed=0, vocab_words=WORDS)  # the same base weights, no peft at all
    np.testing.assert_allclose(mixed[3], plain.score([prompts[3]], LABELS)[0], atol=1e-5)
    gens = gen.generate(prompts, max_new_tokens=3, stop=["\n"])
    gens_alone = [gen.generate([p], max_new_tokens=3, stop=["\n"])[0] for p in prompts]
    assert [g.text for g in gens] == [g.text for g in gens_alone]
    assert gen.stats["loads"] == 3


def test_memory_budget_bounds_loaded_adapters(tiny, spec, store, fast_config):
    items = _train(tiny, spec, store, fast_config, {"a": 1, "b": 5, "c": 2})
    one = store.get(spec.name, "user", "a").bytes
    gen = AdapterGenerator(tiny, spec.name, store=store, cold_start_items=4,
                           memory_budget_mb=1.5 * one / 2**20)
    prompts = [b.prompt for b in Personalizer(spec, gen, MethodConfig()).build_prompts(
        [make_question(u, items[u]) for u in ("a", "b", "c", "a")])]
    limited = gen.score(prompts, LABELS)
    assert gen.loaded_bytes <= 1.5 * one and len(gen.loaded_adapters) == 1
    assert gen.stats["evictions"] >= 2
    roomy = AdapterGenerator(make_tiny_generator(seed=0, vocab_words=WORDS), spec.name, store=store,
                             cold_start_items=4)
    np.testing.assert_allclose(limited, roomy.score(prompts, LABELS), atol=1e-5)
    assert len(roomy.loaded_adapters) == 3


def test_corrupt_or_half_written_adapter_folders_are_refused(tiny, spec, store, fast_config):
    items = _train(tiny, spec, store, fast_config, {"a": 1, "b": 5})
    # A crashed write leaves only a hidden temp folder, which listing never reads.
    (store.folder(spec.name, "user", "a").parent / ".tmp-c-123").mkdir()
    assert [r.owner for r in store.records(spec.name, "user", verify=True)] == ["a", "b"]
    folder_a = store.folder(spec.name, "user", "a")
    weights = folder_a / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    gen = AdapterGenerator(tiny, spec.name, store=store, cold_start_items=4)
    prompt = Personalizer(spec, gen, MethodConfig()).build_prompts([make_question("a", items["a"])])[0].prompt
    with pytest.raises(ArtifactError, match="corrupt: adapter_model.safetensors"):
        gen.score([prompt], LABELS)
    folder_b = store.folder(spec.name, "user", "b")
    (folder_b / "pllm_adapter.json").unlink()  # as if the writer died before the record
    with pytest.raises(ArtifactError, match="incomplete: no pllm_adapter.json"):
        store.get(spec.name, "user", "b")
    (folder_b / "adapter_config.json").unlink()
    with pytest.raises(ArtifactError, match="incomplete"):
        store.load_record(folder_b)
