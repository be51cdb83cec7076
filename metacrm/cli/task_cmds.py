"""``metacrm tasks [--overdue] [--for USER] [--entity E] [--all]``: open tasks, by deadline."""

from __future__ import annotations

from typing import Annotated

import typer

from .data_cmds import DEFAULT_DB, DEFAULT_MODEL, AsOpt, DbOpt, FormatOpt, ModelOpt, opened
from .output import Format, emit_records, label_text, to_json

COLUMNS = ["entity", "id", "title", "due", "priority", "owner", "subject", "state"]
FLAT = [
    "entity",
    "id",
    "title",
    "due",
    "priority",
    "owner",
    "done",
    "overdue",
    "blocked",
    "blocked_by",
    "subject",
    "subject_title",
    "subject_hidden",
]


def _state(task: dict) -> str:
    words = ["done"] if task["done"] else []
    if task["overdue"]:
        words.append("overdue")
    if task["blocked"]:
        words.append("blocked by " + ",".join(map(str, task["blocked_by"])))
    return "; ".join(words) or "open"


def _subject(task: dict) -> str:
    subject = task["subject"]
    if subject is None:
        return ""
    where = f"{subject['entity']}:{subject['id']}"
    if task.get("subject_hidden"):
        return f"{where} {label_text(None, True)}"
    return f"{where} «{task['subject_title']}»" if task["subject_title"] else where


def tasks(
    overdue: Annotated[bool, typer.Option("--overdue", help="Only tasks past their deadline.")] = False,
    for_user: Annotated[
        str | None, typer.Option("--for", help="Only tasks this user is responsible for (their owner).")
    ] = None,
    entity: Annotated[
        str | None, typer.Option("--entity", "-e", help="Only this task list (default: every entity with `task:`).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Closed tasks too.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=0, help="At most this many.")] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Judge 'overdue' at this date or time (2026-12-10, 10.12.2026 14:30; no zone means the model's; default: now).",
        ),
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Open tasks across the model's task lists, earliest deadline first, with their subject
    and whether they are overdue or blocked (only what the user may read)."""
    if as_of is not None:
        from ..dates import DateError, read_datetime_text

        try:
            read_datetime_text(as_of)  # read again in the model's zone by crm.tasks
        except DateError as exc:
            from .common import usage_error

            usage_error(f"--as-of: {exc}")
    with opened(model, db, as_user) as crm:
        rows = crm.tasks(
            overdue=overdue, for_user=for_user, entity=entity, include_done=all_, limit=limit, now=as_of or None
        )
    if format is Format.json:
        typer.echo(to_json([{k: v for k, v in t.items() if k != "record"} for t in rows]))
    elif format is Format.csv:
        emit_records(rows, format, FLAT)
    else:
        emit_records([{**t, "subject": _subject(t), "state": _state(t)} for t in rows], format, COLUMNS)


def register(app: typer.Typer) -> None:
    app.command()(tasks)
