"""Learned methods (`ft+<method>`): a task adapter trained on the train split with the inference
rendering, merged into a copy of the base model. Tiny random models; the mechanics, not the quality."""

import dataclasses
import json

import pytest
import torch
from adapt_helpers import make_items

from pllm.adapt.learned import (
    fit_layers,
    ft_config,
    ft_owner,
    ft_recipe,
    learned_generator,
    recipe_variant,
    train_learned,
)
from pllm.adapt.train import TRAINING_TEXTS
from pllm.errors import ArtifactError, InputError
from pllm.eval.methods import parse_method
from pllm.eval.runner import run_method
from pllm.models.testing import make_tiny_generator
from pllm.pipeline import MethodConfig
from pllm.types import Question

MARKER = "4"  # test targets are planted with a rating no training item ever has


def _split(user_ratings: int, users: list[str], *, first: int = 0) -> list[Question]:
    qs = []
    for u in users:
        items = make_items(u, 8, rating=user_ratings)
        qs.append(Question(id=f"q-{u}-{first}", user_id=u, input="Heat Comedy",
                           query={"title": "Heat", "year": "1995", "genres": "Comedy"}, profile=items,
                           target=MARKER, timestamp=1e6))
    return qs


@pytest.fixture
def method():
    return MethodConfig(retriever="recency", k=2, max_prompt_tokens=256, ft=True)


def test_learned_method_names_parse_and_label(method):
    mc = parse_method("ft+bm25+cal/median", 4)
    assert (mc.ft, mc.retriever, mc.k, mc.calibrate, mc.readout) == (True, "bm25", 4, True, "median")
    assert mc.label == "ft+bm25@4+cal/median"
    assert parse_method("ft", 4).label == "ft" and parse_method("ft", 4).retriever == "none"
    assert ft_owner(mc, "m") == ft_owner(parse_method("ft+bm25", 4), "m") == "ft-bm25@4-m"
    with pytest.raises(InputError, match="unknown method"):
        parse_method("ft+bm42", 4)


def test_a_recipe_sweep_overrides_training_fields_only(spec, method):
    """A grid's `ft_recipe` sets how the adapter trains (layers, modules), never what its prompts hold."""
    swept = ft_recipe(spec, method, {"top_layers": None, "target_modules": ["q_proj", "down_proj"]})
    assert (swept.top_layers, swept.target_modules, swept.retriever, swept.k) == (None, ["q_proj", "down_proj"],
                                                                                  "recency", 2)
    assert ft_recipe(spec, method, None) == ft_config(spec, method)
    with pytest.raises(InputError, match="ft_recipe cannot set k, retriever"):
        ft_recipe(spec, method, {"retriever": "bm25", "k": 8})
    with pytest.raises(InputError, match="ft_recipe cannot set colour"):
        ft_recipe(spec, method, {"colour": 1})


def test_training_reads_train_profiles_only_never_a_test_target(spec, tiny, store, method):
    """Every question's target is the marker; no training text may contain a rating of 4: targets are
    never read, and the train users' own items (rated 1 or 5) are all the adapter sees."""
    train = _split(1, ["a", "b"]) + _split(5, ["c"])
    config = ft_config(spec, method, epochs=1, batch_size=4)
    record, trained = train_learned(tiny, spec, method, train, store=store, config=config, max_pairs=12)
    # a recipe other than the default (here: fewer epochs, smaller batches) names its own adapter
    variant = recipe_variant(fit_layers(tiny, config), fit_layers(tiny, ft_config(spec, method)))
    assert variant.startswith("-v") and recipe_variant(config, config) == ""
    # ... and so does a sample size other than the default (12 texts here)
    assert trained and record.kind == "task"
    assert record.owner == ft_owner(method, "tiny-llama-seed0", train, f"{variant}-n12")
    assert record.owner.startswith(f"ft-recency@2-tiny-llama-seed0{variant}-n12-s")
    lines = [json.loads(x) for x in (record.path / TRAINING_TEXTS).read_text().splitlines()]
    assert len(lines) == record.n_pairs == 12
    assert all(f"Rating: {MARKER}" not in ln["prompt"] + ln["target"] for ln in lines)
    assert {ln["target"].strip()[-1] for ln in lines} <= {"1", "5"}
    # RAG-aware: the demonstrations retrieved from the user's earlier items are inside the training prompt
    assert any(ln["prompt"].count("Rating:") >= 3 for ln in lines)
    assert record.members == ["a", "b", "c"]


def test_adapter_is_cached_by_content_and_retrained_when_data_change(spec, tiny, store, method):
    cfg = ft_config(spec, method, epochs=1, batch_size=4)
    train = _split(1, ["a", "b"])
    first, trained = train_learned(tiny, spec, method, train, store=store, config=cfg, max_pairs=8)
    again, retrained = train_learned(tiny, spec, method, train, store=store, config=cfg, max_pairs=8)
    assert trained and not retrained and again.data_hash == first.data_hash
    # another sample size is another adapter beside it: the first is still cached afterwards
    other, trained = train_learned(tiny, spec, method, train, store=store, config=cfg, max_pairs=6)
    assert trained and other.owner != first.owner and other.n_pairs == 6
    assert not train_learned(tiny, spec, method, train, store=store, config=cfg, max_pairs=8)[1]
    changed, trained = train_learned(tiny, spec, method, _split(5, ["a", "b"]), store=store, config=cfg, max_pairs=8)
    assert trained and changed.data_hash != first.data_hash


@pytest.mark.parametrize("top_layers", [None, 1])
def test_full_fine_tuning_trains_whole_modules_and_leaves_the_base_untouched(spec, tiny, store, method, top_layers):
    """`method: full` (peft modules_to_save): every weight of the linear modules (of the top layers) is trained
    on a copy of the model; the base keeps its weights; the saved adapter holds those modules, not the head."""
    from safetensors.torch import load_file

    cfg = ft_recipe(spec, method, {"method": "full", "top_layers": top_layers, "epochs": 2, "batch_size": 4,
                                   "lr": 2.0})  # (x 0.025: a step large enough to move a tiny model)
    before = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}
    record, trained = train_learned(tiny, spec, method, _split(5, ["a", "b"]), store=store, config=cfg, max_pairs=16)
    assert trained and record.method == "full" and record.owner.startswith("ft-recency@2-tiny-llama-seed0-v")
    assert all(torch.equal(before[n], p) for n, p in tiny.model.named_parameters())  # the base is untouched
    saved = load_file(str(record.path / "adapter_model.safetensors"))
    modules = [k for k in saved if "lora_" not in k]
    layers = {int(k.split("layers.")[1].split(".")[0]) for k in modules}
    n_layers = tiny.model.config.num_hidden_layers
    assert layers == (set(range(n_layers)) if top_layers is None else {n_layers - 1})
    assert len(modules) == 7 * len(layers) and not any(k.endswith("lm_head.weight") for k in saved)
    assert all(float(v.abs().sum()) == 0.0 for k, v in saved.items() if "lora_B" in k)  # the placeholder is zero
    tuned = learned_generator(tiny, spec, record)
    changed = {n for n, p in tuned.model.named_parameters() if not torch.equal(before[n], p)}
    assert changed and all(".layers." in n and "norm" not in n for n in changed)
    assert not any("embed" in n or "lm_head" in n for n in changed)


def test_learned_generator_is_a_merged_copy_and_checks_the_artifact(spec, tiny, store, method):
    cfg = ft_config(spec, method, epochs=2, batch_size=4, lr=5e-2)
    record, _ = train_learned(tiny, spec, method, _split(5, ["a", "b"]), store=store, config=cfg, max_pairs=16)
    before = [p.detach().clone() for p in tiny.model.parameters()]
    from pllm.models.prefix_cache import PrefixCache

    tiny.prefix_cache = PrefixCache(max_users=2)  # a cache of the bare weights' KV must not follow the copy
    try:
        tuned = learned_generator(tiny, spec, record)
    finally:
        tiny.prefix_cache = None
    assert tuned.prefix_cache is None
    assert all(torch.equal(a, b) for a, b in zip(before, tiny.model.parameters()))  # the base is untouched
    assert any(not torch.equal(a, b) for a, b in zip(before, tuned.model.parameters()))
    other = make_tiny_generator(seed=1)
    with pytest.raises(ArtifactError, match="trained on 'tiny-llama-seed0'"):
        learned_generator(other, spec, record)
    # learning on another base model writes its own adapter: the first one is not overwritten
    second, trained = train_learned(other, spec, method, _split(5, ["a", "b"]), store=store, config=cfg,
                                    max_pairs=16)
    assert trained and second.path != record.path and store.get(spec.name, "task", record.owner) is not None
    # and learning on another train split of the task (another folder) too
    third, trained = train_learned(tiny, spec, method, _split(5, ["a", "c"]), store=store, config=cfg, max_pairs=16)
    assert trained and third.owner != record.owner
    again = store.get(spec.name, "task", record.owner)
    assert again is not None and again.data_hash == record.data_hash


def test_learned_method_runs_through_the_eval_runner(spec, tiny, store, method):
    train = _split(5, ["a", "b"])
    test = [Question(id="t1", user_id="z", input="Heat Comedy", query={"title": "Heat", "year": "1995",
                     "genres": "Comedy"}, profile=make_items("z", 4), target="3")]
    res = run_method(spec, test, tiny, method, train=train, adapters=store)
    assert res.method == "ft+recency@2"
    assert res.config["adapter_pairs"] > 0 and res.config["ft"] is True and res.records[0].label_scores
    with pytest.raises(InputError, match="needs a train split"):
        run_method(spec, test, tiny, method, train=[], adapters=store)


def test_a_learned_method_needs_a_local_model(spec, method, echo_backend):
    from pllm.models import load_generator

    with pytest.raises(InputError, match="local transformers model"):
        train_learned(load_generator(echo_backend, None), spec, method, _split(1, ["a"]), store=None)


def test_learned_profile_methods_are_refused(spec):
    with pytest.raises(InputError, match="profile summary"):
        MethodConfig(retriever="bm25", profile=True, ft=True)  # refused before anything loads


def test_statistical_profile_is_in_the_prompt_and_in_training_texts(spec, tiny, store):
    from pllm.prompting.profile import output_stats

    items = make_items("a", 5)  # ratings 1, 2, 3, 4, 5
    assert output_stats(spec, items) == "5 past answers: 1: 20%, 2: 20%, 3: 20%, 4: 20%, 5: 20%; median 3."
    assert output_stats(spec, []) is None
    mc = parse_method("ft+stats+recency", 2, max_prompt_tokens=256)
    assert (mc.stats, mc.label) == (True, "ft+stats+recency@2")
    record, _ = train_learned(tiny, spec, mc, _split(5, ["a"]), store=store,
                              config=ft_config(spec, mc, epochs=1, batch_size=4), max_pairs=4)
    lines = [json.loads(x) for x in (record.path / TRAINING_TEXTS).read_text().splitlines()]
    # each training text's statistics cover only the items before it (all rated 5 here; the first has none)
    with_stats = [ln for ln in lines if "past answers" in ln["prompt"]]
    assert with_stats and all("5: 100%" in ln["prompt"] for ln in with_stats)
    assert all(ln["prompt"].count("past answers") <= 1 for ln in lines)


def test_a_recipe_field_added_later_keeps_older_adapters_up_to_date(spec):
    from dataclasses import asdict

    cfg = ft_config(spec, MethodConfig(retriever="bm25", k=4, ft=True))
    old = {k: v for k, v in asdict(cfg).items() if k not in ("stats", "crowd")}  # written before they existed
    assert cfg.hash_fields() == old
    assert ft_config(spec, MethodConfig(retriever="bm25", k=4, stats=True, ft=True)).hash_fields()["stats"] is True
    assert ft_config(spec, MethodConfig(retriever="bm25", k=4, crowd=True, ft=True)).hash_fields()["crowd"] is True


def test_a_forgotten_train_user_stales_the_learned_adapter_and_it_is_rebuilt_under_its_own_name(
        spec, tiny, store, method, tmp_path):
    from pllm.adapt.jobs import retrain_stale
    from pllm.tasks.lamp import write_questions

    train = _split(1, ["a", "b"]) + _split(5, ["c"])
    path = write_questions(tmp_path / "train_questions.json", train)
    cfg = ft_config(spec, method, epochs=1, batch_size=4)
    first, _ = train_learned(tiny, spec, method, train, store=store, config=cfg, max_pairs=12,
                             source={"questions": str(path)})
    store.db.forget(user_id="c")
    (stale,) = store.stale(spec.name)
    assert stale.owner == first.owner and stale.members == ["a", "b"]
    (rebuilt,) = retrain_stale(tiny, spec, store, db=store.db)
    assert rebuilt.owner == first.owner and rebuilt.members == ["a", "b"] and not store.stale(spec.name)
    assert store.get(spec.name, "task", "task") is None  # the OPPU base adapter was not created by it
    lines = (rebuilt.path / TRAINING_TEXTS).read_text()
    assert '"c/' not in lines and not hasattr(tiny.model, "peft_config")


def test_a_stale_learned_adapter_is_never_retrained_on_the_forgotten_users_file_data(spec, tiny, store, method):
    train = _split(1, ["a", "b"]) + _split(5, ["c"])
    cfg = ft_config(spec, method, epochs=1, batch_size=4)
    train_learned(tiny, spec, method, train, store=store, config=cfg, max_pairs=12)
    store.db.forget(user_id="c")
    # the same train split (still holding c's items) is used again, e.g. by a resumed bench
    again, trained = train_learned(tiny, spec, method, train, store=store, config=cfg, max_pairs=12)
    assert trained and again.members == ["a", "b"]
    assert '"c/' not in (again.path / TRAINING_TEXTS).read_text()


def test_crowd_training_texts_count_other_users_only_and_never_a_test_target(spec, tiny, store):
    """`ft+crowd`: each training text shows what the *other* train users answered for its item. Users a and b
    rate everything 1, c everything 5; a text of a's shows b's and c's answers (one 1, one 5), never a's own.
    Test targets (the marker) are not passed to training at all, so no text shows one."""
    method = MethodConfig(crowd=True, k=0, retriever="none", max_prompt_tokens=256, ft=True)
    train = _split(1, ["a", "b"]) + _split(5, ["c"])
    for q in train:
        q.target = None  # only profiles: the crowd of an item is the other users' profile ratings of it
    record, _ = train_learned(tiny, spec, method, train, store=store,
                              config=ft_config(spec, method, epochs=1, batch_size=4), max_pairs=12)
    lines = [json.loads(x) for x in (record.path / TRAINING_TEXTS).read_text().splitlines()]
    assert lines and record.config["crowd"] is True
    for ln in lines:
        user = ln["item"].split("/")[0]
        # the two others: for c, a and b (both 1); for a or b, the other 1-rater and c
        shares = "1: 100%, 2: 0%, 3: 0%, 4: 0%, 5: 0%" if user == "c" else "1: 50%, 2: 0%, 3: 0%, 4: 0%, 5: 50%"
        assert f"Other users (2) for this item: {shares}" in ln["prompt"], ln["prompt"]
        assert f"Rating: {MARKER}" not in ln["prompt"] + ln["target"]
        assert ln["target"].strip()[-1] == ("5" if user == "c" else "1")


def test_a_crowd_method_without_a_train_split_is_a_clear_error(spec, tiny):
    from pllm.pipeline import Personalizer

    method = MethodConfig(crowd=True, k=0, retriever="none")
    with pytest.raises(InputError, match="needs the train split"):
        Personalizer(spec, tiny, method)
    with pytest.raises(InputError, match="needs a train split"):
        run_method(spec, _split(1, ["a"]), tiny, dataclasses.replace(method, ft=True))
    assert parse_method("ft+stats+crowd+bm25/median", 4).label == "ft+stats+crowd+bm25@4/median"
    assert parse_method("crowd", 4).crowd and parse_method("crowd", 4).k == 0


def test_a_cf_retrieval_method_trains_on_the_train_splits_co_ratings(spec, tiny, store):
    """`ft+cf@k`: the task adapter's training prompts retrieve by other train users' answers (an ItemCrowd fitted
    on the train split, as at inference), so training needs no crowd line to fit one; test targets (the marker)
    are not passed to training at all."""
    method = MethodConfig(retriever="cf", k=2, max_prompt_tokens=256, ft=True)
    train = _split(1, ["a", "b"]) + _split(5, ["c"])
    record, trained = train_learned(tiny, spec, method, train, store=store,
                                    config=ft_config(spec, method, epochs=1, batch_size=4), max_pairs=6)
    assert trained and record.config["retriever"] == "cf" and not record.config["crowd"]
    assert record.owner.startswith("ft-cf@2-tiny-llama-seed0")
    lines = [json.loads(x) for x in (record.path / TRAINING_TEXTS).read_text().splitlines()]
    assert len(lines) == 6 and all(f"Rating: {MARKER}" not in ln["prompt"] + ln["target"] for ln in lines)
    assert all("Other users" not in ln["prompt"] for ln in lines)
