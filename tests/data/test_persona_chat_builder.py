from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pllm.data import BuildConfig, build_dataset
from pllm.data.persona_chat import PERSONA_CONTEXT, load_conversations, parse_turns, persona_user_id
from pllm.errors import InputError
from pllm.tasks.lamp import read_outputs, read_questions
from pllm.tasks.spec import get_task
from pllm_testkit import SHARED_DATA, folder_digest, read_split

HOBBIES = ["hiking in the mountains", "baking bread at home", "playing jazz guitar", "painting old barns",
           "reading mystery novels", "fixing vintage cars"]


def write_csv(path: Path, n: int = 16, repeat_persona: bool = True) -> Path:
    """Synthetic-Persona-Chat's CSV shape; persona 0 talks in two conversations (0 and n-1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user 1 personas", "user 2 personas", "Best Generated Conversation"])
        for c in range(n):
            a = 0 if (repeat_persona and c == n - 1) else c
            p1 = [f"I love {HOBBIES[a % 6]}.", f"I have {a} cats.", f"My name is Alex{a}.", "I work nights."]
            p2 = [f"I love {HOBBIES[(c + 3) % 6]}.", f"I am {20 + c} years old.", f"I live in town {c}."]
            turns = [f"User 1: Hi there, how are you doing today friend {c}?",
                     f"User 2: I am fine, I just got back from {HOBBIES[(c + 3) % 6]} today.",
                     f"User 1: That sounds fun, I prefer {HOBBIES[a % 6]} myself honestly.",
                     "continued on a second line",
                     f"User 2: Nice, I have never tried {HOBBIES[a % 6]} before.",
                     f"User 1: You should, my {a} cats do not mind it at all.",
                     "User 2: Okay!",
                     f"User 1: Well, it was nice talking with you about {HOBBIES[a % 6]}.",
                     "User 2: You too, have a great night then."]
            w.writerow(["\n".join(p1), "\n".join(p2), "\n".join(turns)])
    return path


def test_parse_turns_and_users(tmp_path):
    assert parse_turns("User 1: hi\nmore text\n\nUser 2:  yo ") == [(1, "hi more text"), (2, "yo")]
    convs = load_conversations(write_csv(tmp_path / "raw" / "valid.csv", n=4))
    assert len(convs) == 4 and convs[0].turns[2][1].endswith("honestly. continued on a second line")
    assert persona_user_id(convs[0].personas[1]) == persona_user_id(convs[3].personas[1])  # same persona
    assert persona_user_id([" I  Love X."]) == persona_user_id(["i love x."])


def test_build_user_split_profile_is_persona_plus_earlier_turns(tmp_path):
    src = write_csv(tmp_path / "raw" / "valid.csv")
    cfg = dict(source=str(tmp_path / "raw"), split="user", seed=2, dev_fraction=0.2, test_fraction=0.3)
    res = build_dataset("persona-chat-reply", BuildConfig(out=str(tmp_path / "a"), **cfg))
    build_dataset("persona-chat-reply", BuildConfig(out=str(tmp_path / "b"), **cfg))
    assert folder_digest(tmp_path / "a") == folder_digest(tmp_path / "b")
    spec = get_task(tmp_path / "a")
    assert spec.name == "persona-chat-reply" and spec.kind == "generation"
    assert spec.metrics == ["rouge-1", "rouge-L"]
    split_users = {}
    for split in ("train", "dev", "test"):
        qs = read_split(tmp_path / "a", split, spec)
        split_users[split] = {q.user_id for q in qs}
        for q in qs:
            kinds = [p.fields["kind"] for p in q.profile]
            assert kinds[0] == "persona" and "turn" in kinds
            assert all(p.fields["context"] == PERSONA_CONTEXT for p in q.profile if p.fields["kind"] == "persona")
            assert all(p.timestamp < q.timestamp for p in q.profile)
            assert q.target not in [p.fields["text"] for p in q.profile if p.fields["kind"] == "turn"] or \
                q.id not in {p.id for p in q.profile}
            assert q.id not in {p.id for p in q.profile}
            assert len(q.target.split()) >= 4 and q.query["context"]  # replies to a partner, not "Okay!"
            assert q.query["context"] in q.query["dialogue"] and q.input.endswith("You:")
            assert q.target not in q.input  # the reply is never in the prompt input
    assert not split_users["train"] & split_users["test"] and not split_users["dev"] & split_users["test"]
    assert res.counts["test"] == len(split_users["test"]) > 0
    # the persona that talked twice carries its first conversation into the second one's profile
    twice = persona_user_id([f"I love {HOBBIES[0]}.", "I have 0 cats.", "My name is Alex0.", "I work nights."])
    all_qs = [q for s in ("train", "dev", "test") for q in read_questions(tmp_path / "a" / f"{s}_questions.json")]
    (q,) = [q for q in all_qs if q.user_id == twice]
    assert q.id.startswith("valid15-") and any(p.id.startswith("valid0-") for p in q.profile)
    assert sum(p.fields["kind"] == "persona" for p in q.profile) == 4  # the persona once, not twice
    assert src.is_file()


def test_time_split_holds_out_each_speakers_latest_reply(tmp_path):
    write_csv(tmp_path / "raw" / "test.csv", n=6, repeat_persona=False)
    build_dataset("persona-chat-reply", BuildConfig(source=str(tmp_path / "raw"), out=str(tmp_path / "t"),
                                                    split="time", min_profile=3))
    qs = {s: read_questions(tmp_path / "t" / f"{s}_questions.json") for s in ("train", "dev", "test")}
    golds = read_outputs(tmp_path / "t" / "test_outputs.json")
    assert len(qs["test"]) == 12  # both speakers of six conversations
    for q in qs["test"]:
        earlier = [d for s in ("dev", "train") for d in qs[s] if d.user_id == q.user_id]
        assert earlier and all(d.timestamp < q.timestamp for d in earlier)
        assert golds[q.id] not in [p.fields["text"] for p in q.profile if p.timestamp >= q.timestamp]


def test_bad_sources(tmp_path):
    with pytest.raises(InputError, match="no Synthetic-Persona-Chat CSV"):
        build_dataset("persona-chat-reply", BuildConfig(source=str(tmp_path), out=str(tmp_path / "o")))
    bad = tmp_path / "bad.csv"
    bad.write_text("persona,conversation\na,b\n")
    with pytest.raises(InputError, match="missing columns"):
        build_dataset("persona-chat-reply", BuildConfig(source=str(bad), out=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_build_from_shared_persona_chat(tmp_path):
    src = SHARED_DATA / "synthetic-persona-chat"
    if not (src / "valid.csv").is_file():
        pytest.skip(f"Synthetic-Persona-Chat not present at {src} (../shared/data is optional)")
    res = build_dataset("persona-chat-reply", BuildConfig(source=str(src), out=str(tmp_path / "p"), max_users=1300))
    assert res.counts["test"] >= 300
