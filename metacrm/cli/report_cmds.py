"""Reports and the board: ``metacrm report funnel|group``, ``metacrm board``.

Every report prints as ``--format table|json|csv|png``; png (a bar chart) goes only to a file
(``--output FILE``), never to a terminal. ``--output`` writes the other formats to a file too.
Unknown pipelines, fields, periods and malformed dates exit 2 naming the valid choices.
"""

from __future__ import annotations

from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .common import fail, refusals, usage_error
from .data_cmds import DEFAULT_DB, DEFAULT_MODEL, AsOpt, ColumnsOpt, DbOpt, ModelOpt, WideOpt, opened
from .output import Format, label_text, plain, table_width, to_csv, to_json

WIDTH = 100


class ReportFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"
    png = "png"


EntityArg = Annotated[str, typer.Argument(help="Entity name.")]
PipelineOpt = Annotated[str | None, typer.Option("--pipeline", "-p", help="Pipeline (default: the first).")]
FromOpt = Annotated[str | None, typer.Option("--from", help="From this date (YYYY-MM-DD) or datetime, inclusive.")]
ToOpt = Annotated[str | None, typer.Option("--to", help="To this date (YYYY-MM-DD) or datetime, inclusive.")]
ReportFormatOpt = Annotated[ReportFormat, typer.Option("--format", "-f", help="table, json, csv or png.")]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-O", help="Write to this file (required for png).")]

report_app = typer.Typer(help="Reports: the funnel from the stage history; results grouped by a field and period.")


@contextmanager
def report_session(model: str, db: str, fmt: ReportFormat, output: Path | None, as_user: str | None = None):
    """``opened`` plus: png needs --output, and bad report options are usage errors (exit 2)."""
    from ..extras import PNG, import_extra
    from ..runtime.reports import BadReportOption

    if fmt is ReportFormat.png and output is None:
        usage_error("png is a picture, not text for a terminal: give --output FILE.png")
    _writable(output)
    if fmt is ReportFormat.png:
        with refusals():
            import_extra(PNG)  # before any query: without matplotlib, exit 2 naming the [png] extra
    with opened(model, db, as_user) as crm:
        try:
            yield crm
        except BadReportOption as exc:
            usage_error(str(exc))


def _writable(output: Path | None) -> None:
    """Exit 2 before any work when --output cannot be written."""
    from ..io.paths import unwritable

    if output is not None and (why := unwritable(output)) is not None:
        usage_error(f"--output: cannot write {output}: {why}")


def deliver(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    typer.echo(f"wrote {output}", err=True)


def draw(chart: str, doc, output: Path) -> None:
    """A png chart (``funnel_png`` or ``group_png`` of metacrm.runtime.reports) to ``output``."""
    from ..runtime import reports

    try:
        with refusals():  # MissingExtra: exit 2 naming the [png] extra
            getattr(reports, chart)(doc, output)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    typer.echo(f"wrote {output}", err=True)


@report_app.command("funnel")
def funnel(
    entity: EntityArg,
    pipeline: PipelineOpt = None,
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Replay the history: the funnel as it stood then.")
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="One funnel per owner (or per value of a field).")] = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: ReportFormatOpt = ReportFormat.table,
    output: OutputOpt = None,
) -> None:
    """Per stage: records now, records that ever reached it, amount, forecast, conversions,
    median time in stage; the win rate. --from/--to select records by creation date."""
    with report_session(model, db, format, output, as_user) as crm:
        doc = crm.funnel(entity, pipeline, date_from=date_from, date_to=date_to, as_of=as_of, by=by)
    docs = doc if isinstance(doc, list) else [doc]
    if format is ReportFormat.png:
        draw("funnel_png", doc, output)
    elif format is ReportFormat.json:
        deliver(to_json(doc) + "\n", output)
    elif format is ReportFormat.csv:
        lead = ["by", "value", "value_label"] if by else []
        rows = [
            {**({"by": d["by"], "value": d["value"], "value_label": _csv_label(d)} if by else {}), **s}
            for d in docs
            for s in d["stages"]
        ]
        deliver(to_csv(rows, lead + FUNNEL_COLUMNS), output)
    else:
        deliver("\n".join(funnel_table(d) for d in docs) if docs else "(no records)\n", output)


def _csv_label(item: dict):
    """A group's label in CSV: ``(hidden)`` for the group of the link targets the user may not read."""
    return label_text(None, True) if item.get("hidden") else item["label"]


FUNNEL_COLUMNS = [
    "stage", "label", "kind", "now", "reached", "amount", "probability", "forecast",
    "conversion_next", "conversion_won", "median_seconds",
]  # fmt: skip


def funnel_table(doc: dict) -> str:
    head = f"{doc['entity']} · pipeline {doc['pipeline']} · {doc['count']} records"
    if "by" in doc:
        head = f"{doc['by']}: {label_text(doc['label'], doc.get('hidden', False))} · " + head
    for key, name in (("from", "from"), ("to", "to"), ("as_of", "as of")):
        if doc[key] is not None:
            head += f" · {name} {plain(doc[key])}"
    tail = f"win rate {_percent(doc['win_rate'])} ({doc['won']} won, {doc['lost']} lost)"
    if doc["amount_field"]:
        forecast = _amount(doc["forecast"], doc.get("forecasts"), doc.get("currency"))
        tail += f" · forecast {forecast} (open stages, {doc['amount_field']} x probability)"
    headers = ["stage", "now", "reached", "amount", "forecast", "→next", "→won", "median time"]
    rows = [
        [
            _cut(_caption(s["label"], s["stage"]), 28),
            str(s["now"]),
            str(s["reached"]),
            _amount(s["amount"], s.get("amounts"), doc.get("currency")),
            _amount(s["forecast"], s.get("forecasts"), doc.get("currency")),
            _percent(s["conversion_next"]),
            _percent(s["conversion_won"]),
            duration(s["median_seconds"]),
        ]
        for s in doc["stages"]
    ]
    return head + "\n" + grid(headers, rows, left=1) + tail + "\n"


@report_app.command("group")
def group(
    entity: EntityArg,
    by: Annotated[str, typer.Option("--by", help="owner, stage, a choice/text field or a link.")],
    sum_field: Annotated[str | None, typer.Option("--sum", help="A money or number field to sum.")] = None,
    period: Annotated[str | None, typer.Option("--period", help="month or quarter.")] = None,
    date: Annotated[str | None, typer.Option("--date", help="The date of the period (default created_at).")] = None,
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    pipeline: Annotated[
        str | None, typer.Option("--pipeline", "-p", help="Only this pipeline's records (needed with --by stage).")
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: ReportFormatOpt = ReportFormat.table,
    output: OutputOpt = None,
) -> None:
    """Counts and sums per value of a field (per manager with --by owner), per month or quarter.
    --pipeline counts one pipeline's records; --by stage needs it when there are several."""
    with report_session(model, db, format, output, as_user) as crm:
        ent = crm.model.entities.get(entity)
        if by == "stage" and pipeline is None and ent is not None and len(ent.pipelines) > 1:
            names = ", ".join(ent.pipelines)
            usage_error(f"{entity}: --by stage mixes the stages of pipelines {names}: give --pipeline (one of {names})")
        doc = crm.report_group(
            entity, by, sum=sum_field, period=period, date=date, date_from=date_from, date_to=date_to, pipeline=pipeline
        )
    columns = (["period"] if period else []) + ["value", "label", "count"] + (["sum"] if sum_field else [])
    if format is ReportFormat.png:
        draw("group_png", doc, output)
    elif format is ReportFormat.json:
        deliver(to_json(doc) + "\n", output)
    elif format is ReportFormat.csv:
        deliver(to_csv([{**r, "label": _csv_label(r)} for r in doc["rows"]], columns), output)
    else:
        summed = ent.fields[sum_field] if sum_field else None
        headers = (["period"] if period else []) + [by, "count"] + ([f"sum of {sum_field}"] if sum_field else [])
        rows = []
        for r in doc["rows"]:
            label = label_text(r["label"], r.get("hidden", False))
            row = ([r["period"] or "(no date)"] if period else []) + [_cut(str(label), 40), str(r["count"])]
            rows.append(row + [_sum_text(summed, r["sum"], r.get("currency"))] if sum_field else row)
        totals = [([""] if period else []) + ["total", str(doc["total"]["count"])]]
        if "sums" in doc["total"] and len(doc["total"]["sums"]) > 1:  # one total line per currency
            totals = [
                ([""] if period else [])
                + (["total", str(doc["total"]["count"])] if i == 0 else ["", ""])
                + [_sum_text(summed, total, code)]
                for i, (code, total) in enumerate(doc["total"]["sums"].items())
            ]
        elif sum_field:
            totals[0].append(_sum_text(summed, doc["total"]["sum"], doc["total"].get("currency")))
        left = 2 if period else 1
        deliver(grid(headers, [*rows, *totals], left=left, rule_before_last=len(totals) == 1), output)


def board(
    entity: EntityArg,
    pipeline: PipelineOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=0, help="Records shown per stage.")] = 10,
    order_by: Annotated[str | None, typer.Option("--order-by", "-o", help="A field, '-' for descending.")] = None,
    where: Annotated[str | None, typer.Option("--where", "-w", help="Only the records matching this filter.")] = None,
    columns: ColumnsOpt = None,
    wide: WideOpt = False,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="table, json or csv (the records).")] = Format.table,
) -> None:
    """The kanban of a pipeline: a column per stage with its count, sum and first records.
    --columns shows those columns of each record (links by title in the table)."""
    chosen = None
    with report_session(model, db, ReportFormat.table, None, as_user) as crm:
        doc = crm.board(entity, pipeline, limit_per_stage=limit, order_by=order_by, where=where)
        if columns is not None:
            chosen = _board_columns(crm, entity, doc, columns, titles=format is Format.table)
    if format is Format.json:
        typer.echo(to_json(doc))
    elif format is Format.csv:
        rows = [{"stage": c["stage"], **r} for c in doc["columns"] for r in c["records"]]
        typer.echo(to_csv(rows, ["stage", *(chosen or ["id", "title", "amount", "owner", "since"])]), nl=False)
    elif chosen is not None:
        typer.echo(board_columns_text(doc, chosen, None if wide else table_width()), nl=False)
    else:
        typer.echo(board_text(doc), nl=False)


def _board_columns(crm, entity: str, doc: dict, text: str, *, titles: bool) -> list[str]:
    """Replace each shown record of the board by its ``--columns`` (one query for the
    records, one per link column for titles); returns the columns."""
    from .listing import parse_columns, shown_rows

    ent = crm.model.entity(entity)
    chosen = parse_columns(ent, text)
    ids = [r["id"] for c in doc["columns"] for r in c["records"]]
    found = {r["id"]: r for r in crm.find(entity, ids=ids)} if ids else {}
    rows = shown_rows(crm, ent, [found[i] for i in ids if i in found], chosen, titles=titles)
    by_id = {i: row for i, row in zip([i for i in ids if i in found], rows, strict=True)}
    for column in doc["columns"]:
        column["records"] = [by_id[r["id"]] for r in column["records"] if r["id"] in by_id]
    return chosen


def board_columns_text(doc: dict, columns: list[str], width: int | None) -> str:
    """The board with the chosen columns of each record, aligned across the stages."""
    from .output import MIN_CELL, fit_widths

    money = doc["amount_field"] is not None
    cells = {
        id(r): [plain(r.get(c)).replace("\n", " ") for c in columns] for col in doc["columns"] for r in col["records"]
    }
    natural = [max([len(c)] + [len(v[i]) for v in cells.values()]) for i, c in enumerate(columns)]
    widths = natural
    if width is not None:
        floors = [min(n, max(len(c), MIN_CELL)) for n, c in zip(natural, columns, strict=True)]
        widths = fit_widths(natural, floors, width - 2 - 2 * (len(columns) - 1))
    rule = width or (2 + sum(widths) + 2 * (len(columns) - 1))
    lines = [f"{doc['entity']} · pipeline {doc['pipeline']} · {doc['count']} records"
             + (f" · {_amount(doc['amount'], doc.get('amounts'), doc.get('currency'))}" if money else "")]  # fmt: skip
    lines.append("  " + "  ".join(_cut(c, w).ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for column in doc["columns"]:
        head = f"── {_caption(column['label'], column['stage'])}"
        head += (
            f" · {column['count']}"
            + (f" · {_amount(column['amount'], column.get('amounts'), doc.get('currency'))}" if money else "")
            + " "
        )
        lines += ["", head.ljust(rule, "─")]
        for r in column["records"]:
            row = cells[id(r)]
            lines.append("  " + "  ".join(_cut(v, w).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if column["more"]:
            lines.append(f"  … and {column['more']} more")
        if not column["count"]:
            lines.append("  (empty)")
    return "\n".join(lines) + "\n"


def board_text(doc: dict) -> str:
    """Stacked sections, one per stage, fitting in 100 columns."""
    money = doc["amount_field"] is not None
    lines = [f"{doc['entity']} · pipeline {doc['pipeline']} · {doc['count']} records"
             + (f" · {_amount(doc['amount'], doc.get('amounts'), doc.get('currency'))}" if money else "")]  # fmt: skip
    for column in doc["columns"]:
        head = f"── {_caption(column['label'], column['stage'])}"
        head += (
            f" · {column['count']}"
            + (f" · {_amount(column['amount'], column.get('amounts'), doc.get('currency'))}" if money else "")
            + " "
        )
        lines += ["", _cut(head, WIDTH).ljust(WIDTH, "─")]
        for r in column["records"]:
            ident, amount = (
                f"#{r['id']}",
                _amount(r["amount"], None, r.get("currency", doc.get("currency"))) if money else "",
            )
            owner = _cut(r.get("owner") or "", 16)
            room = WIDTH - 2 - 8 - 2 - 16 - 2 - 18
            lines.append(f"  {ident:>8}  {_cut(r['title'], room).ljust(room)}  {amount:>16}  {owner}".rstrip())
        if column["more"]:
            lines.append(f"  … and {column['more']} more")
        if not column["count"]:
            lines.append("  (empty)")
    return "\n".join(lines) + "\n"


# -- formatting ----------------------------------------------------------------------------------
def grid(headers: list[str], rows: list[list[str]], *, left: int = 1, rule_before_last: bool = False) -> str:
    """Columns: the first ``left`` aligned left, the rest (numbers) right."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    out = [line(headers).rstrip(), rule]
    for i, row in enumerate(rows):
        if rule_before_last and i == len(rows) - 1:
            out.append(rule)
        out.append(line(row).rstrip())
    return "\n".join(out) + "\n"


def _caption(label: str, name: str) -> str:
    """A stage's label, with its name when the name says something the label does not."""
    same = label.casefold() == name.replace("_", " ").casefold()
    return label if same else f"{label} ({name})"


def _money(value) -> str:
    if value is None:
        return "—"
    return f"{value:,.2f}".replace(",", " ") if not isinstance(value, int) else f"{value:,}".replace(",", " ")


def _amount(value, sums: dict | None = None, currency: str | None = None) -> str:
    """A funnel's or board's amount: the one sum (with its currency), or a currency field's
    sums per currency, the non-zero ones joined (``1 200 JPY · 10.55 USD``): never added."""
    if sums and (value is None or len(sums) > 1):
        shown = [(code, v) for code, v in sums.items() if v]
        return " · ".join(_sum_text(None, v, code) for code, v in shown) or "0"
    return _sum_text(None, value, currency)


def _sum_text(f, value, currency: str | None = None) -> str:
    """A sum in a report table: a duration as one (1d 4h 30m), an amount with its currency."""
    if f is not None and f.type == "duration" and value is not None:
        from ..dates import format_duration

        return format_duration(value)
    if not currency or value is None:
        return _money(value)
    places = max(-int(value.as_tuple().exponent), 0)  # the currency's own decimals (JPY 0, BHD 3)
    return f"{value:,.{places}f} {currency}".replace(",", " ")


def _percent(value) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def duration(seconds) -> str:
    """1d 4h, 3h 20m, 5m 10s, 42s; — for none."""
    if seconds is None:
        return "—"
    s = int(round(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {s}s" if minutes else f"{s}s"


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")
    app.command()(board)
