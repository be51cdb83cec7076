"""Commands on records: create, get, list, update, delete, link, unlink, duplicates, merge."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Annotated

import typer

from .common import fail, refusals, usage_error
from .output import Format, emit_record, emit_records, reference_text, to_json, to_pairs

ModelOpt = Annotated[str, typer.Option("--model", "-m", envvar="METACRM_MODEL", help="The model file.")]
DbOpt = Annotated[str, typer.Option("--db", envvar="METACRM_DB", help="SQLAlchemy database URL.")]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="table, json or csv.")]
AsOpt = Annotated[
    str | None, typer.Option("--as", envvar="METACRM_USER", help="Act as this user (roles and row-level access apply).")
]
ColumnsOpt = Annotated[
    str | None,
    typer.Option(
        "--columns",
        "-c",
        help="Columns, comma-separated: fields, links, id, stage, owner... "
        "(a table's default: the entity's list:, else every column; json and csv: every column).",
    ),
]
WideOpt = Annotated[bool, typer.Option("--wide", help="Never cut long cells to fit the terminal.")]
ExpandOpt = Annotated[bool, typer.Option("--expand", help="json and csv: links as their targets' titles, not ids.")]
DEFAULT_MODEL = "model.yaml"
DEFAULT_DB = "sqlite:///crm.db"


@contextmanager
def opened(model: str, db: str, as_user: str | None = None, *, create: bool = False):
    """A CRM on the model and database (acting as ``as_user``, or the system user), closed
    afterwards; refusals mapped to exit codes. Without ``create``, an SQLite file that does
    not exist is refused (exit 2), never created empty."""
    import warnings

    from ..cli.common import load, missing_database, read_db, tenant_engine, tenant_model_file
    from ..errors import DuplicateWarning
    from ..runtime.crm import CRM
    from ..runtime.engine import make_engine
    from ..runtime.replica import open_replica

    loaded = load(tenant_model_file(model))
    with refusals():
        engine = make_engine(db)  # a malformed URL is said first; opening nothing yet
    if not create and (why := missing_database(db)) is not None:
        engine.dispose()
        fail(why)  # not found: exit 1, as `metacrm dump` answers
    with refusals(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DuplicateWarning)
        engine = tenant_engine(engine)
        crm = CRM(loaded, engine, user=as_user)
        try:
            if (replica := read_db()) is not None:  # --read-db: plain reads go to the replica
                crm.read_engine, crm._owns_read_engine = open_replica(engine, replica)
            with crm.request():  # a command is one request: once it wrote, it reads its writes
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
        emit_record(crm.create(entity, data), format, crm.model.entity(entity))


def get(
    entity: Annotated[str, typer.Argument(help="Entity name.")],
    record_id: Annotated[str, typer.Argument(metavar="ID")],
    columns: ColumnsOpt = None,
    wide: WideOpt = False,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """One record's card: its fields, its links, and the records linking to it."""
    from .listing import parse_columns, tidy
    from .output import table_width

    with opened(model, db, as_user) as crm:
        ent = crm.model.entity(entity)
        shown = parse_columns(ent, columns, extra=list(ent.inverses)) if columns else list(ent.columns)
        shown += [f"{n}.link" for n in shown if n in ent.links and ent.links[n].fields]  # their rows' values
        card = crm.card(entity, record_id)
        # a file field holds its file's id: the table shows the file's name beside it
        names = {f["id"]: f["name"] for f in crm.files(entity, record_id)} if ent.file_fields else {}
    record = {k: v for k, v in tidy(ent, card["record"]).items() if k in shown}
    links = {k: v for k, v in card["links"].items() if k in shown}
    related = {k: v for k, v in card["related"].items() if not columns or k in shown}
    if format is Format.json:
        typer.echo(to_json({**card, "record": record, "links": links, "related": related}))
        return
    if format is Format.csv:
        emit_record(record, format)
        return
    from .listing import human_durations

    record = human_durations(ent, [record])[0]
    for f in ent.file_fields:
        if record.get(f.name) in names:
            record[f.name] = f"{names[record[f.name]]} (file {record[f.name]})"
    pairs = [(k, v) for k, v in record.items() if k not in card["links"] and not k.endswith(".link")]  # links: below
    typer.echo(to_pairs(pairs, width=table_width(), wide=wide), nl=False)
    for name, value in links.items():
        targets = value if isinstance(value, list) else [value] if value else []
        text = ", ".join(reference_text(t) for t in targets) or "-"
        typer.echo(f"-> {name}: {text}")
    for name, items in related.items():
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
    columns: ColumnsOpt = None,
    wide: WideOpt = False,
    expand: ExpandOpt = False,
    archived: Annotated[
        bool, typer.Option("--archived", help="Only the archived records (an entity with archive: true).")
    ] = False,
    with_archived: Annotated[
        bool, typer.Option("--with-archived", help="The archived records too (an entity with archive: true).")
    ] = False,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Records of an entity, filtered, ordered and paged. Tables show links by their
    targets' titles and fit the terminal (--wide: never cut). Archived records are left out
    unless --archived or --with-archived."""
    from .listing import expanded_rows, human_durations, parse_columns, shown_rows

    if archived and with_archived:
        usage_error("--archived (only the archived records) and --with-archived (all of them): give one")
    mode = "only" if archived else "include" if with_archived else "exclude"
    with opened(model, db, as_user) as crm:
        ent = crm.model.entity(entity)
        shown = parse_columns(ent, columns, table=format is Format.table)
        rows = crm.find(entity, where, order_by=order_by, limit=limit, offset=offset, archived=mode)
        if format is Format.json and expand:
            rows = expanded_rows(crm, ent, rows, shown)
        else:
            rows = shown_rows(crm, ent, rows, shown, titles=format is Format.table or expand)
        if format is Format.table:
            rows = human_durations(ent, rows)
    emit_records(rows, format, shown, wide=wide)


def update(
    entity: Annotated[str, typer.Argument(help="Entity name.")],
    record_id: Annotated[str, typer.Argument(metavar="ID")],
    values: Annotated[
        list[str] | None, typer.Argument(help="FIELD=VALUE ... (an empty value clears the field).")
    ] = None,
    version: Annotated[
        int | None,
        typer.Option(
            "--version",
            min=1,
            help="Refuse (exit 1) when the record is no longer at this version: someone changed it since.",
        ),
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
        emit_record(crm.update(entity, record_id, data, version=version), format, crm.model.entity(entity))


def delete(
    entity: Annotated[str, typer.Argument(help="Entity name.")],
    record_id: Annotated[str, typer.Argument(metavar="ID")],
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Delete a record (and what its links cascade to). On an entity with archive: true the
    record is archived instead: `metacrm restore` brings it back, `metacrm purge` removes it."""
    with opened(model, db, as_user) as crm:
        deleted = crm.delete(entity, record_id)
        word = "archived" if crm.model.entity(entity).archive else "deleted"
    _said(word, deleted, format)


def _said(word: str, ids_by_entity: dict, format: Format) -> None:
    if format is Format.json:
        typer.echo(to_json({word: ids_by_entity}))
    else:
        for name, ids in ids_by_entity.items():
            typer.echo(f"{word} {name} {', '.join(map(str, ids))}")


def purge(
    entity: Annotated[str, typer.Argument(help="Entity name.")],
    record_id: Annotated[str | None, typer.Argument(metavar="ID", help="The record (omit with --archived).")] = None,
    archived: Annotated[
        bool, typer.Option("--archived", help="Every archived record of the entity (that you may delete).")
    ] = False,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Remove a record for good (archived or not), with what its links cascade to: what
    delete does on an entity without archive: true. --archived: all archived records."""
    if (record_id is None) == (not archived):
        usage_error("purge: give a record ID, or --archived for every archived record (not both)")
    with opened(model, db, as_user) as crm:
        removed = crm.purge_archived(entity) if archived else crm.purge(entity, record_id)
    _said("purged", removed, format)


def restore_record(model: str, db: str, as_user: str | None, entity: str, record_id: str, format: Format) -> None:
    """``metacrm restore ENTITY ID``: bring an archived record back and print it (called by
    the restore command, which also restores dumps)."""
    with opened(model, db, as_user) as crm:
        record = crm.restore(entity, record_id)
        emit_record(record, format, crm.model.entity(entity))


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
        emit_record(crm.merge(entity, keep, other), format, crm.model.entity(entity))


def _link_command(add: bool):
    def command(
        entity: Annotated[str, typer.Argument(help="Entity name.")],
        record_id: Annotated[str, typer.Argument(metavar="ID")],
        link: Annotated[str, typer.Argument(help="Link (or inverse link) name.")],
        target: Annotated[str | None, typer.Argument(help="Target id (deal:5 for a polymorphic link).")] = None,
        values: Annotated[
            list[str] | None,
            typer.Argument(help="FIELD=VALUE ...: the fields of a link that carries them (qty=3).", show_default=False),
        ] = None,
        model: ModelOpt = DEFAULT_MODEL,
        db: DbOpt = DEFAULT_DB,
        as_user: AsOpt = None,
        format: FormatOpt = Format.table,
    ) -> None:
        if add and target is None:
            usage_error("give the target id to link to")
        if values and not add:
            usage_error("unlink takes no FIELD=VALUE pairs")
        given = parse_assignments(values or [])
        with opened(model, db, as_user) as crm:
            if add:
                record = crm.link(entity, record_id, link, target, values=given or None)
            else:
                record = crm.unlink(entity, record_id, link, target)
            emit_record(record, format, crm.model.entity(entity))

    command.__doc__ = (
        "Link a record to another; FIELD=VALUE pairs set the link's fields (metacrm link deal 1 products 4 qty=3), "
        "also on a pair already linked."
        if add
        else "Remove a link."
    )
    return command


def register(app: typer.Typer) -> None:
    app.command()(create)
    app.command()(get)
    app.command("list")(list_)
    app.command()(update)
    app.command()(delete)
    app.command()(purge)
    app.command("link")(_link_command(True))
    app.command("unlink")(_link_command(False))
    app.command()(duplicates)
    app.command()(merge)
