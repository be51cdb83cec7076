"""The ``metacrm`` console command."""

from __future__ import annotations

import typer

from . import (
    automation_cmds,
    backup_cmds,
    data_cmds,
    demo_cmd,
    form_cmds,
    init_cmd,
    io_cmds,
    migrate_cmds,
    model_cmds,
    note_cmd,
    notify_cmds,
    report_cmds,
    search_cmd,
    serve_cmd,
    stage_cmds,
    task_cmds,
    token_cmds,
    user_cmds,
)


def _flags_without_type() -> None:
    """``--help`` shows no value type on a flag (typer 0.2x prints ``<bool>`` next to
    ``--wide``, as if it took a value)."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "_metacrm", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    display_type_rich._metacrm = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_type()

app = typer.Typer(
    name="metacrm",
    help="metacrm: a business described in YAML becomes a working CRM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
model_cmds.register(app)
data_cmds.register(app)
migrate_cmds.register(app)
stage_cmds.register(app)
note_cmd.register(app)
user_cmds.register(app)
io_cmds.register(app)
demo_cmd.register(app)
init_cmd.register(app)
report_cmds.register(app)
search_cmd.register(app)
notify_cmds.register(app)
task_cmds.register(app)
automation_cmds.register(app)
backup_cmds.register(app)
serve_cmd.register(app)
token_cmds.register(app)
form_cmds.register(app)


def _version(value: bool) -> None:
    """Parsed before the command is looked for (eager), so ``metacrm --version`` needs none."""
    if value:
        from .. import __version__

        typer.echo(f"metacrm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_version
    ),
    log_level: str | None = typer.Option(
        None,
        "--log-level",
        envvar="METACRM_LOG",
        help="Print metacrm's log on stderr from this level: debug, info, warning or error.",
    ),
) -> None:
    if log_level:
        from ..logs import log_to_stderr
        from .common import refusals

        with refusals():
            ctx.call_on_close(log_to_stderr(log_level))


def main() -> None:  # the console script
    app()
