"""The persona-chat-memory builder: multi-session histories with planted facts and gold evidence turns."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pllm.cli import app
from pllm.data import BuildConfig, build_dataset
from pllm.data.persona_memory import UPDATE
from pllm.errors import InputError
from pllm.retrieval.dates import parse_period
from pllm.tasks.lamp import read_questions
from pllm.tasks.spec import get_task
from pllm_testkit import folder_digest, write_persona_csv


def write_csv(path: Path, n: int = 20) -> Path:
    return write_persona_csv(path, n, lambda c: (f"I like tea {c}.", f"I have {c} cats.", [
        f"User {1 + t % 2}: conversation {c} turn {t} about gardening and music" for t in range(8)]))


def test_build_plants_every_question_type_with_its_evidence(tmp_path: Path) -> None:
    write_csv(tmp_path / "raw" / "valid.csv")
    cfg = {"source": str(tmp_path / "raw"), "max_users": 8, "seed": 3}
    res = build_dataset("persona-chat-memory", BuildConfig(out=str(tmp_path / "a"), **cfg))
    build_dataset("persona-chat-memory", BuildConfig(out=str(tmp_path / "b"), **cfg))
    assert folder_digest(tmp_path / "a") == folder_digest(tmp_path / "b")  # deterministic
    assert sum(res.counts.values()) == 8 * 9 and res.users["test"] == 2
    assert get_task(tmp_path / "a").name == "persona-chat-memory"
    questions = read_questions(tmp_path / "a" / "test_questions.json", outputs=tmp_path / "a" / "test_outputs.json")
    assert sorted({q.query["type"] for q in questions}) == ["multi", "single", "temporal", "update"]
    for q in questions:
        by_id = {p.id: p for p in q.profile}
        sessions = {p.fields["session"] for p in q.profile}
        assert len(sessions) == 30 and all(p.timestamp < q.timestamp for p in q.profile)
        gold = [by_id[i] for i in q.query["evidence"]]
        kind = q.query["type"]
        assert len(gold) == (2 if kind == "multi" else 1)
        assert q.target in gold[-1].fields["text"]  # the (last) evidence turn holds the answer
        if kind == "multi":  # consecutive turns of one session; the first does not hold the answer
            assert gold[0].fields["session"] == gold[1].fields["session"]
            assert gold[1].fields["turn"] == gold[0].fields["turn"] + 1 and q.target not in gold[0].fields["text"]
        if kind == "update":  # an earlier turn said another value of the same thing
            first, then, _, values = next(u for u in UPDATE if u[1].format(b=q.target) == gold[0].fields["text"])
            old = [p for p in q.profile if p.fields["text"] in {first.format(a=v) for v in values if v != q.target}]
            assert len(old) == 1 and old[0].timestamp < gold[0].timestamp
        if kind == "temporal":  # the question's period holds the evidence turn and not the other event
            period = parse_period(q.input, q.timestamp)
            assert period is not None and gold[0].timestamp in period
            opener = gold[0].fields["text"].split(q.target)[0]
            others = [p for p in q.profile if p.fields["text"].startswith(opener) and p.id != gold[0].id]
            assert len(others) == 1 and others[0].timestamp not in period


def test_bad_builds_are_refused(tmp_path: Path) -> None:
    write_csv(tmp_path / "raw" / "valid.csv", n=4)
    with pytest.raises(InputError, match="only a user split"):
        build_dataset("persona-chat-memory", BuildConfig(source=str(tmp_path / "raw"), out=str(tmp_path / "o"),
                                                         split="time"))
    with pytest.raises(InputError, match="8 users asked, but the source has 4"):
        build_dataset("persona-chat-memory", BuildConfig(source=str(tmp_path / "raw"), out=str(tmp_path / "o"),
                                                         max_users=8))
    assert not (tmp_path / "o").exists()


def test_cli_builds_it(tmp_path: Path) -> None:
    write_csv(tmp_path / "raw" / "valid.csv")
    r = CliRunner().invoke(app, ["data", "build", "persona-chat-memory", "--source", str(tmp_path / "raw"),
                                 "--out", str(tmp_path / "o"), "--max-users", "4"])
    assert r.exit_code == 0, r.output
    assert "built persona-chat-memory" in r.output and (tmp_path / "o" / "test_questions.json").exists()
