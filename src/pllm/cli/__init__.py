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


app = typer.Typer(cls=_Group, no_args_is_help=True, add_completion=False,
                  help="pllm: personalized LLMs — retrieval/profile prompting, per-user adapters, "
                       "personalized alignment, LaMP evaluation and serving.")

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


def main() -> None:
    logging.basicConfig(level=os.environ.get("PLLM_LOG", "WARNING"))
    app()
