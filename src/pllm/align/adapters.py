"""The runtime that serves named (alignment) adapters, stored as named owners of `pllm.adapt.store.AdapterStore`.

`AdapterHost` keeps ONE private copy of a base model wrapped by peft with any number of named adapters
loaded; `AdapterGenerator` is a `Generator` bound to one adapter name (or none = the base model) that
switches the active adapter under the host's lock. peft injects LoRA layers into the modules it wraps,
so the copy keeps the caller's base generator untouched.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pllm.adapt.store import AdapterRecord, check_files
from pllm.errors import ArtifactError, InputError, NotFoundError
from pllm.models.base import Generation, Generator, Prompt
from pllm.models.hf import HFGenerator


class AdapterHost:
    """One private peft-wrapped copy of a base model holding named adapters (loaded once each)."""

    def __init__(self, base: HFGenerator) -> None:
        if not isinstance(base, HFGenerator):
            raise InputError(f"alignment adapters need an 'hf' generator, got {base!r}")
        self.base = base
        self.lock = threading.RLock()
        self.model: Any = None  # peft.PeftModel, created with the first adapter
        self._inner: HFGenerator | None = None
        self.loaded: dict[str, Path] = {}

    def load(self, record: AdapterRecord) -> str:
        """Load a stored adapter under its own name (no-op if loaded); checks it fits this base model and that
        its files match their recorded sha256."""
        if record.base_model != self.base.model_id:
            raise ArtifactError(f"adapter {record.name!r} was trained on {record.base_model!r}, "
                                f"not on {self.base.model_id!r}")
        with self.lock:
            if record.name in self.loaded:
                return record.name
            from pllm.adapt.generator import attach_adapter

            check_files(record)
            assert record.path is not None
            try:
                first = self.model is None
                self.model = attach_adapter(copy.deepcopy(self.base.model) if first else self.model, record)
                if first:
                    self._inner = HFGenerator.from_model(self.model, self.base.tokenizer, self.base.model_id)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise ArtifactError(f"cannot load adapter {record.name!r} from {record.path}: {exc}") from exc
            self.loaded[record.name] = record.path
            return record.name

    @property
    def inner(self) -> HFGenerator:
        return self._inner if self._inner is not None else self.base

    def adapter_names(self) -> list[str]:
        with self.lock:
            return [] if self.model is None else list(self.model.peft_config)

    @contextlib.contextmanager
    def active(self, adapter: str | None) -> Iterator[HFGenerator]:
        """Hold the lock with `adapter` active (None: every adapter off, i.e. the base model)."""
        with self.lock:
            if adapter is None:
                if self.model is None:
                    yield self.base
                else:
                    with self.model.disable_adapter():
                        yield self.inner
                return
            if self.model is None or adapter not in self.model.peft_config:
                raise NotFoundError(f"adapter {adapter!r} is not loaded; loaded: {self.adapter_names()}")
            self.model.set_adapter(adapter)
            yield self.inner

    def generator(self, adapter: str | None) -> AdapterGenerator:
        return AdapterGenerator(self, adapter)


_HOSTS: weakref.WeakKeyDictionary[HFGenerator, AdapterHost] = weakref.WeakKeyDictionary()
_HOSTS_LOCK = threading.Lock()


def host_for(base: HFGenerator) -> AdapterHost:
    """The process-wide host of `base` (one private model copy per base generator)."""
    with _HOSTS_LOCK:
        host = _HOSTS.get(base)
        if host is None:
            host = AdapterHost(base)
            _HOSTS[base] = host
        return host


class AdapterGenerator(Generator):
    """A `Generator` that runs the host's model with one adapter active (None: the base model)."""

    name = "hf+align"
    supports_scoring = True

    def __init__(self, host: AdapterHost, adapter: str | None) -> None:
        self.host = host
        self.adapter = adapter
        self.model_id = host.base.model_id + (f"+{adapter}" if adapter else "")

    def count_tokens(self, text: str) -> int:
        return self.host.base.count_tokens(text)

    def truncate_to_tokens(self, text: str, max_tokens: int) -> str:
        return self.host.base.truncate_to_tokens(text, max_tokens)

    def render(self, prompt: Prompt) -> str:
        return self.host.base.render(self.rewrite(prompt))

    def rewrite(self, prompt: Prompt) -> Prompt:
        """Hook for subclasses that condition the prompt (RiC); the identity here."""
        return prompt

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 stop: Sequence[str] | None = None, batch_size: int = 8) -> list[Generation]:
        prompts = [self.rewrite(p) for p in prompts]
        with self.host.active(self.adapter) as gen:
            return gen.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop,
                                batch_size=batch_size)

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[Sequence[str]] | Sequence[str], *,
              batch_size: int = 8, normalize: bool = False) -> np.ndarray:
        prompts = [self.rewrite(p) for p in prompts]
        with self.host.active(self.adapter) as gen:
            return gen.score(prompts, continuations, batch_size=batch_size, normalize=normalize)
