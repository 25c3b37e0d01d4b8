"""The server's built-in personalizers, registered in `PERSONALIZERS` here and nowhere else:

- `user-adapter`: the user's own peft adapter (`pllm adapt train`), served by `pllm.adapt.AdapterGenerator`
  on a private copy of the base model (the task adapter, if any, merged into that copy only);
- `preference`: the user's alignment data (`pllm align`): their DPO adapter, else a soup at their preference
  vector, else the RiC adapter conditioned on it (`pllm.align.serving.generator_for_user`);
- `soft`: the server's soft-prompt user encoder (`pllm serve --soft PATH`), reading the user's stored
  memories as soft tokens in front of the prompt; retrieved memories stay in the text (soft-fused).

A request's `adapter` names one, or "auto" takes the first of `AUTO_ORDER` that has something for the user
(each answers None otherwise), or "none" keeps memory-only chat. The adapters and preferences features (their
tables and forget hooks) are registered with the store at server start-up (`pllm.serve.features`), so
`DELETE /v1/users/{id}` removes the user's adapter files and rows too. Models, torch and peft are imported
only when a personalizer first serves a user.
"""

from __future__ import annotations

import dataclasses
import json
import string
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pllm.adapt.store import AdapterStore, adapter_name, engine_name
from pllm.align.store import PreferenceStore
from pllm.errors import ArtifactError, InputError
from pllm.models.base import DelegatingGenerator, Generation, Generator, Prompt
from pllm.serve.chat import PERSONALIZERS, ChatContext, ChatPersonalizer
from pllm.types import ProfileItem
from pllm.users.store import UserStore

AUTO_ORDER = ("user-adapter", "preference", "soft")


def _is_hf(generator: Generator) -> bool:
    """Whether `generator` is a local transformers model (adapters and soft tokens need one); never imports
    torch: an `HFGenerator` exists only once its module was imported."""
    hf = sys.modules.get("pllm.models.hf")
    return hf is not None and isinstance(generator, hf.HFGenerator)


class _Serialized(DelegatingGenerator):
    """A generator used by one request at a time: per-user adapters load into one shared model copy."""

    def __init__(self, inner: Generator, lock: threading.RLock) -> None:
        self.base, self.lock = inner, lock
        self.name, self.model_id, self.supports_scoring = inner.name, inner.model_id, inner.supports_scoring

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 stop: Sequence[str] | None = None, batch_size: int = 8) -> list[Generation]:
        with self.lock:
            return self.base.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop,
                                       batch_size=batch_size)

    def stream(self, prompt: Prompt, *, max_new_tokens: int = 64, temperature: float = 0.0) -> Iterator[str]:
        with self.lock:
            yield from self.base.stream(prompt, max_new_tokens=max_new_tokens, temperature=temperature)


class UserAdapterPersonalizer(ChatPersonalizer):
    """The user's own adapter from `pllm adapt` (folders beside the store, indexed in its `adapters` table): loaded
    on a local transformers model, or, on a serving engine (the openai backend to vLLM with `--lora-modules`
    from `pllm adapt list --lora-modules`), named as the request's model (`engine_name`)."""

    name = "user-adapter"

    def __init__(self, store: UserStore) -> None:
        self.store = store
        self.lock = threading.RLock()
        self._generators: dict[str, Any] = {}  # task -> AdapterGenerator over a private copy of the base model
        self._served: dict[tuple[str, str], float] = {}  # (task, user) -> created_at of the adapter loaded

    def _find(self, ctx: ChatContext) -> tuple[str, float, Path] | None:
        """(task, created_at, folder) of the user's adapter: the configured task's, else the user's only one."""
        rows = AdapterStore(db=self.store).indexed("user", ctx.store_user_id or "")
        task = ctx.config.adapt_task if ctx.config is not None else None
        if task is not None:
            rows = [r for r in rows if r[0] == task]
        if len(rows) > 1:
            raise InputError(f"user {ctx.user!r} has adapters for several tasks {sorted(r[0] for r in rows)}; "
                             "start the server with --adapt-task TASK", field="adapter")
        return rows[0] if rows else None

    def _generator(self, task: str, folder: Path, base: Any) -> Any:
        from pllm.adapt.generator import AdapterGenerator

        if task not in self._generators:  # peft wraps the model it loads into: never the server's shared one
            private = base.private_copy(own_cache=True)  # its own cache entries: the adapters' weights compute them
            adapters = AdapterStore(folder.parents[2], db=self.store)  # <root>/<task>/users/<owner>
            self._generators[task] = AdapterGenerator(private, task, store=adapters, cold_start_items=0)
        return self._generators[task]

    def personalize(self, ctx: ChatContext) -> ChatContext | None:
        if ctx.store_user_id is None:
            return None
        if ctx.generator.serves_engine_adapters:  # the engine holds the adapters: name the user's one
            found = self._find(ctx)
            if found is None:
                return None
            ctx.generator = ctx.generator.with_engine_adapter(engine_name(found[0], "user", ctx.store_user_id))
            return ctx
        if not _is_hf(ctx.generator):
            return None
        found = self._find(ctx)
        if found is None:
            return None
        task, created, folder = found
        with self.lock:
            gen = self._generator(task, folder, ctx.generator)
            key = (task, ctx.store_user_id)
            if key in self._served and self._served[key] != created:  # retrained: drop the cached route and weights
                gen.invalidate()
            self._served[key] = created
            record = gen.store.get(task, "user", ctx.store_user_id, verify=False)
            if record is None:
                raise ArtifactError(f"the {task} adapter of user {ctx.user!r} is indexed at {folder}, which is "
                                    f"not under {gen.store.root}; serve one adapters folder per task")
            if record.stale or record.base_key != gen.base_key:
                raise ArtifactError(f"the {task} adapter of user {ctx.user!r} ({folder}) was trained on other base "
                                    f"weights than this server's {gen.base.model_id!r}; retrain it")
        ctx.generator = _Serialized(gen, self.lock)
        return ctx

    def forget(self, store_user_id: str) -> int:
        """Unload the user's adapter (its files and rows went with the store's forget hook)."""
        with self.lock:
            tasks = [t for t, u in self._served if u == store_user_id]
            for task in tasks:
                del self._served[(task, store_user_id)]
                gen = self._generators[task]
                if adapter_name("user", store_user_id) in gen.loaded_adapters:
                    gen.invalidate()
            for gen in self._generators.values():  # their chats' cached prefixes, through any adapter
                if gen.base.prefix_cache is not None:
                    gen.base.prefix_cache.forget(store_user_id)
        return len(tasks)


class PreferencePersonalizer(ChatPersonalizer):
    """The user's alignment data from `pllm align` (assignment, preference vector) in the store."""

    name = "preference"

    def __init__(self, store: UserStore) -> None:
        self.store = store
        self.prefs = PreferenceStore(store)

    def personalize(self, ctx: ChatContext) -> ChatContext | None:
        uid = ctx.store_user_id
        if uid is None or not _is_hf(ctx.generator):
            return None
        assigned = self.prefs.get_assignment(user_id=uid)
        if not assigned and self.prefs.get_vector(user_id=uid) is None:
            return None  # the common case, answered without importing the alignment models
        from pllm.align.serving import generator_for_user

        gen = generator_for_user(self.store, ctx.generator, user_id=uid)
        if gen is ctx.generator:
            return None
        ctx.generator = gen
        return ctx


def _template_fields(*templates: str | None) -> set[str]:
    return {name for t in templates if t for _, name, _, _ in string.Formatter().parse(t) if name}


class SoftPersonalizer(ChatPersonalizer):
    """The server's soft-prompt user encoder (`ServeConfig.soft`) over the user's stored memories."""

    name = "soft"

    def __init__(self, store: UserStore) -> None:
        self.store = store
        self.lock = threading.Lock()
        self.generator: Any = None  # the SoftPromptGenerator, loaded on first use

    def _generator(self, ctx: ChatContext, path: str) -> Any:
        from pllm.soft.model import CONFIG_FILE, load_soft_generator

        with self.lock:
            if self.generator is None:
                try:
                    wanted = json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8")).get("embedder")
                except (OSError, json.JSONDecodeError) as exc:
                    raise ArtifactError(f"{path} is not a soft-prompt encoder: {exc}") from None
                embedder = ctx.embedder if ctx.config is not None and ctx.config.embedder == wanted else None
                # No persistent embedding cache: the store's is not tenant-scoped; the generator's LRU is.
                self.generator = load_soft_generator(path, ctx.generator,
                                                     embedder=embedder() if embedder is not None else None)
            return self.generator

    def personalize(self, ctx: ChatContext) -> ChatContext | None:
        path = ctx.config.soft if ctx.config is not None else None
        question = ctx.prompt.question
        if not path or ctx.store_user_id is None or question is None or not _is_hf(ctx.generator):
            return None
        gen = self._generator(ctx, path)
        spec = gen.spec
        needs = _template_fields(spec.item_text, spec.item_output)
        uid, limit = ctx.store_user_id, gen.config.max_items  # the encoder reads the latest max_items items
        total = self.store.count_items(user_id=uid)
        items: list[ProfileItem] = [it for it in self.store.get_items(user_id=uid, limit=limit,
                                                                      offset=max(0, total - limit))
                                    if needs <= set(it.fields)]  # the memories the encoder can read
        if not items:
            return None
        # The chat turn is the query: it stands in for every query field of the encoder's task.
        query = {**{f: question.input for f in _template_fields(spec.query_text)}, **question.query}
        ctx.prompt = dataclasses.replace(ctx.prompt, question=dataclasses.replace(question, query=query,
                                                                                  profile=items))
        ctx.generator = gen
        return ctx

    def forget(self, store_user_id: str) -> int:
        """Drop the user's cached item vectors (nothing of theirs is persisted by this personalizer)."""
        return self.generator.forget_user(store_user_id) if self.generator is not None else 0


PERSONALIZERS.register("user-adapter", UserAdapterPersonalizer, replace=True)
PERSONALIZERS.register("preference", PreferencePersonalizer, replace=True)
PERSONALIZERS.register("soft", SoftPersonalizer, replace=True)
