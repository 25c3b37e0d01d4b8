"""`llm-pointwise-adapter`: each user's candidates scored through their own peft adapter (tiny random
Llama, random LoRA weights saved the way `pllm adapt train` saves them), with the documented fallback."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pllm.adapt.config import AdaptConfig
from pllm.adapt.data import training_pairs, user_items
from pllm.adapt.store import AdapterRecord, AdapterStore, adapter_name
from pllm.adapt.train import base_key
from pllm.errors import InputError
from pllm.models import load_generator
from pllm.models.testing import make_tiny_generator
from pllm.rec.data import REC_SPEC, TASK_NAME, RecBuildConfig, ensure_task
from pllm.rec.rankers import PointwiseConfig, make_ranker
from pllm_testkit import random_lora

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def rec_qs(ml_dir):
    from pllm.data.base import BUILDERS

    return BUILDERS.get("movielens-rec")().questions(
        RecBuildConfig(source=str(ml_dir), out="-", split="time", negatives=5))["test"]


def save_user_adapter(adapters: AdapterStore, base, owner: str, seed: int, *, kind: str = "user",
                      min_items: int = 0, **extra) -> AdapterRecord:
    """A `pllm adapt`-shaped adapter (folder + record) with random LoRA weights for `owner`."""
    model = random_lora(base, seed)
    record = AdapterRecord(kind=kind, task=TASK_NAME, owner=owner, name=adapter_name(kind, owner), method="lora",
                           base_model=base.model_id, base_key=base_key(base), config={"min_items": min_items},
                           data_hash=f"random-{seed}", n_items=0, n_pairs=0, train_seconds=0.0, losses=[], **extra)
    return adapters.write(record, lambda tmp: model.save_pretrained(str(tmp)))


def as_user(q, user: str):
    return dataclasses.replace(q, id=f"{q.id}@{user}", user_id=user)


def test_users_adapters_change_scores_and_others_fall_back_to_base(rec_qs, tmp_path):
    q = rec_qs[0]
    base = make_tiny_generator(seed=0)
    adapters = AdapterStore(tmp_path / "adapters")
    save_user_adapter(adapters, base, "alice", seed=1)
    save_user_adapter(adapters, base, "bob", seed=2)
    cfg = PointwiseConfig(retriever="bm25", k=2)
    ranker = make_ranker("llm-pointwise-adapter", generator=base, config=cfg, adapters=tmp_path / "adapters")
    calls: list[int] = []
    score = ranker.routed.base.score

    def counting(prompts, *a, **kw):  # one forward batch per user: count calls reaching the model
        calls.append(len(prompts))
        return score(prompts, *a, **kw)

    ranker.routed.base.score = counting
    # the same history and candidates, asked for three users
    alice, bob, carol = (ranker.score(as_user(q, u)) for u in ("alice", "bob", "carol"))
    n = len(q.query["candidates"])
    assert calls == [n, n, n]  # all candidates of one user in one call
    assert alice.shape == bob.shape == (n,) and np.isfinite(alice).all()
    assert not np.allclose(alice, bob, atol=1e-4)  # different adapters, different scores
    # carol has no adapter and there are no group adapters: the base model scores her candidates
    plain = make_ranker("llm-pointwise", generator=make_tiny_generator(seed=0), config=cfg)
    np.testing.assert_allclose(carol, plain.score(as_user(q, "carol")), atol=1e-4)
    assert not np.allclose(alice, carol, atol=1e-4)
    d = ranker.describe()
    assert d["ranker"] == "llm-pointwise-adapter" and d["rows_by_route"] == {"user": 2 * n, "base": n}


def test_cold_users_go_to_their_group_adapter(rec_qs, bow_embedder, tmp_path):
    q = rec_qs[0]
    base = make_tiny_generator(seed=0)
    adapters = AdapterStore(tmp_path / "adapters")
    # alice's own adapter was trained with more items than this history has: she counts as cold
    save_user_adapter(adapters, base, "alice", seed=1, min_items=len(q.profile) + 1)
    save_user_adapter(adapters, base, "g0", seed=3, kind="group", members=["x"], centroid=[0.125] * 64,
                      embedder=bow_embedder)
    cfg = PointwiseConfig(k=1)
    ranker = make_ranker("llm-pointwise-adapter", generator=base, config=cfg, adapters=adapters)
    alice = ranker.score(as_user(q, "alice"))
    dave = ranker.score(as_user(q, "dave"))  # no adapter at all: the same group
    assert ranker.describe()["rows_by_route"] == {"group": 2 * len(alice)}
    np.testing.assert_allclose(alice, dave, atol=1e-5)
    plain = make_ranker("llm-pointwise", generator=make_tiny_generator(seed=0), config=cfg)
    assert not np.allclose(alice, plain.score(as_user(q, "alice")), atol=1e-4)  # the group adapter scored


def test_adapter_ranker_refuses_backends_without_peft(echo_backend):
    with pytest.raises(InputError, match="local transformers model"):
        make_ranker("llm-pointwise-adapter", generator=load_generator(echo_backend))


def test_adapt_training_texts_are_the_pointwise_prompts(rec_qs, echo_backend):
    """`pllm adapt train --task movielens-rec` trains on exactly the prompts this ranker scores."""
    ensure_task()
    gen = load_generator(echo_backend)
    q = rec_qs[0]
    items = user_items([q])[q.user_id]
    pairs = training_pairs(REC_SPEC, gen, items, AdaptConfig(k=0, max_items=None, min_items=0), user_id=q.user_id)
    item = items[-1]
    ranker = make_ranker("llm-pointwise", generator=gen, config=PointwiseConfig(retriever="none", k=0))
    cand = {"movie_id": item.fields["movie_id"], "title": item.fields["title"], "year": item.fields["year"],
            "genres": item.fields["genres"]}
    asked = dataclasses.replace(q, query={**q.query, "candidates": [cand]})
    ranker.score(asked)
    assert gen.prompts[-1].text == pairs[-1].prompt.text
    assert pairs[-1].target.strip() in ("Yes", "No")
