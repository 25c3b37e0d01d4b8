"""The tiny example files in `examples/`, written by the project itself (`pllm data example OUT`).

Two tasks, each a questions file and an outputs file in LaMP's format:

- `lamp3_*.json`: LaMP-3 (review -> 1-5 score). Four users with different rating habits (generous, harsh,
  middling, all-or-nothing) rate reviews of the same mild sentiment differently, so a user's own history
  is what tells their score.
- `email_*.json` with `email_folder.yaml`: a task that is not built in, defined by the spec file alone.
  Three users file the same kinds of email (a flight, an order, an invoice) into different folders.

Everything is fixed data and string templates: the same call writes the same bytes, so the committed
`examples/` can be checked against a fresh run (tests/test_examples.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pllm.io import atomic_write_json, atomic_write_text

# -- LaMP-3: product review -> the user's 1-5 score ---------------------------------------------------------
LAMP3_PROMPT = ("What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, "
                "or 5 without further explanation. review: ")

# Reviews by sentiment: 0 = negative, 1 = mixed, 2 = positive, 3 = glowing.
_REVIEWS = {
    0: ["The {p} stopped working after a week.", "The {p} feels cheap and the seller never answered.",
        "Returned the {p}, it did not do what the page promised."],
    1: ["The {p} is fine for the price, nothing special.", "The {p} works, but setting it up took an hour.",
        "Decent {p}, though it is louder than I expected."],
    2: ["Good {p}, does exactly what I needed.", "The {p} arrived early and works well.",
        "Solid {p}, I would buy it again."],
    3: ["The best {p} I have ever owned, flawless.", "This {p} is outstanding, worth every cent.",
        "Absolutely love this {p}, it changed my mornings."],
}
_PRODUCTS = ["kettle", "desk lamp", "rice cooker", "bike light", "backpack", "toaster", "phone case",
             "coffee grinder", "blender", "alarm clock", "umbrella", "water bottle", "headphones"]
# user -> score given to a review of each sentiment 0..3 (their rating habit)
_HABITS = {"ada": (3, 4, 5, 5), "ben": (1, 1, 2, 3), "chen": (2, 3, 3, 4), "dia": (1, 1, 5, 5)}
# user -> profile sentiments (oldest first), then question sentiments
_LAMP3_PLAN = {
    "ada": ([0, 1, 2, 3, 1], [1, 2, 0]),
    "ben": ([0, 2, 3, 1, 2], [2, 3]),
    "chen": ([1, 0, 2, 1, 3], [1, 3]),
    "dia": ([0, 2, 1, 3, 2], [2, 0, 1]),
}


def _review(index: int, sentiment: int) -> str:
    """The index-th review of a sentiment: templates and products cycle, so texts repeat rarely."""
    templates = _REVIEWS[sentiment]
    return templates[index % len(templates)].format(p=_PRODUCTS[(index * 5 + sentiment) % len(_PRODUCTS)])


def lamp3_example() -> tuple[list[dict], dict]:
    """(questions, outputs) for LaMP-3: 4 users, 10 questions, 5 profile items per user."""
    questions, golds, n = [], [], 0
    for user, (profile_plan, question_plan) in _LAMP3_PLAN.items():
        habit = _HABITS[user]
        profile = []
        for j, s in enumerate(profile_plan):
            n += 1
            profile.append({"id": f"{user}-r{j + 1}", "text": _review(n, s), "score": str(habit[s]),
                            "date": f"2024-0{j + 1}-15"})
        for j, s in enumerate(question_plan):
            n += 1
            qid = f"{user}-q{j + 1}"
            questions.append({"id": qid, "user_id": user, "input": LAMP3_PROMPT + _review(n, s),
                              "profile": profile})
            golds.append({"id": qid, "output": str(habit[s])})
    return questions, {"task": "LaMP-3", "golds": golds}


# -- email-folder: a task defined by a spec file only ---------------------------------------------------
EMAIL_FOLDERS = ("work", "family", "shopping", "travel")
EMAIL_PROMPT = "Which folder does this email belong in: work, family, shopping or travel? subject: "
_EMAILS = {
    "flight": ["Your flight to Lisbon is confirmed", "Boarding pass for flight LH 1172",
               "Check in now for your flight to Oslo"],
    "hotel": ["Your hotel booking in Porto", "Reservation confirmed: Hotel Central, 2 nights"],
    "order": ["Your order of running shoes has shipped", "Order 5521: a new blender is on its way",
              "Your parcel with two books was delivered"],
    "invoice": ["Invoice 2024-031 from Printworks Ltd", "Payment reminder: invoice for cloud hosting"],
    "meeting": ["Meeting moved to Thursday 10:00", "Agenda for the quarterly planning meeting"],
    "school": ["School newsletter: sports day on Friday", "Parent evening sign-up sheet"],
}
# user -> which folder each kind of email goes to (the personal rule the profile shows)
_FILING = {
    "eve": {"flight": "travel", "hotel": "travel", "order": "shopping", "invoice": "work", "meeting": "work",
            "school": "family"},
    "finn": {"flight": "work", "hotel": "work", "order": "shopping", "invoice": "work", "meeting": "work",
            "school": "family"},
    "gia": {"flight": "family", "hotel": "family", "order": "family", "invoice": "shopping", "meeting": "work",
             "school": "family"},
}
# user -> profile kinds (oldest first), then question kinds
_EMAIL_PLAN = {
    "eve": (["flight", "order", "invoice", "meeting", "school", "hotel"], ["flight", "order"]),
    "finn": (["hotel", "order", "meeting", "flight", "invoice", "school"], ["flight", "invoice"]),
    "gia": (["order", "flight", "meeting", "invoice", "school", "hotel"], ["hotel", "order"]),
}

EMAIL_SPEC = """\
# A task that is not built into pllm, defined by this file alone: `pllm eval --task examples/email_folder.yaml`.
# Built-in specs to compare with: `pllm tasks show LaMP-2`; every field's meaning: TaskSpec in pllm/tasks/spec.py.
name: email-folder
kind: classification
description: "Which of the user's folders an email goes in, from its subject."
labels: [work, family, shopping, travel]
# Structured query fields, cut out of the raw question input by a regex with named groups.
query_pattern: 'subject: (?P<subject>.*)$'
# Retrieval: the query and each profile item become text to match.
query_text: "{subject}"
item_text: "{subject}"
# A profile item's own answer (used by demonstrations and the baselines).
item_output: "{folder}"
# Instruction style: how retrieved items are written into the prompt.
item_template: '"{subject}" went to {folder}'
prompt_template: "{profile}. {input}"
# Demonstration style: retrieved items as few-shot examples, the question last.
demo_header: "Emails filed into folders:"
demo_input: "Subject: {subject}"
demo_output_prefix: "Folder:"
parser: label
metrics: [accuracy, f1]
max_new_tokens: 4
"""


def email_example() -> tuple[list[dict], dict]:
    """(questions, outputs) for email-folder: 3 users, 6 questions, 6 profile items per user."""
    questions, golds = [], []
    used = {kind: 0 for kind in _EMAILS}

    def subject(kind: str) -> str:
        used[kind] += 1
        options = _EMAILS[kind]
        return options[(used[kind] - 1) % len(options)]

    for user, (profile_plan, question_plan) in _EMAIL_PLAN.items():
        rule = _FILING[user]
        profile = [{"id": f"{user}-m{j + 1}", "subject": subject(kind), "folder": rule[kind],
                    "date": f"2024-03-{j + 10}"} for j, kind in enumerate(profile_plan)]
        for j, kind in enumerate(question_plan):
            qid = f"{user}-e{j + 1}"
            questions.append({"id": qid, "user_id": user, "input": EMAIL_PROMPT + subject(kind),
                              "profile": profile})
            golds.append({"id": qid, "output": rule[kind]})
    return questions, {"task": "email-folder", "golds": golds}


def example_files() -> dict[str, Any]:
    """File name -> content (JSON data, or the text of a YAML file) of every example file."""
    lamp3_q, lamp3_o = lamp3_example()
    email_q, email_o = email_example()
    return {"lamp3_questions.json": lamp3_q, "lamp3_outputs.json": lamp3_o, "email_folder.yaml": EMAIL_SPEC,
            "email_questions.json": email_q, "email_outputs.json": email_o}


def write_examples(out: str | Path) -> list[Path]:
    """Write every example file into `out` (created if needed; other files there are left alone)."""
    out = Path(out)
    return [atomic_write_text(out / name, content) if isinstance(content, str) else
            atomic_write_json(out / name, content) for name, content in example_files().items()]
