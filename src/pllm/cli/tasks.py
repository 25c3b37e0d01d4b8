"""`pllm tasks ...`: inspect the task registry."""

from __future__ import annotations

import typer
import yaml

from pllm.cli.common import console
from pllm.tasks.spec import get_task, task_names

app = typer.Typer(no_args_is_help=True, help="List and show task specs.")


@app.command("list")
def list_() -> None:
    """List registered tasks."""
    for name in task_names():
        spec = get_task(name)
        console.print(f"{name:20s} {spec.kind:15s} {', '.join(spec.metrics):18s} {spec.description}")


@app.command("show")
def show(name: str = typer.Argument(..., help="Task name or spec file.")) -> None:
    """Print a task's spec as YAML."""
    console.print(yaml.safe_dump(get_task(name).to_dict(), sort_keys=False, allow_unicode=True))
