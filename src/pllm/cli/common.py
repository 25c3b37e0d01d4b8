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

MODEL_HELP = "Model id/path, or an embedded model by name (`pllm models list`; default: smollm2-135m-instruct)."

DbOption = typer.Option(None, "--db", help="SQLite store path (default: $PLLM_HOME/pllm.sqlite3).")


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
