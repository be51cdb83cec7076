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
    kind = type(value)  # the common cells first: a listing of many rows makes many calls
    if kind is str:
        return value
    if kind is int or kind is Decimal:
        return str(value)
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
    text = f"{ref['entity']} {ref['id']} «{ref['title']}»"
    if ref.get("link"):  # a link's fields: `qty=3 price=2.50`
        shown = " ".join(f"{k}={_link_value(v)}" for k, v in ref["link"].items() if v is not None)
        text += f" [{shown}]" if shown else ""
    return text


def _link_value(value) -> str:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


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


def table_width() -> int | None:
    """The width tables fit in when stdout is a terminal (its width; ``COLUMNS`` overrides);
    None (never cut) when the output goes to a file or a pipe."""
    import shutil
    import sys

    try:
        if not sys.stdout.isatty():
            return None
    except (ValueError, AttributeError):
        return None
    return shutil.get_terminal_size().columns


def _cut(text: str, width: int | None) -> str:
    return text if width is None or len(text) <= width else text[: max(width - 1, 0)] + "…"


def _text(value) -> str:
    text = plain(value)
    if "\n" not in text and "\r" not in text:
        return text
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


MIN_CELL = 8  # a cut column keeps at least this many characters (or its header's length)


def fit_widths(natural: list[int], floors: list[int], room: int) -> list[int]:
    """Column widths within ``room`` (separators excluded): the widest columns are cut first,
    down to a common cap, none below its floor; the natural widths when they fit."""
    if sum(natural) <= room:
        return natural
    low, high = 0, max(natural)
    while low < high:  # the largest cap that fits
        cap = (low + high + 1) // 2
        if sum(min(n, max(cap, f)) for n, f in zip(natural, floors, strict=True)) <= room:
            low = cap
        else:
            high = cap - 1
    return [min(n, max(low, f)) for n, f in zip(natural, floors, strict=True)]


def to_table(
    rows: list[dict], columns: list[str] | None = None, *, width: int | None = None, wide: bool = False
) -> str:
    """Rows as an aligned table that fits in ``width`` characters (long cells cut with "…",
    the widest first, only as far as needed); ``wide`` (or no width) never cuts."""
    columns = columns or (list(rows[0]) if rows else [])
    if not columns:
        return "(no records)\n"
    cells = [[_text(row.get(c)) for c in columns] for row in rows]
    natural = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    widths = natural
    if width is not None and not wide:
        floors = [min(n, max(len(c), MIN_CELL)) for n, c in zip(natural, columns, strict=True)]
        widths = fit_widths(natural, floors, width - 2 * (len(columns) - 1))
    lines = ["  ".join(_cut(c, w).ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in cells:
        lines.append("  ".join(_cut(v, w).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    lines.append(f"({plural(len(rows), 'record')})")
    return "\n".join(lines) + "\n"


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 record``, ``2 records`` (``nouns`` for an irregular plural)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def to_pairs(pairs: list[tuple[str, object]], *, width: int | None = None, wide: bool = False) -> str:
    """``key  value`` lines; a value longer than the room ``width`` leaves is cut (not with
    ``wide``)."""
    keys = max((len(k) for k, _ in pairs), default=0)
    room = None if width is None or wide else max(width - keys - 2, MIN_CELL)
    return "\n".join(f"{k.ljust(keys)}  {_cut(_text(v), room)}".rstrip() for k, v in pairs) + "\n"


def emit_records(rows: list[dict], fmt: Format, columns: list[str] | None = None, *, wide: bool = False) -> None:
    if fmt is Format.json:
        typer.echo(to_json(rows))
    elif fmt is Format.csv:
        typer.echo(to_csv(rows, columns), nl=False)
    else:
        typer.echo(to_table(rows, columns, width=table_width(), wide=wide), nl=False)


def emit_record(record: dict, fmt: Format, entity=None) -> None:
    """One record; with its ``entity`` (metacrm.model.Entity), numbers at their type's scale."""
    if entity is not None:
        from .listing import human_durations, tidy

        record = tidy(entity, record)
        if fmt is Format.table:
            record = human_durations(entity, [record])[0]
    if fmt is Format.json:
        typer.echo(to_json(record))
    elif fmt is Format.csv:
        typer.echo(to_csv([record]), nl=False)
    else:
        typer.echo(to_pairs(list(record.items()), width=table_width()), nl=False)
