"""Options and helpers shared by CLI commands."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pllm.users.store import UserStore

if TYPE_CHECKING:
    from pllm.eval.tables import Table

console = Console()
err_console = Console(stderr=True)

MODEL_HELP = "Model id/path, or an embedded model by name (`pllm models list`; default: smollm2-135m-instruct)."

DbOption = typer.Option(None, "--store", "--db", help="The user store: a SQLite path or a "
                        "postgresql://user:pass@host/db URL (default: $PLLM_STORE, else $PLLM_HOME/pllm.sqlite3).")

PROGRESS_SECONDS_ENV = "PLLM_PROGRESS_SECONDS"  # seconds between plain progress lines (0: every update)


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


TaskOption = typer.Option(..., "--task", help="Task name (see `pllm tasks list`) or spec file.", callback=task_callback)


def open_db(db: str | None) -> UserStore:
    """The user store with every built-in feature registered (so `pllm users forget` reaches them all)."""
    from pllm.serve.features import open_with_features

    return open_with_features(db)


def duration(seconds: float) -> str:
    """`1h02m`, `1m24s`, `9s`: short enough for a log line."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0.0
    started: float = 0.0
    start_done: float = 0.0  # completed when first seen: a resumed job's rate counts only new work
    printed: float = -1.0  # when its last line was written
    printed_done: float | None = None
    finished: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class PlainProgress:
    """The part of `rich.progress.Progress` that commands use (`add_task`, `update`, `advance`), for output
    that is not a terminal: a bar would only appear in a log once the job ends, so instead one line per
    task (`[pllm] bm25@4: 40/200 (20%) 1.9 q/s, ETA 1m24s`) at most every `every` seconds, when the task
    completes, and a still-running line for a task that has not moved for a while. Flushed each time."""

    def __init__(self, stream: TextIO | None = None, *, every: float = 10.0, unit: str = "it",
                 clock: Any = time.monotonic) -> None:
        self.stream, self.every, self.unit, self.clock = stream, every, unit, clock
        self.tasks: dict[int, _Task] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PlainProgress:
        if self.every > 0:
            self._thread = threading.Thread(target=self._beat, name="pllm-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        with self._lock:
            for task in self.tasks.values():
                if not task.finished and (task.total is None or task.printed_done != task.completed):
                    self._write(task, self.clock(), final=exc[0] is None and task.total is None)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **extra: Any) -> TaskID:
        with self._lock:
            now = self.clock()
            task_id = TaskID(len(self.tasks))
            self.tasks[task_id] = _Task(description, total, completed, now, completed, printed=now, extra=extra)
            return task_id

    def update(self, task_id: int, *, completed: float | None = None, total: float | None = None,
               advance: float | None = None, description: str | None = None, **_: Any) -> None:
        with self._lock:
            task = self.tasks[task_id]
            if total is not None:
                task.total = total
            if description is not None:
                task.description = description
            if completed is not None:
                task.completed = completed
            if advance is not None:
                task.completed += advance
            now = self.clock()
            done = task.total is not None and task.completed >= task.total
            if done and not task.finished:
                task.finished = True
                self._write(task, now, final=True)
            elif not done and (self.every <= 0 or now - task.printed >= self.every):
                self._write(task, now)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def line(self, task: _Task, now: float, *, final: bool = False) -> str:
        elapsed = max(now - task.started, 1e-9)
        head = f"[pllm] {task.description}: "
        if task.total is None:
            return head + (f"done in {duration(elapsed)}" if final else f"running, {duration(elapsed)} elapsed")
        total = task.total
        pct = 100 * task.completed / total if total else 100.0
        rate = (task.completed - task.start_done) / elapsed
        text = f"{task.completed:g}/{total:g} ({pct:.0f}%)" + (f" {rate:.1f} {self.unit}/s" if rate > 0 else "")
        if final:
            return head + text + f", done in {duration(elapsed)}"
        eta = f"ETA {duration((total - task.completed) / rate)}" if rate > 0 else f"{duration(elapsed)} elapsed"
        return head + text + ", " + eta

    def _write(self, task: _Task, now: float, *, final: bool = False) -> None:
        stream = self.stream or sys.stderr  # looked up late: test runners swap sys.stderr
        stream.write(self.line(task, now, final=final) + "\n")
        stream.flush()
        task.printed, task.printed_done = now, task.completed

    def _beat(self) -> None:
        """Lines for tasks that moved without an update crossing the interval, and a still-running line
        every six intervals for one that has not moved (one long batch, a training run without steps)."""
        while not self._stop.wait(self.every):
            with self._lock:
                now = self.clock()
                for task in self.tasks.values():
                    if task.finished or now - task.printed < self.every:
                        continue
                    if task.printed_done != task.completed or now - task.printed >= 6 * self.every:
                        self._write(task, now)


def progress_seconds() -> float:
    """Seconds between plain progress lines: $PLLM_PROGRESS_SECONDS, else 10."""
    raw = os.environ.get(PROGRESS_SECONDS_ENV, "")
    try:
        return max(float(raw), 0.0) if raw.strip() else 10.0
    except ValueError:
        return 10.0


@contextmanager
def progress_bar(description: str = "working", *, unit: str = "it") -> Iterator[Progress | PlainProgress]:
    """Progress for anything that takes more than a second, on stderr: a live rich bar on a terminal,
    plain periodic lines (done/total, rate, ETA) when stderr is a file or a pipe. `unit` names what is
    counted in the plain lines' rate (`q` for questions)."""
    if err_console.is_terminal:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                      console=err_console, transient=False) as progress:
            yield progress
    else:
        with PlainProgress(every=progress_seconds(), unit=unit) as plain:
            yield plain


def tracker(progress: Progress | PlainProgress):  # noqa: ANN201
    """A (label, done, total) callback that keeps one bar per label."""
    tasks: dict[str, TaskID] = {}

    def update(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = progress.add_task(label, total=total, completed=done)  # a resumed job's rate
        progress.update(tasks[label], completed=done, total=total)

    return update


def print_table(table: Table, title: str, *, width: int = 80) -> None:
    """A results table on stdout: a borderless rich table on a terminal, markdown when piped (a log or a
    file reads it as is); optional columns dropped to fit `width` either way, with a note saying which."""
    from rich import box
    from rich.table import Table as RichTable

    if console.is_terminal:
        table = table.fit(min(console.width, width), markdown=False)
        out = RichTable(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for i, h in enumerate(table.head):
            out.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
        for r in table.body:
            out.add_row(*r)
        console.print(out)
    else:
        table = table.fit(width)
        console.file.write(f"## {title}\n\n" + table.markdown(pad=True) + "\n")
    if table.notes:
        console.print("(" + "; ".join(table.notes) + "; see the report)", markup=False, highlight=False)
