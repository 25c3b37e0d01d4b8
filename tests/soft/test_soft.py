"""Soft-fused prompting on tiny random models: frozen generator, trained encoder, save/load, batching,
label scoring (single- and multi-token), generation, retrieval combined, CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pllm.cli import app
from pllm.errors import ArtifactError, InputError
from pllm.models.base import Prompt
from pllm.models.testing import make_tiny_generator
from pllm.pipeline import MethodConfig, Personalizer
from pllm.retrieval import EMBEDDERS, MemoryEmbeddingCache, load_embedder
from pllm.soft.model import (
    SoftConfig,
    SoftPromptGenerator,
    UserEncoder,
    load_soft_encoder,
    load_soft_generator,
)
from pllm.soft.train import SoftTrainConfig, new_encoder, train_soft_encoder
from pllm.tasks.lamp import question_to_json
from pllm.tasks.spec import get_task
from pllm.types import ProfileItem, Question

EMB = "soft-test-bow"

SPEC = get_task("movielens-rating")
TITLES = ["good movie", "bad movie", "great story", "terrible book", "nice paper", "poor article", "best news",
          "worst review", "fine tweet", "love story"]
GENRES = ["Comedy", "Drama", "Action", "Horror"]


def make_questions(n_users: int = 6, n_items: int = 5, seed: int = 0) -> list[Question]:
    """movielens-rating shaped records: users who like one genre rate it 5 and the rest 1."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(n_users):
        fav = GENRES[u % len(GENRES)]
        items = []
        for i in range(n_items + u % 3):
            genre = GENRES[int(rng.integers(len(GENRES)))]
            items.append(ProfileItem(id=f"u{u}-i{i}", user_id=f"u{u}", timestamp=float(i), fields={
                "title": TITLES[int(rng.integers(len(TITLES)))], "year": "1995", "genres": genre,
                "rating": "5" if genre == fav else "1"}))
        genre = GENRES[(u + int(rng.integers(2))) % len(GENRES)]
        query = {"title": TITLES[int(rng.integers(len(TITLES)))], "year": "1996", "genres": genre}
        out.append(Question(id=f"q{u}", user_id=f"u{u}", input=f"Movie: {query['title']}", query=query,
                            profile=items, target="5" if genre == fav else "1", timestamp=100.0))
    return out


def train_config(**kw) -> SoftTrainConfig:
    base = {"n_tokens": 2, "embedder": EMB, "epochs": 3, "lr": 5e-3, "batch_size": 3, "attn_dim": 16,
            "mlp_hidden": 32}
    return SoftTrainConfig(**{**base, **kw})


@pytest.fixture(scope="module", autouse=True)
def soft_bow() -> Iterator[str]:
    """The suite's hashed bag-of-words embedder under a module-scoped name, so one encoder is trained per module."""
    from pllm_testkit import BowEmbedder

    EMBEDDERS.register(EMB, BowEmbedder, replace=True)
    yield EMB
    EMBEDDERS.unregister(EMB)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One encoder trained for 3 epochs on 6 users, with the generator's weights and flags before training."""
    base = make_tiny_generator(seed=0)
    before = ({k: v.clone() for k, v in base.model.state_dict().items()},
              [p.requires_grad for p in base.model.parameters()])
    qs = make_questions()
    res = train_soft_encoder(SPEC, base, qs, train_config(), tmp_path_factory.mktemp("soft") / "enc",
                             store=MemoryEmbeddingCache())
    return base, qs, res, before


def built_prompts(gen, qs, method: MethodConfig | None = None):
    return Personalizer(SPEC, gen, method or MethodConfig()).build_prompts(qs)


def test_training_changes_every_encoder_parameter_and_no_generator_parameter(trained):
    base, _, res, (weights, flags) = trained
    after = base.model.state_dict()
    assert all(torch.equal(weights[k], after[k]) for k in weights)
    assert [p.requires_grad for p in base.model.parameters()] == flags  # restored after training
    init = dict(new_encoder(base, train_config(), SPEC, load_embedder(EMB)).named_parameters())
    trained_enc, _ = load_soft_encoder(res.path)
    names = [n for n, _ in trained_enc.named_parameters()]
    assert {"query_proj.weight", "key_proj.weight", "instruction", "mlp.0.weight", "mlp.2.weight"} <= set(names)
    for name, p in trained_enc.named_parameters():
        assert not torch.equal(p, init[name]), f"encoder parameter {name} did not change"
    assert res.n_users == 6 and len(res.epoch_losses) == 3 and len(res.step_losses) == 6
    assert all(np.isfinite(res.step_losses))
    assert res.epoch_losses[-1] < res.epoch_losses[0]  # it learns the users' targets
    log = json.loads((res.path / "train_log.json").read_text())
    assert log["n_examples"] == 6 and log["train_config"]["n_tokens"] == 2


def test_soft_tokens_change_logits_and_differ_between_users(trained):
    base, qs, res, _ = trained
    gen = load_soft_generator(res.path, base)
    built = built_prompts(gen, qs)
    prompts = [b.prompt for b in built]
    labels = [" " + lab for lab in SPEC.labels]
    plain = base.score(prompts, labels)
    soft = gen.score(prompts, labels)
    assert soft.shape == plain.shape == (len(qs), 5)
    assert not np.allclose(soft, plain, atol=1e-4)
    # Same prompt text, another user's history -> other soft tokens -> other logits.
    other = Question(**{**qs[0].__dict__, "profile": qs[1].profile, "user_id": qs[1].user_id})
    p_other = Prompt(text=prompts[0].text, chat=prompts[0].chat, question=other)
    assert not np.allclose(gen.score([prompts[0]], labels), gen.score([p_other], labels), atol=1e-4)


def test_saved_encoder_reloads_to_identical_outputs(trained):
    base, qs, res, _ = trained
    cache = MemoryEmbeddingCache()
    first = load_soft_generator(res.path, base, store=cache)
    prompts = [b.prompt for b in built_prompts(first, qs)]
    a = first.score(prompts, [" 1", " 5"])
    assert len(cache) > 0  # item embeddings persisted through the EmbeddingCache
    b = load_soft_generator(res.path, base).score(prompts, [" 1", " 5"])
    assert np.array_equal(a, b)
    assert first.config.n_soft == 3 and first.model_id == "tiny-llama-seed0+soft"


def test_item_texts_shared_by_users_are_embedded_once(trained, monkeypatch):
    base, qs, res, _ = trained
    gen = load_soft_generator(res.path, base)
    encoded: list[str] = []
    encode = gen.embedder.encode

    def counting(texts, *a, **kw):  # noqa: ANN001, ANN202
        encoded.extend(texts)
        return encode(texts, *a, **kw)

    monkeypatch.setattr(gen.embedder, "encode", counting)
    first = gen._item_matrix(qs[0])
    assert len(encoded) == len(set(encoded)) > 0
    twin = Question(**{**qs[0].__dict__, "user_id": "someone-else"})  # another user, the same items
    n = len(encoded)
    assert np.array_equal(gen._item_matrix(twin), first) and len(encoded) == n  # nothing embedded again
    gen.forget_user("someone-else")  # forgetting drops the shared text vectors too
    gen._item_matrix(twin)
    assert len(encoded) == 2 * n


def test_wrong_generator_fails_clearly(trained, tmp_path):
    _, _, res, _ = trained
    with pytest.raises(ArtifactError, match=r"trained for generator 'tiny-llama-seed0'.*'tiny-llama-seed1'"):
        load_soft_generator(res.path, make_tiny_generator(seed=1))
    (tmp_path / "broken").mkdir()
    with pytest.raises(ArtifactError, match="config.json is missing"):
        load_soft_generator(tmp_path / "broken", make_tiny_generator(seed=0))


def test_hidden_size_mismatch_names_both():
    base = make_tiny_generator(seed=0)
    enc = UserEncoder(SoftConfig(generator_model_id=base.model_id, generator_hidden_size=48, embedder=EMB,
                                 embed_dim=64))
    with pytest.raises(ArtifactError, match="hidden size 48.*has 32"):
        SoftPromptGenerator(base, enc, SPEC, embedder=load_embedder(EMB))


def test_batched_scoring_matches_one_by_one_and_multi_token_path(trained):
    base, qs, res, _ = trained
    gen = load_soft_generator(res.path, base)
    # With and without retrieved items: different lengths -> left padding in batches.
    prompts = [b.prompt for b in built_prompts(gen, qs[:3]) + built_prompts(gen, qs[3:], MethodConfig("bm25", k=2))]
    assert len({len(base.encode_prompt(p)) for p in prompts}) > 1
    batched = gen.score(prompts, [" 1", " 5"], batch_size=4)
    single = np.vstack([gen.score([p], [" 1", " 5"]) for p in prompts])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    # " 5 5" is two tokens: every (prompt, candidate) row is scored in full; " 5" must agree with the fast path.
    multi = gen.score(prompts, [" 5", " 5 5"], batch_size=3)
    np.testing.assert_allclose(multi[:, 0], batched[:, 1], atol=1e-5)
    assert (multi[:, 1] < multi[:, 0]).all()
    normalized = gen.score(prompts, [" 5", " 5 5"], normalize=True)
    np.testing.assert_allclose(normalized[:, 1], multi[:, 1] / 2, atol=1e-5)


def test_generation_batched_matches_single_and_counts_soft_positions(trained):
    base, qs, res, _ = trained
    gen = load_soft_generator(res.path, base)
    prompts = [b.prompt for b in built_prompts(gen, qs[:3], MethodConfig(style="instruction"))
               + built_prompts(gen, qs[3:], MethodConfig("bm25", k=2, style="instruction"))]
    assert len({len(base.encode_prompt(p)) for p in prompts}) > 1  # left padding in batches
    batched = gen.generate(prompts, max_new_tokens=5, batch_size=4)
    single = [gen.generate([p], max_new_tokens=5)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(g.completion_tokens >= 1 for g in batched)
    assert batched[0].prompt_tokens == len(base.encode_prompt(prompts[0])) + gen.config.n_soft
    assert gen.count_prompt_tokens(prompts[0]) == batched[0].prompt_tokens
    plain = base.generate(prompts, max_new_tokens=5)
    assert [g.text for g in plain] != [g.text for g in batched]  # the soft tokens steer generation


def test_pipeline_with_retrieval_and_generation_mode(trained):
    base, qs, res, _ = trained
    gen = load_soft_generator(res.path, base)
    pers = Personalizer(SPEC, gen, MethodConfig(retriever="bm25", k=2))
    assert pers.mode == "score"
    records = pers.predict(qs, batch_size=4)
    assert [r.id for r in records] == [q.id for q in qs]
    assert all(len(r.retrieved) == 2 and r.prediction in SPEC.labels for r in records)
    gen_records = Personalizer(SPEC, gen, MethodConfig(predict="generate")).predict(qs[:2])
    assert all(r.completion_tokens >= 1 for r in gen_records)


def test_prompt_without_question_is_a_clear_error(trained):
    base, _, res, _ = trained
    gen = load_soft_generator(res.path, base)
    with pytest.raises(InputError, match="Prompt.question"):
        gen.score([Prompt(text="Rating:", chat=False)], [" 1"])


@pytest.mark.parametrize(("pooling", "instruction", "n_tokens"), [("mean", False, 1), ("attention", True, 3)])
def test_ablation_shapes_and_mean_pooling_ignores_query(pooling, instruction, n_tokens):
    base = make_tiny_generator(seed=0)
    config = train_config(pooling=pooling, instruction=instruction, n_tokens=n_tokens)
    enc = new_encoder(base, config, SPEC, load_embedder(EMB))
    gen = SoftPromptGenerator(base, enc, SPEC, embedder=load_embedder(EMB))
    qs = make_questions(2)
    q2 = Question(**{**qs[0].__dict__, "query": {"title": "bad movie", "year": "1990", "genres": "Horror"}})
    with torch.no_grad():
        a, b = gen.soft_tokens([qs[0]]), gen.soft_tokens([q2])
    assert a.shape == (1, n_tokens + int(instruction), 32)
    assert torch.allclose(a, b) == (pooling == "mean")
    empty = Question(**{**qs[0].__dict__, "profile": []})
    with torch.no_grad():
        assert torch.isfinite(gen.soft_tokens([empty])).all()


def test_cli_train_info_and_eval_with_soft(tmp_path):
    base = make_tiny_generator(seed=0)
    model_dir = tmp_path / "tiny"
    base.model.save_pretrained(model_dir)
    base.tokenizer.save_pretrained(model_dir)
    data = tmp_path / "task"
    data.mkdir()
    qs = make_questions()
    for split, chunk in (("train", qs[:4]), ("test", qs[4:])):
        (data / f"{split}_questions.json").write_text(json.dumps([question_to_json(q) for q in chunk]))
        (data / f"{split}_outputs.json").write_text(json.dumps(
            {"task": SPEC.name, "golds": [{"id": q.id, "output": q.target} for q in chunk]}))
    runner = CliRunner()
    enc = tmp_path / "enc"
    res = runner.invoke(app, ["soft", "train", "--task", "movielens-rating", "--data", str(data), "--out", str(enc),
                              "--model", str(model_dir), "--embedder", EMB, "--n-tokens", "2",
                              "--db", str(tmp_path / "s.db")])
    assert res.exit_code == 0, res.output
    assert "trained on 4 questions of 4 users" in res.output
    res = runner.invoke(app, ["soft", "info", str(enc)])
    assert res.exit_code == 0 and '"n_tokens": 2' in res.output
    out = tmp_path / "eval"
    res = runner.invoke(app, ["eval", "--task", "movielens-rating", "--questions", str(data / "test_questions.json"),
                              "--outputs", str(data / "test_outputs.json"), "--model", str(model_dir),
                              "--soft", str(enc), "--retriever", "bm25", "--k", "2", "--out", str(out),
                              "--db", str(tmp_path / "s.db")])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert [m["method"] for m in report["methods"]] == ["soft+bm25@2"]
    recorded = json.loads((out / "method_config.json").read_text())  # what it ran on is saved with the method
    assert recorded["soft"] == str(enc) and recorded["retriever"] == "bm25" and recorded["adapter"] == "none"
    cmp = tmp_path / "cmp"
    common = ["soft", "compare", "--task", "movielens-rating", "--data", str(data), "--encoder", str(enc), "--k", "2",
              "--model", str(model_dir), "--out", str(cmp), "--db", str(tmp_path / "s.db")]
    res = runner.invoke(app, [*common, "--methods", "none,soft"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*common, "--methods", "retrieval,soft+retrieval"])  # cached results are reused
    assert res.exit_code == 0, res.output
    rows = json.loads((cmp / "report.json").read_text())["methods"]
    assert [r["method"] for r in rows] == ["none", "bm25@2", "soft", "soft+bm25@2"]
    assert rows[2]["mean_prompt_tokens"] == rows[0]["mean_prompt_tokens"] + 3  # 2 soft tokens + instruction
    res = runner.invoke(app, ["soft", "info", str(tmp_path)])
    assert res.exit_code == 2 and "is not a soft-prompt encoder" in res.output
