"""Options and helpers shared by CLI commands."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pllm.users.store import SQLiteUserStore

console = Console()
err_console = Console(stderr=True)

DbOption = typer.Option(None, "--db", help="SQLite store path (default: $PLLM_HOME/pllm.sqlite3).")


def task_callback(value: str | None) -> str | None:
    """`--task` callback: an unknown task fails while the options are parsed, before anything loads, and a
    name matched loosely (`lamp-3`, `LaMP_3`) is replaced by the canonical one, which is reported."""
    if value is None:
        return None
    from pllm.tasks.spec import TASKS, get_task

    spec = get_task(value)
    if value not in TASKS and spec.name in TASKS and TASKS.get(spec.name) is spec:  # matched by a looser name
        err_console.print(f"task: {spec.name} (from {value!r})")
        return spec.name
    return value


def open_db(db: Path | None) -> SQLiteUserStore:
    return SQLiteUserStore(db)


@contextmanager
def progress_bar(description: str = "working") -> Iterator[Progress]:
    """A rich progress bar (to stderr) for anything that takes more than a second."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=False) as progress:
        yield progress


def tracker(progress: Progress):  # noqa: ANN201
    """A (label, done, total) callback that keeps one bar per label."""
    tasks: dict[str, int] = {}

    def update(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = progress.add_task(label, total=total)
        progress.update(tasks[label], completed=done, total=total)

    return update
