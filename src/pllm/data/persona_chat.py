"""The `persona-chat-reply` builder: LaMP-7 shaped personalized reply generation on Synthetic-Persona-Chat.

A *user* is a speaker's persona (its set of persona sentences; the id is a hash of them, so a persona
that talks in several conversations is one user). For a speaker's reply in a conversation:

- profile = the persona sentences, then every earlier turn of this speaker (this conversation and
  earlier ones), each with the partner utterance it answered (`context`); persona sentences get the
  fixed context `PERSONA_CONTEXT`, so they render as demonstrations in the same input/output shape;
- query = the dialogue so far (`input`, `query.dialogue`) and the partner's last utterance
  (`query.context`, what retrieval and demonstrations read);
- output = the speaker's next utterance (ROUGE-1/L).

Time is the order of conversations in the source (CSV files in name order, rows in order, turns in
order): conversation c starts at 1000*c, its persona at that instant and turn t at 1000*c + 1 + t, so a
profile is always strictly earlier than its question and never holds the reply being predicted. Only
replies of at least `MIN_REPLY_WORDS` words that answer a partner utterance become questions (one- or
two-word acknowledgements like "You too!" carry no persona).
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pllm.data.base import BUILDERS, BuildConfig, DatasetBuilder, Make, Pick, build_splits
from pllm.errors import InputError
from pllm.types import ProfileItem, Question

COLUMNS = {1: "user 1 personas", 2: "user 2 personas"}
DIALOGUE_COLUMN = "Best Generated Conversation"
PERSONA_CONTEXT = "Tell me something about yourself."
MIN_REPLY_WORDS = 4
CONVERSATION_TICKS = 1000  # time units per conversation (turns per conversation stay far below this)
_TURN = re.compile(r"^\s*User\s*([12])\s*:\s*(.*)$")


@dataclass
class Conversation:
    key: str  # file stem + row number, unique and stable
    index: int  # position in the global order (the clock)
    personas: dict[int, list[str]]
    turns: list[tuple[int, str]]  # (speaker 1|2, utterance)


@dataclass
class _Event:
    """One thing a user did, in time order: stated their persona or said something."""

    timestamp: float
    item: ProfileItem
    question: Question | None = None
    turn_words: int = 0
    answers_partner: bool = False


@dataclass
class _UserLog:
    events: list[_Event] = field(default_factory=list)
    persona_seen: bool = False


def persona_user_id(sentences: list[str]) -> str:
    norm = "\n".join(" ".join(s.lower().split()) for s in sentences)
    return "p" + hashlib.sha1(norm.encode("utf-8")).hexdigest()[:12]


def _csv_files(source: str | Path) -> list[Path]:
    src = Path(source)
    if src.is_file():
        return [src]
    files = sorted(src.glob("*.csv")) if src.is_dir() else []
    if not files:
        raise InputError("no Synthetic-Persona-Chat CSV files (*.csv) found", source=str(source))
    return files


def parse_turns(text: str) -> list[tuple[int, str]]:
    """'User 1: ...' / 'User 2: ...' lines; a line without a prefix continues the previous turn."""
    turns: list[tuple[int, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _TURN.match(line)
        if m:
            turns.append((int(m.group(1)), m.group(2).strip()))
        elif turns:
            speaker, prev = turns[-1]
            turns[-1] = (speaker, f"{prev} {line.strip()}")
    return [(s, t) for s, t in turns if t]


def load_conversations(source: str | Path) -> list[Conversation]:
    out: list[Conversation] = []
    for path in _csv_files(source):
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in (*COLUMNS.values(), DIALOGUE_COLUMN) if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"missing columns {missing} (have {reader.fieldnames})", source=str(path))
            for row_no, row in enumerate(reader):
                personas = {s: [x.strip() for x in (row[c] or "").splitlines() if x.strip()]
                            for s, c in COLUMNS.items()}
                turns = parse_turns(row[DIALOGUE_COLUMN] or "")
                if len(turns) < 2 or not all(personas.values()):
                    continue  # an empty or persona-less row cannot give a question
                out.append(Conversation(key=f"{path.stem}{row_no}", index=len(out), personas=personas, turns=turns))
    if not out:
        raise InputError("no usable conversations (need persona columns and 'User 1:'/'User 2:' turns)",
                         source=str(source))
    return out


def _dialogue(turns: list[tuple[int, str]], speaker: int) -> str:
    return "\n".join(f"{'You' if s == speaker else 'Partner'}: {t}" for s, t in turns)


def user_logs(conversations: list[Conversation]) -> dict[str, _UserLog]:
    """Every user's events (persona statements and turns) in time order, with a question drafted for
    each of their turns (its profile is filled in later from the strictly earlier events)."""
    logs: dict[str, _UserLog] = {}
    for conv in conversations:
        base = conv.index * CONVERSATION_TICKS
        for speaker in (1, 2):
            user = persona_user_id(conv.personas[speaker])
            log = logs.setdefault(user, _UserLog())
            if not log.persona_seen:
                log.persona_seen = True
                for i, sentence in enumerate(conv.personas[speaker]):
                    item = ProfileItem(id=f"{user}-persona{i}", user_id=user, timestamp=float(base),
                                       fields={"kind": "persona", "context": PERSONA_CONTEXT, "text": sentence,
                                               "timestamp": base})
                    log.events.append(_Event(float(base), item))
            for t, (s, text) in enumerate(conv.turns):
                if s != speaker:
                    continue
                ts = base + 1 + t
                context = conv.turns[t - 1][1] if t > 0 and conv.turns[t - 1][0] != speaker else ""
                item = ProfileItem(id=f"{conv.key}-{t}", user_id=user, timestamp=float(ts),
                                   fields={"kind": "turn", "context": context, "text": text, "timestamp": ts})
                dialogue = _dialogue(conv.turns[:t], speaker)
                q_input = ("Continue the conversation as 'You', in your own voice and consistent with what you "
                           f"have said before.\n\n{dialogue}\nYou:")
                question = Question(id=f"{conv.key}-{t}", user_id=user, input=q_input,
                                    query={"context": context, "dialogue": dialogue}, target=text,
                                    timestamp=float(ts))
                log.events.append(_Event(float(ts), item, question, len(text.split()), bool(context)))
    return logs


def _eligible(log: _UserLog, want: int, min_profile: int) -> list[int]:
    """Event indexes of the user's latest `want` askable replies, in time order."""
    out = []
    for j in range(len(log.events) - 1, -1, -1):
        ev = log.events[j]
        if ev.question is None or not ev.answers_partner or ev.turn_words < MIN_REPLY_WORDS:
            continue
        if sum(1 for e in log.events[:j] if e.timestamp < ev.timestamp) >= min_profile:
            out.append(j)
        if len(out) == want:
            break
    return sorted(out)


def _finish(log: _UserLog, j: int, max_profile: int | None) -> Question:
    ev = log.events[j]
    assert ev.question is not None
    profile = [e.item for e in log.events[:j] if e.timestamp < ev.timestamp]
    if max_profile is not None:
        profile = profile[-max_profile:]
    q = ev.question
    return Question(id=q.id, user_id=q.user_id, input=q.input, query=dict(q.query), profile=profile,
                    target=q.target, timestamp=q.timestamp)


@BUILDERS.register("persona-chat-reply")
class PersonaChatReplyBuilder(DatasetBuilder):
    name = "persona-chat-reply"
    task = "persona-chat-reply"

    def questions(self, config: BuildConfig) -> dict[str, list[Question]]:
        logs = user_logs(load_conversations(config.source))

        def plan(u: str) -> tuple[Pick, Make]:
            log = logs[u]
            return (partial(_eligible, log, min_profile=config.min_profile),
                    lambda j: _finish(log, j, config.max_profile))

        return build_splits(list(logs), config, plan)
