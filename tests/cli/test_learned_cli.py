"""`pllm eval --ft`: a learned method from the command line, recorded in method_config.json."""

import json

import pytest
from typer.testing import CliRunner

from pllm.cli import app
from pllm.data import BuildConfig, build_dataset
from pllm.models import GENERATORS
from pllm.models.testing import make_tiny_generator
from pllm_testkit import write_recbole_movielens


@pytest.fixture
def task(tmp_path):
    genres = ["Drama", "Comedy", "Action"] * 8
    ratings = [(u, (u * 5 + j * 3) % 24 + 1, 1 + (u + j) % 5, 880000000 + u * 1000 + j * 10)
               for u in range(1, 9) for j in range(8)]
    out = tmp_path / "task"
    build_dataset("movielens-rating", BuildConfig(source=str(write_recbole_movielens(tmp_path / "raw", genres,
                                                                                      ratings)),
                                                  out=str(out), split="user", seed=0, dev_fraction=0.2,
                                                  test_fraction=0.25))
    return out


@pytest.fixture
def tiny_backend():
    GENERATORS.register("test-tiny", lambda model=None: make_tiny_generator(seed=0), replace=True)
    yield "test-tiny"
    GENERATORS.unregister("test-tiny")


def test_eval_ft_trains_on_the_train_split_and_records_it(task, tiny_backend, tmp_path, one_torch_thread):
    out = tmp_path / "run"
    args = ["eval", "--task", "movielens-rating", "--questions", str(task / "test_questions.json"), "--outputs",
            str(task / "test_outputs.json"), "--retriever", "recency", "--k", "2", "--ft", "--readout", "median",
            "--backend", tiny_backend, "--max-prompt-tokens", "128", "--baselines", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    method = json.loads((out / "method_config.json").read_text())
    assert method["ft"] is True and method["readout"] == "median"
    learned = json.loads((out / "learned.json").read_text())
    assert learned["adapter_pairs"] > 0 and learned["adapter_trained_now"] is True
    report = json.loads((out / "report.json").read_text())
    names = [r["method"] for r in report["methods"]]
    assert names[0] == "ft+recency@2/median" and {"bias", "user-median"} <= set(names)
    again = CliRunner().invoke(app, args)  # cached by content: not trained again
    assert again.exit_code == 0 and json.loads((out / "learned.json").read_text())["adapter_trained_now"] is False


def test_eval_ft_without_a_train_split_is_a_clear_error(task, tiny_backend, tmp_path):
    lone = tmp_path / "lone"
    lone.mkdir()
    for name in ("test_questions.json", "test_outputs.json"):
        (lone / name).write_text((task / name).read_text())
    res = CliRunner().invoke(app, ["eval", "--task", "movielens-rating", "--questions",
                                   str(lone / "test_questions.json"), "--ft", "--backend", tiny_backend, "--out",
                                   str(tmp_path / "x")])
    assert res.exit_code == 2 and "reads a train split: pass --train" in res.output
    res = CliRunner().invoke(app, ["eval", "--task", "movielens-rating", "--questions",
                                   str(lone / "test_questions.json"), "--method", "crowd+bm25@4", "--backend",
                                   tiny_backend, "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and "reads a train split: pass --train" in res.output
    assert not (tmp_path / "y").exists()


def test_eval_takes_a_method_by_its_report_name(task, tiny_backend, tmp_path):
    def saved_method(name: str) -> dict:
        out = tmp_path / name.replace("/", "_")
        res = CliRunner().invoke(app, ["eval", "--task", "movielens-rating", "--questions",
                                       str(task / "test_questions.json"), "--outputs", str(task / "test_outputs.json"),
                                       "--method", name, "--backend", tiny_backend, "--max-prompt-tokens", "128",
                                       "--out", str(out)])
        assert res.exit_code == 0, res.output
        return json.loads((out / "method_config.json").read_text())

    method = saved_method("stats+recency@2/median")
    assert (method["retriever"], method["k"], method["stats"], method["readout"]) == ("recency", 2, True, "median")
    assert saved_method("crowd+recency@2")["crowd"] is True
    bad = CliRunner().invoke(app, ["eval", "--task", "movielens-rating", "--questions",
                                   str(task / "test_questions.json"), "--method", "ft+bm42@4", "--backend",
                                   tiny_backend])
    assert bad.exit_code != 0 and "unknown method 'ft+bm42'" in bad.output


def test_eval_ft_user_trains_private_adapters_on_the_task_model_and_records_them(tmp_path, tiny_backend,
                                                                                   one_torch_thread):
    """`--method ft+user+...`: the task adapter, then one private adapter per test user (16 ratings each: above
    min_items), recorded in method_config.json and learned.json, reused on a rerun."""
    genres = ["Drama", "Comedy", "Action"] * 8
    ratings = [(u, (u * 5 + j) % 24 + 1, 1 + (u + j) % 5, 880000000 + u * 1000 + j * 10)
               for u in range(1, 9) for j in range(16)]  # 16 distinct movies per user
    task = tmp_path / "task"
    build_dataset("movielens-rating", BuildConfig(source=str(write_recbole_movielens(tmp_path / "raw", genres,
                                                                                      ratings)),
                                                  out=str(task), split="user", seed=0, dev_fraction=0.2,
                                                  test_fraction=0.25))
    out = tmp_path / "run"
    args = ["eval", "--task", "movielens-rating", "--questions", str(task / "test_questions.json"), "--outputs",
            str(task / "test_outputs.json"), "--method", "ft+user+stats+recency@2/median", "--backend",
            tiny_backend, "--max-prompt-tokens", "128", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    method = json.loads((out / "method_config.json").read_text())
    assert method["ft"] is True and method["ft_user"] is True and method["readout"] == "median"
    learned = json.loads((out / "learned.json").read_text())
    n_users = len({q["user_id"] for q in json.loads((task / "test_questions.json").read_text())})
    assert learned["private_users"] == learned["private_trained_now"] == n_users > 0
    assert learned["private_fallback_users"] == 0 and learned["private_recipe"]["min_items"] == 10
    report = json.loads((out / "report.json").read_text())
    assert report["methods"][0]["method"] == "ft+user+stats+recency@2/median"
    again = CliRunner().invoke(app, args)  # both stages cached by content
    assert again.exit_code == 0, again.output
    learned = json.loads((out / "learned.json").read_text())
    assert learned["adapter_trained_now"] is False and learned["private_trained_now"] == 0
    assert learned["private_reused"] == n_users
    mixed = CliRunner().invoke(app, [*args, "--adapter", "user"])
    assert mixed.exit_code == 2 and "ft+user+" in mixed.output


def test_eval_ft_soft_trains_an_encoder_on_the_task_model_and_records_it(task, tiny_backend, tmp_path, bow_embedder,
                                                                          one_torch_thread):
    """`--method ft+soft+...`: the task adapter, then one soft-token encoder trained against the merged copy,
    recorded in method_config.json and learned.json, reused on a rerun; `--soft` beside a learned method is refused."""
    out = tmp_path / "run"
    args = ["eval", "--task", "movielens-rating", "--questions", str(task / "test_questions.json"), "--outputs",
            str(task / "test_outputs.json"), "--method", "ft+soft+stats+recency@2/median", "--embedder",
            bow_embedder, "--backend", tiny_backend, "--max-prompt-tokens", "128", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    method = json.loads((out / "method_config.json").read_text())
    assert method["ft"] is True and method["ft_soft"] is True and method["embedder"] == bow_embedder
    learned = json.loads((out / "learned.json").read_text())
    assert learned["soft_trained_now"] is True and learned["soft_examples"] > 0 and learned["adapter_pairs"] > 0
    assert json.loads((out / "report.json").read_text())["methods"][0]["method"] == "ft+soft+stats+recency@2/median"
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    learned = json.loads((out / "learned.json").read_text())
    assert learned["adapter_trained_now"] is False and learned["soft_trained_now"] is False
    mixed = CliRunner().invoke(app, [*args, "--soft", str(out)])
    assert mixed.exit_code == 2 and "not with --adapter or --soft" in mixed.output
