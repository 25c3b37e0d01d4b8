"""The adapter method registry: a method registered from outside pllm trains, serves and is forgotten like
the built-in ones; built-in methods are all registered there; bad registrations and names are refused."""

from __future__ import annotations

import numpy as np
import pytest
import toy_adapter_method
from adapt_helpers import make_items, make_question

from pllm.adapt import AdaptConfig, AdapterGenerator
from pllm.adapt.jobs import train_users
from pllm.adapt.methods import ADAPTER_METHODS, get_method, methods, register_adapter_method
from pllm.errors import InputError
from pllm.pipeline import MethodConfig, Personalizer

LABELS = [" 1", " 2", " 3", " 4", " 5"]


@pytest.fixture
def toy():
    toy_adapter_method.register()
    yield get_method(toy_adapter_method.NAME)
    ADAPTER_METHODS.unregister(toy_adapter_method.NAME)


def test_a_toy_method_trains_serves_and_is_forgotten_end_to_end(toy, tiny, spec, store):
    config = AdaptConfig(method=toy.name, epochs=3, batch_size=4, lr=5e-2, max_items=8, min_items=4)
    items = {u: make_items(u, 8, rating=r) for u, r in (("low", 1), ("high", 5))}
    report = train_users(tiny, spec, items, config, store)  # the CLI's job, through the method's train_fn
    assert report.trained == ["high", "low"] and toy_adapter_method.TRAINED[-2:] == ["high", "low"]
    assert {r.method for r in report.records.values()} == {toy.name}
    assert not hasattr(tiny.model, "peft_config")  # training left the base weights bare

    gen = AdapterGenerator(tiny, spec.name, store=store, cold_start_items=4)
    questions = [make_question(u, items[u]) for u in ("low", "high")] + [make_question("new", [])]
    prompts = [b.prompt for b in Personalizer(spec, gen, MethodConfig()).build_prompts(questions)]
    assert [gen.route(q).kind for q in questions] == ["user", "user", "base"]
    base = gen.score(prompts[2:], LABELS)
    scores = gen.score(prompts, LABELS)  # (3, 5): rows served adapter by adapter (no mixed batch)
    assert np.abs(scores[0] - scores[1]).max() > 1e-3
    assert LABELS[int(np.argmax(scores[0]))] == " 1" and LABELS[int(np.argmax(scores[1]))] == " 5"
    np.testing.assert_allclose(scores[2], base[0], atol=1e-5)
    texts = [g.text for g in gen.generate(prompts, max_new_tokens=3, stop=["\n"])]
    assert texts == [gen.generate([p], max_new_tokens=3, stop=["\n"])[0].text for p in prompts]

    folder = store.get(spec.name, "user", "low").path
    report = store.db.forget(user_id="low")
    assert report.rows["adapters"] == 1 and report.rows["adapter_files"] >= 2
    assert not folder.exists() and store.get(spec.name, "user", "low") is None
    gen.invalidate()
    assert [gen.route(q).kind for q in questions] == ["base", "user", "base"]


def test_every_built_in_method_is_registered_in_one_registry():
    assert {m.name for m in methods()} >= {"lora", "ia3", "prompt-tuning", "dpo", "ric", "soup"}
    assert [m.name for m in methods(config_cls=AdaptConfig)] == ["full", "ia3", "lora", "prompt-tuning"]
    assert get_method("prompt-tuning").prompt_learning and get_method("full").full_weights


def test_bad_registrations_and_unknown_methods_are_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_adapter_method("lora", AdaptConfig, lambda: None)
    with pytest.raises(InputError, match="config_cls must be a class"):
        register_adapter_method("x", "AdaptConfig", lambda: None)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"method must be one of \['full', 'ia3', 'lora', 'prompt-tuning'\]"):
        AdaptConfig(method="dpo")  # registered, but not trained on pairs with this recipe
    with pytest.raises(InputError, match="method must be one of"):
        AdaptConfig(method="nope")
    with pytest.raises(InputError, match="top_layers"):
        AdaptConfig(method="ia3", top_layers=2)
