"""A user's profile items -> (prompt, target) training pairs, rendered exactly as inference renders.

Each item becomes a question whose structured `query` is the item's own fields and whose target is
the item's output under the task spec (for `movielens-rating`: the movie -> the user's rating). The
prompt is built by the pipeline's own `Personalizer` (same style, same token budget, and, with k > 0,
demonstrations retrieved from the user's strictly earlier items), so an adapter trained on these
pairs composes with retrieval and profile prompting at inference.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pllm.adapt.config import AdaptConfig
from pllm.errors import InputError
from pllm.io import sha1_text
from pllm.models.base import Generator, Prompt
from pllm.prompting.profile import ItemCrowd
from pllm.tasks.spec import TaskSpec
from pllm.types import ProfileItem, Question


@dataclass
class TrainingPair:
    prompt: Prompt
    target: str  # continuation read right after the rendered prompt (prefix + output + end marker)
    item_id: str


def user_items(questions: Iterable[Question], users: Sequence[str] | None = None) -> dict[str, list[ProfileItem]]:
    """Each user's distinct profile items (by id) across their questions, oldest first.

    Only profiles are read, never question targets: a test user's adapter must not see the answer.
    """
    wanted = set(users) if users is not None else None
    out: dict[str, dict[str, ProfileItem]] = {}
    for q in questions:
        if wanted is not None and q.user_id not in wanted:
            continue
        seen = out.setdefault(q.user_id, {})
        for item in q.profile:
            seen.setdefault(item.id, item)
    if wanted is not None:
        missing = sorted(wanted - set(out))
        if missing:
            raise InputError(f"no data for users {missing[:5]}{' ...' if len(missing) > 5 else ''}", field="users")
    return {u: sort_items(items.values()) for u, items in out.items()}


def sort_items(items: Iterable[ProfileItem]) -> list[ProfileItem]:
    """Oldest first; items without a timestamp keep their given order before timed ones."""
    indexed = list(enumerate(items))
    indexed.sort(key=lambda p: (p[1].timestamp is not None, p[1].timestamp or 0.0, p[0]))
    return [item for _, item in indexed]


def item_question(spec: TaskSpec, item: ProfileItem, earlier: Sequence[ProfileItem], user_id: str) -> Question:
    """The question an item answers: its fields are the query, its output the target."""
    target = spec.output_of(item)
    if target is None:
        raise InputError(f"task {spec.name!r} defines no item_output, so items cannot become training pairs",
                         field="item_output")
    return Question(id=f"{user_id}/{item.id}", user_id=user_id, input=spec.retrieval_text(item),
                    query=dict(item.fields), profile=list(earlier), target=target, timestamp=item.timestamp)


def select_items(items: Sequence[ProfileItem], config: AdaptConfig) -> list[ProfileItem]:
    items = sort_items(items)
    return items[-config.max_items:] if config.max_items is not None else items


def training_pairs(spec: TaskSpec, generator: Generator, items: Sequence[ProfileItem], config: AdaptConfig,
                   *, user_id: str, only: set[str] | None = None, crowd: ItemCrowd | None = None
                   ) -> list[TrainingPair]:
    """Training pairs for one user: one per selected item (`only`: just these item ids, so a sampled
    task adapter renders only the pairs it trains on), each with the user's strictly earlier items as history
    (and, with `config.crowd`, other users' outputs for the item: `crowd` leaves this user out)."""
    ordered = [i for i in select_items(items, config) if only is None or i.id in only]
    history = sort_items(items)
    position = {id(item): i for i, item in enumerate(history)}
    questions = [item_question(spec, item, history[:position[id(item)]] if config.k or config.stats else [], user_id)
                 for item in ordered]
    return question_pairs(spec, generator, questions, config, crowd=crowd)


def question_pairs(spec: TaskSpec, generator: Generator, questions: Sequence[Question], config: AdaptConfig,
                   *, crowd: ItemCrowd | None = None) -> list[TrainingPair]:
    """(prompt, target) pairs for questions with known targets, rendered by the pipeline's `Personalizer`
    under the recipe's retrieval and style: the texts a learned method is trained on are the prompts it is
    asked at inference. The caller decides whose targets these are (never an evaluated question's)."""
    from pllm.pipeline import MethodConfig, Personalizer

    for i, q in enumerate(questions):
        if q.target is None:
            raise InputError("a training question needs its target", source=q.id, index=i, field="target")
    method = MethodConfig(retriever=config.retriever if config.k else "none", k=config.k, style=config.style,
                          max_prompt_tokens=config.max_prompt_tokens, stats=config.stats, crowd=config.crowd)
    built = Personalizer(spec, generator, method, crowd=crowd).build_prompts(questions)
    end = built[0].stop[0] if built and built[0].stop else ""
    return [TrainingPair(prompt=b.prompt, target=f"{b.continuation_prefix}{q.target}{end}", item_id=q.id)
            for q, b in zip(questions, built)]


def items_hash(items: Sequence[ProfileItem]) -> str:
    """Content hash of a set of items (order-independent), to tell whether an adapter is up to date."""
    parts = sorted(json.dumps([i.id, i.fields, i.timestamp], sort_keys=True, ensure_ascii=False) for i in items)
    return sha1_text(*parts)


def pairs_hash(pairs: Sequence[TrainingPair]) -> str:
    return sha1_text(*[f"{p.prompt.chat}\x1e{p.prompt.text}\x1e{p.target}" for p in pairs])
