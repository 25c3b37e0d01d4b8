"""The adapter jobs the CLI, the benchmark and Ray workers run: read users' items from a source, train
the shared task adapter, the per-user adapters (resumable: up-to-date ones are skipped), the group
adapters, and rebuild stale shared adapters after a user was forgotten."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pllm.adapt.config import AdaptConfig
from pllm.adapt.data import user_items
from pllm.adapt.groups import centroid_of, cluster_users, history_matrix
from pllm.adapt.store import BASE_OWNER, AdapterRecord, AdapterStore
from pllm.adapt.train import merge_task_adapter
from pllm.errors import InputError
from pllm.models.hf import HFGenerator
from pllm.tasks.spec import TaskSpec
from pllm.types import ProfileItem

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]  # (label, done, total)


def source_for(data: str | Path, split: str) -> dict[str, Any]:
    """A data source record (saved in shared adapters' records, so retrain-stale can reread it)."""
    folder = Path(data)
    if folder.is_file():
        return {"questions": str(folder.resolve())}
    path = folder / f"{split}_questions.json"
    if not path.is_file():
        raise InputError(f"no {split}_questions.json in the task folder", source=str(folder))
    return {"questions": str(path.resolve())}


def load_items(spec: TaskSpec, source: dict[str, Any], users: Sequence[str] | None = None,
               store: Any = None) -> dict[str, list[ProfileItem]]:
    """user -> items (oldest first) from a questions file or from the user store."""
    if "questions" in source:
        from pllm.tasks.lamp import read_questions

        return user_items(read_questions(source["questions"], spec=spec), users)
    if "db" in source:
        from pllm.adapt.data import sort_items
        from pllm.users.store import open_store

        db = store if store is not None and store.location == source["db"] else open_store(source["db"])
        wanted = list(users) if users is not None else [u.id for u in db.list_users()]
        return {u: sort_items(db.get_items(user_id=u)) for u in wanted}
    raise InputError(f"unknown data source {source!r}")


@dataclass
class UserJobReport:
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already up to date
    cold: list[str] = field(default_factory=list)  # too few items: served by their group's adapter
    records: dict[str, AdapterRecord] = field(default_factory=dict)


def prepare_base(generator: HFGenerator, spec: TaskSpec, store: AdapterStore) -> AdapterRecord | None:
    """Merge the task's shared adapter (when there is a fresh one) into the generator's weights."""
    record = store.get(spec.name, "task", BASE_OWNER)
    if record is None:
        return None
    if record.stale:
        raise InputError(f"the task adapter of {spec.name} is stale (a member was forgotten); "
                         "run `pllm adapt retrain-stale` first")
    merge_task_adapter(generator, record)
    return record


def _train(generator: HFGenerator, spec: TaskSpec, *, config: AdaptConfig, **kwargs: Any
           ) -> tuple[AdapterRecord, bool]:
    """Train (or skip, if up to date) one adapter with the recipe's registered method (`train_adapter` for the
    built-in ones; a plugin method may wrap it)."""
    return config.adapter_method.train_fn(generator, spec, config=config, **kwargs)


def train_task(generator: HFGenerator, spec: TaskSpec, items: dict[str, list[ProfileItem]], config: AdaptConfig,
               store: AdapterStore, *, source: dict[str, Any], max_pairs: int | None = None, force: bool = False,
               progress: Progress | None = None) -> tuple[AdapterRecord, bool]:
    """The shared task adapter: every training user's items (pairs rendered per user), sampled to
    `max_pairs`. Train it before the user adapters: they are trained on top of it (merged)."""
    cb = (lambda s, t: progress("task adapter", s, t)) if progress else None
    return _train(generator, spec, kind="task", owner=BASE_OWNER, items_by_user=items, config=config,
                  store=store, source=source, max_pairs=max_pairs, force=force, step_callback=cb)


def train_users(generator: HFGenerator, spec: TaskSpec, items: dict[str, list[ProfileItem]], config: AdaptConfig,
                store: AdapterStore, *, task_record: AdapterRecord | None = None, force: bool = False,
                progress: Progress | None = None) -> UserJobReport:
    """One private adapter per user with at least `config.min_items` items, in the calling process."""
    report = UserJobReport()
    users = sorted(items)
    for n, user in enumerate(users):
        if len(items[user]) < config.min_items:
            report.cold.append(user)
        else:
            record, trained = _train(generator, spec, kind="user", owner=user, items_by_user={user: items[user]},
                                     config=config, store=store, task_record=task_record, force=force)
            (report.trained if trained else report.skipped).append(user)
            report.records[user] = record
        if progress:
            progress("user adapters", n + 1, len(users))
    return report


def train_groups(generator: HFGenerator, spec: TaskSpec, items: dict[str, list[ProfileItem]], config: AdaptConfig,
                 store: AdapterStore, *, n_groups: int, embedder: str, source: dict[str, Any],
                 task_record: AdapterRecord | None = None, max_pairs: int | None = None, force: bool = False,
                 progress: Progress | None = None) -> list[AdapterRecord]:
    """Cluster the users and train one adapter per cluster; older groups beyond `n_groups` are removed."""
    members, centroids = cluster_users(spec, items, n_groups, embedder=embedder, seed=config.seed)
    out = []
    for n, gid in enumerate(sorted(members)):
        record, _ = _train(generator, spec, kind="group", owner=gid,
                           items_by_user={u: items[u] for u in members[gid]}, config=config, store=store,
                           task_record=task_record, source=source, centroid=centroids[gid],
                           embedder=embedder, max_pairs=max_pairs, force=force)
        out.append(record)
        if progress:
            progress("group adapters", n + 1, len(members))
    for old in store.records(spec.name, "group"):
        if old.owner not in members:
            store.delete(spec.name, "group", old.owner)
    return out


def retrain_stale(generator: HFGenerator, spec: TaskSpec, store: AdapterStore, *, db: Any = None,
                  progress: Progress | None = None) -> list[AdapterRecord]:
    """Rebuild every stale task/group adapter from its recorded source, without the forgotten users
    (their ids were already dropped from `members`); a group's centroid is recomputed from the rest."""
    rebuilt: list[AdapterRecord] = []
    stale = store.stale(spec.name)
    task_first = sorted(stale, key=lambda r: r.kind != "task")
    task_record: AdapterRecord | None = None
    for n, record in enumerate(task_first):
        config = AdaptConfig(**record.config)
        if not record.members:
            store.delete(spec.name, record.kind, record.owner)
            log.warning("%s adapter %s has no members left: deleted", record.kind, record.owner)
            continue
        items = load_items(spec, record.source, None, store=db)
        items = {u: items[u] for u in record.members if u in items}
        if not items:
            raise InputError(f"{record.kind} adapter {record.owner}: none of its members are in {record.source}")
        max_pairs = record.n_pairs if record.n_pairs < sum(len(v) for v in items.values()) else None
        if record.kind == "task":
            new, _ = _train(generator, spec, kind="task", owner=record.owner, items_by_user=items,
                            config=config, store=store, source=record.source, max_pairs=max_pairs, force=True)
            rebuilt.append(new)
            if record.owner == BASE_OWNER:  # groups retrain on the new shared weights
                task_record = new
                merge_task_adapter(generator, task_record)
        else:
            if task_record is None and not hasattr(generator.model, "peft_config"):
                task_record = _maybe_merge(generator, spec, store)
            vecs = history_matrix(spec, record.embedder or "", items.values())
            new, _ = _train(generator, spec, kind="group", owner=record.owner, items_by_user=items,
                            config=config, store=store, task_record=task_record, source=record.source,
                            centroid=centroid_of(vecs), embedder=record.embedder, max_pairs=max_pairs,
                            force=True)
            rebuilt.append(new)
        if progress:
            progress("stale adapters", n + 1, len(task_first))
    return rebuilt


def _maybe_merge(generator: HFGenerator, spec: TaskSpec, store: AdapterStore) -> AdapterRecord | None:
    record = store.get(spec.name, "task", BASE_OWNER)
    if record is None or record.stale:
        return None
    merge_task_adapter(generator, record)
    return record
