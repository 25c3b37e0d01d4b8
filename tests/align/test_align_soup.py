"""Preference soups: weights 1/0 reproduce each dimension's adapter exactly, mixtures are the weighted
sum of the dimension deltas, and built soups are cached per distinct vector (LRU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from align_helpers import one_thread, save_random_adapter  # noqa: F401  (fixtures)

from pllm.adapt.pool import AdapterPool, PoolConfig
from pllm.adapt.store import AdapterStore
from pllm.align.soup import Soup, SoupSpec, SoupStore, normalize_vector
from pllm.errors import InputError, NotFoundError
from pllm.models.base import Prompt

PROMPTS = [Prompt(text="what is the rating of this movie ?"), Prompt(text="write a title for this paper")]
CANDS = [["great movie , I love it", "bad"], ["a great paper", "the worst"]]


@pytest.fixture
def soup(tiny_generator) -> Soup:
    store = AdapterStore()
    save_random_adapter(tiny_generator, store, "dim-x", 1)
    save_random_adapter(tiny_generator, store, "dim-y", 2)
    spec = SoupSpec(name="xy", dimensions={"x": "dim-x", "y": "dim-y"}, max_cached=2)
    SoupStore().save(spec)
    return Soup(AdapterPool(tiny_generator, PoolConfig(private=True)), spec, store)


def _logits(soup: Soup, adapter: str) -> torch.Tensor:
    ids = torch.tensor([[1, 7, 9, 12, 30, 41, 5]])
    with soup.pool.active(adapter) as gen, torch.no_grad():
        return gen.model(input_ids=ids).logits


def test_one_hot_weights_reproduce_each_dimension_exactly(soup: Soup) -> None:
    for dim, vec in (("dim-x", {"x": 1.0, "y": 0.0}), ("dim-y", {"x": 0.0, "y": 2.5})):
        name = soup.adapter_for(vec)
        assert torch.equal(_logits(soup, name), _logits(soup, dim))
        got = soup.generator(vec)
        ref = soup.pool.generator(dim)
        assert np.array_equal(got.score(PROMPTS, CANDS), ref.score(PROMPTS, CANDS))
        assert [g.text for g in got.generate(PROMPTS, max_new_tokens=6)] == \
               [g.text for g in ref.generate(PROMPTS, max_new_tokens=6)]
    assert not torch.equal(_logits(soup, "dim-x"), _logits(soup, "dim-y"))


def test_mixture_is_the_weighted_sum_of_dimension_deltas(soup: Soup) -> None:
    name = soup.adapter_for({"x": 0.25, "y": 0.75})
    layer = soup.pool.model.base_model.model.model.layers[0].self_attn.q_proj
    mixed = layer.get_delta_weight(name)
    expected = 0.25 * layer.get_delta_weight("dim-x") + 0.75 * layer.get_delta_weight("dim-y")
    assert torch.allclose(mixed, expected, atol=1e-6)
    logits = _logits(soup, name)
    assert not torch.equal(logits, _logits(soup, "dim-x")) and not torch.equal(logits, _logits(soup, "dim-y"))
    assert not torch.equal(logits, _logits(soup, None))


def test_soups_are_cached_per_distinct_vector(soup: Soup) -> None:
    a = soup.adapter_for({"x": 0.5, "y": 0.5})
    assert soup.adapter_for({"x": 2.0, "y": 2.0}) == a  # same normalized vector
    assert soup.adapter_for({"x": 0.501, "y": 0.499}) == a  # same after rounding to 2 decimals
    n_adapters = len(soup.pool.adapter_names())
    b = soup.adapter_for({"x": 0.3, "y": 0.7})
    assert b != a and len(soup.pool.adapter_names()) == n_adapters + 1
    soup.adapter_for({"x": 0.9, "y": 0.1})  # max_cached=2: evicts the least recently used (a)
    assert a not in soup.pool.adapter_names() and b in soup.pool.adapter_names()
    soup.adapter_for({"x": 1.0})
    soup.adapter_for({"y": 1.0})  # one-hot entries alias the dimension adapters, which are never deleted
    assert {"dim-x", "dim-y"} <= set(soup.pool.adapter_names())


def test_bad_vectors_and_specs(soup: Soup) -> None:
    with pytest.raises(InputError, match="no dimension"):
        soup.adapter_for({"z": 1.0})
    with pytest.raises(InputError):
        soup.adapter_for({"x": 0.0, "y": 0.0})
    assert normalize_vector(soup.spec, {"x": 1, "y": 3}) == (0.25, 0.75)
    with pytest.raises(InputError):
        SoupSpec(name="bad name!", dimensions={"x": "dim-x"})
    with pytest.raises(NotFoundError, match="xy"):
        SoupStore().get("nope")
    assert SoupStore().get("xy") == soup.spec
