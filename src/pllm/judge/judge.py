"""A personalized pairwise judge: which of two outputs fits *this* user better, given their profile.

The judge reads the user's retrieved profile items (the same retrievers as the pipeline), the task
input and two outputs labelled A and B. With a backend that can score, it compares log p(" A") and
log p(" B") as the continuation; otherwise it generates and parses a letter (unparseable answers are
counted). Both orders are always asked to cancel position bias: the same output winning both is a
win, a split is a tie (and ties are reported, never hidden).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pllm.errors import InputError
from pllm.models.base import Generator, Prompt
from pllm.retrieval.base import RETRIEVERS
from pllm.tasks.spec import TaskSpec, render
from pllm.types import ProfileItem, Question

READOUTS = ("auto", "score", "generate")
VERDICTS = ("A", "B", "tie")


@dataclass
class JudgeConfig:
    retriever: str = field(default="bm25", metadata={"help": "How profile items are picked: none|recency|bm25|dense."})
    k: int = field(default=4, metadata={"help": "Profile items shown to the judge."})
    readout: str = field(default="auto", metadata={
        "help": "auto (score ' A' vs ' B' when the backend can), score, or generate (parse a letter)."})
    input_field: str | None = field(default=None, metadata={
        "help": "Question.query field shown as the input (default: the question's raw input)."})
    max_input_tokens: int = field(default=96, metadata={"help": "The input is cut to its last N tokens."})
    max_output_tokens: int = field(default=96, metadata={"help": "Each output is cut to its first N tokens."})
    embedder: str = field(default="minilm", metadata={"help": "Embedder for dense/hybrid retrieval."})

    def __post_init__(self) -> None:
        if self.readout not in READOUTS:
            raise InputError(f"readout must be one of {READOUTS}, got {self.readout!r}", field="readout")
        RETRIEVERS.get(self.retriever)  # a typo fails on construction, before the judge model loads
        if self.k < 0:
            raise InputError("k must be >= 0", field="k")
        if self.k == 0 and self.retriever != "none":
            raise InputError(f"k=0 shows no profile items with retriever {self.retriever!r}: give k >= 1, or use "
                             "retriever 'none'", field="k")
        if self.max_input_tokens < 1 or self.max_output_tokens < 1:
            raise InputError("token limits must be >= 1", field="max_output_tokens")


@dataclass
class Vote:
    """One order's answer: which original output (A = the first given) it preferred, if any."""

    shown_first: str  # "A" or "B": which original output was shown in slot A
    preferred: str | None  # "A" / "B" in original labels, None when unparseable
    margin: float | None = None  # log p(original A) - log p(original B) (scoring readout)
    raw: str = ""


@dataclass
class Verdict:
    winner: str  # "A", "B" or "tie"
    votes: list[Vote]
    unparseable: int = 0
    seconds: float = 0.0

    @property
    def consistent(self) -> bool:
        return self.winner != "tie"


def aggregate(votes: Sequence[Vote]) -> str:
    """A if every order preferred A, B if every order preferred B, else a tie (splits, unparseable)."""
    prefs = [v.preferred for v in votes]
    if prefs and all(p == "A" for p in prefs):
        return "A"
    if prefs and all(p == "B" for p in prefs):
        return "B"
    return "tie"


def parse_choice(text: str) -> str | None:
    """The first standalone A or B in generated text (e.g. 'B', 'Response A', 'A.'), else None."""
    m = re.search(r"\b([AB])\b", text.strip())
    return m.group(1) if m else None


class Judge:
    """Pairwise comparison of two outputs for one user, through any `Generator`."""

    def __init__(self, generator: Generator, config: JudgeConfig | None = None, *, spec: TaskSpec | None = None,
                 store: Any = None, embedder: Any = None) -> None:
        """`spec`: the task whose items the judge reads; it is what retrieval renders and queries with, so a
        judge that retrieves (retriever other than 'none', k > 0) needs one."""
        from pllm.pipeline import MethodConfig, Personalizer

        self.generator = generator
        self.config = config or JudgeConfig()
        self.spec = spec
        if self.config.readout == "score" and not generator.supports_scoring:
            raise InputError(f"the {generator.name!r} backend cannot score; use readout='generate'", field="readout")
        self.mode = "score" if self.config.readout == "score" or (
            self.config.readout == "auto" and generator.supports_scoring) else "generate"
        self.retrieval: Personalizer | None = None
        if self.config.retriever != "none" and self.config.k > 0:
            if spec is None:
                raise InputError(f"the judge retrieves profile items ({self.config.retriever}) through a task spec, "
                                 "which renders and queries them: pass spec=, or use retriever 'none'", field="spec")
            # The one retrieve path of the library (same query, item texts, index cache and embedder options).
            self.retrieval = Personalizer(spec, generator, MethodConfig(
                retriever=self.config.retriever, k=self.config.k, embedder=self.config.embedder), store=store,
                embedder=embedder)

    # -- profile --------------------------------------------------------------------------------
    def rendered_item(self, item: ProfileItem) -> str:
        if self.spec is not None:
            return render(self.spec.item_template, item.fields, what=f"{self.spec.name} item_template")
        return "- " + " ".join(str(v) for k, v in item.fields.items() if k not in ("timestamp", "id") and v not in
                               (None, ""))

    def input_text(self, question: Question) -> str:
        if self.config.input_field is not None:
            if self.config.input_field not in question.query:
                raise InputError(f"the question has no query field {self.config.input_field!r}", source=question.id,
                                 field="input_field")
            text = str(question.query[self.config.input_field])
        else:
            text = question.input
        if self.generator.count_tokens(text) > self.config.max_input_tokens:
            # Keep the end (the latest turns matter most): drop a tenth from the front until it fits.
            while len(text) > 1 and self.generator.count_tokens(text) > self.config.max_input_tokens:
                text = text[max(1, len(text) // 10):]
            text = "..." + text
        return text

    def profile(self, question: Question) -> list[ProfileItem]:
        return self.retrieval.retrieve(question) if self.retrieval is not None else []

    # -- prompts --------------------------------------------------------------------------------
    def prompt(self, question: Question, first: str, second: str, items: Sequence[ProfileItem] | None = None) -> Prompt:
        items = self.profile(question) if items is None else items
        cut = self.config.max_output_tokens
        a, b = self.generator.truncate_to_tokens(first, cut), self.generator.truncate_to_tokens(second, cut)
        about = "\n".join(self.rendered_item(p) for p in items) or "(no history)"
        text = (f"What this user wrote or did before:\n{about}\n\nInput: {self.input_text(question)}\n\n"
                f"Response A: {a}\n\nResponse B: {b}\n\n"
                "Which response is more likely to come from this user, given what they wrote before? "
                "Answer A or B.\nAnswer:")
        return Prompt(text=text, chat=False, question=question)

    # -- judging --------------------------------------------------------------------------------
    def compare(self, question: Question, output_a: str, output_b: str) -> Verdict:
        return self.compare_many([(question, output_a, output_b)])[0]

    def compare_many(self, triples: Sequence[tuple[Question, str, str]], *, batch_size: int = 8) -> list[Verdict]:
        """Judge many (question, A, B) triples; each is asked in both orders, in one batch."""
        t0 = time.perf_counter()
        prompts: list[Prompt] = []
        for q, a, b in triples:
            items = self.profile(q)
            prompts += [self.prompt(q, a, b, items), self.prompt(q, b, a, items)]
        verdicts: list[Verdict] = []
        if self.mode == "score":
            logp = self.generator.score(prompts, [" A", " B"], batch_size=batch_size)  # (2T, 2)
            for t in range(len(triples)):
                d1 = float(logp[2 * t, 0] - logp[2 * t, 1])  # original A shown first
                d2 = float(logp[2 * t + 1, 1] - logp[2 * t + 1, 0])  # original A shown second
                votes = [Vote("A", _pref(d1), d1), Vote("B", _pref(d2), d2)]
                verdicts.append(Verdict(aggregate(votes), votes))
        else:
            gens = self.generator.generate(prompts, max_new_tokens=4, batch_size=batch_size, stop=["\n"])
            for t in range(len(triples)):
                c1, c2 = parse_choice(gens[2 * t].text), parse_choice(gens[2 * t + 1].text)
                p2 = None if c2 is None else ("B" if c2 == "A" else "A")  # back to original labels
                votes = [Vote("A", c1, raw=gens[2 * t].text), Vote("B", p2, raw=gens[2 * t + 1].text)]
                verdicts.append(Verdict(aggregate(votes), votes, unparseable=sum(v.preferred is None for v in votes)))
        dt = (time.perf_counter() - t0) / max(len(triples), 1)
        for v in verdicts:
            v.seconds = dt
        return verdicts

    def describe(self) -> dict[str, Any]:
        return {**asdict(self.config), "mode": self.mode, "model": self.generator.model_id,
                "backend": self.generator.name}


def _pref(margin: float) -> str | None:
    if np.isnan(margin) or margin == 0:
        return None  # an exact tie in likelihood is no preference
    return "A" if margin > 0 else "B"


@dataclass
class JudgeSummary:
    n: int
    wins: int
    losses: int
    ties: int
    unparseable: int
    first_position: int  # votes that preferred whatever was shown first
    votes: int

    @property
    def win_rate(self) -> float:
        return self.wins / self.n if self.n else 0.0

    @property
    def score(self) -> float:
        """Wins plus half the ties, per pair: 0.5 is no preference."""
        return (self.wins + 0.5 * self.ties) / self.n if self.n else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "win_rate": self.win_rate, "tie_rate": self.ties / self.n if self.n else 0.0,
                "loss_rate": self.losses / self.n if self.n else 0.0, "score": self.score,
                "first_position_rate": self.first_position / self.votes if self.votes else 0.0}


def summarize_verdicts(verdicts: Sequence[Verdict]) -> JudgeSummary:
    """Counts with output A as the candidate being judged (wins = A won both orders)."""
    first = sum(1 for v in verdicts for vote in v.votes
                if vote.preferred is not None and vote.preferred == vote.shown_first)
    return JudgeSummary(n=len(verdicts), wins=sum(v.winner == "A" for v in verdicts),
                        losses=sum(v.winner == "B" for v in verdicts), ties=sum(v.winner == "tie" for v in verdicts),
                        unparseable=sum(v.unparseable for v in verdicts), first_position=first,
                        votes=sum(1 for v in verdicts for vote in v.votes if vote.preferred is not None))
