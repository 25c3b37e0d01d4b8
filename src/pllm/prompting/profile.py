"""Profile-augmented prompting (Richardson et al. 2023): the generator writes a short summary of the
user's history once; it is cached in the store under a hash of exactly the items it saw, so a second
run (or a second question over the same history) does not regenerate it."""

from __future__ import annotations

import bisect
import copy
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from pllm.errors import InputError
from pllm.io import sha1_text
from pllm.models.base import Generator, Prompt
from pllm.retrieval.collaborative import CoRatings
from pllm.tasks.spec import TaskSpec, render
from pllm.types import ProfileItem, Question

SUMMARY_PROMPT_VERSION = "v1"


@dataclass
class SummaryConfig:
    max_items: int = field(default=10, metadata={"help": "Most recent items the summary reads."})
    max_new_tokens: int = field(default=48, metadata={"help": "Summary length in generator tokens."})
    max_item_tokens: int = field(default=48, metadata={"help": "Each item is cut to this many tokens."})
    batch_size: int = field(default=16, metadata={"help": "Users summarized per generate() call."})


class ProfileSummarizer:
    def __init__(self, generator: Generator, spec: TaskSpec, store, config: SummaryConfig | None = None) -> None:
        self.generator, self.spec, self.store = generator, spec, store
        self.config = config or SummaryConfig()
        self.generated = 0  # summaries written by the model in this process (the rest came from the cache)

    def _select(self, items: Sequence[ProfileItem]) -> list[ProfileItem]:
        ordered = sorted(enumerate(items), key=lambda p: (p[1].timestamp is None, p[1].timestamp or 0, p[0]))
        return [it for _, it in ordered][-self.config.max_items:]

    def key(self, items: Sequence[ProfileItem]) -> str:
        seen = self._select(items)
        payload = json.dumps([[it.id, it.fields] for it in seen], sort_keys=True, ensure_ascii=False)
        return sha1_text(SUMMARY_PROMPT_VERSION, self.spec.name, self.generator.model_id, payload)

    def prompt(self, items: Sequence[ProfileItem]) -> Prompt:
        lines = []
        for it in self._select(items):
            line = render(self.spec.item_template, it.fields, what=f"{self.spec.name} item_template")
            lines.append("- " + self.generator.truncate_to_tokens(line, self.config.max_item_tokens))
        history = "\n".join(lines)
        return Prompt(text=f"Here is part of a user's history:\n{history}\n\n"
                           "In two sentences, describe this user's tastes and habits.", chat=True)

    def summaries(self, profiles: Sequence[tuple[str, Sequence[ProfileItem]]]) -> list[str]:
        """One summary per (user_id, items); cached ones are read, missing ones generated in batches."""
        keys = [self.key(items) for _, items in profiles]
        out: list[str | None] = [self.store.get_summary(user_id=u, key=k) for (u, _), k in zip(profiles, keys)]
        todo: dict[tuple[str, str], int] = {}
        for i, ((user_id, _), k) in enumerate(zip(profiles, keys)):
            if out[i] is None and (user_id, k) not in todo:
                todo[(user_id, k)] = i
        pending = list(todo.items())
        for start in range(0, len(pending), self.config.batch_size):
            chunk = pending[start:start + self.config.batch_size]
            prompts = [self.prompt(profiles[i][1]) for _, i in chunk]
            gens = self.generator.generate(prompts, max_new_tokens=self.config.max_new_tokens,
                                           batch_size=self.config.batch_size)
            for ((user_id, k), _), gen in zip(chunk, gens):
                summary = " ".join(gen.text.split()) or "(no summary)"
                self.store.put_summary(user_id=user_id, key=k, model=self.generator.model_id, summary=summary)
                self.generated += 1
        for i, ((user_id, _), k) in enumerate(zip(profiles, keys)):
            if out[i] is None:
                out[i] = self.store.get_summary(user_id=user_id, key=k)
        return [s or "" for s in out]


def output_stats(spec: TaskSpec, items: Sequence[ProfileItem], *, top: int = 5) -> str | None:
    """A statistical profile: the distribution of the user's own past outputs, as one line of text.

    A 4-item retrieval shows the model a sliver of the history; this shows all of it, in numbers, with no
    LLM call (the statistics a user-median or most-frequent baseline reads, handed to the model). Numeric
    labels give every label's share and the median; other labels the `top` most frequent. None without
    outputs."""
    outs = [o for o in (spec.output_of(p) for p in items) if o is not None]
    if not outs:
        return None
    n = len(outs)
    if spec.numeric_labels:
        values = sorted(float(o) for o in outs)
        median = values[(n - 1) // 2]  # the lower median: always one of the user's own values
        return f"{n} past answers: {shares(spec, outs, top)}; median {median:g}."
    return f"{n} past answers, most frequent: {shares(spec, outs, top)}."


def shares(spec: TaskSpec, outs: Sequence[str], top: int = 5) -> str:
    """How often each output occurs, in percent: every label of a numeric scale in order, else the `top` most
    frequent (the one rendering `output_stats` and `ItemCrowd` share)."""
    counts, n = Counter(outs), len(outs)
    if spec.numeric_labels:
        order = sorted(spec.labels or [], key=float)
        return ", ".join(f"{lab}: {round(100 * counts.get(lab, 0) / n)}%" for lab in order)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return ", ".join(f"{o} {round(100 * c / n)}%" for o, c in ranked)


class ItemCrowd:
    """Collaborative context (CFRAG-style): what *other* users answered for the queried item, as one line.

    A user's own items tell the model this user's scale; they say nothing about the item, which a 135M
    model rarely knows. The train split's other users do: their outputs for the same item are the item's side
    of a rating. An item is matched by the query text its own fields render to (`query_text` over the item's
    fields), which is what a question about that item retrieves with. Fitted on the train split only
    (profiles and targets, never a scored question's target); the asking user is always left out, so a
    training text never shows its own answer.

    `rank` also says where the item stands by how many users answered it ("top 8% of items"): a count such
    as "113" means little to a small model without the scale, and how widely an item is known is what
    `popularity` ranks by."""

    def __init__(self, spec: TaskSpec, *, top: int = 5, rank: bool = False) -> None:
        self.spec, self.top, self.rank = spec, top, rank
        self.outputs: dict[str, dict[str, str]] = {}  # item key -> {user: their output}
        self._counts: list[int] = []  # every item's number of answers, ascending (for `rank`)
        self._coratings: CoRatings | None = None

    def fit(self, train: Sequence[Question]) -> ItemCrowd:
        if not train:
            raise InputError("collaborative context (crowd) reads the train split: this task has none here",
                             field="train")
        for q in train:
            for p in q.profile:
                if (out := self.spec.output_of(p)) is not None:
                    self.outputs.setdefault(self.spec.item_key(p), {})[q.user_id] = out
            if q.target is not None:
                self.outputs.setdefault(self.spec.retrieval_query(q), {})[q.user_id] = q.target
        self._counts = sorted(len(v) for v in self.outputs.values())
        self._coratings = None
        return self

    def ranked(self, rank: bool) -> ItemCrowd:
        """The same fitted answers, rendered with or without the item's standing (`rank`)."""
        if rank == self.rank:
            return self
        other = copy.copy(self)
        other.rank = rank
        return other

    def top_share(self, answers: int) -> int:
        """Percent of items answered by at least `answers` users (1 for the most answered)."""
        at_least = len(self._counts) - bisect.bisect_left(self._counts, answers)
        return max(1, math.ceil(100 * at_least / max(1, len(self._counts))))

    def coratings(self) -> CoRatings:
        """These answers as item-item similarities for the `cf` retriever (built once, shared by every user's
        index): numeric answers centred per user, category labels as who answered."""
        if self._coratings is None:
            numeric = bool(self.spec.numeric_labels)
            self._coratings = CoRatings({item: {u: float(o) if numeric else 1.0 for u, o in by_user.items()}
                                         for item, by_user in self.outputs.items()}, center=numeric)
        return self._coratings

    def answers(self, question: Question) -> list[str]:
        """Other users' outputs for the question's item (the asking user's own never)."""
        found = self.outputs.get(self.spec.retrieval_query(question), {})
        return [out for user, out in sorted(found.items()) if user != question.user_id]

    def text(self, question: Question) -> str:
        outs = self.answers(question)
        if not outs:
            return "Other users: no answers for this item."
        n = f"{len(outs)}; top {self.top_share(len(outs))}% of items" if self.rank else str(len(outs))
        line = f"Other users ({n}) for this item: {shares(self.spec, outs, self.top)}"
        if self.spec.numeric_labels:
            return f"{line}; mean {sum(float(o) for o in outs) / len(outs):.1f}."
        return line + "."
