"""CSV in and out: ``metacrm import ENTITY FILE.csv`` and ``metacrm export ENTITY``."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from .common import usage_error
from .data_cmds import DEFAULT_DB, DEFAULT_MODEL, AsOpt, ColumnsOpt, DbOpt, FormatOpt, ModelOpt, opened
from .output import Format, plural, to_json

LinkOpt = Annotated[
    str | None,
    typer.Option("--link", help="A many-link: the file holds its rows (record id, target id, the link's fields)."),
]


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """``COLUMN=FIELD`` pairs (``COLUMN=`` ignores the column)."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, target = pair.rpartition("=")
        if not sep or not column.strip():
            usage_error(f"--map expects COLUMN=FIELD (or COLUMN= to ignore the column), got {pair!r}")
        mapping[column.strip()] = target.strip()
    return mapping


@contextmanager
def progress_bar(entity: str):
    """A progress callback drawing a bar on stderr when it is a terminal; else silent."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn(f"importing {entity}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task(entity, total=None)
    with bar:
        yield lambda done, total: bar.update(task, completed=done, total=total)


def default_report(result, file: str) -> None:
    """Write the report next to the file (FILE.report.csv): skipped rows are never only on screen."""
    path = Path(file).with_suffix(".report.csv")
    try:
        result.write_report(path)
    except OSError as exc:  # say where the report could not go
        typer.echo(f"warning: cannot write the report {path}: {exc.strerror or exc}", err=True)


def import_(
    entity: Annotated[str, typer.Argument(help="Entity name.")],
    file: Annotated[
        str, typer.Argument(metavar="FILE.csv", help="UTF-8 CSV file with a header line ('-' reads stdin).")
    ],
    map_: Annotated[
        list[str] | None, typer.Option("--map", help="COLUMN=FIELD; COLUMN= ignores a column. Repeatable.")
    ] = None,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Import the good rows; report the others.")
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Write the rejected and noted rows to this CSV (default: FILE.report.csv when there are any).",
        ),
    ] = None,
    with_stages: Annotated[
        bool,
        typer.Option(
            "--with-stages",
            help="Accept a stage column (name or label); each row must fit its stage (requires, when).",
        ),
    ] = False,
    automations: Annotated[
        bool,
        typer.Option(
            "--automations/--no-automations",
            help="Fire the model's automations (created, updated) for the imported records, as a create does.",
        ),
    ] = True,
    near_matches: Annotated[
        bool,
        typer.Option(
            "--near-matches",
            help="Accept (and report) near matches of link titles and options: 'GTXPro' for 'GTX Pro'.",
        ),
    ] = False,
    link: LinkOpt = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Import records from a CSV file: all rows or none (unless --skip-invalid).

    Rows that are rejected or worth a look go to the report (FILE.report.csv, or --report PATH),
    also when the import is refused. With --link LINK the file holds the rows of a many-link
    (record id, target id, the link's fields): each line links, all lines or none."""
    from ..io.csv_io import ImportRefused, import_csv
    from ..io.paths import unwritable

    if link is not None:
        _import_links(entity, file, link, model, db, as_user, format)
        return

    mapping = parse_mapping(map_ or [])
    if report is not None and (why := unwritable(report)) is not None:
        usage_error(f"--report: cannot write {report}: {why}; nothing was imported")
    source = sys.stdin.buffer if file == "-" else file
    with opened(model, db, as_user) as crm, progress_bar(entity) as progress:
        try:
            result = import_csv(
                crm,
                entity,
                source,
                mapping=mapping,
                skip_invalid=skip_invalid,
                report_path=report,
                import_stages=with_stages,
                near_matches=near_matches,
                automations=automations,
                progress=progress,
            )
        except ImportRefused as exc:  # nothing was imported: the report says why, row by row
            if report is None and file != "-":
                default_report(exc.result, file)
            if exc.result.report_path:
                raise ImportRefused(f"{exc} (report: {exc.result.report_path})", exc.issues, exc.result) from exc
            raise
    if report is None and (result.rejected or result.notes) and file != "-":
        default_report(result, file)
    if format is Format.json:
        typer.echo(to_json(result.to_dict()))
        return
    typer.echo(result.summary() + (f" (report: {result.report_path})" if result.report_path else ""))
    if result.renumbered:
        typer.echo(
            f"note: the new ids differ from the file's id column; links to these {entity} records by id in "
            "other files will not match: link by title instead",
            err=True,
        )


def export(
    entity: Annotated[str, typer.Argument(help="Entity name.")],
    where: Annotated[str | None, typer.Option("--where", "-w", help="Filter, e.g. \"stage = 'won'\".")] = None,
    order_by: Annotated[
        str | None, typer.Option("--order-by", help="Fields, '-' for descending: -amount,title.")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")] = None,
    columns: ColumnsOpt = None,
    expand: Annotated[
        bool, typer.Option("--expand", help="Links as their targets' titles (import matches titles too), not ids.")
    ] = False,
    link: LinkOpt = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
) -> None:
    """Export records as CSV: what `metacrm import` reads back (ids, links as ids, stage).
    --columns picks the columns (the entity's list: is not applied: an export is complete
    unless told). --link LINK exports the rows of a many-link instead: record id, target id
    and the link's fields, one line per linked pair."""
    from ..io.csv_io import export_csv
    from ..io.paths import unwritable
    from .listing import parse_columns, shown_rows

    if output is not None and (why := unwritable(output)) is not None:
        usage_error(f"--output: cannot write {output}: {why}")
    if link is not None:
        if columns or expand or order_by:
            usage_error("--link exports the link's rows: --columns, --expand and --order-by do not apply")
        from ..io.link_csv import export_link_rows

        with opened(model, db, as_user) as crm:
            count = export_link_rows(crm, entity, link, output if output is not None else sys.stdout, where=where)
        if output is not None:
            typer.echo(f"exported {plural(count, f'{entity}.{link} row')} to {output}", err=True)
        return
    with opened(model, db, as_user) as crm:
        ent = crm.model.entity(entity)
        names = parse_columns(ent, columns) if columns else None
        transform = None
        if expand:
            system = ("created_at", "updated_at", "version", "created_by", "updated_by", "archived_at", "archived_by")
            shown = names or [c for c in ent.columns if c not in system]

            def transform(page):
                return shown_rows(crm, ent, page, shown, titles=True)

        count = export_csv(
            crm,
            entity,
            output if output is not None else sys.stdout,
            where=where,
            order_by=order_by,
            columns=names,
            transform=transform,
        )
    if output is not None:
        typer.echo(f"exported {plural(count, entity + ' record')} to {output}", err=True)


def _import_links(entity: str, file: str, link: str, model: str, db: str, as_user, format: Format) -> None:
    from ..io.link_csv import import_link_rows

    source = sys.stdin.buffer if file == "-" else file
    with opened(model, db, as_user) as crm:
        count = import_link_rows(crm, entity, link, source)
    if format is Format.json:
        typer.echo(to_json({"entity": entity, "link": link, "rows": count}))
    else:
        typer.echo(f"linked {plural(count, f'{entity}.{link} row')}")


def register(app: typer.Typer) -> None:
    app.command("import")(import_)
    app.command("export")(export)
