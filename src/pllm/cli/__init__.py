"""The `pllm` command line. Each concern adds its sub-app in `_SUBAPPS`, the one place they are named."""

from __future__ import annotations

import importlib
import logging
import os

import typer
from typer.core import TyperGroup

from pllm.errors import PllmError


class _Group(TyperGroup):
    """Turns any PllmError raised by a command into one line on stderr and exit code 2 (no traceback)."""

    def invoke(self, ctx):  # noqa: ANN001, ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except PllmError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None


# Every environment variable pllm reads, shown under `pllm --help` (tests/cli/test_fail_fast.py checks the list
# against the source and the README's table).
ENVIRONMENT: list[tuple[str, str]] = [
    ("PLLM_HOME", "data folder: store, caches, adapters, runs (default $XDG_CACHE_HOME/pllm or ~/.cache/pllm)"),
    ("PLLM_STORE", "the user store when no --store is given: a SQLite path or a postgresql:// URL "
                   "(default $PLLM_HOME/pllm.sqlite3)"),
    ("PLLM_MODELS_DIR", "converted model weights (default $PLLM_HOME/cache/models)"),
    ("PLLM_DEVICE", "torch device for local models: cpu, cuda, cuda:1, ... (default: a GPU if visible)"),
    ("PLLM_DTYPE", "weights dtype for local models, e.g. float32 (default bf16 on a GPU)"),
    ("PLLM_MOVIELENS", "MovieLens-100k folder (default: ../shared/data, a download, or the recbole package)"),
    ("PLLM_LOG", "log level, e.g. INFO (default WARNING)"),
    ("PLLM_PROGRESS_SECONDS", "seconds between plain progress lines when output is not a terminal (default 10)"),
    ("PLLM_OPENAI_BASE_URL", "endpoint of the openai backend (else OPENAI_BASE_URL)"),
    ("PLLM_OPENAI_API_KEY", "key of the openai backend (else OPENAI_API_KEY)"),
    ("PLLM_OPENAI_MODEL", "model of the openai backend (default: the server's first)"),
    ("PLLM_ADMIN_KEY", "an admin key accepted by `pllm serve`"),
    ("PLLM_SERVE_CONFIG", "JSON object of ServeConfig fields, for the server app built by uvicorn --factory"),
    ("PLLM_SERVE_PLUGINS", "comma-separated modules the server app imports first"),
]


def _version(value: bool) -> None:
    if value:
        from pllm import __version__

        typer.echo(f"pllm {__version__}")
        raise typer.Exit()


app = typer.Typer(cls=_Group, no_args_is_help=True, add_completion=False,
                  help="pllm: personalized LLMs — retrieval/profile prompting, per-user adapters, "
                       "personalized alignment, LaMP evaluation and serving.",
                  epilog="Environment: " + "; ".join(f"{name}: {text}" for name, text in ENVIRONMENT) + ".")


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Options of `pllm` itself (the help text is the Typer's)."""

# (module, sub-app name or None for top-level commands registered by the module on `app`)
_SUBAPPS: list[tuple[str, str | None]] = [
    ("pllm.cli.users", "users"),
    ("pllm.cli.data", "data"),
    ("pllm.cli.tasks", "tasks"),
    ("pllm.cli.evaluate", None),
    ("pllm.cli.bench", None),
    ("pllm.cli.soft", "soft"),
    ("pllm.cli.serve", None),
    ("pllm.cli.serve", "keys"),
    ("pllm.cli.align", "align"),
    ("pllm.cli.rec", "rec"),
    ("pllm.cli.judge", "judge"),
    ("pllm.cli.adapt", "adapt"),
    ("pllm.cli.models", "models"),
]

for _module, _name in _SUBAPPS:
    _mod = importlib.import_module(_module)
    if _name is None:
        _mod.register(app)
    else:
        app.add_typer(_mod.app, name=_name)


def configure_logging() -> None:
    """`PLLM_LOG` sets the level (default WARNING); one-time steps that take a while (converting the
    embedded model) still say what they are doing at INFO, unless PLLM_LOG asks for less."""
    level = os.environ.get("PLLM_LOG", "WARNING")
    logging.basicConfig(level=level)
    if "PLLM_LOG" not in os.environ:
        logging.getLogger("pllm.models.embedded").setLevel(logging.INFO)


def main() -> None:
    configure_logging()
    app()
