"""The full typer app of the ``metacrm`` command (built on first use: metacrm.cli.main runs
the hot data commands without it, metacrm.cli.fast)."""

from __future__ import annotations

import typer

from . import (
    automation_cmds,
    backup_cmds,
    data_cmds,
    demo_cmd,
    file_cmds,
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
    tenant_cmds,
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

MODULES = (
    model_cmds,
    data_cmds,
    migrate_cmds,
    stage_cmds,
    note_cmd,
    user_cmds,
    io_cmds,
    demo_cmd,
    init_cmd,
    report_cmds,
    search_cmd,
    notify_cmds,
    task_cmds,
    automation_cmds,
    backup_cmds,
    serve_cmd,
    token_cmds,
    form_cmds,
    file_cmds,
    tenant_cmds,
)
# The commands the console script runs through an app holding only their own module's
# commands (see main()): typer builds a click command from the signature of every command of
# the app it runs, and a one-record command should not pay for all of them.
FAST = {
    "create": data_cmds,
    "get": data_cmds,
    "list": data_cmds,
    "update": data_cmds,
    "delete": data_cmds,
    "link": data_cmds,
    "unlink": data_cmds,
    "move": stage_cmds,
    "moves": stage_cmds,
    "history": stage_cmds,
}


class _App(typer.Typer):
    """Every command that takes ``--db`` also takes ``--tenant`` and ``--read-db``
    (metacrm.cli.common.with_tenant, with_read_db)."""

    def command(self, *args, **kwargs):
        from .common import with_read_db, with_tenant

        register = super().command(*args, **kwargs)
        return lambda func: register(with_read_db(with_tenant(func)))

    def add_typer(self, typer_instance: typer.Typer, *args, **kwargs):
        """The commands of a group (``report funnel``, ``user add``...) take them too."""
        from .common import with_read_db, with_tenant

        for info in typer_instance.registered_commands:  # wrapping twice changes nothing
            if info.callback is not None:
                info.callback = with_read_db(with_tenant(info.callback))
        return super().add_typer(typer_instance, *args, **kwargs)


def _new_app() -> typer.Typer:
    new = _App(
        name="metacrm",
        help="metacrm: a business described in YAML becomes a working CRM.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    new.callback()(_root)
    return new


def _version(value: bool) -> None:
    """Parsed before the command is looked for (eager), so ``metacrm --version`` needs none."""
    if value:
        from .. import __version__

        typer.echo(f"metacrm {__version__}")
        raise typer.Exit()


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
    read_db: str | None = typer.Option(
        None,
        "--read-db",
        envvar="METACRM_READ_DB",
        help="A streaming replica of --db: lists, search and reports read from it (docs/scaling.md).",
    ),
) -> None:
    from .common import use_read_db

    use_read_db(read_db)
    if log_level:
        from ..logs import log_to_stderr
        from .common import refusals

        with refusals():
            ctx.call_on_close(log_to_stderr(log_level))


app = _new_app()
for _module in MODULES:
    _module.register(app)
