"""``metacrm init``: a commented starter model and a README in a folder."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import refusals


def init(
    directory: Annotated[str, typer.Argument(metavar="DIR", help="Where to write (created when missing).")] = ".",
    force: Annotated[bool, typer.Option("--force", help="Overwrite model.yaml and README.md if they exist.")] = False,
) -> None:
    """Write a commented starter model (model.yaml) and a README.md on what to do next."""
    from ..starter import write_starter

    with refusals():
        written = write_starter(directory, force=force)
    for path in written:
        typer.echo(f"wrote {path.as_posix()}")
    model = written[0].as_posix()
    typer.echo(f"next: metacrm check {model}, then read {written[1].as_posix()}")


def register(app: typer.Typer) -> None:
    app.command()(init)
