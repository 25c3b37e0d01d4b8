"""The personalized judge as a bench metric for generation tasks: fake cell and judge backends registered
through GENERATORS (a cell generator whose reply says how long its prompt was, and a judge that prefers
the response reporting more words), so every verdict is known in advance."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pllm.data import BuildConfig, build_dataset
from pllm.errors import InputError
from pllm.eval.bench import BenchRunner
from pllm.eval.grid import bench_config_from_dict
from pllm.models.base import GENERATORS, Generation, Generator, normalize_continuations
from pllm_testkit import write_persona_csv

N_QUESTIONS = 6
JUDGED = 4


class WordCountGenerator(Generator):
    """Replies 'I read N words' (N = the prompt's words): retrieval-augmented cells reply bigger numbers."""

    name = "test-wordcount"
    supports_scoring = False

    def __init__(self, model: str | None = None) -> None:
        self.model_id = model or "wordcount"

    def generate(self, prompts, *, max_new_tokens=64, temperature=0.0, stop=None, batch_size=8):
        return [Generation(text=f"I read {len(p.text.split())} words", prompt_tokens=self.count_tokens(p.text),
                           completion_tokens=4) for p in prompts]


class CountingJudge(Generator):
    """Scores ' A' / ' B' by the word count each response reports (0 without one); every prompt it is asked
    is kept in the class-level `asked`, across instances, so a resumed run's questions can be counted."""

    name = "test-count-judge"
    supports_scoring = True
    asked: list = []

    def __init__(self, model: str | None = None) -> None:
        self.model_id = model or "count-judge"

    @staticmethod
    def slots(text: str) -> tuple[str, str]:
        a = re.search(r"Response A: (.*?)\n\nResponse B:", text, re.S).group(1)
        b = re.search(r"Response B: (.*?)\n\nWhich", text, re.S).group(1)
        return a, b

    @staticmethod
    def words(response: str) -> float:
        m = re.search(r"I read (\d+) words", response)
        return float(m.group(1)) if m else 0.0

    def score(self, prompts, continuations, *, batch_size=8, normalize=False):
        CountingJudge.asked.extend(prompts)
        conts = normalize_continuations(len(prompts), continuations)
        out = []
        for p, cs in zip(prompts, conts):
            a, b = (self.words(x) for x in self.slots(p.text))
            out.append([a if c.strip() == "A" else b for c in cs])
        return np.array(out)

    def generate(self, prompts, **kw):
        raise AssertionError("the scoring readout is expected")


@pytest.fixture
def fakes() -> Iterator[None]:
    GENERATORS.register("test-wordcount", WordCountGenerator, replace=True)
    GENERATORS.register("test-count-judge", CountingJudge, replace=True)
    CountingJudge.asked = []
    yield
    GENERATORS.unregister("test-wordcount")
    GENERATORS.unregister("test-count-judge")


@pytest.fixture
def chat_task(tmp_path: Path) -> Path:
    write_persona_csv(tmp_path / "raw" / "valid.csv")
    task = tmp_path / "persona"
    build_dataset("persona-chat-reply", BuildConfig(source=str(tmp_path / "raw"), out=str(task), split="time",
                                                    min_profile=3))
    return task


def grid(task: Path, **judge):
    return bench_config_from_dict({
        "tasks": [{"data": str(task), "name": "chat", "limit": N_QUESTIONS}], "models": ["test-wordcount"],
        "embedder": "test-bow", "methods": ["none", "recency"], "k": [2], "baselines": ["knn"], "batch_size": 4,
        "n_resamples": 200,
        "judge": {"backend": "test-count-judge", "max_questions": JUDGED, "retriever": "recency", "k": 2,
                  "batch_size": 2, **judge}})


class Interrupt(Exception):
    pass


def _judge_rows(report: dict) -> dict:
    return {r["cell"]: r.get("judge") for r in report["tasks"]["chat"]["rows"]}


def test_judge_column_both_orders_and_resume_without_reasking(chat_task, fakes, bow_embedder, tmp_path):
    out = tmp_path / "run"
    seen: list[tuple[str, int]] = []

    def stop_mid_judging(label: str, done: int, total: int) -> None:
        seen.append((label, done))
        if "judge" in label and done == 2:  # the first judge batch (2 questions) is written
            raise Interrupt

    with pytest.raises(Interrupt):
        BenchRunner(grid(chat_task), out, progress=stop_mid_judging).run()
    assert len(CountingJudge.asked) == 2 * 2  # one batch of two questions, both orders
    report = BenchRunner(grid(chat_task), out).run()
    pairs = 2  # recency@2 vs none, knn vs none
    assert len(CountingJudge.asked) == pairs * JUDGED * 2  # nothing judged twice, every pair in both orders
    rows = _judge_rows(report)
    assert rows["none"] is None  # the reference itself is not judged
    rec, knn = rows["recency@2"], rows["knn"]
    assert rec["against"] == knn["against"] == "none" and rec["n"] == knn["n"] == JUDGED
    # retrieval makes longer prompts, so the recency cell reports more words: it wins in both orders
    assert rec["win_rate"]["value"] == 1.0 and rec["tie_rate"]["value"] == 0.0 and rec["score"]["value"] == 1.0
    assert knn["loss_rate"]["value"] == 1.0  # the nearest profile item reports no word count
    for r in (rec, knn):
        for name in ("win_rate", "tie_rate", "loss_rate", "score"):
            assert r[name]["low"] <= r[name]["value"] <= r[name]["high"]
        assert r["first_position_rate"] == 0.5  # consistent verdicts: one vote per slot
    # both orders: prompts come in pairs with the two responses swapped
    for first, second in zip(CountingJudge.asked[::2], CountingJudge.asked[1::2]):
        a1, b1 = CountingJudge.slots(first.text)
        a2, b2 = CountingJudge.slots(second.text)
        assert (a1, b1) == (b2, a2) and a1 != b1 and first.question.id == second.question.id
        assert "What this user wrote or did before:" in first.text  # the user's profile is shown
    logs = sorted((out / "judge" / "chat").glob("*.jsonl"))
    assert [p.name for p in logs] == ["knn__vs__none.jsonl", "recency_2__vs__none.jsonl"]
    for p in logs:
        ids = [json.loads(x)["id"] for x in p.read_text().splitlines()]
        assert len(ids) == len(set(ids)) == JUDGED
    md = (out / "report.md").read_text()
    assert "judge win vs ref [95% CI]" in md and "Personalized LLM-as-judge (`test-count-judge`" in md
    assert "| recency@2 | none | 4 | 1.000 [1.000, 1.000]" in md
    assert json.loads((out / "report.json").read_text())["tasks"]["chat"]["judge"]["questions"] == JUDGED
    # a third run asks the judge nothing and reports the same verdicts
    again = BenchRunner(grid(chat_task), out).run()
    assert len(CountingJudge.asked) == pairs * JUDGED * 2
    assert _judge_rows(again) == rows


def test_judge_against_a_named_cell_and_settings_are_pinned(chat_task, fakes, bow_embedder, tmp_path):
    out = tmp_path / "run"
    rows = _judge_rows(BenchRunner(grid(chat_task, against="recency@2"), out).run())
    assert rows["recency@2"] is None
    assert rows["none"]["against"] == "recency@2" and rows["none"]["loss_rate"]["value"] == 1.0
    assert rows["knn"]["against"] == "recency@2"
    with pytest.raises(InputError, match="another judge or settings"):
        BenchRunner(grid(chat_task, against="recency@2", k=1), out).run()
    with pytest.raises(InputError, match="judge.against 'bm25@9' is not a cell"):
        BenchRunner(grid(chat_task, against="bm25@9"), tmp_path / "other").run()
    assert not (tmp_path / "other" / "cells").exists()  # refused before any cell ran
    with pytest.raises(InputError, match="bad judge section"):
        grid(chat_task, judges=3)


def test_cli_judge_flags(chat_task, fakes, tmp_path):
    from typer.testing import CliRunner

    from pllm.cli import app

    out = tmp_path / "cli"
    args = ["bench", "--task", f"chat={chat_task}", "--model", "test-wordcount", "--method", "none", "--method",
            "recency", "--k", "2", "--limit", "6", "--baseline", "user-mean", "--judge", "test-count-judge",
            "--judge-max-questions", "3", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["judge"]["backend"] == "test-count-judge"
    row = {r["cell"]: r for r in report["tasks"]["chat"]["rows"]}["recency@2"]
    assert row["judge"]["n"] == 3 and row["judge"]["win_rate"]["value"] == 1.0
    assert len(CountingJudge.asked) == 3 * 2
    assert report["tasks"]["chat"]["skipped"] == ["baseline user-mean: does not apply to persona-chat-reply"]
