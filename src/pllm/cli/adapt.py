"""`pllm adapt`: train task, user and group adapters, list them, and rebuild stale shared ones."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from pllm.cli.common import MODEL_HELP, DbOption, TaskOption, console, err_console, open_db, progress_bar, tracker

if TYPE_CHECKING:
    from pllm.adapt.store import AdapterStore
    from pllm.models.hf import HFGenerator
    from pllm.tasks.spec import TaskSpec

app = typer.Typer(no_args_is_help=True, help="Per-user (and group) peft adapters: train, list, retrain stale.")

AdaptersDirOption = typer.Option(None, "--adapters-dir", help="Adapter folder (default: adapters/ beside the store).")
BackendOption = typer.Option("hf", "--backend", help="Generator backend (hf).")
ModelOption = typer.Option(None, "--model", help=MODEL_HELP)


def _config(method: str, r: int, epochs: int, lr: float, max_items: int | None, min_items: int, k: int,
            retriever: str, seed: int, max_steps: int | None, top_layers: int | None = None):  # noqa: ANN202
    from pllm.adapt.config import AdaptConfig

    return AdaptConfig(method=method, r=r, epochs=epochs, lr=lr, max_items=max_items, min_items=min_items, k=k,
                       retriever=retriever, seed=seed, max_steps=max_steps, top_layers=top_layers)


@app.command("train")
def train(
    task: str = TaskOption,
    data: Path | None = typer.Option(None, "--data", help="Task folder ({split}_questions.json) or questions file; "
                                     "omit to read users' items from the store."),
    split: str = typer.Option("test", "--split", help="Split whose users get private adapters."),
    users: str | None = typer.Option(None, "--users", help="Comma-separated user ids (default: all)."),
    method: str = typer.Option("lora", "--method", help="Adapter method (pllm.adapt.methods): lora | ia3 | "
                                "prompt-tuning."),
    r: int = typer.Option(8, "--r", help="LoRA rank."),
    top_layers: int | None = typer.Option(None, "--top-layers", help="Adapt only the top N layers (faster "
                                          "training: backpropagation stops there)."),
    epochs: int = typer.Option(2, "--epochs", help="Epochs over each user's items."),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate."),
    max_items: int | None = typer.Option(100, "--max-items", help="Latest N items per user."),
    min_items: int = typer.Option(10, "--min-items", help="Users with fewer items get no private adapter."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Cap optimizer steps per adapter."),
    k: int = typer.Option(0, "--k", help="Retrieved demonstrations inside training texts."),
    retriever: str = typer.Option("none", "--retriever", help="Retriever for those demonstrations."),
    seed: int = typer.Option(0, "--seed", help="Seed."),
    task_adapter: bool = typer.Option(False, "--task-adapter/--no-task-adapter",
                                      help="First train the shared task adapter on the train split (merged "
                                           "into the base before user adapters)."),
    task_pairs: int = typer.Option(800, "--task-pairs", help="Training pairs sampled for the task adapter."),
    groups: int = typer.Option(0, "--groups", help="Also train this many k-means group adapters (train split)."),
    group_pairs: int = typer.Option(400, "--group-pairs", help="Training pairs sampled per group adapter."),
    embedder: str = typer.Option("minilm", "--embedder", help="Embedder for grouping users."),
    force: bool = typer.Option(False, "--force", help="Retrain even up-to-date adapters."),
    ray: bool = typer.Option(False, "--ray", help="Train user adapters as Ray tasks."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster address (default: local)."),
    ray_cpus: int | None = typer.Option(None, "--ray-cpus", help="CPUs for a local Ray (default: all)."),
    backend: str = BackendOption,
    model: str | None = ModelOption,
    adapters_dir: Path | None = AdaptersDirOption,
    db: str | None = DbOption,
) -> None:
    """Train private adapters for users (resumable), optionally after a shared task adapter and with groups."""
    from pllm.adapt.jobs import load_items, prepare_base, source_for, train_groups, train_task, train_users
    from pllm.adapt.store import AdapterStore
    from pllm.errors import InputError
    from pllm.models import GENERATORS
    from pllm.retrieval.embedders import EMBEDDERS
    from pllm.tasks.spec import get_task

    spec = get_task(task)
    # Everything a user can mistype is checked before the model loads (seconds to minutes).
    config = _config(method, r, epochs, lr, max_items, min_items, k, retriever, seed, max_steps, top_layers)
    if k == 0 and retriever != "none":
        raise InputError(f"--k 0 puts no demonstrations in training texts with --retriever {retriever}: give "
                         "--k >= 1, or --retriever none", field="k")
    wanted = [u.strip() for u in users.split(",") if u.strip()] if users else None
    GENERATORS.get(backend)
    if (task_adapter or groups) and data is None:
        raise InputError("--task-adapter and --groups read the train split: pass --data", field="data")
    if groups:
        EMBEDDERS.get(embedder)
    data_source = source_for(data, split) if data is not None else None
    train_source = source_for(data, "train") if data is not None and (task_adapter or groups) else None
    generator = _load_hf(backend, model)
    with open_db(db) as store, progress_bar() as bar:
        adapters = AdapterStore(adapters_dir, db=store)
        progress = tracker(bar)
        source = data_source or {"db": store.location}
        if train_source is not None:
            train_items = load_items(spec, train_source)
        if task_adapter:
            assert train_source is not None  # --task-adapter needs --data (checked above)
            record, trained = train_task(generator, spec, train_items, config, adapters, source=train_source,
                                         max_pairs=task_pairs, force=force, progress=progress)
            console.print(f"task adapter: {'trained' if trained else 'up to date'} ({record.n_pairs} pairs)")
        task_record = prepare_base(generator, spec, adapters)
        if groups:
            assert train_source is not None  # --groups needs --data (checked above)
            recs = train_groups(generator, spec, train_items, config, adapters, n_groups=groups, embedder=embedder,
                                source=train_source, task_record=task_record, max_pairs=group_pairs, force=force,
                                progress=progress)
            console.print(f"group adapters: {', '.join(f'{g.owner} ({len(g.members)} users)' for g in recs)}")
        items = load_items(spec, source, wanted, store=store)
        if ray:
            from pllm.adapt.distributed import train_users_ray

            factory = functools.partial(_load_hf, backend, model)
            report = train_users_ray(factory, spec, items, config, adapters, task_record=task_record,
                                     address=ray_address, num_cpus=ray_cpus, force=force, progress=progress)
        else:
            report = train_users(generator, spec, items, config, adapters, task_record=task_record, force=force,
                                 progress=progress)
    console.print(f"user adapters: {len(report.trained)} trained, {len(report.skipped)} up to date, "
                  f"{len(report.cold)} cold-start users (< {min_items} items: served by their group) -> "
                  f"{adapters.root}")


def _load_hf(backend: str, model: str | None) -> HFGenerator:
    """The backend's generator, which must be a local transformers model (adapters train its weights); also
    the picklable factory Ray workers call."""
    from pllm.errors import InputError
    from pllm.models import load_generator
    from pllm.models.hf import HFGenerator

    generator = load_generator(backend, model)
    if not isinstance(generator, HFGenerator):
        raise InputError(f"adapters need a local transformers model; backend {backend!r} has none", field="backend")
    return generator


@contextmanager
def _task_adapters(task: str, adapters_dir: Path | None, db: str | None) -> Iterator[tuple[TaskSpec, AdapterStore]]:
    """The task's spec and the adapter store, indexed in the user store `db` (open for the block)."""
    from pllm.adapt.store import AdapterStore
    from pllm.tasks.spec import get_task

    spec = get_task(task)
    with open_db(db) as store:
        yield spec, AdapterStore(adapters_dir, db=store)


@app.command("list")
def list_(
    task: str = TaskOption,
    adapters_dir: Path | None = AdaptersDirOption,
    db: str | None = DbOption,
    lora_modules: bool = typer.Option(False, "--lora-modules", help="Print the users' adapters as vLLM "
                                      "`--lora-modules` values (NAME=PATH, one a line; the openai backend sends "
                                      "NAME as a user's model); those vLLM cannot serve are named on stderr."),
) -> None:
    """List a task's adapters with their size, items, training time, last loss and staleness."""
    from pllm.adapt.store import KINDS

    with _task_adapters(task, adapters_dir, db) as (spec, adapters):
        if lora_modules:
            served, skipped = adapters.lora_modules(spec.name)
            for name, record in served:
                print(f"{name}={record.path}")
            for why in skipped:
                err_console.print(f"left out: {why}")
            return
        table = Table(title=f"adapters for {spec.name} ({adapters.root})")
        for col in ("kind", "owner", "method", "items", "members", "KiB", "train s", "last loss", "stale"):
            table.add_column(col)
        for kind in KINDS:
            for r in adapters.records(spec.name, kind):
                table.add_row(kind, r.owner, r.method, str(r.n_items), str(len(r.members)) if r.members else "—",
                              f"{r.bytes / 1024:.0f}", f"{r.train_seconds:.1f}",
                              f"{r.losses[-1]:.3f}" if r.losses else "—", "yes" if r.stale else "no")
    console.print(table)


@app.command("retrain-stale")
def retrain_stale(
    task: str = TaskOption,
    backend: str = BackendOption,
    model: str | None = ModelOption,
    adapters_dir: Path | None = AdaptersDirOption,
    db: str | None = DbOption,
) -> None:
    """Rebuild task/group adapters marked stale by `pllm users forget`, without the forgotten users."""
    from pllm.adapt.jobs import retrain_stale as run

    with _task_adapters(task, adapters_dir, db) as (spec, adapters), progress_bar() as bar:
        if not adapters.stale(spec.name):
            console.print("no stale adapters")
            return
        rebuilt = run(_load_hf(backend, model), spec, adapters, db=adapters.db, progress=tracker(bar))
    console.print(f"rebuilt: {', '.join(f'{r.kind} {r.owner} ({len(r.members)} users)' for r in rebuilt) or 'none'}")
