"""`llm-pointwise-soft`: a soft-prompt user encoder trained on training users' ranked lists (tiny random
Llama, bag-of-words embedder) scores each candidate with the user's history as soft tokens."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from pllm.cli import app
from pllm.errors import ArtifactError, InputError
from pllm.models.testing import make_tiny_generator
from pllm.rec.data import POINTWISE_SPEC, RecBuildConfig, candidates_of, target_index
from pllm.rec.rankers import PointwiseConfig, make_ranker, pointwise_training_questions, train_soft_ranker
from pllm.retrieval.embedders import EMBEDDERS
from pllm.soft.train import SoftTrainConfig, train_soft_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EMB = "test-bow-rec-soft"


@pytest.fixture(scope="module", autouse=True)
def bow():
    from pllm_testkit import BowEmbedder

    EMBEDDERS.register(EMB, BowEmbedder, replace=True)
    yield EMB
    EMBEDDERS.unregister(EMB)


@pytest.fixture
def splits(ml_dir):
    from pllm.data.base import BUILDERS

    return BUILDERS.get("movielens-rec")().questions(
        RecBuildConfig(source=str(ml_dir), out="-", split="user", negatives=5, seed=0))


def small_config(**kw) -> SoftTrainConfig:
    return SoftTrainConfig(**{"n_tokens": 2, "embedder": EMB, "epochs": 2, "lr": 5e-3, "batch_size": 4,
                              "attn_dim": 16, "mlp_hidden": 32, **kw})


def test_training_questions_are_the_target_and_sampled_unrated_candidates(splits):
    lists = splits["train"]
    qs = pointwise_training_questions(lists, negatives=2, seed=0)
    assert len(qs) == 3 * len(lists)
    for q in lists:
        mine = [p for p in qs if p.id.startswith(f"{q.id}#")]
        yes = [p for p in mine if p.target == "Yes"]
        assert [p.query["movie_id"] for p in yes] == [candidates_of(q)[target_index(q)]["movie_id"]]
        no = {p.query["movie_id"] for p in mine if p.target == "No"}
        assert len(no) == 2 and no <= {c["movie_id"] for c in candidates_of(q)} - {q.target}
        assert all(p.profile == q.profile and p.user_id == q.user_id for p in mine)
    assert qs == pointwise_training_questions(lists, negatives=2, seed=0)  # seeded
    with pytest.raises(InputError, match="target"):
        pointwise_training_questions([dataclasses.replace(lists[0], target=None)])


def test_trained_encoder_ranks_with_the_users_history(splits, tmp_path):
    base = make_tiny_generator(seed=0)
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    res = train_soft_ranker(base, splits["train"], small_config(), tmp_path / "enc", negatives=2)
    assert res.n_examples == 3 * len(splits["train"]) and len(res.step_losses) > 1
    log = json.loads((tmp_path / "enc" / "train_log.json").read_text())
    assert log["pointwise_negatives"] == 2 and log["train_config"]["style"] == "demonstrations"
    assert all(torch_equal(before[k], v) for k, v in base.model.state_dict().items())  # generator frozen

    ranker = make_ranker("llm-pointwise-soft", generator=base, encoder=tmp_path / "enc")
    assert ranker.config.retriever == "none" and ranker.config.k == 0  # follows the encoder's training
    q = splits["test"][0]
    scores = ranker.score(q)
    assert scores.shape == (len(candidates_of(q)),) and np.isfinite(scores).all()
    # the same candidates for a user with another history: the soft tokens, hence the scores, change
    other = next(p for p in splits["test"] if p.user_id != q.user_id)
    moved = ranker.score(dataclasses.replace(q, user_id=other.user_id, profile=other.profile))
    assert not np.allclose(scores, moved, atol=1e-5)
    # and without soft tokens (same prompts, plain model) the scores differ too
    plain = make_ranker("llm-pointwise", generator=base, config=PointwiseConfig(retriever="none", k=0)).score(q)
    assert not np.allclose(scores, plain, atol=1e-5)
    d = ranker.describe()
    assert d["ranker"] == "llm-pointwise-soft" and d["n_soft_tokens"] == 3 and d["backend"] == "soft"
    shutil.copytree(tmp_path / "enc", tmp_path / "bad")
    (tmp_path / "bad" / "train_log.json").write_text("{")
    with pytest.raises(ArtifactError, match="unreadable training log"):
        make_ranker("llm-pointwise-soft", generator=base, encoder=tmp_path / "bad")


def test_wrong_or_missing_encoder_is_a_clear_error(splits, tmp_path):
    base = make_tiny_generator(seed=0)
    with pytest.raises(InputError, match="soft-train"):
        make_ranker("llm-pointwise-soft", generator=base)
    other_task = dataclasses.replace(POINTWISE_SPEC, name="some-other-task")
    qs = pointwise_training_questions(splits["train"][:2], negatives=1)
    train_soft_encoder(other_task, base, qs, small_config(epochs=1), tmp_path / "other")
    with pytest.raises(ArtifactError, match="some-other-task"):
        make_ranker("llm-pointwise-soft", generator=base, encoder=tmp_path / "other")


def test_cli_soft_train_and_eval(ml_dir, tmp_path):
    base = make_tiny_generator(seed=0)
    model_dir = tmp_path / "tiny"
    base.model.save_pretrained(model_dir)
    base.tokenizer.save_pretrained(model_dir)
    runner = CliRunner()
    task = tmp_path / "task"
    res = runner.invoke(app, ["rec", "build", "--out", str(task), "--source", str(ml_dir), "--negatives", "5",
                              "--split", "user"])
    assert res.exit_code == 0, res.output
    enc = tmp_path / "enc"
    res = runner.invoke(app, ["rec", "soft-train", str(task), "--out", str(enc), "--model", str(model_dir),
                              "--embedder", EMB, "--n-tokens", "2", "--negatives", "1"])
    assert res.exit_code == 0, res.output
    assert "yes/no questions" in res.output and (enc / "encoder.safetensors").is_file()
    out = tmp_path / "report"
    res = runner.invoke(app, ["rec", "eval", str(task), "--rankers", "llm-pointwise-soft", "--soft", str(enc),
                              "--model", str(model_dir), "--out", str(out)])
    assert res.exit_code == 0, res.output
    row = json.loads((out / "report.json").read_text())["rankers"][0]
    assert row["ranker"] == "llm-pointwise-soft" and row["n"] >= 1 and row["config"]["encoder"] == str(enc)
    res = runner.invoke(app, ["rec", "soft-train", str(tmp_path / "nowhere"), "--out", str(enc)])
    assert res.exit_code == 2 and "pllm rec build" in res.output


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))
