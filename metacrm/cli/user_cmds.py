"""Users: metacrm user add | list | set | passwd."""

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
        emit_records(crm.users(), format, ["login", "name", "roles", "team", "email"])


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


def register(app: typer.Typer) -> None:
    app.add_typer(users, name="user")
