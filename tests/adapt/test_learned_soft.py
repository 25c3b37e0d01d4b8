"""Soft tokens on a learned method (`ft+soft+<method>`): one user encoder trained against the frozen merged task
model on train-split items the task adapter did not train on. Tiny random models; the mechanics (what it learns
from, where it is cached, that the merged model is untouched, that it runs through the runner), not the quality."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from adapt_helpers import make_items, train_first_stage

from pllm.adapt.learned import (
    learned_model_id,
    soft_questions,
    soft_recipe,
    train_learned_soft,
)
from pllm.adapt.store import slug
from pllm.adapt.train import TRAINING_TEXTS
from pllm.errors import ArtifactError, InputError
from pllm.eval.methods import method_from_name, parse_method
from pllm.eval.runner import run_method
from pllm.pipeline import MethodConfig
from pllm.soft.model import load_soft_generator
from pllm.soft.train import SoftTrainConfig
from pllm.types import Question

MARKER = "4"  # every train question's target: no profile item is ever rated 4
QUERY = {"title": "Heat", "year": "1995", "genres": "Comedy"}


def _train() -> list[Question]:
    """Train-split users: a and b rate everything 1, c everything 5; their questions' targets are the marker."""
    return [Question(id=f"q-{u}", user_id=u, input="Heat Comedy", query=dict(QUERY), profile=make_items(u, 8, rating=r),
                     target=MARKER, timestamp=1e6) for u, r in (("a", 1), ("b", 1), ("c", 5))]


@pytest.fixture
def method(bow_embedder) -> MethodConfig:
    return parse_method("ft+soft+stats+crowd+recency", 2, max_prompt_tokens=256, embedder=bow_embedder)


@pytest.fixture
def soft_config(bow_embedder) -> SoftTrainConfig:
    return SoftTrainConfig(n_tokens=2, embedder=bow_embedder, batch_size=4, attn_dim=8, mlp_hidden=16,
                           max_prompt_tokens=256)


@pytest.fixture
def merged(spec, tiny, store, method):
    """(the task adapter's record, the merged copy) of `method`'s first stage, trained on 12 of the 24 items."""
    return train_first_stage(tiny, spec, method, _train(), store)


def test_names_parse_round_trip_and_share_the_first_stage():
    mc = method_from_name("ft+soft+stats+crowd/median")
    assert (mc.ft, mc.ft_soft, mc.ft_user, mc.stats, mc.crowd, mc.readout) == (True, True, False, True, True, "median")
    for name in ("ft+soft+stats+crowd/median", "ft+soft+bm25@4", "ft+soft"):
        assert method_from_name(name).label == name
    assert mc.task_adapter_method() == method_from_name("ft+stats+crowd")  # one task adapter under both
    with pytest.raises(InputError, match="need ft"):
        MethodConfig(ft_soft=True)
    with pytest.raises(InputError, match="pick one"):
        parse_method("ft+user+soft+bm25", 4)


def test_soft_texts_are_items_the_task_adapter_did_not_train_on_and_never_a_target(spec, merged):
    record, _ = merged
    adapter_items = {json.loads(x)["item"] for x in (record.path / TRAINING_TEXTS).read_text().splitlines()}
    qs = soft_questions(spec, _train(), record, 12)
    assert len(qs) == 24 - len(adapter_items) == 12  # every other item, none twice
    assert not {q.id for q in qs} & adapter_items and len({q.id for q in qs}) == len(qs)
    # a train split too small for n fresh items fills up with the adapter's own
    more = soft_questions(spec, _train(), record, 15)
    assert len(more) == 15 and len({q.id for q in more} & adapter_items) == 3 and {q.id for q in qs} < {
        q.id for q in more}
    assert all(q.target in {"1", "5"} for q in qs)  # the items' own ratings; a question's target is never read
    # each text carries the user's strictly earlier items as the history the encoder reads
    for q in qs:
        assert all(p.timestamp < q.timestamp for p in q.profile) and len(q.profile) == int(q.id.rsplit("-", 1)[1])
    assert [q.id for q in soft_questions(spec, _train(), record, 5)] == [q.id for q in soft_questions(
        spec, _train(), record, 5)]  # seeded
    # only the task adapter's members: a user forgotten since (gone from `members`) is left out
    record.members = ["a", "b"]
    assert {q.user_id for q in soft_questions(spec, _train(), record, 100)} == {"a", "b"}


def test_the_encoder_trains_against_the_frozen_merged_model_and_is_cached_by_content(spec, tiny, merged, store,
                                                                                     method, soft_config):
    record, learned = merged
    before = {k: v.clone() for k, v in learned.model.state_dict().items()}
    gen, info = train_learned_soft(learned, spec, method, _train(), record=record, store=store, config=soft_config,
                                   max_pairs=8)
    assert info["soft_trained_now"] and info["soft_examples"] == info["soft_unseen_by_adapter"] == 8
    assert info["soft_epoch_losses"]
    assert gen.base is learned and gen.config.generator_model_id == learned_model_id("tiny-llama-seed0", record)
    after = learned.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the merged model never changes
    folder = Path(info["soft_encoder"])
    assert folder.parent == store.root / slug(spec.name) / "soft"  # beside the adapters
    log = json.loads((folder / "train_log.json").read_text())
    assert log["rendering"]["stats"] and log["rendering"]["crowd"] and not log["rendering"]["ft"]
    again, info2 = train_learned_soft(learned, spec, method, _train(), record=record, store=store, config=soft_config,
                                      max_pairs=8)
    assert not info2["soft_trained_now"] and info2["soft_encoder"] == info["soft_encoder"]
    # another sample size is another encoder beside it: the first stays cached
    _, info3 = train_learned_soft(learned, spec, method, _train(), record=record, store=store, config=soft_config,
                                  max_pairs=6)
    assert info3["soft_trained_now"] and info3["soft_encoder"] != info["soft_encoder"] and info3["soft_examples"] == 6
    assert not train_learned_soft(learned, spec, method, _train(), record=record, store=store, config=soft_config,
                                  max_pairs=8)[1]["soft_trained_now"]
    # changed texts (user c now rates everything 3) retrain it under the same name
    changed = [dataclasses.replace(q, profile=make_items("c", 8, rating=3)) if q.user_id == "c" else q
               for q in _train()]
    _, info4 = train_learned_soft(learned, spec, method, changed, record=record, store=store, config=soft_config,
                                  max_pairs=8)
    assert info4["soft_trained_now"] and info4["soft_encoder"] == info["soft_encoder"]
    with pytest.raises(ArtifactError, match="trained for generator 'tiny-llama-seed0\\+ft-"):
        load_soft_generator(info["soft_encoder"], tiny)  # the bare model is not the one it was trained against
    with pytest.raises(InputError, match="no soft stage"):
        train_learned_soft(learned, spec, method.task_adapter_method(), _train(), record=record, store=store)


def test_soft_stage_runs_through_the_eval_runner_beside_its_first_stage(spec, tiny, store, method):
    test = [Question(id="t1", user_id="z", input="Heat Comedy", query=dict(QUERY), profile=make_items("z", 4),
                     target="3", timestamp=1e6)]
    soft = run_method(spec, test, tiny, method, train=_train(), adapters=store)
    first = run_method(spec, test, tiny, method.task_adapter_method(), train=_train(), adapters=store)
    assert soft.method == "ft+soft+stats+crowd+recency@2" and soft.config["ft_soft"] is True
    assert soft.config["soft_encoder"] and soft.config["adapter"] == first.config["adapter"]
    assert soft.records[0].label_scores != first.records[0].label_scores
    with pytest.raises(InputError, match="needs a train split"):
        run_method(spec, test, tiny, method, train=[], adapters=store)


def test_a_soft_recipe_sets_how_the_encoder_trains_never_the_rendering(method):
    """A grid's `soft_recipe`: SoftTrainConfig fields on top of the method's embedder and prompt budget."""
    default = soft_recipe(method)
    assert (default.embedder, default.max_prompt_tokens, default.n_tokens) == (method.embedder, 256, 4)
    swept = soft_recipe(method, {"n_tokens": 8, "epochs": 3, "embedder": "minilm"})
    assert (swept.n_tokens, swept.epochs, swept.embedder, swept.max_prompt_tokens) == (8, 3, "minilm", 256)
    with pytest.raises(InputError, match="soft_recipe cannot set k, retriever"):
        soft_recipe(method, {"retriever": "bm25", "k": 8})
    with pytest.raises(InputError, match="soft_recipe cannot set colour"):
        soft_recipe(method, {"colour": 1})
    with pytest.raises(InputError, match="n_tokens must be >= 1"):
        soft_recipe(method, {"n_tokens": 0})
