"""The serving hook: the generator a request of one user should run on.

Each registered adapter method with a `serve` function is asked in `serve_rank` order (built in: the user's
assigned DPO adapter; else a soup at the user's preference vector, the assigned one or the only stored soup
covering the vector's dimensions; else the assigned RiC adapter conditioned on the vector); else the base
generator unchanged. Every adapted generator runs on one private model copy per base generator
(`pllm.adapt.pool.shared_pool`), and soups are built once per distinct vector.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

from pllm.adapt.methods import AdapterMethod, methods
from pllm.adapt.pool import AdapterPool, shared_pool
from pllm.adapt.store import AdapterStore
from pllm.align.soup import Soup, SoupSpec, SoupStore
from pllm.align.store import PreferenceStore
from pllm.models.base import Generator
from pllm.models.hf import HFGenerator
from pllm.users.store import UserStore


@dataclass
class ServeRequest:
    """What an alignment method may serve a user from: the shared adapter pool over the base model, the name
    assigned to the user for this method (or None), the user's preference vector, and the adapter stores."""

    pool: AdapterPool
    assigned: str | None
    vector: dict[str, float] | None
    adapters: AdapterStore
    soups: SoupStore


_SOUPS: weakref.WeakKeyDictionary[AdapterPool, dict[str, Soup]] = weakref.WeakKeyDictionary()
_SOUPS_LOCK = threading.Lock()


def soup_for(pool: AdapterPool, spec: SoupSpec, adapters: AdapterStore | None = None) -> Soup:
    """The pool's `Soup` for `spec` (built once, so its per-vector cache is shared by every request)."""
    with _SOUPS_LOCK:
        soups = _SOUPS.setdefault(pool, {})
        soup = soups.get(spec.name)
        if soup is None or soup.spec != spec:
            soup = Soup(pool, spec, adapters)
            soups[spec.name] = soup
        return soup


def generator_for_user(store: UserStore, base_generator: Generator, *, user_id: str,
                       adapters: AdapterStore | None = None, soups: SoupStore | None = None) -> Generator:
    """The generator serving `user_id`: the first registered serving method (in `serve_rank` order) that has
    something for the user; the base one if none has, or the backend cannot carry adapters."""
    pstore = PreferenceStore(store)
    assignment = pstore.get_assignment(user_id=user_id)
    vector = pstore.get_vector(user_id=user_id)
    if not isinstance(base_generator, HFGenerator):
        return base_generator
    pool = shared_pool(base_generator)
    adapters, soups = adapters or AdapterStore(), soups or SoupStore()
    for method in serving_methods():
        assert method.serve is not None
        gen = method.serve(ServeRequest(pool=pool, assigned=assignment.get(method.name), vector=vector,
                                        adapters=adapters, soups=soups))
        if gen is not None:
            return gen
    return base_generator


def serving_methods() -> list[AdapterMethod]:
    """The registered methods that serve users from their assignment and vector, in order."""
    return sorted((m for m in methods() if m.serve is not None), key=lambda m: (m.serve_rank, m.name))
