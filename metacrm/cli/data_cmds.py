"""Commands on records: create, get, list, update, delete, link, unlink, duplicates, merge."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Annotated

import typer

from .common import refusals, usage_error
from .output import Format, emit_record, emit_records, reference_text, to_json, to_pairs

ModelOpt = Annotated[str, typer.Option("--model", "-m", envvar="METACRM_MODEL", help="The model file.")]
DbOpt = Annotated[str, typer.Option("--db", envvar="METACRM_DB", help="SQLAlchemy database URL.")]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="table, json or csv.")]
AsOpt = Annotated[
    str | None, typer.Option("--as", envvar="METACRM_USER", help="Act as this user (roles and row-level access apply).")
]
DEFAULT_MODEL = "model.yaml"
DEFAULT_DB = "sqlite:///crm.db"


@contextmanager
def opened(model: str, db: str, as_user: str | None = None):
    """A CRM on the model and database (acting as ``as_user``, or the system user), closed
    afterwards; refusals mapped to exit codes."""
    import warnings

    from ..cli.common import load
    from ..errors import DuplicateWarning
    from ..runtime.crm import CRM
    from ..runtime.engine import make_engine

    loaded = load(model)
    with refusals(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DuplicateWarning)
        crm = CRM(loaded, make_engine(db), user=as_user)
        try:
            yield crm
        finally:
            crm.close()
            for warning in caught:  # e.g. a `warn` duplicate rule matched: stored, but said
                if isinstance(warning.message, DuplicateWarning):
                    typer.echo(f"warning: {warning.message}", err=True)


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            usage_error(f"expected FIELD=VALUE, got {pair!r}")
        values[name.strip()] = value
    return values


def create(
    entity: Annotated[str, typer.Argument(help="Entity name.")],
    values: Annotated[
        list[str] | None, typer.Argument(help="FIELD=VALUE ...; links by id (client=3, products=1,4, subject=deal:5).")
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Create a record; prints it with its id."""
    data = parse_assignments(values or [])
    with opened(model, db, as_user) as crm:
        emit_record(crm.create(entity, data), format)


def get(
    entity: Annotated[str, typer.Argument(help="Entity name.")],
    record_id: Annotated[str, typer.Argument(metavar="ID")],
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """One record's card: its fields, its links, and the records linking to it."""
    with opened(model, db, as_user) as crm:
        card = crm.card(entity, record_id)
    if format is Format.json:
        typer.echo(to_json(card))
        return
    if format is Format.csv:
        emit_record(card["record"], format)
        return
    typer.echo(to_pairs(list(card["record"].items())), nl=False)
    for name, value in card["links"].items():
        targets = value if isinstance(value, list) else [value] if value else []
        shown = ", ".join(reference_text(t) for t in targets) or "-"
        typer.echo(f"-> {name}: {shown}")
    for name, items in card["related"].items():
        typer.echo(f"<- {name} ({len(items)}):")
        for item in items:
            stage = f" [{item['stage']}]" if "stage" in item else ""
            typer.echo(f"   {reference_text(item)}{stage}")


def list_(
    entity: Annotated[str, typer.Argument(help="Entity name.")],
    where: Annotated[
        str | None, typer.Option("--where", "-w", help="Filter, e.g. \"amount > 1000 and client.city = 'Москва'\".")
    ] = None,
    order_by: Annotated[
        str | None, typer.Option("--order-by", "-o", help="Fields, '-' for descending: -amount,title.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=0)] = None,
    offset: Annotated[int | None, typer.Option("--offset", min=0)] = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Records of an entity, filtered, ordered and paged."""
    with opened(model, db, as_user) as crm:
        rows = crm.find(entity, where, order_by=order_by, limit=limit, offset=offset)
        columns = None if rows else ["id", *crm.model.entity(entity).fields]
    emit_records(rows, format, columns)


def update(
    entity: Annotated[str, typer.Argument(help="Entity name.")],
    record_id: Annotated[str, typer.Argument(metavar="ID")],
    values: Annotated[
        list[str] | None, typer.Argument(help="FIELD=VALUE ... (an empty value clears the field).")
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Change fields and links of a record."""
    data = parse_assignments(values or [])
    if not data:
        usage_error("nothing to update: give FIELD=VALUE pairs")
    with opened(model, db, as_user) as crm:
        emit_record(crm.update(entity, record_id, data), format)


def delete(
    entity: Annotated[str, typer.Argument(help="Entity name.")],
    record_id: Annotated[str, typer.Argument(metavar="ID")],
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Delete a record (and what its links cascade to)."""
    with opened(model, db, as_user) as crm:
        deleted = crm.delete(entity, record_id)
    if format is Format.json:
        typer.echo(to_json({"deleted": deleted}))
    else:
        for name, ids in deleted.items():
            typer.echo(f"deleted {name} {', '.join(map(str, ids))}")


def duplicates(
    entity: Annotated[str, typer.Argument(help="Entity name.")],
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Groups of records that duplicate each other under the entity's duplicate rules."""
    with opened(model, db, as_user) as crm:
        groups = crm.duplicates(entity)
    rows = [{**g, "records": ", ".join(map(str, g["records"]))} for g in groups]
    emit_records(groups if format is Format.json else rows, format, ["rule", "match", "action", "records"])


def merge(
    entity: Annotated[str, typer.Argument(help="Entity name.")],
    keep: Annotated[str, typer.Argument(metavar="KEEP", help="The id of the record kept.")],
    other: Annotated[str, typer.Argument(metavar="OTHER", help="The id of the record merged into KEEP and removed.")],
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Merge OTHER into KEEP: links, history and activities move to KEEP, OTHER is removed."""
    with opened(model, db, as_user) as crm:
        emit_record(crm.merge(entity, keep, other), format)


def _link_command(add: bool):
    def command(
        entity: Annotated[str, typer.Argument(help="Entity name.")],
        record_id: Annotated[str, typer.Argument(metavar="ID")],
        link: Annotated[str, typer.Argument(help="Link (or inverse link) name.")],
        target: Annotated[str | None, typer.Argument(help="Target id (deal:5 for a polymorphic link).")] = None,
        model: ModelOpt = DEFAULT_MODEL,
        db: DbOpt = DEFAULT_DB,
        as_user: AsOpt = None,
        format: FormatOpt = Format.table,
    ) -> None:
        if add and target is None:
            usage_error("give the target id to link to")
        with opened(model, db, as_user) as crm:
            method = crm.link if add else crm.unlink
            emit_record(method(entity, record_id, link, target), format)

    command.__doc__ = "Link a record to another." if add else "Remove a link."
    return command


def register(app: typer.Typer) -> None:
    app.command()(create)
    app.command()(get)
    app.command("list")(list_)
    app.command()(update)
    app.command()(delete)
    app.command("link")(_link_command(True))
    app.command("unlink")(_link_command(False))
    app.command()(duplicates)
    app.command()(merge)
