"""The serving hook: the generator a request of one user should run on.

Order: the user's own (or group's) DPO adapter; else a soup at the user's preference vector (the soup
assigned to the user, or the only stored soup covering the vector's dimensions); else the assigned RiC
adapter conditioned on the vector; else the base generator unchanged. Every adapted generator shares one
private model copy per base generator (`host_for`), and soups are built once per distinct vector.
"""

from __future__ import annotations

import threading
import weakref

from pllm.align.adapters import AdapterHost, AdapterStore, host_for
from pllm.align.ric import RiCGenerator
from pllm.align.soup import Soup, SoupSpec, SoupStore
from pllm.align.store import PreferenceStore
from pllm.errors import InputError
from pllm.models.base import Generator
from pllm.models.hf import HFGenerator
from pllm.users.store import SQLiteUserStore

_SOUPS: weakref.WeakKeyDictionary[AdapterHost, dict[str, Soup]] = weakref.WeakKeyDictionary()
_SOUPS_LOCK = threading.Lock()


def soup_for(host: AdapterHost, spec: SoupSpec, adapters: AdapterStore | None = None) -> Soup:
    """The host's `Soup` for `spec` (built once, so its per-vector cache is shared by every request)."""
    with _SOUPS_LOCK:
        soups = _SOUPS.setdefault(host, {})
        soup = soups.get(spec.name)
        if soup is None or soup.spec != spec:
            soup = Soup(host, spec, adapters)
            soups[spec.name] = soup
        return soup


def _pick_soup(soups: SoupStore, name: str | None, vector: dict[str, float]) -> SoupSpec | None:
    if name is not None:
        return soups.get(name)
    fitting = [s for s in soups.list() if set(vector) <= set(s.dimensions)]
    if len(fitting) > 1:
        raise InputError(f"several soups cover the dimensions {sorted(vector)}: "
                         f"{[s.name for s in fitting]}; assign one (pllm align assign --soup NAME)")
    return fitting[0] if fitting else None


def generator_for_user(store: SQLiteUserStore, base_generator: Generator, *, user_id: str,
                       adapters: AdapterStore | None = None, soups: SoupStore | None = None) -> Generator:
    """The generator serving `user_id` (see the module docstring for the order); the base one if the user
    has no alignment data or the backend cannot carry adapters."""
    pstore = PreferenceStore(store)
    assignment = pstore.get_assignment(user_id=user_id)
    vector = pstore.get_vector(user_id=user_id)
    if not isinstance(base_generator, HFGenerator):
        return base_generator
    adapters = adapters or AdapterStore()
    soups = soups or SoupStore()
    host = host_for(base_generator)
    if assignment.adapter:
        return host.generator(host.load(adapters.get(assignment.adapter)))
    if vector is not None:
        spec = _pick_soup(soups, assignment.soup, vector)
        if spec is not None:
            return soup_for(host, spec, adapters).generator(vector)
        if assignment.ric:
            return RiCGenerator(host, adapters.get(assignment.ric), vector)
    return base_generator
