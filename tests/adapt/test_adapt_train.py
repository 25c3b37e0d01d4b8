"""Training user adapters with peft: what changes, what must not, and resumability."""

from __future__ import annotations

import pytest
import torch
from adapt_helpers import make_items
from safetensors.torch import load_file

from pllm.adapt import AdaptConfig, train_adapter
from pllm.adapt.data import training_pairs
from pllm.adapt.train import TRAIN_NAME
from pllm.errors import InputError


@pytest.mark.parametrize("method", ["lora", "ia3", "prompt-tuning"])
def test_every_adapter_parameter_changes_and_base_weights_do_not(method, tiny, spec, store):
    from peft import get_peft_model, get_peft_model_state_dict

    config = AdaptConfig(method=method, epochs=2, batch_size=4, lr=5e-2, max_items=8, min_items=1)
    base_before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    record, trained = train_adapter(tiny, spec, kind="user", owner="alice",
                                    items_by_user={"alice": make_items("alice", 8)}, config=config, store=store)
    assert trained and record.n_pairs == 8 and len(record.losses) == 4
    # The base model is back to its plain self, bit for bit.
    assert not hasattr(tiny.model, "peft_config")
    after = tiny.model.state_dict()
    assert set(after) == set(base_before)
    assert all(torch.equal(base_before[k], after[k]) for k in base_before)
    # Re-create the adapter's initial values (same seed) and compare each saved tensor with them.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        fresh = get_peft_model(tiny.model, config.peft_config(), adapter_name=TRAIN_NAME)
    init = {k: v.detach().clone() for k, v in get_peft_model_state_dict(fresh, adapter_name=TRAIN_NAME).items()}
    tiny.model = fresh.unload() if method != "prompt-tuning" else fresh.get_base_model()
    saved = load_file(str(record.path / "adapter_model.safetensors"))
    assert set(saved) == set(init) and saved
    unchanged = [k for k in saved if torch.allclose(saved[k], init[k])]
    assert unchanged == []


def test_top_layers_adapts_only_the_top_layers_and_trains_them(tiny, spec, store):
    """`top_layers` puts the adapter on the last N layers only (faster training); those still all change."""
    n_layers = tiny.model.config.num_hidden_layers
    assert n_layers >= 2
    config = AdaptConfig(top_layers=1, epochs=2, batch_size=4, lr=5e-2, max_items=8, min_items=1)
    record, _ = train_adapter(tiny, spec, kind="user", owner="alice", items_by_user={"alice": make_items("alice", 8)},
                              config=config, store=store)
    saved = load_file(str(record.path / "adapter_model.safetensors"))
    layers = {int(k.split(".layers.")[1].split(".")[0]) for k in saved}
    assert layers == {n_layers - 1}
    assert record.config["top_layers"] == 1 and record.losses[-1] < record.losses[0]
    with pytest.raises(InputError, match="top_layers"):
        AdaptConfig(method="ia3", top_layers=2)
    with pytest.raises(InputError, match="at least that many layers"):
        AdaptConfig(top_layers=n_layers + 1).peft_config(n_layers)


def test_training_pairs_use_the_inference_rendering(tiny, spec):
    from pllm.pipeline import MethodConfig, Personalizer

    items = make_items("bob", 5, rating=4)
    pairs = training_pairs(spec, tiny, items, AdaptConfig(min_items=1), user_id="bob")
    assert [p.target for p in pairs] == [" 4\n"] * 5
    # Same text the pipeline renders for a question about that movie, with no demonstrations.
    from pllm.adapt.data import item_question

    q = item_question(spec, items[2], [], "bob")
    built = Personalizer(spec, tiny, MethodConfig()).build_prompts([q])[0]
    assert pairs[2].prompt.text == built.prompt.text and pairs[2].prompt.chat is built.prompt.chat
    assert "Movie: Fargo (1995; Comedy)" in pairs[2].prompt.text and pairs[2].prompt.text.endswith("Rating:")
    # With k > 0, demonstrations come only from strictly earlier items of the same user.
    demo = training_pairs(spec, tiny, items, AdaptConfig(min_items=1, retriever="recency", k=2), user_id="bob")
    assert demo[0].prompt.text == pairs[0].prompt.text  # the first item has no earlier ones
    assert demo[3].prompt.text.count("Rating: 4") == 2


def test_resume_skips_up_to_date_adapters_and_retrains_changed_ones(tiny, spec, store, fast_config):
    items = make_items("carol", 6)
    first, trained = train_adapter(tiny, spec, kind="user", owner="carol", items_by_user={"carol": items},
                                   config=fast_config, store=store)
    again, trained_again = train_adapter(tiny, spec, kind="user", owner="carol", items_by_user={"carol": items},
                                         config=fast_config, store=store)
    assert trained and not trained_again and again.data_hash == first.data_hash
    more, trained_more = train_adapter(tiny, spec, kind="user", owner="carol",
                                       items_by_user={"carol": make_items("carol", 7)}, config=fast_config,
                                       store=store)
    assert trained_more and more.data_hash != first.data_hash
    rows = store.db.execute("SELECT owner, n_items, stale FROM adapters WHERE kind='user'")
    assert rows == [("carol", 7, 0)]


class _Killed(Exception):
    pass


def test_a_killed_training_run_resumes_from_its_checkpoint_and_ends_where_an_unbroken_run_does(tiny, spec, store,
                                                                                              monkeypatch):
    """Checkpoints every 2 steps; the run is "killed" after step 5 (its last checkpoint: step 4). Started again,
    it trains only steps 5..8 and saves the same adapter (weights and losses) as a run never interrupted."""
    import pllm.adapt.train as train_mod
    from pllm.adapt.store import AdapterStore

    monkeypatch.setattr(train_mod, "CHECKPOINT_EVERY", 2)
    config = AdaptConfig(epochs=2, batch_size=4, lr=5e-2, max_items=16, min_items=1)
    items = {"alice": make_items("alice", 16)}
    steps: list[int] = []

    def kill_after_5(step: int, total: int) -> None:
        steps.append(step)
        if step == 5:
            raise _Killed

    with pytest.raises(_Killed):
        train_adapter(tiny, spec, kind="user", owner="alice", items_by_user=items, config=config, store=store,
                      step_callback=kill_after_5)
    assert not hasattr(tiny.model, "peft_config")  # the base model is restored even when killed
    (ckpt,) = (store.root / ".checkpoints").glob("*.pt")
    steps.clear()
    resumed, trained = train_adapter(tiny, spec, kind="user", owner="alice", items_by_user=items, config=config,
                                     store=store, step_callback=lambda s, t: steps.append(s))
    assert trained and steps == [5, 6, 7, 8] and not ckpt.exists()
    unbroken, _ = train_adapter(tiny, spec, kind="user", owner="alice", items_by_user=items, config=config,
                                store=AdapterStore(store.root.parent / "unbroken"))
    assert resumed.losses == unbroken.losses and len(resumed.losses) == 8
    a = load_file(str(resumed.path / "adapter_model.safetensors"))
    b = load_file(str(unbroken.path / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
