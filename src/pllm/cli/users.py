"""`pllm users ...`: import, list, show, export and forget users in the store."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from pllm.cli.common import DbOption, console, open_db, task_callback
from pllm.io import atomic_write_json
from pllm.tasks.lamp import read_questions, write_questions
from pllm.tasks.spec import get_task

app = typer.Typer(no_args_is_help=True, help="Manage users and their profile items in the store.")


@app.command("import")
def import_(
    questions: Path = typer.Argument(..., help="LaMP questions file: [{id, input, profile: [...], user_id?}]."),
    outputs: Path | None = typer.Option(None, "--outputs", help="LaMP outputs file with the gold answers."),
    task: str | None = typer.Option(None, "--task", help="Task name or spec file, to store structured query fields.",
                                    callback=task_callback),
    db: str | None = DbOption,
) -> None:
    """Import a LaMP questions file in one transaction (a malformed file changes nothing)."""
    spec = get_task(task) if task else None
    qs = read_questions(questions, spec=spec, outputs=outputs)
    with open_db(db) as store:
        rep = store.import_questions(qs)
    console.print(f"imported {rep.questions} questions, {rep.users} new users, {rep.items} items "
                  f"({rep.duplicate_items} shared items stored once)")


@app.command("list")
def list_(db: str | None = DbOption, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List users with their item and question counts."""
    with open_db(db) as store:
        users = store.list_users()
    if as_json:
        console.print_json(json.dumps([u.__dict__ for u in users]))
        return
    table = Table("user", "items", "questions")
    for u in users:
        table.add_row(u.id, str(u.n_items), str(u.n_questions))
    console.print(table)


@app.command("show")
def show(user_id: str = typer.Argument(..., help="User id."),
         limit: int = typer.Option(10, "--limit", help="Items to print."), db: str | None = DbOption) -> None:
    """Show one user and their most recent items."""
    with open_db(db) as store:
        user = store.get_user(user_id=user_id)
        items = store.get_items(user_id=user_id)
    console.print(f"user {user.id}: {user.n_items} items, {user.n_questions} questions")
    for item in items[-limit:]:
        console.print(f"  {item.id}: {json.dumps(item.fields, ensure_ascii=False)[:200]}")


@app.command("export")
def export(
    out: Path = typer.Argument(..., help="Output JSON file (written atomically)."),
    user: list[str] = typer.Option(None, "--user", help="Only these users (repeatable)."),
    fmt: str = typer.Option("lamp", "--format", help="lamp: questions with profiles; items: every user's items."),
    db: str | None = DbOption,
) -> None:
    """Export users back to a LaMP questions file, or every stored item per user."""
    from pllm.errors import InputError

    with open_db(db) as store:
        ids = list(user) if user else [u.id for u in store.list_users()]
        for uid in ids:
            store.get_user(user_id=uid)  # unknown user -> clear error before writing anything
        if fmt == "lamp":
            qs = [q for uid in ids for q in store.get_questions(user_id=uid)]
            write_questions(out, qs)
            n = len(qs)
        elif fmt == "items":
            data = [{"user_id": uid, "items": [{"id": it.id, "timestamp": it.timestamp, **it.fields}
                                               for it in store.get_items(user_id=uid)]} for uid in ids]
            atomic_write_json(out, data)
            n = sum(len(d["items"]) for d in data)
        else:
            raise InputError(f"--format must be 'lamp' or 'items', got {fmt!r}")
    console.print(f"wrote {n} {'questions' if fmt == 'lamp' else 'items'} for {len(ids)} users to {out}")


@app.command("forget")
def forget(user_id: str = typer.Argument(..., help="User id."), db: str | None = DbOption) -> None:
    """Delete every trace of a user: items, questions, embeddings, cached summaries, adapters."""
    with open_db(db) as store:
        rep = store.forget(user_id=user_id)
    console.print(f"forgot user {user_id}: " + ", ".join(f"{k}={v}" for k, v in rep.rows.items() if v))


