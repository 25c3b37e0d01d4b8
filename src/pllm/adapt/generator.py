"""Serving many users' adapters from one model: `AdapterGenerator` routes each prompt to its user's
adapter (or their group's, or none) and runs a mixed batch in one forward pass.

Routing reads the structured record on `Prompt.question` (user id and profile), never the text:
- the user's own adapter when it exists, is not stale, was trained on these base weights and the
  user has at least `cold_start_items` items (default: the `min_items` the adapter was trained with);
- otherwise the group adapter whose centroid is nearest the user's history embedding;
- otherwise the base model (peft's "__base__" row).

Methods registered with `mixed_batch` (LoRA) take peft's per-row `adapter_names=`, so a batch of 8 users is
one forward pass; their Linear LoRA layers run stacked (`pllm.adapt.batched_lora`: two batched matmuls per
layer instead of peft's loop over adapters) unless `batched_lora=False`. Others (IA3, prompt tuning) have
no per-row path in peft: their rows are grouped by adapter and run group by group (prompt-learning methods
one row at a time, since peft drops position ids under them and padding would shift positions).
Loaded adapters are kept in an LRU bounded by a byte budget.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from pllm.adapt.batched_lora import BatchedLoRA
from pllm.adapt.methods import get_method
from pllm.adapt.store import BASE_OWNER, AdapterRecord, AdapterStore
from pllm.adapt.train import base_key, merge_task_adapter
from pllm.errors import ArtifactError, InputError
from pllm.models.base import DelegatingGenerator, Generation, Prompt
from pllm.models.hf import HFGenerator
from pllm.types import Question

log = logging.getLogger(__name__)
BASE = "__base__"
ROUTE_MODES = ("user", "group", "none")


def attach_adapter(model: Any, record: AdapterRecord) -> Any:
    """`model` with the stored adapter loaded under `record.name`: wrapped by peft with the first one, added
    to the peft model after that. The one loading path of both adapter runtimes (this module's routing
    generator and `pllm.align.adapters.AdapterHost`)."""
    from peft import PeftModel

    assert record.path is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not hasattr(model, "peft_config"):
            model = PeftModel.from_pretrained(model, str(record.path), adapter_name=record.name, is_trainable=False)
        else:
            model.load_adapter(str(record.path), adapter_name=record.name, is_trainable=False)
            if model.active_adapter not in model.peft_config:  # every earlier one was deleted
                model.set_adapter(record.name)
    model.eval()
    return model


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
                 batched_lora: bool = True) -> None:
        if mode not in ROUTE_MODES:
            raise InputError(f"adapter mode must be one of {ROUTE_MODES}, got {mode!r}", field="adapter")
        if memory_budget_mb <= 0:
            raise InputError("memory_budget_mb must be > 0", field="memory_budget_mb")
        if hasattr(base.model, "peft_config"):
            raise ArtifactError("AdapterGenerator needs a plain base model (this one already holds peft adapters)")
        self.base, self.task, self.mode = base, task, mode
        self.store = store or AdapterStore()
        self.cold_start_items = cold_start_items
        self.budget = int(memory_budget_mb * 1024 * 1024)
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
        self.method: str | None = None
        self._loaded: OrderedDict[str, int] = OrderedDict()  # adapter name -> bytes, LRU order
        self.batched_lora = batched_lora
        self._stacks: BatchedLoRA | None = None  # the loaded LoRA adapters stacked; rebuilt after a load/unload
        self._groups: list[AdapterRecord] | None = None
        self._group_of: dict[tuple[str, tuple[str, ...]], Route] = {}
        self._user_routes: dict[str, AdapterRecord | None] = {}
        self.stats: Counter[str] = Counter()

    # -- routing ----------------------------------------------------------------------------------
    def _fresh(self, record: AdapterRecord | None) -> bool:
        return record is not None and not record.stale and record.base_key == self.base_key

    def _user_record(self, user_id: str) -> AdapterRecord | None:
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
        for name in list(self._loaded):
            self._unload(name)

    # -- the adapter cache ------------------------------------------------------------------------
    @property
    def loaded_adapters(self) -> list[str]:
        return list(self._loaded)

    @property
    def loaded_bytes(self) -> int:
        return sum(self._loaded.values())

    def _load(self, record: AdapterRecord) -> None:
        if record.name in self._loaded:
            self._loaded.move_to_end(record.name)
            return
        assert record.path is not None
        self.store.load_record(record.path)  # sha256 of every file: a corrupt folder is refused here
        if self.method is not None and record.method != self.method:
            raise ArtifactError(f"adapter {record.path} is {record.method}, but this generator serves {self.method} "
                                "adapters (one peft method per model)")
        self.base.model = attach_adapter(self.base.model, record)
        self.method = record.method
        self._loaded[record.name] = record.bytes
        self._stacks = None
        self.stats["loads"] += 1

    def _unload(self, name: str) -> None:
        model = self.base.model
        remaining = [n for n in self._loaded if n != name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if remaining and name in getattr(model, "active_adapters", [name]):
                model.set_adapter(remaining[-1])
            model.delete_adapter(name)
        del self._loaded[name]
        self._stacks = None
        self.stats["evictions"] += 1

    def _evict(self, pinned: set[str]) -> None:
        for name in list(self._loaded):
            if self.loaded_bytes <= self.budget:
                return
            if name not in pinned and len(self._loaded) > 1:
                self._unload(name)

    def _chunks(self, routes: Sequence[Route]) -> Iterator[list[int]]:
        """Row groups whose distinct adapters fit the memory budget together (usually the whole batch)."""
        rows: list[int] = []
        names: dict[str, int] = {}
        for i, r in enumerate(routes):
            size = r.record.bytes if r.record is not None else 0
            if r.name not in names and rows and sum(names.values()) + size > self.budget:
                yield rows
                rows, names = [], {}
            names.setdefault(r.name, size)
            rows.append(i)
        if rows:
            yield rows

    def _prepare(self, routes: Sequence[Route], rows: Sequence[int]) -> None:
        wanted = {routes[i].name: routes[i].record for i in rows if routes[i].record is not None}
        for record in wanted.values():
            self._load(record)  # type: ignore[arg-type]
        self._evict(set(wanted))

    @contextmanager
    def _stacked(self) -> Iterator[None]:
        """Mixed LoRA batches through the stacked adapters (peft's per-adapter loop when `batched_lora=False`)."""
        if not self.batched_lora or not hasattr(self.base.model, "peft_config"):
            yield
            return
        if self._stacks is None:
            self._stacks = BatchedLoRA(self.base.model)
        with self._stacks.active():
            yield

    @contextmanager
    def _active(self, name: str) -> Iterator[None]:
        """IA3 / prompt tuning: one adapter at a time (or none, for base rows)."""
        model = self.base.model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if name == BASE:
                with model.disable_adapter():
                    yield
            else:
                model.set_adapter(name)
                yield

    def _run(self, prompts: Sequence[Prompt], call: Any) -> list[Any]:
        """Route, then call `call(row_indices, adapter_names|None, batch_size_cap|None)` per chunk/group."""
        routes = [self.route(p.question) for p in prompts]
        for r in routes:
            self.stats[f"rows_{r.kind}"] += 1
        out: list[Any] = [None] * len(prompts)
        if all(r.record is None for r in routes) and not hasattr(self.base.model, "peft_config"):
            for i, res in enumerate(call(list(range(len(prompts))), None, None)):
                out[i] = res
            return out
        for rows in self._chunks(routes):
            self._prepare(routes, rows)
            method = get_method(self.method) if self.method is not None else None
            if method is None or method.mixed_batch:  # one pass, per-row adapters
                with self._stacked():
                    results = call(rows, [routes[i].name for i in rows], None)
                for i, res in zip(rows, results):
                    out[i] = res
                continue
            by_name: dict[str, list[int]] = {}
            for i in rows:
                by_name.setdefault(routes[i].name, []).append(i)
            cap = 1 if method.prompt_learning else None
            for name, group_rows in by_name.items():
                with self._active(name):
                    results = call(group_rows, None, cap)
                for i, res in zip(group_rows, results):
                    out[i] = res
        return out

    # -- Generator API --------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 stop: Sequence[str] | None = None, batch_size: int = 8) -> list[Generation]:
        def call(rows: list[int], names: list[str] | None, cap: int | None) -> list[Generation]:
            return self.base.generate([prompts[i] for i in rows], max_new_tokens=max_new_tokens,
                                      temperature=temperature, stop=stop,
                                      batch_size=min(batch_size, cap or batch_size), adapter_names=names)

        return self._run(prompts, call)

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[Sequence[str]] | Sequence[str], *,
              batch_size: int = 8, normalize: bool = False) -> np.ndarray:
        from pllm.models.base import normalize_continuations

        cand_lists = normalize_continuations(len(prompts), continuations)

        def call(rows: list[int], names: list[str] | None, cap: int | None) -> list[np.ndarray]:
            return list(self.base.score([prompts[i] for i in rows], [cand_lists[i] for i in rows],
                                        batch_size=min(batch_size, cap or batch_size),
                                        normalize=normalize, adapter_names=names))

        rows = self._run(prompts, call)
        return np.array(rows, dtype=np.float64).reshape(len(prompts), len(cand_lists[0]) if cand_lists else 0)
