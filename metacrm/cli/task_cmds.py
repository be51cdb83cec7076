"""``metacrm tasks [--overdue] [--for USER] [--entity E] [--all]``: open tasks, by deadline."""

from __future__ import annotations

import datetime as dt
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


def _moment(text: str) -> dt.datetime:
    from .common import usage_error

    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        usage_error(f"--as-of {text!r} is not a date or time (ISO 8601: 2026-03-31 or 2026-03-31T18:00)")
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


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
            "--as-of", help="Judge 'overdue' at this date or time (ISO 8601, UTC unless given; default: now)."
        ),
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Open tasks across the model's task lists, earliest deadline first, with their subject
    and whether they are overdue or blocked (only what the user may read)."""
    now = _moment(as_of) if as_of else None
    with opened(model, db, as_user) as crm:
        rows = crm.tasks(overdue=overdue, for_user=for_user, entity=entity, include_done=all_, limit=limit, now=now)
    if format is Format.json:
        typer.echo(to_json([{k: v for k, v in t.items() if k != "record"} for t in rows]))
    elif format is Format.csv:
        emit_records(rows, format, FLAT)
    else:
        emit_records([{**t, "subject": _subject(t), "state": _state(t)} for t in rows], format, COLUMNS)


def register(app: typer.Typer) -> None:
    app.command()(tasks)
