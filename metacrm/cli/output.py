"""Printing records and reports: table, json (one document on stdout) or csv."""

from __future__ import annotations

import datetime as dt
import io
import json
from contextvars import ContextVar
from decimal import Decimal
from enum import StrEnum

import typer

# the model's time zone: tables and CSV show date-times as its local time with the offset
# (set when a command loads its model; JSON keeps UTC)
DISPLAY_ZONE: ContextVar[str | None] = ContextVar("metacrm_display_zone", default=None)


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def plain(value) -> str:
    """A value as text: what CSV holds and what the CLI accepts back."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime) and value.tzinfo is not None and DISPLAY_ZONE.get():
        from ..dates import format_datetime

        return format_datetime(value, DISPLAY_ZONE.get())
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, dict) and set(value) == {"entity", "id"}:
        return f"{value['entity']}:{value['id']}"
    if isinstance(value, list):
        return ",".join(plain(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    return str(value)


def label_text(label, hidden: bool = False, none: str = "(none)") -> str:
    """A title or group label as text output shows it: ``(hidden)`` for a record the user may
    not read (metacrm.runtime.titles.HIDDEN), ``none`` where there is no value."""
    if hidden:
        from ..runtime.titles import HIDDEN

        return HIDDEN
    return none if label is None else str(label)


def reference_text(ref: dict) -> str:
    """A linked record as text: ``client 7 «Acme»``, or ``client 7 (hidden)``."""
    if ref.get("hidden"):
        return f"{ref['entity']} {ref['id']} {label_text(None, True)}"
    return f"{ref['entity']} {ref['id']} «{ref['title']}»"


def _json_default(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(doc) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2, default=_json_default)


def to_csv(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows as CSV; no cell a spreadsheet would run as a formula (a number keeps its minus)."""
    from ..io.csv_cells import is_number, neutralise
    from ..io.csv_cells import writer as csv_writer

    columns = columns or (list(rows[0]) if rows else [])
    buf = io.StringIO()
    writer = csv_writer(buf)
    writer.writerow([neutralise(str(c)) for c in columns])
    for row in rows:
        values = [row.get(c) for c in columns]
        writer.writerow([plain(v) if is_number(v) else neutralise(plain(v)) for v in values])
    return buf.getvalue()


def _cell(value, width: int = 40) -> str:
    text = plain(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def to_table(rows: list[dict], columns: list[str] | None = None) -> str:
    columns = columns or (list(rows[0]) if rows else [])
    if not columns:
        return "(no records)\n"
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    lines.append(f"({len(rows)} record{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines) + "\n"


def to_pairs(pairs: list[tuple[str, object]]) -> str:
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k.ljust(width)}  {_cell(v, 80)}".rstrip() for k, v in pairs) + "\n"


def emit_records(rows: list[dict], fmt: Format, columns: list[str] | None = None) -> None:
    if fmt is Format.json:
        typer.echo(to_json(rows))
    elif fmt is Format.csv:
        typer.echo(to_csv(rows, columns), nl=False)
    else:
        typer.echo(to_table(rows, columns), nl=False)


def emit_record(record: dict, fmt: Format) -> None:
    if fmt is Format.json:
        typer.echo(to_json(record))
    elif fmt is Format.csv:
        typer.echo(to_csv([record]), nl=False)
    else:
        typer.echo(to_pairs(list(record.items())), nl=False)
