"""``metacrm tick``: fire the time-based automations that are due (run it from cron)."""

from __future__ import annotations

from typing import Annotated

import typer

from .alltenants import AllTenantsOpt, TenantsFileOpt
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
    all_tenants: AllTenantsOpt = False,
    tenants_file: TenantsFileOpt = None,
) -> None:
    """Fire the time-based automations that are due (overdue, sla, at, before), each once
    however often this runs (run it every minute from cron; two at once are safe), then send
    the outbox (unless --no-deliver). Exit 1 when an automation failed (its firing is rolled
    back and tried again next time). With --all-tenants: every tenant in turn, one line each."""
    if format is Format.csv:
        usage_error("tick prints table or json")
    if now is not None:
        from ..dates import DateError, read_datetime_text

        try:
            read_datetime_text(now)  # read again in the model's zone by tick
        except DateError as exc:
            usage_error(f"--now: {exc}")

    def work(crm) -> dict:
        fired = crm.tick(now)
        deliver = getattr(crm, "deliver", None)
        return {"fired": fired, "delivered": deliver() if not no_deliver and deliver is not None else None}

    if all_tenants:
        _tick_all(work, model, db, tenants_file, format)
        return
    with opened(model, db) as crm:
        done = work(crm)
    fired = done["fired"]
    failed = _failed(done)
    if format is Format.json:
        typer.echo(to_json(done))
    else:
        if fired:
            emit_records(fired, format, COLUMNS)
        typer.echo(_summary(done))
    if failed:
        for f in failed:
            typer.echo(f"error: {f['error']}", err=True)
        raise typer.Exit(EXIT_REFUSED)


def _failed(done: dict) -> list[dict]:
    return [f for f in done["fired"] if f["status"] == "failed"]


def _summary(done: dict) -> str:
    """``fired 2, failed 1; sent 3, to retry 0``: a tick's outcome on one line."""
    fired, delivered, failed = done["fired"], done["delivered"], _failed(done)
    line = f"fired {len(fired) - len(failed)}" + (f", failed {len(failed)}" if failed else "")
    if delivered is not None:
        line += f"; sent {delivered.get('sent', 0)}, to retry {delivered.get('retry', 0)}"
    return line


def _tick_all(work, model: str, db: str, tenants_file: str | None, format: Format) -> None:
    """Tick every tenant in turn: one line each (``acme: fired 1; sent 1, to retry 0``); a tenant
    whose tick raised or whose automation failed is named at the end (exit 1)."""
    from . import alltenants

    alltenants.check_usage(format.value)

    def line(result) -> str:
        if result.failed:
            return f"{result.tenant}: FAILED: {result.error}"
        return f"{result.tenant}: {_summary(result.value)}"

    json = format is Format.json
    results = alltenants.run(db, tenants_file, model, work, line, json=json)
    for result in results:
        for firing in [] if result.failed else _failed(result.value):
            typer.echo(f"error: {result.tenant}: {firing['error']}", err=True)
    alltenants.finish(results, json=json, failed=lambda r: not r.failed and bool(_failed(r.value)))


def register(app: typer.Typer) -> None:
    app.command("tick")(tick)
