"""Group adapters and cold-start routing, forgetting (files, rows, stale groups, retrain without the
user), the CLI end to end, and Ray scale-out with the same outputs as the local path."""

from __future__ import annotations

import functools
import json
import time

import pytest
import torch
from adapt_helpers import WORDS, make_items, make_question
from safetensors.torch import load_file
from typer.testing import CliRunner

from pllm.adapt import AdapterGenerator, AdapterStore
from pllm.adapt.jobs import retrain_stale, train_groups, train_users
from pllm.models.testing import make_tiny_generator
from pllm.users.store import SQLiteUserStore


def _populate(db: SQLiteUserStore) -> dict:
    habits = {"ann": (1, "Comedy"), "bea": (2, "Comedy"), "cal": (5, "Horror"), "dan": (4, "Horror")}
    items = {u: make_items(u, 6, rating=r, genre=g) for u, (r, g) in habits.items()}
    for user, its in items.items():
        db.add_items(its, user_id=user)
    return items


def test_cold_start_users_are_routed_to_their_group(tiny, spec, store, fast_config, bow_embedder):
    items = _populate(store.db)
    groups = train_groups(tiny, spec, items, fast_config, store, n_groups=2, embedder=bow_embedder,
                          source={"db": str(store.db.path)})
    assert sorted(sorted(g.members) for g in groups) == [["ann", "bea"], ["cal", "dan"]]
    train_users(tiny, spec, {"ann": items["ann"]}, fast_config, store)
    gen = AdapterGenerator(tiny, spec.name, store=store, cold_start_items=4)
    horror_fan = make_question("new", make_items("new", 2, genre="Horror"))  # 2 items: cold start
    route = gen.route(horror_fan)
    assert route.kind == "group" and sorted(route.record.members) == ["cal", "dan"]
    assert gen.route(make_question("ann", items["ann"])).kind == "user"
    grouped = AdapterGenerator(make_tiny_generator(0, WORDS), spec.name, store=store, mode="group")
    assert grouped.route(make_question("ann", items["ann"])).kind == "group"
    assert AdapterGenerator(make_tiny_generator(0, WORDS), spec.name, store=store,
                            mode="none").route(horror_fan).kind == "base"


def test_forget_removes_the_users_adapter_and_stales_their_group(tiny, spec, store, fast_config, bow_embedder):
    items = _populate(store.db)
    train_groups(tiny, spec, items, fast_config, store, n_groups=2, embedder=bow_embedder,
                 source={"db": str(store.db.path)})
    train_users(tiny, spec, items, fast_config, store)
    folder = store.folder(spec.name, "user", "ann")
    assert folder.is_dir()
    old = next(g for g in store.records(spec.name, "group") if "ann" in g.members)
    report = store.db.forget(user_id="ann")
    assert report.rows["adapters"] >= 2 and report.rows["adapter_files"] >= 3
    assert report.rows["stale_shared_adapters"] == 1
    assert not folder.exists()
    assert store.db.execute("SELECT COUNT(*) FROM adapters WHERE owner='ann'") == [(0,)]
    assert store.db.execute("SELECT COUNT(*) FROM adapter_members WHERE member='ann'") == [(0,)]
    stale = store.stale(spec.name)
    assert [g.owner for g in stale] == [old.owner] and "ann" not in stale[0].members
    assert "ann" not in (old.path / "pllm_adapter.json").read_text()
    # A stale group is never served.
    gen = AdapterGenerator(make_tiny_generator(0, WORDS), spec.name, store=store, mode="group")
    assert all(r.owner != old.owner for r in gen.group_records())
    rebuilt = retrain_stale(tiny, spec, store, db=store.db)
    assert [r.owner for r in rebuilt] == [old.owner] and rebuilt[0].members == ["bea"]
    assert not store.stale(spec.name) and rebuilt[0].data_hash != old.data_hash and rebuilt[0].n_items == 6


def test_cli_train_list_eval_with_adapters(tmp_path, spec):
    from pllm.cli import app
    from pllm.tasks.lamp import question_to_json

    model_dir = tmp_path / "tiny-model"
    tiny = make_tiny_generator(0, WORDS)
    tiny.model.save_pretrained(model_dir)
    tiny.tokenizer.save_pretrained(model_dir)
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    users = {"ann": 1, "cal": 5, "cold": 3}
    qs = [make_question(u, make_items(u, 6 if u != "cold" else 2, rating=r)) for u, r in users.items()]
    (task_dir / "test_questions.json").write_text(json.dumps([question_to_json(q) for q in qs]))
    (task_dir / "test_outputs.json").write_text(json.dumps(
        {"task": spec.name, "golds": [{"id": q.id, "output": str(users[q.user_id])} for q in qs]}))
    db = tmp_path / "s.sqlite3"
    runner = CliRunner()
    common = ["--task", spec.name, "--model", str(model_dir), "--db", str(db)]
    res = runner.invoke(app, ["adapt", "train", *common, "--data", str(task_dir), "--min-items", "4",
                              "--epochs", "8", "--lr", "0.05"])
    assert res.exit_code == 0, res.output
    assert "2 trained, 0 up to date, 1 cold-start" in res.output
    again = runner.invoke(app, ["adapt", "train", *common, "--data", str(task_dir), "--min-items", "4",
                                "--epochs", "8", "--lr", "0.05"])
    assert "0 trained, 2 up to date" in again.output
    listing = runner.invoke(app, ["adapt", "list", "--task", spec.name, "--db", str(db)])
    assert listing.exit_code == 0 and "ann" in listing.output and "cal" in listing.output
    out = tmp_path / "eval"
    ev = runner.invoke(app, ["eval", *common, "--questions", str(task_dir / "test_questions.json"),
                             "--outputs", str(task_dir / "test_outputs.json"), "--adapter", "user", "--out", str(out)])
    assert ev.exit_code == 0, ev.output
    preds = json.loads(next(out.glob("predictions_user adapter*.json")).read_text())["golds"]
    assert {p["id"]: p["output"] for p in preds}["q-ann"] == "1"
    assert {p["id"]: p["output"] for p in preds}["q-cal"] == "5"
    bad = runner.invoke(app, ["eval", *common, "--questions", str(task_dir / "test_questions.json"),
                              "--adapter", "everyone"])
    assert bad.exit_code == 2 and "adapter mode must be one of" in bad.output
    # `pllm users forget` reaches the adapter through the registered hook.
    folder = AdapterStore(db=SQLiteUserStore(db)).folder(spec.name, "user", "ann")
    assert folder.is_dir()
    gone = runner.invoke(app, ["users", "forget", "ann", "--db", str(db)])
    assert gone.exit_code == 0 and "adapter_files=" in gone.output and not folder.exists()


@pytest.mark.slow
def test_ray_trains_the_same_adapters_as_the_local_path(tmp_path, spec, fast_config):
    ray = pytest.importorskip("ray")
    from pllm.adapt.distributed import train_users_ray

    items = {u: make_items(u, 6, rating=r) for u, r in {"u1": 1, "u2": 2, "u3": 4, "u4": 5}.items()}
    local = AdapterStore(tmp_path / "local")
    train_users(make_tiny_generator(0, WORDS), spec, items, fast_config, local)
    db = SQLiteUserStore(tmp_path / "s.sqlite3")
    remote = AdapterStore(tmp_path / "ray", db=db)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        seen: list[tuple[int, int]] = []
        factory = functools.partial(make_tiny_generator, seed=0, vocab_words=WORDS)
        report = train_users_ray(factory, spec, items, fast_config, remote,
                                 progress=lambda _, d, n: seen.append((d, n)))
        assert report.trained == ["u1", "u2", "u3", "u4"] and seen[-1] == (4, 4)
        again = train_users_ray(factory, spec, items, fast_config, remote)  # resumable: nothing left to do
        assert again.trained == [] and again.skipped == ["u1", "u2", "u3", "u4"]
        print(f"ray: {time.perf_counter() - t0:.1f} s")
    finally:
        ray.shutdown()
    assert db.execute("SELECT COUNT(*) FROM adapters WHERE kind='user'") == [(4,)]
    for user in items:
        a, b = local.get(spec.name, "user", user), remote.get(spec.name, "user", user)
        assert a.data_hash == b.data_hash and a.n_pairs == b.n_pairs
        wa = load_file(str(a.path / "adapter_model.safetensors"))
        wb = load_file(str(b.path / "adapter_model.safetensors"))
        assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    db.close()
