"""`AdapterPool`: one peft model holding named adapters, the one runtime every adapter user goes through.

The routing `pllm.adapt.generator.AdapterGenerator` (each row its user's or group's adapter) and alignment
serving (DPO, soups, RiC: `pllm.align.serving`) both hold their adapters here, so both get the same loading
checks, the same byte-budgeted LRU and the same batch paths:

- per row, one forward pass: when peft can run a batch with per-row `adapter_names=` (read from peft when
  adapters load: the tuner has peft's forward hooks for it, and no loaded adapter is prompt learning or
  DoRA); Linear LoRA layers then run stacked (`pllm.adapt.batched_lora`: two batched matmuls per layer);
- grouped, one adapter active at a time: everything else (IA3, LoHa, ...); prompt learning one row at a time,
  because peft drops position ids under it and left padding would shift them.

Loaded LoRA weights are held once, in the stacks (peft's weights are views of their slot; an evicted
adapter's slot is zeroed and reused). A pool wraps its base generator's model in place (the routing
generator's historical behaviour: the caller gave it the model) or, with `private=True`, a deep copy made at
the first load, so the caller's generator stays bare (alignment serving, one per base generator:
`shared_pool`).
"""

from __future__ import annotations

import json
import threading
import warnings
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from pllm.adapt.batched_lora import BatchedLoRA
from pllm.adapt.store import AdapterRecord, check_files
from pllm.errors import ArtifactError, InputError, NotFoundError
from pllm.models.base import Generation, Generator, Prompt, normalize_continuations
from pllm.models.hf import HFGenerator

BASE = "__base__"  # peft's name for "no adapter" in a per-row batch
T = TypeVar("T")
# call(generator, row indices, per-row adapter names or None (one adapter active), batch size cap or None)
BatchCall = Callable[[HFGenerator, list[int], "list[str] | None", "int | None"], list[T]]


@dataclass
class PoolConfig:
    """How an `AdapterPool` keeps and runs its adapters."""

    memory_budget_mb: float = field(default=256.0, metadata={
        "help": "Bytes of loaded adapters kept resident; the least recently used are unloaded beyond it, and a "
                "batch whose adapters do not fit together runs in chunks that do."})
    batched_lora: bool = field(default=True, metadata={
        "help": "Run mixed LoRA batches through stacked adapters (False: peft's loop over adapters per layer)."})
    private: bool = field(default=False, metadata={
        "help": "Load adapters into a private copy of the base model, leaving the caller's generator bare."})

    def __post_init__(self) -> None:
        if not self.memory_budget_mb > 0:
            raise InputError(f"memory_budget_mb must be > 0, got {self.memory_budget_mb}", field="memory_budget_mb")

    @property
    def budget_bytes(self) -> int:
        return int(self.memory_budget_mb * 1024 * 1024)


def _peft_type(record: AdapterRecord) -> str:
    assert record.path is not None
    try:
        return str(json.loads((record.path / "adapter_config.json").read_text(encoding="utf-8"))["peft_type"])
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"adapter {record.path}: unreadable adapter_config.json ({exc})") from None


def attach_adapter(model: Any, record: AdapterRecord) -> Any:
    """`model` with the stored adapter loaded under `record.name`: wrapped by peft with the first one, added
    to the peft model after that."""
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


class AdapterPool:
    """Named peft adapters on one model: loaded on demand, LRU under a byte budget, run per row or grouped."""

    def __init__(self, base: HFGenerator, config: PoolConfig | None = None) -> None:
        if not isinstance(base, HFGenerator):
            raise InputError(f"adapters need a local 'hf' generator, got {type(base).__name__}", field="backend")
        if hasattr(base.model, "peft_config"):
            raise ArtifactError("an adapter pool needs a plain base model (this one already holds peft adapters)")
        self.base = base
        self.config = config or PoolConfig()
        self.gen = base  # the generator whose model holds the adapters (a private copy once one loads, if asked)
        self.lock = threading.RLock()
        self.peft_type: str | None = None
        self._sizes: OrderedDict[str, int] = OrderedDict()  # adapter name -> bytes, least recently used first
        self._pinned: set[str] = set()  # adapters the call in progress needs (never evicted for room)
        self.stacks: BatchedLoRA | None = None  # the loaded LoRA adapters' weights, stacked (batched_lora)
        self.stats: Counter[str] = Counter()

    # -- what is loaded ---------------------------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The peft model, or None before the first load."""
        return self.gen.model if hasattr(self.gen.model, "peft_config") else None

    def __contains__(self, name: object) -> bool:
        return name in self._sizes

    def adapter_names(self) -> list[str]:
        with self.lock:
            return list(self._sizes)

    @property
    def loaded_bytes(self) -> int:
        return sum(self._sizes.values())

    def load(self, record: AdapterRecord) -> str:
        """Load a stored adapter under its own name (a no-op but for its LRU place when loaded), after checking
        its files' sha256, its base model and that peft can hold it beside the others (one peft type)."""
        with self.lock:
            if record.name in self._sizes:
                self._sizes.move_to_end(record.name)
                return record.name
            if record.base_model != self.base.model_id:
                raise ArtifactError(f"adapter {record.name!r} ({record.path}) was trained on {record.base_model!r}, "
                                    f"not on {self.base.model_id!r}; it is not valid on these weights")
            check_files(record)
            peft_type = _peft_type(record)
            if self.peft_type is not None and self._sizes and peft_type != self.peft_type:
                raise ArtifactError(f"adapter {record.path} is {peft_type}, but this pool holds {self.peft_type} "
                                    "adapters (one peft type per model)")
            self._evict(record.bytes)  # room first, so the stacks reuse the evicted adapter's slot
            if self.config.private and self.gen is self.base:
                self.gen = self.base.private_copy()
            try:
                self.gen.model = attach_adapter(self.gen.model, record)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise ArtifactError(f"cannot load adapter {record.name!r} from {record.path}: {exc}") from exc
            self.peft_type = peft_type
            self._added(record.name, record.bytes)
            self.stats["loads"] += 1
            return record.name

    def add_weighted(self, name: str, sources: Sequence[tuple[AdapterRecord, float]]) -> str:
        """A new adapter `name` = sum of weight * delta of the given stored LoRA adapters (peft's
        `add_weighted_adapter`, "cat": exact), e.g. a preference soup; the sources are loaded first."""
        with self.lock:
            self._pinned = {r.name for r, _ in sources}
            try:
                for record, _ in sources:
                    self.load(record)
            finally:
                self._pinned = set()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.model.add_weighted_adapter(adapters=[r.name for r, _ in sources],
                                                weights=[w for _, w in sources], adapter_name=name,
                                                combination_type="cat")
            size = sum(p.numel() * p.element_size() for n, p in self.model.named_parameters() if f".{name}." in n)
            self._added(name, size)
            return name

    def _added(self, name: str, size: int) -> None:
        self._sizes[name] = size
        if self.gen.prefix_cache is not None:  # KV computed by an earlier adapter of this name is not this one's
            self.gen.prefix_cache.drop_adapter(name)
        if self.config.batched_lora:
            if self.stacks is None:
                self.stacks = BatchedLoRA(self.model)
            self.stacks.add(name)

    def unload(self, name: str) -> None:
        with self.lock:
            if name not in self._sizes:
                return
            model = self.model
            remaining = [n for n in self._sizes if n != name]
            if self.stacks is not None:
                self.stacks.remove(name)  # its slot zeroed, for the next adapter
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if remaining and name in getattr(model, "active_adapters", [name]):
                    model.set_adapter(remaining[-1])
                model.delete_adapter(name)
            del self._sizes[name]
            self.stats["evictions"] += 1

    def clear(self) -> None:
        with self.lock:
            for name in list(self._sizes):
                self.unload(name)

    def _evict(self, room: int = 0) -> None:
        """Unload the least recently used adapters (not pinned) until `room` more bytes fit the budget."""
        for name in list(self._sizes):
            if self.loaded_bytes + room <= self.config.budget_bytes:
                return
            if name not in self._pinned:
                self.unload(name)

    # -- running batches --------------------------------------------------------------------------------
    def per_row(self) -> bool:
        """Whether peft runs a batch with per-row adapter names on this model (see the module docstring)."""
        model = self.model
        if model is None:
            return True
        configs = model.peft_config.values()
        return hasattr(model.base_model, "_enable_peft_forward_hooks") and not any(
            c.is_prompt_learning or getattr(c, "use_dora", False) for c in configs)

    def _chunks(self, names: Sequence[str], records: Mapping[str, AdapterRecord]) -> Iterator[list[int]]:
        """Row groups whose distinct adapters fit the memory budget together (usually the whole batch)."""
        rows: list[int] = []
        used: dict[str, int] = {}
        for i, name in enumerate(names):
            size = self._sizes.get(name, records[name].bytes if name in records else 0)
            if name not in used and rows and sum(used.values()) + size > self.config.budget_bytes:
                yield rows
                rows, used = [], {}
            used.setdefault(name, size)
            rows.append(i)
        if rows:
            yield rows

    @contextmanager
    def _stacked(self) -> Iterator[None]:
        if self.stacks is None:
            yield
            return
        with self.stacks.active():
            yield

    @contextmanager
    def active(self, name: str | None) -> Iterator[HFGenerator]:
        """Hold the lock with one adapter active (None or BASE: every adapter off, i.e. the base model)."""
        with self.lock:
            model = self.model
            if name is None or name == BASE:
                if model is None:
                    yield self.gen
                    return
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    with model.disable_adapter():
                        yield self.gen
                return
            if name not in self._sizes:
                raise NotFoundError(f"adapter {name!r} is not loaded; loaded: {self.adapter_names()}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.set_adapter(name)
            yield self.gen

    def run(self, names: Sequence[str], call: BatchCall[T], *,
            records: Mapping[str, AdapterRecord] | None = None) -> list[T]:
        """`call` over the rows, each through its adapter (`names`, BASE for none); adapters not loaded are
        loaded from `records` (by name), and results come back in row order."""
        records = records or {}
        out: list[Any] = [None] * len(names)
        with self.lock:
            if self.model is None and all(n == BASE for n in names):  # nothing loaded: the bare model
                return call(self.gen, list(range(len(names))), None, None)
            for rows in self._chunks(names, records):
                wanted = list(dict.fromkeys(names[i] for i in rows if names[i] != BASE))  # in row order
                missing = [n for n in wanted if n not in self._sizes and n not in records]
                if missing:
                    raise NotFoundError(f"adapter {missing[0]!r} is not loaded; loaded: {self.adapter_names()}")
                self._pinned = set(wanted)
                try:
                    for name in wanted:
                        if name in self._sizes:
                            self._sizes.move_to_end(name)
                        else:
                            self.load(records[name])
                finally:
                    self._pinned = set()
                if self.per_row():
                    with self._stacked():
                        results = call(self.gen, rows, [names[i] for i in rows], None)
                    for i, res in zip(rows, results, strict=True):
                        out[i] = res
                    continue
                by_name: dict[str, list[int]] = {}
                for i in rows:
                    by_name.setdefault(names[i], []).append(i)
                cap = 1 if any(c.is_prompt_learning for c in self.model.peft_config.values()) else None
                for name, group in by_name.items():
                    with self.active(name) as gen:
                        results = call(gen, group, None, cap)
                    for i, res in zip(group, results, strict=True):
                        out[i] = res
        return out

    def generate(self, prompts: Sequence[Prompt], names: Sequence[str], *, records: Mapping[str, AdapterRecord]
                 | None = None, max_new_tokens: int = 64, temperature: float = 0.0, stop: Sequence[str] | None = None,
                 batch_size: int = 8) -> list[Generation]:
        def call(gen: HFGenerator, rows: list[int], row_names: list[str] | None, cap: int | None
                 ) -> list[Generation]:
            return gen.generate([prompts[i] for i in rows], max_new_tokens=max_new_tokens, temperature=temperature,
                                stop=stop, batch_size=min(batch_size, cap or batch_size), adapter_names=row_names)

        return self.run(names, call, records=records)

    def score(self, prompts: Sequence[Prompt], names: Sequence[str],
              continuations: Sequence[Sequence[str]] | Sequence[str], *,
              records: Mapping[str, AdapterRecord] | None = None, batch_size: int = 8,
              normalize: bool = False) -> np.ndarray:
        cands = normalize_continuations(len(prompts), continuations)

        def call(gen: HFGenerator, rows: list[int], row_names: list[str] | None, cap: int | None
                 ) -> list[np.ndarray]:
            return list(gen.score([prompts[i] for i in rows], [cands[i] for i in rows], normalize=normalize,
                                  batch_size=min(batch_size, cap or batch_size), adapter_names=row_names))

        rows = self.run(names, call, records=records)
        return np.array(rows, dtype=np.float64).reshape(len(prompts), len(cands[0]) if cands else 0)

    def stream(self, prompt: Prompt, name: str, *, records: Mapping[str, AdapterRecord] | None = None,
               max_new_tokens: int = 64, temperature: float = 0.0) -> Iterator[str]:
        """One prompt through adapter `name` (BASE for none), token by token, with the generator's prefix cache
        kept per user and adapter. The pool's lock is held until the stream ends or is closed. Where peft cannot
        run an adapter per row (prompt learning, DoRA), the whole answer comes as one piece."""
        with self.lock:
            if name != BASE and name not in self._sizes:
                if name not in (records or {}):
                    raise NotFoundError(f"adapter {name!r} is not loaded; loaded: {self.adapter_names()}")
                self.load(records[name])  # type: ignore[index]
            if self.model is None:  # nothing loaded: the bare model
                yield from self.gen.stream(prompt, max_new_tokens=max_new_tokens, temperature=temperature)
            elif self.per_row():
                with self._stacked():
                    yield from self.gen.stream(prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                                               adapter=name)
            else:
                yield self.generate([prompt], [name], max_new_tokens=max_new_tokens, temperature=temperature)[0].text

    def generator(self, adapter: str | None) -> PoolGenerator:
        return PoolGenerator(self, adapter)


class PoolGenerator(Generator):
    """A `Generator` running every row through one adapter of a pool (None: the base model)."""

    name = "hf+adapter"
    supports_scoring = True

    def __init__(self, pool: AdapterPool, adapter: str | None) -> None:
        self.pool = pool
        self.adapter = adapter
        self.model_id = pool.base.model_id + (f"+{adapter}" if adapter else "")

    def count_tokens(self, text: str) -> int:
        return self.pool.base.count_tokens(text)

    def truncate_to_tokens(self, text: str, max_tokens: int) -> str:
        return self.pool.base.truncate_to_tokens(text, max_tokens)

    def render(self, prompt: Prompt) -> str:
        return self.pool.base.render(self.rewrite(prompt))

    def rewrite(self, prompt: Prompt) -> Prompt:
        """Hook for subclasses that condition the prompt (RiC); the identity here."""
        return prompt

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 stop: Sequence[str] | None = None, batch_size: int = 8) -> list[Generation]:
        return self.pool.generate([self.rewrite(p) for p in prompts], [self.adapter or BASE] * len(prompts),
                                  max_new_tokens=max_new_tokens, temperature=temperature, stop=stop,
                                  batch_size=batch_size)

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[Sequence[str]] | Sequence[str], *,
              batch_size: int = 8, normalize: bool = False) -> np.ndarray:
        return self.pool.score([self.rewrite(p) for p in prompts], [self.adapter or BASE] * len(prompts),
                               continuations, batch_size=batch_size, normalize=normalize)

    def stream(self, prompt: Prompt, *, max_new_tokens: int = 64, temperature: float = 0.0) -> Iterator[str]:
        return self.pool.stream(self.rewrite(prompt), self.adapter or BASE, max_new_tokens=max_new_tokens,
                                temperature=temperature)


_SHARED: weakref.WeakKeyDictionary[HFGenerator, AdapterPool] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def shared_pool(base: HFGenerator) -> AdapterPool:
    """The process-wide private pool over `base` (one model copy per base generator, shared by every
    alignment method's generators)."""
    if not isinstance(base, HFGenerator):
        raise InputError(f"adapters need a local 'hf' generator, got {type(base).__name__}", field="backend")
    with _SHARED_LOCK:
        pool = _SHARED.get(base)
        if pool is None:
            pool = AdapterPool(base, PoolConfig(private=True))
            _SHARED[base] = pool
        return pool
