"""Preference soups (Rewarded Soups, Rame et al. 2023; Personalized Soups, Jang et al. 2023): one
adapter per preference dimension, combined at request time by the user's preference vector.

The combination is peft's `add_weighted_adapter(combination_type="cat")`: the LoRA factors are
concatenated with each A scaled by its weight, so the soup's weight delta is exactly sum_i w_i dW_i
(linear interpolation of the dimension models in weight space, all sharing one base). Zero-weight
dimensions are left out (their term is exactly zero). A one-hot vector is served by that dimension's
adapter itself: the sum is then dW_k, and peft would re-factor a single adapter as sqrt(w*s) A,
sqrt(w*s) B ("linear"), equal only up to float rounding.

Built soups are cached per distinct (rounded, normalized) vector, least recently used evicted.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pllm.adapt.store import AdapterStore, check_name
from pllm.align.store import check_vector
from pllm.errors import ArtifactError, InputError, NotFoundError
from pllm.io import atomic_write_json, sha1_text
from pllm.paths import pllm_home

if TYPE_CHECKING:  # the models stay unloaded until a soup is served
    from pllm.adapt.pool import AdapterPool, PoolGenerator

log = logging.getLogger(__name__)


@dataclass
class SoupSpec:
    """A named soup: preference dimension -> stored adapter name."""

    name: str
    dimensions: dict[str, str]
    precision: int = field(default=2, metadata={"help": "Vectors are rounded to this many decimals (cache key)."})
    max_cached: int = field(default=16, metadata={"help": "Built soups kept loaded (LRU)."})

    def __post_init__(self) -> None:
        check_name(self.name, "soup")
        if not self.dimensions:
            raise InputError("a soup needs at least one dimension=adapter", field="dimensions")
        for dim, adapter in self.dimensions.items():
            if not isinstance(dim, str) or not dim.strip():
                raise InputError(f"bad dimension name {dim!r}", field="dimensions")
            check_name(adapter)
        if not 0 <= self.precision <= 6:
            raise InputError(f"precision must be in [0, 6], got {self.precision}", field="precision")
        if self.max_cached < 1:
            raise InputError(f"max_cached must be >= 1, got {self.max_cached}", field="max_cached")


class SoupStore:
    """Soup specs as JSON files under `pllm_home()/align/soups/`."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else pllm_home() / "align" / "soups"

    def save(self, spec: SoupSpec) -> Path:
        return atomic_write_json(self.root / f"{check_name(spec.name, 'soup')}.json", spec)

    def get(self, name: str) -> SoupSpec:
        path = self.root / f"{check_name(name, 'soup')}.json"
        if not path.is_file():
            known = ", ".join(s.name for s in self.list()) or "(none)"
            raise NotFoundError(f"no soup {name!r} under {self.root}; known: {known}")
        try:
            return SoupSpec(**json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ArtifactError(f"corrupt soup spec {path}: {exc}") from None

    def list(self) -> list[SoupSpec]:
        if not self.root.is_dir():
            return []
        return [self.get(p.stem) for p in sorted(self.root.glob("*.json")) if not p.name.startswith(".")]


def pick_soup(soups: SoupStore, name: str | None, vector: dict[str, float]) -> SoupSpec | None:
    """The soup serving `vector`: the one named, else the only stored soup covering its dimensions."""
    if name is not None:
        return soups.get(name)
    fitting = [s for s in soups.list() if set(vector) <= set(s.dimensions)]
    if len(fitting) > 1:
        raise InputError(f"several soups cover the dimensions {sorted(vector)}: "
                         f"{[s.name for s in fitting]}; assign one (pllm align assign USER soup=NAME)")
    return fitting[0] if fitting else None


def normalize_vector(spec: SoupSpec, vector: dict[str, float]) -> tuple[float, ...]:
    """The soup weights for `vector`: in spec order, summing to 1, rounded to `spec.precision`.

    Missing dimensions weigh 0; a dimension the soup does not have is an error (it would be ignored
    silently otherwise)."""
    vec = check_vector(vector)
    unknown = sorted(set(vec) - set(spec.dimensions))
    if unknown:
        raise InputError(f"soup {spec.name!r} has no dimension(s) {unknown}; it has {sorted(spec.dimensions)}")
    raw = [vec.get(d, 0.0) for d in spec.dimensions]
    total = sum(raw)
    if total <= 0:
        raise InputError(f"the vector gives no weight to any of the soup's dimensions {sorted(spec.dimensions)}")
    weights = [round(w / total, spec.precision) for w in raw]
    return tuple(weights)


class Soup:
    """A soup spec bound to an `AdapterPool`: builds (and caches) one combined adapter per vector. The pool may
    unload a dimension or a built soup under its byte budget; both come back on the next use."""

    def __init__(self, pool: AdapterPool, spec: SoupSpec, adapters: AdapterStore | None = None) -> None:
        self.pool, self.spec = pool, spec
        adapters = adapters or AdapterStore()
        self.records = {a: adapters.get_named(a) for a in spec.dimensions.values()}
        for record in self.records.values():
            pool.load(record)
        self._cache: OrderedDict[tuple[float, ...], str] = OrderedDict()

    def adapter_for(self, vector: dict[str, float]) -> str:
        """Name of the pool adapter for `vector`, building it on first use."""
        weights = normalize_vector(self.spec, vector)
        with self.pool.lock:
            name = self._cache.get(weights)
            if name is not None and name in self.pool:
                self._cache.move_to_end(weights)
                return name
            name = f"soup-{self.spec.name}-{sha1_text(*map(repr, weights))[:12]}"
            used = [(self.records[self.spec.dimensions[d]], w)
                    for d, w in zip(self.spec.dimensions, weights, strict=True) if w > 0]
            if len(used) == 1:  # one-hot: the dimension's own adapter, exactly
                name = self.pool.load(used[0][0])
            else:
                self.pool.add_weighted(name, used)
            self._cache[weights] = name
            self._cache.move_to_end(weights)
            while len(self._cache) > self.spec.max_cached:
                _, old = self._cache.popitem(last=False)
                if old not in self.records and old not in self._cache.values():
                    self.pool.unload(old)
            return name

    def generator(self, vector: dict[str, float]) -> PoolGenerator:
        name = self.adapter_for(vector)
        return self.pool.generator(name)

    def cached_vectors(self) -> list[tuple[float, ...]]:
        return list(self._cache)
