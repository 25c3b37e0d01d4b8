"""benchmarks/learned.py end to end on a tiny grid: a learned cell scored on test, dev and train, its
readout chosen on dev, a hybrid fitted on train with its collaborative twin, paired differences."""

import importlib.util
import json
from pathlib import Path

import yaml

from pllm.data import BuildConfig, build_dataset
from pllm.models import GENERATORS
from pllm.models.testing import make_tiny_generator
from pllm_testkit import write_recbole_movielens

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "learned.py"


def test_learned_benchmark_reports_choices_made_on_dev(tmp_path, one_torch_thread, bow_embedder):
    genres = ["Drama", "Comedy", "Action"] * 8
    ratings = [(u, (u * 5 + j * 3) % 24 + 1, 1 + (u * j) % 5, 880000000 + u * 1000 + j * 10)
               for u in range(1, 25) for j in range(8)]
    task = tmp_path / "task"
    build_dataset("movielens-rating", BuildConfig(source=str(write_recbole_movielens(tmp_path / "raw", genres,
                                                                                      ratings)),
                                                  out=str(task), split="time", seed=0))
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "tasks": [{"name": "ml", "data": str(task), "methods": ["ft+recency", "ft+user+recency/median", "ft",
                                                                "ft+soft+recency"]},
                  {"name": "ml-dev", "data": str(task), "split": "dev", "methods": ["ft+recency"]},
                  {"name": "ml-train", "data": str(task), "split": "train"}],
        "models": ["test-tiny"], "methods": ["ft+recency"], "k": [2], "baselines": ["bias", "user-median"],
        "batch_size": 8, "n_resamples": 50, "max_prompt_tokens": 128, "threads": 1, "embedder": bow_embedder,
        "soft_recipe": {"n_tokens": 2, "mlp_hidden": 16}}))
    spec = importlib.util.spec_from_file_location("learned_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    GENERATORS.register("test-tiny", lambda model=None: make_tiny_generator(seed=0), replace=True)
    try:
        report = module.main(["--config", str(grid), "--out", str(tmp_path / "out"), "--machine-note", "test"])
        (soft_path,) = [Path(s["path"]) / "train_log.json" for s in report["tasks"]["ml"]["soft_encoders"].values()]
        trained_at = soft_path.stat().st_mtime_ns
        # resumed: every finished cell (the soft one included) is kept as logged; nothing is retrained
        again = module.main(["--config", str(grid), "--out", str(tmp_path / "out"), "--machine-note", "test"])
        assert soft_path.stat().st_mtime_ns == trained_at
        assert again["tasks"]["ml"]["soft_encoders"] == report["tasks"]["ml"]["soft_encoders"]
        # re-assembled with a corrected note: the scoring run's date and duration are kept, the note replaced
        assembled = module.main(["--config", str(grid), "--out", str(tmp_path / "out"), "--assemble",
                                 "--machine-note", "test"])
        assert (assembled["created"], assembled["seconds"]) == (again["created"], again["seconds"])
        assert "assembled" in assembled and "assembled" not in again
    finally:
        GENERATORS.unregister("test-tiny")
    ml = report["tasks"]["ml"]
    assert ml["reference"] in ("bias", "user-median") and ml["n_test"] == 24
    assert set(ml["choices"]["ft+recency@2"]["dev"]) == {"argmax", "expected", "median"}
    kinds = {r["method"]: r["kind"] for r in ml["rows"]}
    assert any(k == "hybrid" and m.startswith("hybrid-") for m, k in kinds.items())
    assert any(m.startswith("cf-") for m in kinds) and kinds["bias"] == "baseline"
    assert any(p["a"].startswith("hybrid-") and p["b"].startswith("cf-") for p in ml["paired"])
    assert ml["adapters"] and next(iter(ml["adapters"].values()))["pairs"] > 0
    # the private cell has no dev twin: it keeps its named readout, and is paired with its first stage; every
    # user here has fewer than min_items items, so all fall back to the task adapter (a difference of exactly 0)
    assert ml["choices"]["ft+user+recency@2/median"]["readout_fixed"] == "median"
    (private,) = ml["private_adapters"].values()
    assert private["fallback_users"] == private["scored_users"] == 24 and private["with_adapter"] == 0
    first = next(p for p in ml["paired"] if p["a"] == "ft+user+recency@2/median" and p["b"].startswith("ft+recency"))
    assert first["b"].startswith("ft+recency@2")
    if first["b"].endswith("/median"):  # the same readout on the same (task) model: the same predictions
        assert first["difference"]["value"] == 0.0
    # `ft` (trained with no prompt context) is the control every other learned cell is paired with
    assert any(p["a"].startswith("ft+recency@2") and p["b"] == "ft" for p in ml["paired"])
    assert not any(p["a"].startswith(("ft+user", "ft+soft")) and p["b"] == "ft" for p in ml["paired"])
    # the soft stage: paired with the same first stage, its encoder (trained against the merged copy) reported
    assert any(p["a"] == "ft+soft+recency@2" and p["b"].startswith("ft+recency@2") for p in ml["paired"])
    (soft,) = ml["soft_encoders"].values()
    assert soft["texts"] > 0 and soft["loss_last_10"] and soft["recipe"]["n_tokens"] == 2  # the grid's soft_recipe
    md = (tmp_path / "out" / "report.md").read_text()
    assert "### LLM alone" in md and "### Hybrid" in md and "Sharing: test" in md
    assert json.loads((tmp_path / "out" / "report.json").read_text())["machine_note"] == "test"
