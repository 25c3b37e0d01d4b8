"""The persona-chat-memory builder: multi-session histories with planted facts and gold evidence turns."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pllm.cli import app
from pllm.data import BuildConfig, build_dataset
from pllm.data.persona_memory import MULTI, PARAPHRASES, SINGLE, TEMPORAL, UPDATE
from pllm.errors import InputError
from pllm.retrieval.dates import parse_period
from pllm.retrieval.lexical import TOKEN_PATTERN
from pllm.tasks.lamp import read_questions
from pllm.tasks.spec import get_task
from pllm_testkit import folder_digest, write_persona_csv


def write_csv(path: Path, n: int = 20) -> Path:
    return write_persona_csv(path, n, lambda c: (f"I like tea {c}.", f"I have {c} cats.", [
        f"User {1 + t % 2}: conversation {c} turn {t} about gardening and music" for t in range(8)]))


# Words a paraphrase may share with its fact: bm25s's English stopwords plus pronouns, auxiliaries and question
# words. Everything else is content ("now", "new", "just" included).
FUNCTION_WORDS = set("""a an and are as at be but by for if in into is it no not of on or such that the their then
there these they this to was will with i me my mine we our us you your she her he his its them am were been do does
did has have had can what which who whom where when how from""".split())


TEMPLATE_QUESTIONS = [t[1] for t in SINGLE + TEMPORAL] + [t[2] for t in UPDATE + MULTI]


def content_words(text: str) -> dict[str, set[str]]:
    """The text's words as the bm25 retriever splits them, less FUNCTION_WORDS, each with its possible roots
    (itself, and itself less a plural, -ed or -ing ending and a doubled last letter: running -> run)."""
    out: dict[str, set[str]] = {}
    for w in re.findall(TOKEN_PATTERN, text.lower()):
        if w not in FUNCTION_WORDS:
            roots = {w} | {w[:-len(e)] for e in ("s", "es", "d", "ed", "ing") if w.endswith(e) and len(w) > len(e) + 2}
            out[w] = roots | {r[:-1] for r in roots if len(r) > 3 and r[-1] == r[-2]}
    return out


def shared_words(question: str, turns: list[str]) -> set[str]:
    """Content words of the question also in the turns: a common root, or the same first five letters (which
    also catches a word family: allergy / allergic)."""
    said = [r for t in turns for r in content_words(t).values()]
    return {w for w, roots in content_words(question).items()
            if any(roots & r or (len(w) >= 5 and any(len(x) >= 5 and x[:5] == w[:5] for x in r)) for r in said)}


def test_shared_words_sees_overlap() -> None:
    assert shared_words("What is my sister's name?", ["My little sister Maya just started college."]) == {"sister"}
    assert shared_words("What triggers my allergy?", ["I am allergic to kiwi."]) == {"allergy"}
    assert shared_words("Which races am I running?", ["I ran a race, I love to run."]) == {"races", "running"}
    assert not shared_words("What is my younger sibling called?", ["My little sister Maya just started college."])


def test_every_paraphrase_shares_no_content_word_with_its_fact() -> None:
    """Each template's paraphrase against its evidence turns with every value filled in (single: the fact;
    update: the new value's turn; temporal: the event, the date phrase aside; multi: both turns)."""
    cases = [(ask, [say.format(v=v) for v in values]) for say, ask, values in SINGLE]
    cases += [(ask, [then.format(b=v) for v in values]) for _, then, ask, values in UPDATE]
    cases += [(ask, [say.format(v=v) for v in values]) for say, ask, values in TEMPORAL]
    cases += [(ask, [first, *(second.format(v=v) for v in values)]) for first, second, ask, values in MULTI]
    assert sorted(PARAPHRASES) == sorted(TEMPLATE_QUESTIONS)  # one paraphrase per template, no stale ones
    for ask, turns in cases:
        para = PARAPHRASES[ask]
        assert ("{when}" in para) == ("{when}" in ask)  # temporal questions keep their date phrase
        assert not shared_words(para.format(when=""), turns), (para, shared_words(para.format(when=""), turns))


def template_of(question: str) -> tuple[str, str]:
    """The template question a built question is, and its date phrase ('' for all but temporal ones)."""
    for ask in TEMPLATE_QUESTIONS:
        m = re.fullmatch(re.escape(ask).replace(r"\{when\}", "(.+)"), question)
        if m:
            return ask, m.group(1) if m.groups() else ""
    raise AssertionError(f"not a template question: {question!r}")


# sha256 of the question and output files of the default build below, made before the paraphrased variant
# existed: the default data must not move (change it only for a deliberate change to the default build).
DEFAULT_DIGEST = "73adb7648d0c486cc6ad8a95020e57fe8937c3fd3cc3fefd1ee2e197139d55ac"


def _data_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.glob("*_*.json")):
        if f.name != "build_config.json":  # it names the (temporary) source folder
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def test_paraphrased_build_changes_only_the_questions(tmp_path: Path) -> None:
    write_csv(tmp_path / "raw" / "valid.csv")
    cfg = {"source": str(tmp_path / "raw"), "max_users": 8, "seed": 3}
    build_dataset("persona-chat-memory", BuildConfig(out=str(tmp_path / "plain"), **cfg))
    build_dataset("persona-chat-memory-paraphrased", BuildConfig(out=str(tmp_path / "para"), **cfg))
    assert _data_digest(tmp_path / "plain") == DEFAULT_DIGEST
    for split in ("train", "dev", "test"):
        plain = read_questions(tmp_path / "plain" / f"{split}_questions.json",
                               outputs=tmp_path / "plain" / f"{split}_outputs.json")
        para = read_questions(tmp_path / "para" / f"{split}_questions.json",
                              outputs=tmp_path / "para" / f"{split}_outputs.json")
        assert [q.id for q in plain] == [q.id for q in para]
        for a, b in zip(plain, para, strict=True):
            assert (a.target, a.timestamp, a.query["type"], a.query["evidence"]) == \
                (b.target, b.timestamp, b.query["type"], b.query["evidence"])
            assert [(p.id, p.fields) for p in a.profile] == [(p.id, p.fields) for p in b.profile]
            ask, when = template_of(a.input)  # the default asks the template's own question
            assert b.input == b.query["question"] == PARAPHRASES[ask].format(when=when)
            by_id = {p.id: p for p in b.profile}
            assert not shared_words(b.input, [str(by_id[i].fields["text"]) for i in b.query["evidence"]])


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
