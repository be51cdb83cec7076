"""``metacrm tick``: fire the time-based automations that are due (run it from cron)."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import EXIT_REFUSED, usage_error
from .data_cmds import DEFAULT_DB, DEFAULT_MODEL, DbOpt, ModelOpt, opened
from .output import Format, emit_records, to_json

COLUMNS = ["automation", "entity", "record_id", "event", "occurrence", "status", "error"]


def tick(
    now: Annotated[
        str | None,
        typer.Option(
            "--now",
            help="Fire what is due at this time (2026-12-10T09:00, 10.12.2026 09:00; no zone means the model's), not now.",
        ),
    ] = None,
    no_deliver: Annotated[
        bool, typer.Option("--no-deliver", help="Only fire: leave the outbox for `metacrm deliver`.")
    ] = False,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    format: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.table,
) -> None:
    """Fire the time-based automations that are due (overdue, sla, at, before), each once
    however often this runs (run it every minute from cron; two at once are safe), then send
    the outbox (unless --no-deliver). Exit 1 when an automation failed (its firing is rolled
    back and tried again next time)."""
    if format is Format.csv:
        usage_error("tick prints table or json")
    if now is not None:
        from ..dates import DateError, read_datetime_text

        try:
            read_datetime_text(now)  # read again in the model's zone by tick
        except DateError as exc:
            usage_error(f"--now: {exc}")
    with opened(model, db) as crm:
        fired = crm.tick(now)
        delivered = None
        deliver = getattr(crm, "deliver", None)
        if not no_deliver and deliver is not None:
            delivered = deliver()
    failed = [f for f in fired if f["status"] == "failed"]
    if format is Format.json:
        typer.echo(to_json({"fired": fired, "delivered": delivered}))
    else:
        if fired:
            emit_records(fired, format, COLUMNS)
        line = f"fired {len(fired) - len(failed)}" + (f", failed {len(failed)}" if failed else "")
        if delivered is not None:
            line += f"; sent {delivered.get('sent', 0)}, to retry {delivered.get('retry', 0)}"
        typer.echo(line)
    if failed:
        for f in failed:
            typer.echo(f"error: {f['error']}", err=True)
        raise typer.Exit(EXIT_REFUSED)


def register(app: typer.Typer) -> None:
    app.command("tick")(tick)
