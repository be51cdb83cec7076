"""Commands on stages: move, moves (what is possible next), history (the record's timeline)."""

from __future__ import annotations

from typing import Annotated

import typer

from .data_cmds import DEFAULT_DB, DEFAULT_MODEL, AsOpt, DbOpt, FormatOpt, ModelOpt, opened
from .output import Format, emit_record, emit_records, to_json


def move(
    entity: Annotated[str, typer.Argument(help="Entity name.")],
    record_id: Annotated[str, typer.Argument(metavar="ID")],
    stage: Annotated[str, typer.Argument(help="The stage to move to.")],
    note: Annotated[str | None, typer.Option("--note", help="Why; kept in the history.")] = None,
    version: Annotated[
        int | None, typer.Option("--version", help="Refuse if the record is no longer at this version.")
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Move a record to a stage through an allowed transition."""
    with opened(model, db, as_user) as crm:
        emit_record(crm.move(entity, record_id, stage, note=note, version=version), format)


def moves(
    entity: Annotated[str, typer.Argument(help="Entity name.")],
    record_id: Annotated[str, typer.Argument(metavar="ID")],
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """The moves out of a record's stage: possible now, or what each one lacks."""
    with opened(model, db, as_user) as crm:
        options = crm.allowed_moves(entity, record_id)
    if format is Format.json:
        typer.echo(to_json(options))
        return
    rows = [{"stage": o["stage"], "possible": o["possible"], "reasons": "; ".join(o["reasons"])} for o in options]
    emit_records(rows, format, ["stage", "possible", "reasons"])


def history(
    entity: Annotated[str, typer.Argument(help="Entity name.")],
    record_id: Annotated[str, typer.Argument(metavar="ID")],
    stages: Annotated[bool, typer.Option("--stages", help="Only the stage moves, oldest first.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="At most this many entries.")] = 100,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """What happened to a record, newest first: changes, moves, links, activities, and the
    records linked to it (its tasks). --stages: the stage history alone, oldest first."""
    with opened(model, db, as_user) as crm:
        if stages:
            rows = crm.history(entity, record_id)
        else:
            rows = crm.timeline(entity, record_id, limit=limit)
    if stages:
        emit_records(rows, format, ["at", "from_stage", "to_stage", "by", "seconds_in_stage", "source", "note"])
        return
    if format is Format.json:
        typer.echo(to_json(rows))
        return
    flat = [
        {
            "at": r["at"],
            "record": f"{r['entity']} {r['record_id']}",
            "action": r["kind"] if r["action"] == "note" else r["action"],
            "by": r["by"],
            "changes": "; ".join(f"{k}: {_shown(a)} -> {_shown(b)}" for k, (a, b) in r["changes"].items()),
            "text": r["text"],
        }
        for r in rows
    ]
    emit_records(flat, format, ["at", "record", "action", "by", "changes", "text"])


def _shown(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict) and set(value) == {"entity", "id"}:
        return f"{value['entity']} {value['id']}"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def register(app: typer.Typer) -> None:
    app.command()(move)
    app.command()(moves)
    app.command()(history)
