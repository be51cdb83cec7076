"""``metacrm search TEXT [--entity E]``: full-text search over the entities' search fields;
``metacrm tags ENTITY [--field F]``: the vocabulary of an entity's tags field."""

from __future__ import annotations

from typing import Annotated

import typer

from .data_cmds import DEFAULT_DB, DEFAULT_MODEL, AsOpt, DbOpt, FormatOpt, ModelOpt, opened
from .output import Format, emit_records

COLUMNS = ["entity", "id", "title", "snippet", "rank"]


def search(
    text: Annotated[str, typer.Argument(help="Words to find (each as a prefix; all must match).")],
    entity: Annotated[
        str | None, typer.Option("--entity", "-e", help="Search this entity only (default: every searchable one).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many results.")] = 20,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Find records by the words in their search fields, best first (only what the user may read)."""
    with opened(model, db, as_user) as crm:
        rows = crm.search(text, entity=entity, limit=limit)
    if format is Format.table:
        rows = [{k: v for k, v in r.items() if k != "rank"} for r in rows]
        emit_records(rows, format, COLUMNS[:-1])
    else:
        emit_records(rows, format, COLUMNS)


def tags(
    entity: Annotated[str, typer.Argument(help="Entity name.")],
    field: Annotated[
        str | None, typer.Option("--field", "-f", help="The tags field (when the entity has several).")
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """The tags in use on an entity's records, most used first, with how many records carry each."""
    with opened(model, db, as_user) as crm:
        rows = crm.tags(entity, field)
    emit_records(list(rows), format, ["tag", "count"])


def register(app: typer.Typer) -> None:
    app.command()(search)
    app.command()(tags)
