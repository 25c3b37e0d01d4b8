"""Scale-out: per-user adapters trained as Ray tasks across a cluster, with the same outputs as the
local path (the same `train_adapter`, the same folders and records).

Each task trains one user. A worker process builds its generator once (from a picklable factory) and
reuses it for every later task it runs, so the model loads once per worker, not once per user. Workers
write the adapter folders (atomically, as locally); the driver indexes the returned records in the
user store, so only one process writes the database. The adapter root must be on storage every node
sees (one machine, or a shared filesystem).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pllm.adapt.config import AdaptConfig
from pllm.adapt.jobs import Progress, UserJobReport
from pllm.adapt.store import AdapterRecord, AdapterStore
from pllm.errors import PllmError
from pllm.tasks.spec import TaskSpec
from pllm.types import ProfileItem

_WORKER_STATE: dict[str, Any] = {}


def _worker_generator(factory: Callable[[], Any], key: str, root: str, task_path: str | None) -> tuple[Any, Any]:
    """The worker's generator (built once per factory key), with the task adapter merged if any."""
    if _WORKER_STATE.get("key") != key:
        import torch

        from pllm.adapt.train import merge_task_adapter

        torch.set_num_threads(1)  # one CPU per Ray task
        generator = factory()
        task_record = None
        if task_path is not None:
            task_record = AdapterStore(root).load_record(task_path)
            merge_task_adapter(generator, task_record)
        _WORKER_STATE.update(key=key, generator=generator, task_record=task_record)
    return _WORKER_STATE["generator"], _WORKER_STATE["task_record"]


def _train_one(factory: Callable[[], Any], key: str, spec: TaskSpec, user: str, items: list[ProfileItem],
               config: dict[str, Any], root: str, task_path: str | None, force: bool) -> tuple[dict, str, bool]:
    from pllm.adapt.train import train_adapter

    generator, task_record = _worker_generator(factory, key, root, task_path)
    record, trained = train_adapter(generator, spec, kind="user", owner=user, items_by_user={user: items},
                                    config=AdaptConfig(**config), store=AdapterStore(root),
                                    task_record=task_record, force=force)
    return record.to_json(), str(record.path), trained


def train_users_ray(factory: Callable[[], Any], spec: TaskSpec, items: dict[str, list[ProfileItem]],
                    config: AdaptConfig, store: AdapterStore, *, task_record: AdapterRecord | None = None,
                    address: str | None = None, num_cpus: int | None = None, force: bool = False,
                    progress: Progress | None = None) -> UserJobReport:
    """Train every user with enough items as one Ray task (1 CPU each); resumable like the local path."""
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        raise PllmError("--ray needs the `ray` package: pip install 'ray[default]'") from None
    started_here = False
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                 ignore_reinit_error=True, log_to_driver=False)
        started_here = True
    report = UserJobReport()
    try:
        remote = ray.remote(num_cpus=1)(_train_one)
        key = uuid.uuid4().hex  # one generator build per worker per call
        task_path = str(task_record.path) if task_record is not None else None
        pending: dict[Any, str] = {}
        users = sorted(items)
        done = 0
        for user in users:
            if len(items[user]) < config.min_items:
                report.cold.append(user)
                done += 1
                continue
            ref = remote.remote(factory, key, spec, user, items[user], asdict(config), str(store.root), task_path,
                                force)
            pending[ref] = user
        if progress:
            progress("user adapters", done, len(users))
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                user = pending.pop(ref)
                data, path, trained = ray.get(ref)
                record = AdapterRecord.from_json(data, Path(path))
                store.index(record)
                (report.trained if trained else report.skipped).append(user)
                report.records[user] = record
                done += 1
                if progress:
                    progress("user adapters", done, len(users))
    finally:
        if started_here:
            ray.shutdown()
    report.trained.sort()
    report.skipped.sort()
    return report
