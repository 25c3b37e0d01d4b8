"""OPPU's second stage (`ft+user+<method>`): a private adapter per scored user on top of the merged task model.
Tiny random models; the mechanics (what is trained on, where it is filed, how it is routed), not the quality."""

import dataclasses

import numpy as np
import pytest
from adapt_helpers import make_items, train_first_stage

from pllm.adapt.config import AdaptConfig
from pllm.adapt.generator import AdapterGenerator
from pllm.adapt.learned import ft_owner, learned_model_id
from pllm.adapt.pool import AdapterPool
from pllm.adapt.private import (
    RECIPE_FILE,
    PrivateRecipe,
    private_history,
    private_task,
    private_texts,
    train_private,
)
from pllm.adapt.train import train_adapter
from pllm.errors import ArtifactError, InputError
from pllm.eval.methods import method_from_name, parse_method
from pllm.eval.runner import run_method
from pllm.pipeline import MethodConfig
from pllm.prompting.profile import ItemCrowd
from pllm.types import ProfileItem, Question

MARKER = "4"  # every scored question's target; no profile item is ever rated 4
QUERY = {"title": "Heat", "year": "1995", "genres": "Comedy"}
RECIPE = PrivateRecipe(epochs=1, batch_size=4, max_texts=6, min_items=6, lr=5e-2)


def _question(user: str, items: list[ProfileItem], *, n: int = 0, target: str | None = MARKER) -> Question:
    return Question(id=f"q-{user}-{n}", user_id=user, input="Heat Comedy", query=dict(QUERY), profile=items,
                    target=target, timestamp=1e6 + n)


def _train() -> list[Question]:
    """Train-split users: a and b rate everything 1, c everything 5 (their questions' targets are 1 / 5)."""
    return [_question(u, make_items(u, 8, rating=r), target=str(r)) for u, r in (("a", 1), ("b", 1), ("c", 5))]


@pytest.fixture
def method() -> MethodConfig:
    return parse_method("ft+user+stats+crowd+recency", 2, max_prompt_tokens=256)


@pytest.fixture
def crowd(spec) -> ItemCrowd:
    """The train split's answers per item, as the runner fits them for a crowd method."""
    return ItemCrowd(spec).fit(_train())


@pytest.fixture
def merged(spec, tiny, store, method):
    """(the task adapter's record, the merged copy) for `method`'s first stage."""
    return train_first_stage(tiny, spec, method, _train(), store)


def test_method_names_parse_and_round_trip_their_labels():
    mc = parse_method("ft+user+stats+crowd/median", 4)
    assert (mc.ft, mc.ft_user, mc.stats, mc.crowd, mc.retriever, mc.readout) == (True, True, True, True, "none",
                                                                                  "median")
    for name in ("ft+user+stats+crowd/median", "ft+user+bm25@4", "ft+user", "ft+user+stats+bm25@8+cal/median"):
        assert method_from_name(name).label == name
    assert not parse_method("ft+stats+crowd", 4).ft_user
    # the first stage is the task adapter of the same method without `user+`: one adapter, reused
    assert ft_owner(mc, "m") == ft_owner(parse_method("ft+stats+crowd", 4), "m")
    with pytest.raises(InputError, match="unknown method"):
        parse_method("user+bm25", 4)
    with pytest.raises(InputError, match="needs ft"):
        MethodConfig(ft_user=True)


def test_private_texts_come_from_the_users_own_earlier_items_never_a_target(spec, merged, store, method, crowd):
    """u rates everything 5, v everything 1; every scored target is the marker. u's texts hold only u's items
    and ratings (the crowd line is the train split's other users); v has two questions, and the later one's
    profile holds the earlier one's answer (the marker): it is not trained on."""
    task_record, gen = merged
    u_items, v_items = make_items("u", 8, rating=5), make_items("v", 8, rating=1)
    answer = ProfileItem(id="v-answer", user_id="v", timestamp=50.0, fields={**QUERY, "rating": MARKER})
    questions = [_question("u", u_items), _question("v", v_items), _question("v", v_items + [answer], n=1)]
    histories = private_history(questions)
    assert [i.id for i in histories["v"]] == [i.id for i in v_items]
    config = RECIPE.adapt_config(spec, method)
    for user, rating in (("u", "5"), ("v", "1")):
        pairs = private_texts(gen, spec, config, user, histories[user], crowd=crowd)
        assert len(pairs) == RECIPE.max_texts and all(p.item_id.startswith(f"{user}/{user}-") for p in pairs)
        for p in pairs:
            assert f"Rating: {MARKER}" not in p.prompt.text + p.target
            assert p.target.strip()[-1] == rating
            assert "Other users (3) for this item" in p.prompt.text  # the train split's crowd, as at inference
        # each text's statistics cover the user's strictly earlier items: all theirs, all one rating
        assert all(f"{rating}: 100%" in p.prompt.text for p in pairs if "past answers" in p.prompt.text)
    result = train_private(gen, spec, method, questions, task_record=task_record, store=store, recipe=RECIPE,
                           crowd=crowd)
    assert sorted(result.records) == ["u", "v"] and result.records["v"].n_items == RECIPE.max_texts


def test_private_adapters_are_filed_apart_and_refused_on_the_wrong_base(spec, tiny, merged, store, method, crowd):
    task_record, gen = merged
    # a per-user adapter of `pllm adapt train` on the bare model, for the same user
    plain, _ = train_adapter(tiny, spec, kind="user", owner="u", items_by_user={"u": make_items("u", 8)},
                             config=AdaptConfig(epochs=1, batch_size=4, max_items=6, min_items=6), store=store)
    result = train_private(gen, spec, method, [_question("u", make_items("u", 8, rating=5))],
                           task_record=task_record, store=store, recipe=RECIPE, crowd=crowd)
    record = result.records["u"]
    assert gen.model_id == learned_model_id(tiny.model_id, task_record) == record.base_model
    assert record.task == private_task(spec, task_record) and record.path != plain.path
    assert store.get(spec.name, "user", "u").data_hash == plain.data_hash  # nothing overwritten
    assert (store.root / record.path.parent.parent.name / RECIPE_FILE).is_file()  # the recipe beside them
    with pytest.raises(ArtifactError, match=str(record.path)):
        AdapterPool(tiny).load(record)  # the bare base model
    with pytest.raises(ArtifactError, match=str(record.path)):
        AdapterGenerator(tiny, record.task, store=store, merge_task=False, users={"u": record})
    with pytest.raises(ArtifactError, match="merged with task adapter"):
        train_private(tiny, spec, method, [_question("u", make_items("u", 8))], task_record=task_record,
                      store=store, recipe=RECIPE, crowd=crowd)


def test_private_adapters_are_cached_by_content(spec, merged, store, method, crowd):
    task_record, gen = merged
    questions = [_question("u", make_items("u", 8, rating=5))]
    first = train_private(gen, spec, method, questions, task_record=task_record, store=store, recipe=RECIPE,
                          crowd=crowd)
    again = train_private(gen, spec, method, questions, task_record=task_record, store=store, recipe=RECIPE,
                          crowd=crowd)
    assert first.trained == ["u"] and again.trained == []
    assert again.records["u"].data_hash == first.records["u"].data_hash
    assert again.summary()["private_reused"] == 1
    grown = [_question("u", make_items("u", 9, rating=5))]  # a longer history retrains it
    assert train_private(gen, spec, method, grown, task_record=task_record, store=store, recipe=RECIPE,
                         crowd=crowd).trained
    other = dataclasses.replace(RECIPE, epochs=2)  # so does another recipe
    assert train_private(gen, spec, method, grown, task_record=task_record, store=store, recipe=other,
                         crowd=crowd).trained


def test_users_below_min_items_run_on_the_task_model_and_are_counted(spec, tiny, store, method):
    """w has too few items: no private adapter, scored on the merged task model alone, exactly as `ft+...`
    scores them; u is routed to their own adapter and scored differently."""
    questions = [_question("u", make_items("u", 8, rating=5)), _question("w", make_items("w", 3, rating=1))]
    first = run_method(spec, questions, tiny, dataclasses.replace(method, ft_user=False), train=_train(),
                       adapters=store)
    second = run_method(spec, questions, tiny, method, train=_train(), adapters=store, private=RECIPE)
    assert second.method == "ft+user+stats+crowd+recency@2" and second.config["ft_user"] is True
    info = second.config
    assert (info["private_users"], info["private_fallback_users"], info["private_fallback_questions"]) == (1, 1, 1)
    assert info["adapter_trained_now"] is False  # the first stage's task adapter is reused
    assert info["private_recipe"]["min_items"] == RECIPE.min_items
    scores = [[r.label_scores[k] for k in sorted(r.label_scores)] for r in (*first.records, *second.records)]
    u_ft, w_ft, u_user, w_user = (np.array(s) for s in scores)
    np.testing.assert_allclose(w_user, w_ft, atol=1e-4)
    assert not np.allclose(u_user, u_ft, atol=1e-4)


def test_forgetting_a_user_deletes_their_private_adapters(spec, merged, store, method, crowd):
    task_record, gen = merged
    result = train_private(gen, spec, method, [_question("u", make_items("u", 8))], task_record=task_record,
                           store=store, recipe=RECIPE, crowd=crowd)
    folder = result.records["u"].path
    assert folder.is_dir()
    store.db.forget(user_id="u")
    assert not folder.exists() and store.get(result.task, "user", "u") is None


def test_one_runner_shares_the_first_stage_and_leaves_it_bare(spec, tiny, store, method):
    """An `ft+user+` cell and an `ft+` cell of one runner share the merged task model; the private router
    gets its own copy, so the `ft+` cell scored after it is exactly the task model."""
    from pllm.eval.datasets import LoadedTask
    from pllm.eval.runner import CellRunner, llm_cell

    questions = [_question("u", make_items("u", 8, rating=5))]
    task = LoadedTask("ml", spec, questions, learn=_train())
    alone = run_method(spec, questions, tiny, dataclasses.replace(method, ft_user=False), train=_train(),
                       adapters=store)
    runner = CellRunner(lambda key: tiny, adapters=store, private=RECIPE)
    private = runner.result(llm_cell(method), task)
    first = runner.result(llm_cell(dataclasses.replace(method, ft_user=False)), task)
    assert private.config["private_users"] == 1 and not hasattr(tiny.model, "peft_config")
    assert first.records[0].label_scores == pytest.approx(alone.records[0].label_scores, abs=1e-5)
