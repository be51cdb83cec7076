"""``metacrm deliver`` (send the outbox by SMTP and webhooks) and ``metacrm outbox`` (list it)."""

from __future__ import annotations

from typing import Annotated

import typer

from .alltenants import AllTenantsOpt, TenantsFileOpt
from .data_cmds import DEFAULT_DB, DEFAULT_MODEL, DbOpt, FormatOpt, ModelOpt, opened
from .output import Format, emit_records, to_json

SENT_COLUMNS = ["id", "channel", "recipient", "status", "attempts", "next_attempt_at", "error"]
OUTBOX_COLUMNS = [
    "id",
    "created_at",
    "channel",
    "recipient",
    "subject",
    "status",
    "attempts",
    "next_attempt_at",
    "sent_at",
    "last_error",
]


def deliver(
    smtp: Annotated[
        str | None,
        typer.Option(
            "--smtp",
            envvar="METACRM_SMTP_URL",
            help="SMTP server: smtp://[user:password@]host[:port], smtp+starttls://... or smtps://...",
        ),
    ] = None,
    sender: Annotated[
        str | None, typer.Option("--from", envvar="METACRM_MAIL_FROM", help="The sender address of e-mail.")
    ] = None,
    starttls: Annotated[bool, typer.Option("--starttls", help="Upgrade a smtp:// connection with STARTTLS.")] = False,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Handle at most this many messages.")
    ] = None,
    max_attempts: Annotated[
        int, typer.Option("--max-attempts", min=1, help="Give a message up (status failed) after this many attempts.")
    ] = 8,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for a server.")] = 30.0,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    format: FormatOpt = Format.table,
    all_tenants: AllTenantsOpt = False,
    tenants_file: TenantsFileOpt = None,
) -> None:
    """Send the due notifications of the outbox: e-mail over SMTP, webhooks as an HTTP POST of
    JSON. A failed attempt is retried later with backoff (1, 2, 4 ... minutes); each message
    has a status (pending, sending, sent, failed). Delivery is at least once: receivers can
    drop repeats by the Message-ID / Idempotency-Key. With --all-tenants: every tenant's
    outbox in turn, one line each."""
    from ..errors import ValidationError
    from ..notify import SmtpSettings
    from .common import usage_error

    if smtp:
        try:  # a malformed URL is bad usage (exit 2), found before the database is opened
            SmtpSettings.from_url(smtp)
        except ValidationError as exc:
            usage_error(str(exc))

    def work(crm) -> dict:
        return crm.deliver(
            smtp=smtp or None,
            sender=sender or None,
            starttls=starttls or None,
            limit=limit,
            max_attempts=max_attempts,
            timeout=timeout,
        )

    if all_tenants:
        from . import alltenants

        alltenants.check_usage(format.value)

        def line(result) -> str:
            return f"{result.tenant}: " + (f"FAILED: {result.error}" if result.failed else _summary(result.value))

        json = format is Format.json
        alltenants.finish(alltenants.run(db, tenants_file, model, work, line, json=json), json=json)
        return
    with opened(model, db) as crm:
        summary = work(crm)
    if format is Format.json:
        typer.echo(to_json(summary))
        return
    if summary["messages"] or format is Format.csv:
        emit_records(summary["messages"], format, SENT_COLUMNS)
    if format is Format.table:
        typer.echo(_summary(summary))


def _summary(summary: dict) -> str:
    """``sent 2, to retry 0, failed 0``: a delivery run on one line."""
    line = f"sent {summary['sent']}, to retry {summary['retry']}, failed {summary['failed']}"
    if summary["waiting"]:
        line += f"; {summary['waiting']} e-mail waiting: no SMTP server (--smtp or METACRM_SMTP_URL)"
    return line


def outbox(
    status: Annotated[
        str | None, typer.Option("--status", "-s", help="Only messages in this status: pending, sending, sent, failed.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=0, help="At most this many, newest first.")] = None,
    retry: Annotated[
        bool, typer.Option("--retry", help="Give the failed messages (or those of --id) a new series of attempts.")
    ] = False,
    ids: Annotated[list[int] | None, typer.Option("--id", help="With --retry: only this message (repeatable).")] = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    format: FormatOpt = Format.table,
) -> None:
    """The notifications in the outbox, newest first, with their delivery status; `--retry`
    requeues failed ones (`metacrm deliver` then sends them)."""
    from ..notify import STATUSES
    from .common import usage_error

    if status is not None and status not in STATUSES:
        usage_error(f"unknown status '{status}'; statuses: {', '.join(STATUSES)}")
    if ids and not retry:
        usage_error("--id goes with --retry")
    with opened(model, db) as crm:
        if retry:
            count = crm.retry_outbox(ids or None)
            typer.echo(to_json({"requeued": count}) if format is Format.json else f"requeued {count} failed message(s)")
            return
        rows = crm.outbox(status=status, limit=limit)
    if format is Format.json:
        typer.echo(to_json(rows))
    else:
        columns = OUTBOX_COLUMNS if format is Format.table else None
        emit_records(rows, format, columns)


def register(app: typer.Typer) -> None:
    app.command()(deliver)
    app.command()(outbox)
