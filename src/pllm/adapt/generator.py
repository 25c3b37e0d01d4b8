"""Serving many users' adapters from one model: `AdapterGenerator` routes each prompt to its user's
adapter (or their group's, or none) and runs a mixed batch in one forward pass.

Routing reads the structured record on `Prompt.question` (user id and profile), never the text:
- the user's own adapter when it exists, is not stale, was trained on these base weights and the
  user has at least `cold_start_items` items (default: the `min_items` the adapter was trained with);
- otherwise the group adapter whose centroid is nearest the user's history embedding;
- otherwise the base model (peft's "__base__" row).

A job that has just trained or found its users' adapters (the private second stage of `ft+user+...`,
`pllm.adapt.private`) passes them as `users=`: only those users are routed to an adapter, every other user
takes the fallback, and an adapter trained on other base weights is an error, not a silent fallback.

The adapters live in an `AdapterPool` (`pllm.adapt.pool`: the LRU under a byte budget, one forward pass with
per-row adapters where peft can run one, stacked LoRA layers), over the base model in place.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pllm.adapt.pool import BASE, AdapterPool, PoolConfig
from pllm.adapt.store import BASE_OWNER, AdapterRecord, AdapterStore
from pllm.adapt.train import base_key, merge_task_adapter
from pllm.errors import ArtifactError, InputError
from pllm.models.base import DelegatingGenerator, Generation, Prompt
from pllm.models.hf import HFGenerator
from pllm.types import Question

log = logging.getLogger(__name__)
ROUTE_MODES = ("user", "group", "none")


@dataclass(frozen=True)
class Route:
    kind: str  # user | group | base
    name: str  # peft adapter name, or "__base__"
    record: AdapterRecord | None = None


class AdapterGenerator(DelegatingGenerator):
    """An `HFGenerator` whose `.model` becomes a peft model holding many named adapters."""

    base: HFGenerator
    name = "adapters"
    supports_scoring = True

    def __init__(self, base: HFGenerator, task: str, *, store: AdapterStore | None = None, mode: str = "user",
                 cold_start_items: int | None = None, memory_budget_mb: float = 256.0, merge_task: bool = True,
                 batched_lora: bool = True, users: Mapping[str, AdapterRecord] | None = None) -> None:
        if mode not in ROUTE_MODES:
            raise InputError(f"adapter mode must be one of {ROUTE_MODES}, got {mode!r}", field="adapter")
        self.pool = AdapterPool(base, PoolConfig(memory_budget_mb=memory_budget_mb, batched_lora=batched_lora))
        self.base, self.task, self.mode = base, task, mode
        self.store = store or AdapterStore()
        self.cold_start_items = cold_start_items
        self.model_id = f"{base.model_id}+adapters"
        self.task_record: AdapterRecord | None = None
        if merge_task and mode != "none":
            record = self.store.get(task, "task", BASE_OWNER)
            if record is not None and record.stale:
                log.warning("task adapter for %s is stale (trained on a forgotten user's data): not used; "
                            "run `pllm adapt retrain-stale`", task)
            elif record is not None:
                merge_task_adapter(base, record)
                self.task_record = record
        self.base_key = base_key(base, self.task_record)
        self._groups: list[AdapterRecord] | None = None
        self._group_of: dict[tuple[str, tuple[str, ...]], Route] = {}
        self._user_routes: dict[str, AdapterRecord | None] = {}
        self._pinned = dict(users) if users is not None else None
        for record in (self._pinned or {}).values():
            if record.base_key != self.base_key or record.base_model != base.model_id:
                raise ArtifactError(f"adapter folder {record.path} was trained on {record.base_model!r}, not on "
                                    f"{base.model_id!r}: it is not valid on these weights")

    # -- routing ----------------------------------------------------------------------------------
    def _fresh(self, record: AdapterRecord | None) -> bool:
        return record is not None and not record.stale and record.base_key == self.base_key

    def _user_record(self, user_id: str) -> AdapterRecord | None:
        if self._pinned is not None:
            return self._pinned.get(user_id)
        if user_id not in self._user_routes:
            record = self.store.get(self.task, "user", user_id, verify=False)
            self._user_routes[user_id] = record if self._fresh(record) else None
        return self._user_routes[user_id]

    def group_records(self) -> list[AdapterRecord]:
        if self._groups is None:
            self._groups = [r for r in self.store.records(self.task, "group") if self._fresh(r) and r.centroid]
        return self._groups

    def _group_route(self, question: Question) -> Route:
        groups = self.group_records()
        if not groups:
            return Route("base", BASE)
        key = (question.user_id, tuple(p.id for p in question.profile))
        if key not in self._group_of:
            from pllm.adapt.groups import nearest_group

            record = nearest_group(groups, question.profile, self._spec())
            self._group_of[key] = Route("group", record.name, record) if record else Route("base", BASE)
        return self._group_of[key]

    def _spec(self) -> Any:
        from pllm.tasks.spec import get_task

        return get_task(self.task)

    def route(self, question: Question | None) -> Route:
        """Which adapter serves this question (see the module docstring for the order)."""
        if question is None or self.mode == "none":
            return Route("base", BASE)
        if self.mode == "user":
            record = self._user_record(question.user_id)
            threshold = self.cold_start_items
            if record is not None and threshold is None:  # the threshold the adapter was trained with
                threshold = int(record.config.get("min_items", 0))
            if record is not None and len(question.profile) >= (threshold or 0):
                return Route("user", record.name, record)
        return self._group_route(question)

    def invalidate(self) -> None:
        """Drop cached routing (after adapters were trained, retrained or forgotten)."""
        self._groups, self._group_of, self._user_routes = None, {}, {}
        self.pool.clear()

    # -- the adapter cache ------------------------------------------------------------------------
    @property
    def loaded_adapters(self) -> list[str]:
        return self.pool.adapter_names()

    @property
    def loaded_bytes(self) -> int:
        return self.pool.loaded_bytes

    @property
    def stats(self) -> Counter[str]:
        """Routed rows by kind (`rows_user`, ...) and the pool's `loads` / `evictions`."""
        return self.pool.stats

    def _routes(self, prompts: Sequence[Prompt]) -> tuple[list[str], dict[str, AdapterRecord]]:
        routes = [self.route(p.question) for p in prompts]
        for r in routes:
            self.stats[f"rows_{r.kind}"] += 1
        return [r.name for r in routes], {r.name: r.record for r in routes if r.record is not None}

    # -- Generator API --------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 stop: Sequence[str] | None = None, batch_size: int = 8) -> list[Generation]:
        names, records = self._routes(prompts)
        return self.pool.generate(prompts, names, records=records, max_new_tokens=max_new_tokens,
                                  temperature=temperature, stop=stop, batch_size=batch_size)

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[Sequence[str]] | Sequence[str], *,
              batch_size: int = 8, normalize: bool = False) -> np.ndarray:
        names, records = self._routes(prompts)
        return self.pool.score(prompts, names, continuations, records=records, batch_size=batch_size,
                               normalize=normalize)

    def stream(self, prompt: Prompt, *, max_new_tokens: int = 64, temperature: float = 0.0) -> Iterator[str]:
        """The prompt's route, token by token (a chat served with the user's adapter streams and reuses their
        prefix cache like a bare-model chat)."""
        names, records = self._routes([prompt])
        yield from self.pool.stream(prompt, names[0], records=records, max_new_tokens=max_new_tokens,
                                    temperature=temperature)
