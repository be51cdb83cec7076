"""Users: metacrm user add | list | set | passwd | disable | enable | remove."""

from __future__ import annotations

from typing import Annotated

import typer

from .data_cmds import DEFAULT_DB, DEFAULT_MODEL, DbOpt, FormatOpt, ModelOpt, opened
from .output import Format, emit_record, emit_records

users = typer.Typer(
    help="Users of the CRM: logins with roles (declared in the model) and a team.", no_args_is_help=True
)

RoleOpt = Annotated[list[str] | None, typer.Option("--role", "-r", help="A role from the model; repeatable.")]
TeamOpt = Annotated[str | None, typer.Option("--team", help="The user's team (for `team` scopes).")]
NameOpt = Annotated[str | None, typer.Option("--name", help="The user's name.")]
EmailOpt = Annotated[str | None, typer.Option("--email", help="The user's e-mail (for notifications).")]


@users.command("add")
def add(
    login: Annotated[str, typer.Argument(help="The login.")],
    role: RoleOpt = None,
    team: TeamOpt = None,
    name: NameOpt = None,
    email: EmailOpt = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    format: FormatOpt = Format.table,
) -> None:
    """Add a user with roles."""
    with opened(model, db) as crm:
        emit_record(crm.add_user(login, roles=role or [], team=team, name=name, email=email), format)


@users.command("set")
def set_(
    login: Annotated[str, typer.Argument(help="The login.")],
    role: RoleOpt = None,
    team: TeamOpt = None,
    name: NameOpt = None,
    email: EmailOpt = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    format: FormatOpt = Format.table,
) -> None:
    """Change a user's roles (all of them, when --role is given), team, name or e-mail."""
    with opened(model, db) as crm:
        emit_record(crm.set_user(login, roles=role, team=team, name=name, email=email), format)


@users.command("list")
def list_(model: ModelOpt = DEFAULT_MODEL, db: DbOpt = DEFAULT_DB, format: FormatOpt = Format.table) -> None:
    """The users, with their roles and teams."""
    with opened(model, db) as crm:
        disabled = crm.disabled_users()
        rows = [{**u, "disabled": u["login"] in disabled} for u in crm.users()]
    emit_records(rows, format, ["login", "name", "roles", "team", "email", "disabled"])


@users.command("passwd")
def passwd(
    login: Annotated[str, typer.Argument(help="The login.")],
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Set a user's password for the browser app (argon2id): asked twice on a terminal, else
    read from the first line of standard input. The user's open sessions end."""
    import sys

    from ..runtime.passwords import set_password

    if sys.stdin.isatty():
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    with opened(model, db) as crm:
        set_password(crm, login, password)
    typer.echo(f"password set for {login}", err=True)


@users.command("disable")
def disable(
    login: Annotated[str, typer.Argument(help="The login.")],
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Disable a user: no sign-in to the browser app (open sessions end), no API token, no
    --as; their records, tokens and password stay. `metacrm user enable` undoes it."""
    with opened(model, db) as crm:
        crm.disable_user(login)
    typer.echo(f"user {login} disabled", err=True)


@users.command("enable")
def enable(
    login: Annotated[str, typer.Argument(help="The login.")],
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Enable a disabled user again."""
    with opened(model, db) as crm:
        crm.enable_user(login)
    typer.echo(f"user {login} enabled", err=True)


@users.command("remove")
def remove(
    login: Annotated[str, typer.Argument(help="The login.")],
    reassign_to: Annotated[
        str | None,
        typer.Option(
            "--reassign-to",
            help="The user who takes over the records LOGIN owns and their `to: user` links (each update journaled).",
        ),
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Remove a user with their password, sessions, tokens and settings. Refused (exit 1,
    saying how many) while they own records or a `to: user` link (on_delete: restrict) names them,
    unless --reassign-to names who takes them over; `set_null` links let them go."""
    from .output import plural

    with opened(model, db) as crm:
        moved = crm.remove_user(login, reassign_to=reassign_to)
    owned = sum(n for key, n in moved.items() if "." not in key)
    links = sum(n for key, n in moved.items() if "." in key)
    text = f"user {login} removed" + (f"; {plural(owned, 'record')} now owned by {reassign_to}" if owned else "")
    passed = f" (passed to {reassign_to} where on_delete is restrict)" if reassign_to else ""
    typer.echo(text + (f"; taken off {plural(links, 'link')} to users{passed}" if links else ""))


def register(app: typer.Typer) -> None:
    app.add_typer(users, name="user")
