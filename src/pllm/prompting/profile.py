"""Profile-augmented prompting (Richardson et al. 2023): the generator writes a short summary of the
user's history once; it is cached in the store under a hash of exactly the items it saw, so a second
run (or a second question over the same history) does not regenerate it."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from pllm.io import sha1_text
from pllm.models.base import Generator, Prompt
from pllm.tasks.spec import TaskSpec, render
from pllm.types import ProfileItem

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
    counts = Counter(outs)
    n = len(outs)
    if spec.numeric_labels:
        values = sorted(float(o) for o in outs)
        median = values[(n - 1) // 2]  # the lower median: always one of the user's own values
        order = sorted(spec.labels or [], key=float)
        shares = ", ".join(f"{lab}: {round(100 * counts.get(lab, 0) / n)}%" for lab in order)
        return f"{n} past answers: {shares}; median {median:g}."
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return f"{n} past answers, most frequent: " + ", ".join(f"{o} {round(100 * c / n)}%" for o, c in ranked) + "."
