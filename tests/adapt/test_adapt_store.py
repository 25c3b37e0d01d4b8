"""One adapter store for every method: named (alignment) adapters beside per-task ones, and the move of align
adapter folders written by earlier versions (`<name>/{meta.json,config.json,adapter/}`) into it."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from pllm.adapt.pool import AdapterPool, PoolConfig
from pllm.adapt.store import RECORD_FILE, AdapterStore, named_record
from pllm.align.config import DPOSettings
from pllm.align.store import PreferenceStore
from pllm.errors import ArtifactError, InputError, NotFoundError
from pllm.io import atomic_dir, atomic_write_json, save_config
from pllm.models.base import Prompt
from pllm.paths import pllm_home
from pllm.users.store import SQLiteUserStore
from pllm_testkit import random_lora

PROMPT = [Prompt(text="what is the rating of this movie ?")]
CANDS = [["great movie , I love it", "bad movie"]]


def write_legacy(base, root: Path, name: str, seed: int, *, kind: str = "dpo", users: list[str] = (),
                 dimensions: list[str] = ()) -> Path:
    """An align adapter folder exactly as `pllm align` wrote it before the stores were one (the removed
    `align.records.AdapterStore.write_meta` and `align.dpo.save_trained`)."""
    model = random_lora(base, seed)
    meta = {"name": name, "kind": kind, "base_model_id": base.model_id, "users": list(users),
            "dimensions": list(dimensions), "metrics": {"train_seconds": 1.5, "steps": 3}, "created_at": 123.0}
    with atomic_dir(root / name) as tmp:
        model.save_pretrained(str(tmp / "adapter"))
        save_config(DPOSettings(epochs=2), tmp)
        atomic_write_json(tmp / "meta.json", meta)
    return root / name


def test_legacy_align_folders_move_into_the_store_on_first_open(tiny_generator) -> None:
    legacy = pllm_home() / "align" / "adapters"
    old = write_legacy(tiny_generator, legacy, "u1-dpo", 1, users=["u1"])
    write_legacy(tiny_generator, legacy, "ric", 2, kind="ric", dimensions=["x", "y"])
    weights = load_file(str(old / "adapter" / "adapter_model.safetensors"))

    store = AdapterStore()
    assert not legacy.exists()  # every old folder moved, the emptied parent removed
    rec = store.get_named("u1-dpo", verify=True)
    assert (rec.task, rec.kind, rec.owner, rec.name, rec.method) == ("align", "named", "u1-dpo", "u1-dpo", "dpo")
    assert rec.members == ["u1"] and rec.base_model == tiny_generator.model_id and rec.created == 123.0
    assert rec.metrics == {"train_seconds": 1.5, "steps": 3} and rec.config["epochs"] == 2
    assert rec.config == json.loads(json.dumps(dataclasses.asdict(DPOSettings(epochs=2)), default=str))
    assert rec.path is not None and (rec.path / RECORD_FILE).is_file()
    moved = load_file(str(rec.path / "adapter_model.safetensors"))
    assert all(np.array_equal(weights[k].numpy(), moved[k].numpy()) for k in weights)
    assert store.get_named("ric").dimensions == ["x", "y"]
    assert [r.owner for r in store.named()] == ["ric", "u1-dpo"]

    pool = AdapterPool(tiny_generator, PoolConfig(private=True))
    adapted = pool.generator(pool.load(rec)).score(PROMPT, CANDS)
    assert not np.array_equal(adapted, tiny_generator.score(PROMPT, CANDS))
    assert AdapterStore().get_named("u1-dpo").created == 123.0  # opening again moves nothing


def test_legacy_folders_under_an_explicit_root(tiny_generator, tmp_path) -> None:
    root = tmp_path / "adapters"
    write_legacy(tiny_generator, root, "report-dpo-a", 3)
    store = AdapterStore(root)
    assert not (root / "report-dpo-a").exists() and store.has_named("report-dpo-a")
    assert store.get_named("report-dpo-a").path.is_relative_to(root)


def test_forgetting_a_user_removes_their_migrated_adapter(tiny_generator, tmp_path) -> None:
    legacy = pllm_home() / "align" / "adapters"
    write_legacy(tiny_generator, legacy, "mine", 4, users=["u1"])
    write_legacy(tiny_generator, legacy, "group", 5, users=["u1", "u2"])
    pstore = PreferenceStore(SQLiteUserStore(tmp_path / "db.sqlite3"))
    pstore.set_vector({"a": 1.0}, user_id="u1")
    report = pstore.store.forget(user_id="u1")  # the hook opens the store, which moves the folders first
    assert report.rows["align_adapters"] == 1
    store = AdapterStore()
    assert not store.has_named("mine") and store.has_named("group")
    with pytest.raises(NotFoundError, match="known: group"):
        store.get_named("mine")


def test_named_adapters_are_checked(tiny_generator) -> None:
    store = AdapterStore()
    with pytest.raises(InputError, match="invalid adapter name"):
        named_record("../up", "dpo", tiny_generator.model_id)
    model = random_lora(tiny_generator, 6)
    rec = store.write(named_record("x", "dpo", tiny_generator.model_id), lambda tmp: model.save_pretrained(str(tmp)))
    assert rec.created <= time.time()
    assert rec.path is not None
    (rec.path / "adapter_model.safetensors").write_bytes(b"broken")
    with pytest.raises(ArtifactError, match="corrupt"):
        AdapterPool(tiny_generator, PoolConfig(private=True)).load(store.get_named("x"))
