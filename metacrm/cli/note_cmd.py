"""``metacrm note``: add an activity (a note, call, email or meeting) to a record."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from .data_cmds import DEFAULT_DB, DEFAULT_MODEL, AsOpt, DbOpt, FormatOpt, ModelOpt, opened
from .output import Format, emit_record


class Kind(StrEnum):
    note = "note"
    call = "call"
    email = "email"
    meeting = "meeting"


def note(
    entity: Annotated[str, typer.Argument(help="Entity name.")],
    record_id: Annotated[str, typer.Argument(metavar="ID")],
    text: Annotated[str, typer.Argument(help="What was said or done.")],
    kind: Annotated[Kind, typer.Option("--kind", help="The kind of activity.")] = Kind.note,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Add a note, call, email or meeting to a record; `metacrm history` shows it."""
    with opened(model, db, as_user) as crm:
        added = crm.note(entity, record_id, text, kind=kind.value)
    emit_record({k: v for k, v in added.items() if k != "changes"}, format)


def register(app: typer.Typer) -> None:
    app.command()(note)
