"""API tokens: metacrm token create | list | revoke."""

from __future__ import annotations

from typing import Annotated

import typer

from .data_cmds import DEFAULT_DB, DEFAULT_MODEL, DbOpt, FormatOpt, ModelOpt, opened
from .output import Format, emit_record, emit_records

tokens = typer.Typer(help="Tokens for the HTTP API: each acts as one user.", no_args_is_help=True)

COLUMNS = ["id", "login", "name", "created_at", "last_used_at", "expires_at", "revoked_at"]


@tokens.command("create")
def create(
    login: Annotated[str, typer.Argument(help="The user the token acts as.")],
    name: Annotated[str | None, typer.Option("--name", help="What the token is for.")] = None,
    expires: Annotated[str, typer.Option("--expires", help="Lifetime: 30m, 12h, 90d, 2w, 1y, or 'never'.")] = "90d",
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    format: FormatOpt = Format.table,
) -> None:
    """Create a token and print it once: the database keeps only its hash."""
    from ..runtime.tokens import create_token

    with opened(model, db) as crm:
        emit_record(create_token(crm, login, name=name, expires=expires), format)
    if format is Format.table:
        typer.echo("keep the token now: it is not stored and cannot be shown again", err=True)


@tokens.command("list")
def list_(
    login: Annotated[str | None, typer.Option("--login", help="Only this user's tokens.")] = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    format: FormatOpt = Format.table,
) -> None:
    """The tokens (never their secrets), revoked and expired ones included."""
    from ..runtime.tokens import list_tokens

    with opened(model, db) as crm:
        emit_records(list_tokens(crm, login), format, COLUMNS)


@tokens.command("revoke")
def revoke(
    token_id: Annotated[int, typer.Argument(metavar="ID", help="The token's id (metacrm token list).")],
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    format: FormatOpt = Format.table,
) -> None:
    """Revoke a token: requests with it are refused from now on."""
    from ..runtime.tokens import revoke_token

    with opened(model, db) as crm:
        emit_record(revoke_token(crm, token_id), format)


def register(app: typer.Typer) -> None:
    app.add_typer(tokens, name="token")
