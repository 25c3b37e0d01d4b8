"""Per-user DPO with trl on a LoRA adapter over a tiny random Llama: every trainable parameter moves,
the implicit-reward margin on the training pairs rises, the caller's model is untouched, and the stored
adapter serves through the pool exactly like the trained one."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
import torch
from align_helpers import movie_pairs, one_thread  # noqa: F401  (fixtures)

from pllm.adapt.pool import shared_pool
from pllm.adapt.store import AdapterStore
from pllm.align.config import DPOSettings, LoraSettings
from pllm.align.dpo import build_dpo_trainer, train_dpo, truncate_pairs
from pllm.align.evaluate import implicit_rewards, pair_logprobs
from pllm.models.base import Prompt

SETTINGS = DPOSettings(epochs=3, batch_size=4, learning_rate=5e-3, beta=0.1, lora=LoraSettings(r=4, alpha=8))


def test_dpo_changes_every_trainable_parameter(tiny_generator) -> None:
    base_state = {k: v.clone() for k, v in tiny_generator.model.state_dict().items()}
    with tempfile.TemporaryDirectory() as out:
        trainer = build_dpo_trainer(tiny_generator, movie_pairs(8), SETTINGS, out)
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        assert before and all("lora_" in n for n in before)
        assert sum("lora_A" in n for n in before) == sum("lora_B" in n for n in before) == 8  # 2 layers x 4 projs
        trainer.train()
        after = dict(trainer.model.named_parameters())
        unchanged = [n for n, p in before.items() if torch.equal(p, after[n].detach())]
        assert unchanged == []
    # training ran on a private copy: the shared generator's weights and modules are as they were
    assert not any("lora_" in n for n, _ in tiny_generator.model.named_parameters())
    assert all(torch.equal(v, tiny_generator.model.state_dict()[k]) for k, v in base_state.items())


def test_dpo_raises_the_implicit_reward_margin_and_is_stored(tiny_generator) -> None:
    pairs = movie_pairs(8)
    result = train_dpo(tiny_generator, pairs, name="u1-dpo", users=["u1"], settings=SETTINGS)
    rec = AdapterStore().get_named("u1-dpo")
    assert rec.method == "dpo" and rec.members == ["u1"] and rec.base_model == tiny_generator.model_id
    assert result.n_rows == 8 and rec.metrics["train_pairs"] == 8 and rec.metrics["steps"] == 6
    assert rec.config["epochs"] == SETTINGS.epochs
    pool = shared_pool(tiny_generator)
    policy, reference = pool.generator(pool.load(rec)), pool.generator(None)
    trained = implicit_rewards(policy, reference, truncate_pairs(pairs, tiny_generator, SETTINGS))
    untrained = implicit_rewards(reference, reference, pairs)
    assert np.all(untrained.margins == 0)  # the policy starts as the reference (LoRA B = 0)
    assert trained.margins.mean() > 0.05 and trained.accuracy.value == 1.0
    # the reference scored once and shared (as the report does for three policies) gives the same rewards
    kept = truncate_pairs(pairs, tiny_generator, SETTINGS)
    shared = implicit_rewards(policy, pair_logprobs(reference, kept), kept)
    assert np.array_equal(shared.margins, trained.margins)
    with pytest.raises(ValueError, match="shape"):
        implicit_rewards(policy, pair_logprobs(reference, kept[:2]), kept)
    # trl's own log agrees that the margin grew during training
    margins = [x["rewards/margins"] for x in result.log if "rewards/margins" in x]
    assert margins[-1] > margins[0]
    # the base generator and the pool's adapters-off view give identical scores
    prompt = [Prompt(text=pairs[0].prompt)]
    cands = [[pairs[0].chosen]]
    assert np.array_equal(reference.score(prompt, cands), tiny_generator.score(prompt, cands))


def test_truncation_drops_pairs_that_become_equal(tiny_generator) -> None:
    from pllm.align.store import PreferencePair

    pairs = [PreferencePair(id="a", prompt="q", chosen="great movie , I love it", rejected="great movie , I hate it")]
    short = DPOSettings(max_answer_tokens=2)
    assert truncate_pairs(pairs, tiny_generator, short) == []
    assert len(truncate_pairs(pairs, tiny_generator, DPOSettings())) == 1
