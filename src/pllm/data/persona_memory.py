"""The `persona-chat-memory` builder: long multi-session conversations with planted facts, for judging
conversational memory (can the turn that holds the answer be found among hundreds?).

A user's history is `sessions` dated chat sessions (one every 5-15 days from 2023-01-02), each the turns one
speaker said in a Synthetic-Persona-Chat conversation. Into them go planted facts, each with a question asked
one day after the last session and its gold evidence turn ids (`query.evidence`):

- single: a fact said once ("My little sister Maya just started college." / "What is my sister's name?");
- update: a value said in an early session and changed in a later one; the answer and evidence are the later;
- temporal: the same kind of event on two dates with different values; the question names the period of one
  ("last May", "in March 2023", "three weeks ago") and the evidence is that turn;
- multi: a fact over two consecutive turns, where the second holds the answer but not the question's words;
  both turns are evidence.

Every stored turn is a profile item `{text, session, turn, timestamp}` (`<user>-s<session>-t<turn>`); the
question's `query` holds `question`, `type`, `evidence`, and the planted `answer` is the target. Only a user
split exists (every question of a user lands in that user's split).

These questions reuse the words of their facts, so word overlap alone finds most of them. The
`persona-chat-memory-paraphrased` builder makes the same data (same users, turns, facts and evidence ids)
but asks each question in other words (`PARAPHRASES`: no content word shared with its evidence turns, the
temporal ones keep their date phrase), as LoCoMo and LongMemEval ask in other words than the user used.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pllm.data.base import BUILDERS, BuildConfig, DatasetBuilder, sample_users, split_users
from pllm.data.persona_chat import Conversation, load_conversations
from pllm.errors import InputError
from pllm.types import ProfileItem, Question

SESSIONS = 30  # sessions per user
START = datetime(2023, 1, 2, 10, tzinfo=timezone.utc)
PER_TYPE = {"single": 3, "update": 2, "temporal": 2, "multi": 2}  # planted facts (and questions) per user

NAMES = ["Maya", "Jonas", "Priya", "Tomas", "Leila", "Oscar", "Ines", "Kenji", "Amara", "Felix", "Sofia", "Ravi"]
CITIES = ["Lisbon", "Denver", "Osaka", "Krakow", "Austin", "Porto", "Nairobi", "Bergen", "Tucson", "Lyon", "Perth",
          "Quebec"]
SINGLE = [
    ("My little sister {v} just started college, I'm so proud.", "What is my sister's name?", NAMES),
    ("I drive a {v} these days and it has been very reliable.", "What car do I have?",
     ["Subaru Outback", "Honda Civic", "Volvo XC40", "Ford Ranger", "Mazda 3", "Kia Soul"]),
    ("Our dog {v} keeps chewing on my running shoes.", "What is my dog called?", NAMES),
    ("I work as a {v}, the night shifts are tough.", "What is my job?",
     ["nurse", "paramedic", "baker", "security guard", "radio host", "air traffic controller"]),
    ("I grew up in {v} before I moved here.", "Where is my hometown?", CITIES),
    ("Honestly {v} has been my favourite band since high school.", "Which band do I like most?",
     ["Radiohead", "ABBA", "Metallica", "Coldplay", "The Cure", "Daft Punk"]),
    ("I am allergic to {v}, so I always check the menu.", "What am I allergic to?",
     ["peanuts", "shellfish", "penicillin", "cats", "pollen", "kiwi"]),
    ("My best friend {v} is getting married in the fall.", "Who is my best friend?", NAMES),
]
UPDATE = [
    ("I live in {a} right now, close to the river.", "I just moved to {b}, the new apartment is great.",
     "Which city do I live in now?", CITIES),
    ("I work at {a} as an engineer.", "I switched jobs, now I am at {b}.", "Which company do I work for now?",
     ["Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Soylent", "Acme"]),
    ("My phone is a {a}, it works fine.", "I replaced my old phone with a {b}.", "What phone do I use now?",
     ["Pixel 7", "iPhone 13", "Galaxy S22", "Nokia 8", "Xperia 5", "OnePlus 10"]),
    ("I'm training for a {a} this year.", "I changed plans, I'm training for a {b} instead.",
     "What race am I training for now?", ["marathon", "half marathon", "triathlon", "10k", "ultramarathon"]),
]
TEMPORAL = [
    ("I went hiking at {v} today, the views were amazing.", "Where did I go hiking {when}?",
     ["Eagle Peak", "Blue Lake", "Mount Hood", "Pine Ridge", "Red Canyon", "Cedar Falls", "Fox Hollow"]),
    ("I cooked {v} for my family tonight.", "What did I cook for my family {when}?",
     ["lasagna", "paella", "ramen", "goulash", "tacos", "moussaka", "risotto"]),
    ("I finished reading {v} today, what a book.", "Which book did I finish {when}?",
     ["Dune", "Emma", "Beloved", "Ulysses", "Rebecca", "Middlemarch", "Persuasion"]),
]
MULTI = [
    ("I finally adopted a cat from the shelter last weekend.", "She is a {v} and she sleeps on my desk all day.",
     "What breed is the cat I adopted?", ["Siamese", "Maine Coon", "Ragdoll", "Bengal", "Sphynx", "Persian"]),
    ("I signed up for an evening class at the community college.", "It is about {v}, twice a week.",
     "What is my evening class about?", ["pottery", "welding", "astronomy", "Italian", "bookkeeping", "jazz"]),
    ("My parents are coming to visit me next month.", "They are flying in from {v}.",
     "Where are my parents flying in from?", CITIES),
]
# Question template -> the same question sharing no content word with the fact's turns (tests check it),
# specific enough to stay unambiguous among one user's facts ("puppy", not "pet": a user may have a cat).
PARAPHRASES = {
    "What is my sister's name?": "What is my younger sibling called?",
    "What car do I have?": "What vehicle do I own?",
    "What is my dog called?": "What is my puppy's name?",
    "What is my job?": "What is my profession?",
    "Where is my hometown?": "In which town was I raised?",
    "Which band do I like most?": "Which music group do I love the most?",
    "What am I allergic to?": "What does my immune system react badly to?",
    "Who is my best friend?": "Who is my closest pal?",
    "Which city do I live in now?": "Which city am I currently based in?",
    "Which company do I work for now?": "Who is my current employer?",
    "What phone do I use now?": "Which mobile device do I currently carry?",
    "What race am I training for now?": "Which endurance competition am I currently preparing for?",
    "Where did I go hiking {when}?": "Which outdoor spot did I trek to {when}?",
    "What did I cook for my family {when}?": "Which dish did I prepare for my relatives {when}?",
    "Which book did I finish {when}?": "Which novel did I complete {when}?",
    "What breed is the cat I adopted?": "What breed is my new feline companion?",
    "What is my evening class about?": "Which subject am I taking lessons in?",
    "Where are my parents flying in from?": "Which city are my mom and dad traveling from?",
}
_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


@dataclass
class _Plant:
    session: int
    texts: list[str]  # consecutive turns
    key: str  # which fact; its turns' ids become the evidence of the question with this key


def _rng(seed: int, user: str) -> random.Random:
    return random.Random(int(hashlib.sha1(f"{seed}:{user}".encode()).hexdigest()[:12], 16))


def _when(event: datetime, asked: datetime, rng: random.Random) -> str:
    """A phrase naming the event's period as seen from `asked` (the forms `retrieval.dates` reads)."""
    weeks = round((asked - event).days / 7)
    if 2 <= weeks <= 8 and abs((asked - event).days - 7 * weeks) <= 3 and rng.random() < 0.5:
        return f"{_NUMBER_WORDS[weeks]} weeks ago"
    months_back = (asked.year - event.year) * 12 + asked.month - event.month
    if 1 <= months_back <= 11 and rng.random() < 0.5:
        return f"last {event.strftime('%B')}"
    return f"in {event.strftime('%B %Y')}"


def _plan_user(user: str, n_sessions: int, seed: int, paraphrase: bool = False
               ) -> tuple[list[datetime], list[_Plant], list[dict[str, object]]]:
    """Session dates, planted turns, and the questions (keyed to their plants) of one user. `paraphrase` only
    swaps each question's template for its `PARAPHRASES` entry: the random draws, hence the data, stay the same."""
    rng = _rng(seed, user)
    asks = PARAPHRASES if paraphrase else {}
    dates, at = [], START
    for _ in range(n_sessions):
        dates.append(at + timedelta(minutes=rng.randint(0, 600)))
        at += timedelta(days=rng.randint(5, 15))
    asked = dates[-1] + timedelta(days=1)
    plants: list[_Plant] = []
    questions: list[dict[str, object]] = []
    for n, (say, ask, values) in enumerate(rng.sample(SINGLE, PER_TYPE["single"])):
        v = rng.choice(values)
        plants.append(_Plant(rng.randrange(n_sessions), [say.format(v=v)], f"single{n}"))
        questions.append({"type": "single", "question": asks.get(ask, ask), "answer": v, "keys": [f"single{n}"]})
    for n, (first, then, ask, values) in enumerate(rng.sample(UPDATE, PER_TYPE["update"])):
        a, b = rng.sample(values, 2)
        early = rng.randrange(n_sessions // 2)
        plants.append(_Plant(early, [first.format(a=a)], f"update{n}-old"))
        plants.append(_Plant(rng.randrange(early + 1, n_sessions), [then.format(b=b)], f"update{n}"))
        questions.append({"type": "update", "question": asks.get(ask, ask), "answer": b, "keys": [f"update{n}"]})
    for n, (say, ask, values) in enumerate(rng.sample(TEMPORAL, PER_TYPE["temporal"])):
        v, other = rng.sample(values, 2)
        while True:  # two sessions at least 45 days apart, so the named period holds only one of them
            s, d = rng.sample(range(n_sessions), 2)
            if abs((dates[s] - dates[d]).days) >= 45:
                break
        plants.append(_Plant(s, [say.format(v=v)], f"temporal{n}"))
        plants.append(_Plant(d, [say.format(v=other)], f"temporal{n}-other"))
        when = _when(dates[s], asked, rng)
        questions.append({"type": "temporal", "question": asks.get(ask, ask).format(when=when), "answer": v,
                          "keys": [f"temporal{n}"]})
    for n, (first, second, ask, values) in enumerate(rng.sample(MULTI, PER_TYPE["multi"])):
        v = rng.choice(values)
        plants.append(_Plant(rng.randrange(n_sessions), [first, second.format(v=v)], f"multi{n}"))
        questions.append({"type": "multi", "question": asks.get(ask, ask), "answer": v, "keys": [f"multi{n}"]})
    return dates, plants, questions


def _user_questions(user: str, convs: list[Conversation], n_sessions: int, seed: int, paraphrase: bool = False
                    ) -> list[Question]:
    rng = _rng(seed + 7, user)
    dates, plants, planned = _plan_user(user, n_sessions, seed, paraphrase)
    items: list[ProfileItem] = []
    evidence: dict[str, list[str]] = {}
    for s in range(n_sessions):
        conv = rng.choice(convs)
        speaker = rng.choice((1, 2))
        turns: list[tuple[str | None, str]] = [(None, t) for sp, t in conv.turns if sp == speaker]
        for plant in (p for p in plants if p.session == s):
            at = rng.randint(0, len(turns))
            turns[at:at] = [(plant.key, t) for t in plant.texts]  # (plant key, text): the key marks evidence
        for t, (key, text) in enumerate(turns):
            ts = (dates[s] + timedelta(seconds=60 * t)).timestamp()
            item_id = f"{user}-s{s}-t{t}"
            items.append(ProfileItem(id=item_id, user_id=user, timestamp=ts,
                                     fields={"text": text, "session": f"{user}-s{s}", "turn": t, "timestamp": ts}))
            if key is not None:
                evidence.setdefault(key, []).append(item_id)
    asked = (dates[-1] + timedelta(days=1)).timestamp()
    out = []
    for n, q in enumerate(planned):
        keys = q["keys"]
        assert isinstance(keys, list)
        gold = [i for k in keys for i in evidence[k]]
        out.append(Question(id=f"{user}-q{n}", user_id=user, input=str(q["question"]),
                            query={"question": q["question"], "type": q["type"], "evidence": gold},
                            profile=list(items), target=str(q["answer"]), timestamp=asked))
    return out


@BUILDERS.register("persona-chat-memory")
class PersonaChatMemoryBuilder(DatasetBuilder):
    name = "persona-chat-memory"
    task = "persona-chat-memory"
    sessions = SESSIONS
    paraphrase = False  # ask in other words than the planted facts (PARAPHRASES)

    def questions(self, config: BuildConfig) -> dict[str, list[Question]]:
        if config.split != "user":
            raise InputError("persona-chat-memory has only a user split (a user's questions share one history)",
                             field="split")
        convs = load_conversations(config.source)
        n_users = config.max_users or 120
        if n_users > len(convs):
            raise InputError(f"{n_users} users asked, but the source has {len(convs)} conversations",
                             field="max_users")
        users = sample_users([f"m{i:04d}" for i in range(n_users)], config)
        assignment = split_users(users, config)
        splits: dict[str, list[Question]] = {"train": [], "dev": [], "test": []}
        for u in users:
            splits[assignment[u]].extend(_user_questions(u, convs, self.sessions, config.seed, self.paraphrase))
        return splits


@BUILDERS.register("persona-chat-memory-paraphrased")
class PersonaChatMemoryParaphrasedBuilder(PersonaChatMemoryBuilder):
    """The same histories, facts and evidence, each question asked in other words than its fact."""

    name = "persona-chat-memory-paraphrased"
    paraphrase = True
