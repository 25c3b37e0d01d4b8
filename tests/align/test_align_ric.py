"""Reward-conditioned prompting: the vector is written into the prompt (rendered, never parsed), one
shared adapter is trained with trl's SFTTrainer, and different vectors steer the same adapter."""

from __future__ import annotations

import numpy as np
import pytest
from align_helpers import movie_pairs, one_thread  # noqa: F401  (fixtures)

from pllm.adapt.pool import shared_pool
from pllm.adapt.store import AdapterStore
from pllm.align.config import LoraSettings, RiCSettings
from pllm.align.ric import RiCGenerator, condition_tag, conditioned, ric_examples, train_ric
from pllm.align.store import PreferenceStore
from pllm.errors import InputError
from pllm.models.base import Prompt
from pllm.users.store import SQLiteUserStore


def test_condition_tag_is_normalized_and_ordered() -> None:
    assert condition_tag({"b": 3, "a": 1}, ["a", "b", "c"]) == "<a=0.25 b=0.75 c=0.00>"
    assert conditioned("hi", {"a": 1}, ["a", "b"], precision=1) == "<a=1.0 b=0.0>\nhi"
    with pytest.raises(InputError, match="no dimension"):
        condition_tag({"z": 1}, ["a"])


def test_ric_trains_one_shared_adapter_steered_by_the_vector(tiny_generator, tmp_path) -> None:
    store = SQLiteUserStore(tmp_path / "db.sqlite3")
    ps = PreferenceStore(store)
    ps.add_pairs(movie_pairs(6), user_id="likes")
    ps.add_pairs(movie_pairs(6, flip=True), user_id="hates")
    ps.set_vector({"good": 1.0, "bad": 0.0}, user_id="likes")
    ps.set_vector({"good": 0.0, "bad": 1.0}, user_id="hates")
    examples, dims = ric_examples(ps, ["likes", "hates"])
    assert dims == ["good", "bad"] and len(examples) == 12
    with pytest.raises(InputError, match="no preference vector"):
        ps.add_pairs(movie_pairs(1), user_id="novec")
        ric_examples(ps, ["novec"])
    settings = RiCSettings(epochs=4, batch_size=4, learning_rate=1e-2, lora=LoraSettings(r=4, alpha=8))
    result = train_ric(tiny_generator, examples, dims, name="ric", users=["likes", "hates"], settings=settings)
    rec = AdapterStore().get_named("ric")
    assert rec.method == "ric" and rec.dimensions == ["good", "bad"] and result.n_rows == 12
    pool = shared_pool(tiny_generator)
    likes = RiCGenerator(pool, rec, {"good": 1.0})
    hates = RiCGenerator(pool, rec, {"bad": 1.0})
    prompt = [Prompt(text=movie_pairs(1)[0].prompt)]
    assert "<good=1.00 bad=0.00>" in likes.render(prompt[0]) and "<good=0.00 bad=1.00>" in hates.render(prompt[0])
    cands = [["great movie , I love it", "bad movie , I hate it"]]
    s_likes, s_hates = likes.score(prompt, cands)[0], hates.score(prompt, cands)[0]
    # the vector in the prompt moves the preference towards that user's answers
    assert s_likes[0] - s_likes[1] > s_hates[0] - s_hates[1]
    assert not np.array_equal(s_likes, s_hates)
    with pytest.raises(InputError):
        RiCGenerator(pool, rec, {"unknown": 1.0})
    store.close()
