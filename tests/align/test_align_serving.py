"""The serving hook: a user's DPO adapter, else a soup at their vector, else RiC, else the base model."""

from __future__ import annotations

import numpy as np
from align_helpers import one_thread, save_random_adapter  # noqa: F401  (fixtures)

from pllm.adapt.pool import PoolGenerator, shared_pool
from pllm.adapt.store import AdapterStore
from pllm.align.ric import RiCGenerator
from pllm.align.serving import generator_for_user, soup_for
from pllm.align.soup import SoupSpec, SoupStore
from pllm.align.store import PreferenceStore
from pllm.models.base import Prompt
from pllm.users.store import SQLiteUserStore

PROMPT = [Prompt(text="what is the rating of this movie ?")]
CANDS = [["great movie , I love it", "bad movie"]]


def test_generator_for_user_picks_adapter_then_soup_then_ric(tiny_generator, tmp_path, echo_backend) -> None:
    from pllm.models import load_generator

    store = SQLiteUserStore(tmp_path / "db.sqlite3")
    ps = PreferenceStore(store)
    adapters = AdapterStore()
    save_random_adapter(tiny_generator, adapters, "dpo-u1", 1, users=["u1"])
    save_random_adapter(tiny_generator, adapters, "dim-x", 2)
    save_random_adapter(tiny_generator, adapters, "dim-y", 3)
    save_random_adapter(tiny_generator, adapters, "ric", 4, kind="ric", dimensions=["x", "y"])
    SoupStore().save(SoupSpec(name="xy", dimensions={"x": "dim-x", "y": "dim-y"}))

    # nobody known: the base generator itself
    assert generator_for_user(store, tiny_generator, user_id="nobody") is tiny_generator
    # a stored DPO adapter wins
    ps.assign("dpo", "dpo-u1", user_id="u1")
    ps.set_vector({"x": 1.0}, user_id="u1")
    g1 = generator_for_user(store, tiny_generator, user_id="u1")
    assert isinstance(g1, PoolGenerator) and g1.adapter == "dpo-u1"
    # a vector alone: the soup covering its dimensions, at that vector (built once, shared)
    ps.set_vector({"x": 0.5, "y": 0.5}, user_id="u2")
    g2 = generator_for_user(store, tiny_generator, user_id="u2")
    soup = soup_for(shared_pool(tiny_generator), SoupStore().get("xy"))
    assert g2.adapter == soup.adapter_for({"x": 0.5, "y": 0.5})
    assert np.array_equal(g2.score(PROMPT, CANDS), soup.generator({"x": 1, "y": 1}).score(PROMPT, CANDS))
    assert not np.array_equal(g2.score(PROMPT, CANDS), tiny_generator.score(PROMPT, CANDS))
    # a vector over dimensions no soup has, with a RiC adapter assigned: RiC conditioned on the vector
    ps.set_vector({"x": 1.0, "z": 1.0}, user_id="u3")
    assert generator_for_user(store, tiny_generator, user_id="u3") is tiny_generator
    ps.set_vector({"x": 1.0}, user_id="u4")
    ps.assign("ric", "ric", user_id="u4")
    SoupStore().root.joinpath("xy.json").unlink()
    g4 = generator_for_user(store, tiny_generator, user_id="u4")
    assert isinstance(g4, RiCGenerator) and g4.render(PROMPT[0]).count("<x=1.00 y=0.00>") == 1
    # the shared base generator is never modified by any of this
    assert not any("lora_" in n for n, _ in tiny_generator.model.named_parameters())
    # backends that cannot carry adapters are served unchanged
    echo = load_generator(echo_backend)
    assert generator_for_user(store, echo, user_id="u1") is echo
    store.close()


def test_a_registered_serving_method_needs_no_serving_branch(tiny_generator, tmp_path) -> None:
    """An objective-level method registered from here: assigned to a user, it serves them ahead of the later
    ranks; its assignment is one row, gone with the user."""
    from dataclasses import dataclass

    from pllm.adapt.methods import ADAPTER_METHODS, register_adapter_method

    @dataclass
    class StyleRecipe:
        style: str = "terse"

    served = []

    def serve(req):  # noqa: ANN001, ANN202
        if not req.assigned:
            return None
        served.append(req.assigned)
        return req.pool.generator(None)  # the base model through the shared pool

    register_adapter_method("toy-style", StyleRecipe, lambda recipe: recipe, serve=serve, serve_rank=5)
    try:
        store = SQLiteUserStore(tmp_path / "db.sqlite3")
        ps = PreferenceStore(store)
        ps.set_vector({"x": 1.0}, user_id="u1")
        assert generator_for_user(store, tiny_generator, user_id="u1") is tiny_generator
        ps.assign("toy-style", "short", user_id="u1")
        gen = generator_for_user(store, tiny_generator, user_id="u1")
        assert isinstance(gen, PoolGenerator) and gen.adapter is None and served == ["short"]
        assert store.forget(user_id="u1").rows["adapter_assignments"] == 1
        assert generator_for_user(store, tiny_generator, user_id="u1") is tiny_generator
        store.close()
    finally:
        ADAPTER_METHODS.unregister("toy-style")
