"""Batched LoRA equals peft's mixed-batch path: logits within 1e-4 in fp32, the same greedy text and label
scores, with adapters of different ranks (and targets), rows without an adapter and left padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from adapt_helpers import WORDS, make_items, make_question

from pllm.adapt import AdaptConfig, AdapterGenerator, train_adapter
from pllm.adapt.batched_lora import BatchedLoRA
from pllm.models.base import Prompt
from pllm.models.testing import make_tiny_generator
from pllm.pipeline import MethodConfig, Personalizer

LABELS = [" 1", " 2", " 3", " 4", " 5"]
# (name, rank, alpha, targets): different ranks, scales and target sets per adapter
ADAPTERS = [("u2", 2, 4, ["q_proj", "v_proj"]), ("u8", 8, 16, None), ("u4", 4, 32, ["o_proj", "down_proj"])]
ROWS = ["u8", "__base__", "u2", "u4", "u8", "__base__"]
TEXTS = ["Heat Comedy", "Fargo", "Alien Drama Horror Sci-Fi Casino", "Babe Crime", "Clueless", "Heat Heat Fargo"]


def _with_adapters(gen):
    """`gen` holding three random LoRA adapters (B not zero-initialised, so every adapter matters)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    for k, (name, r, alpha, targets) in enumerate(ADAPTERS):
        config = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets or "all-linear", init_lora_weights=False,
                            lora_dropout=0.0)
        if k == 0:
            gen.model = get_peft_model(gen.model, config, adapter_name=name)
        else:
            gen.model.add_adapter(name, config)
    gen.model.eval()
    return gen


@pytest.fixture
def multi():
    return _with_adapters(make_tiny_generator(seed=0, vocab_words=WORDS))


def _logits_gap(gen) -> float:
    """Max abs logit difference, peft's mixed batch vs the stacked path, over left-padded rows."""
    ids, mask = gen.left_pad([gen.tokenizer(t)["input_ids"] for t in TEXTS])
    assert (mask == 0).any()  # rows of different lengths: left padding is exercised
    with torch.no_grad():
        peft_logits = gen.model(input_ids=ids, attention_mask=mask, adapter_names=ROWS).logits
        with BatchedLoRA(gen.model).active():
            ours = gen.model(input_ids=ids, attention_mask=mask, adapter_names=ROWS).logits
    return (peft_logits - ours).abs().max().item()


def test_logits_equal_peft_mixed_batch_with_left_padding(multi):
    ids, mask = multi.left_pad([multi.tokenizer(t)["input_ids"] for t in TEXTS])
    assert (mask == 0).any()  # rows of different lengths: left padding is exercised
    stacks = BatchedLoRA(multi.model)
    assert stacks.layers and not stacks.unserved
    with torch.no_grad():
        peft_logits = multi.model(input_ids=ids, attention_mask=mask, adapter_names=ROWS).logits
        with stacks.active():
            ours = multi.model(input_ids=ids, attention_mask=mask, adapter_names=ROWS).logits
        plain = multi.model(input_ids=ids, attention_mask=mask, adapter_names=["__base__"] * len(ROWS)).logits
    assert (peft_logits - ours).abs().max().item() < 1e-4
    for r, name in enumerate(ROWS):  # adapters change their rows; base rows are the bare model's
        differs = (peft_logits[r] - plain[r]).abs().max().item() > 1e-3
        assert differs == (name != "__base__")
    assert not hasattr(next(iter(stacks.layers)), "_pllm_stack")  # peft's own path is back after the block


def test_greedy_text_and_label_scores_equal_peft(multi):
    prompts = [Prompt(text=t, chat=False) for t in TEXTS]
    peft_gens = multi.generate(prompts, max_new_tokens=6, batch_size=4, adapter_names=ROWS)
    peft_scores = multi.score(prompts, LABELS, adapter_names=ROWS)
    peft_long = multi.score(prompts, [" Heat Comedy", " Alien"], adapter_names=ROWS)  # prefix-cache path
    with BatchedLoRA(multi.model).active():
        gens = multi.generate(prompts, max_new_tokens=6, batch_size=4, adapter_names=ROWS)
        scores = multi.score(prompts, LABELS, adapter_names=ROWS)
        long = multi.score(prompts, [" Heat Comedy", " Alien"], adapter_names=ROWS)
    assert [g.text for g in gens] == [g.text for g in peft_gens]
    np.testing.assert_allclose(scores, peft_scores, rtol=0, atol=1e-4)
    np.testing.assert_allclose(long, peft_long, rtol=0, atol=1e-4)
    print("batched == peft:", [g.text for g in gens])  # a non-timed sanity look with -s


def test_adapter_generator_batched_equals_peft_path(tiny, spec, store):
    items = {}
    for user, rating, r in (("low", 1, 2), ("high", 5, 8)):  # stored adapters of different ranks
        config = AdaptConfig(method="lora", r=r, alpha=2 * r, epochs=1, batch_size=4, lr=5e-2, max_items=8,
                             min_items=4)
        items[user] = make_items(user, 8, rating=rating)
        train_adapter(tiny, spec, kind="user", owner=user, items_by_user={user: items[user]}, config=config,
                      store=store)
    questions = [make_question("low", items["low"]), make_question("new", []), make_question("high", items["high"])]
    results = []
    for batched in (False, True):
        gen = AdapterGenerator(make_tiny_generator(seed=0, vocab_words=WORDS), spec.name, store=store,
                               cold_start_items=4, batched_lora=batched)
        prompts = [b.prompt for b in Personalizer(spec, gen, MethodConfig()).build_prompts(questions)]
        results.append((gen.score(prompts, LABELS), [g.text for g in gen.generate(prompts, max_new_tokens=4)]))
    (peft_scores, peft_texts), (scores, texts) = results
    np.testing.assert_allclose(scores, peft_scores, rtol=0, atol=1e-4)
    assert texts == peft_texts
    assert np.abs(scores[0] - scores[2]).max() > 1e-4  # two users, two adapters


@pytest.mark.slow
def test_embedded_model_batched_equals_peft():
    from pllm.models import load_generator

    gen = _with_adapters(load_generator("hf"))
    assert _logits_gap(gen) < 1e-4
    prompts = [Prompt(text=t) for t in TEXTS]
    peft_texts = [g.text for g in gen.generate(prompts, max_new_tokens=8, adapter_names=ROWS)]
    with BatchedLoRA(gen.model).active():
        assert [g.text for g in gen.generate(prompts, max_new_tokens=8, adapter_names=ROWS)] == peft_texts
