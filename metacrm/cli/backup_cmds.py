"""``metacrm dump DIR`` and ``metacrm restore DIR``: a whole CRM into a directory and back,
into an empty database of either dialect (see metacrm/io/dump.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import refusals
from .data_cmds import DEFAULT_DB, DEFAULT_MODEL, AsOpt, DbOpt, FormatOpt, ModelOpt
from .output import Format, plural


def dump(
    directory: Annotated[str, typer.Argument(help="A new or empty directory to write the dump to.")],
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Write a consistent snapshot of the whole CRM (model, records, links, history, journal,
    users, outbox) to DIR: a manifest and one JSON Lines file per table. With --read-db, the
    snapshot is read from the replica (docs/scaling.md)."""
    from ..io.dump import dump as dump_to
    from .common import fail, missing_database, read_db

    source = read_db() or db  # a read: from the replica when one is given, off the database
    if (why := missing_database(source)) is not None:
        fail(why)
    with refusals():
        manifest = dump_to(_tenant_source(source), directory)
    tables = manifest["tables"]
    rows = sum(info["rows"] for info in tables.values())
    model = manifest["model"]
    typer.echo(
        f"dumped {model['name']} ({model['sha256'][:12]}): {plural(len(tables), 'table')}, {plural(rows, 'row')} to {directory}"
    )
    if manifest["left_out"]:
        left = manifest["left_out"]
        typer.echo(
            f"warning: left out what the model no longer has ({len(left)}: {', '.join(left[:5])}"
            f"{', ...' if len(left) > 5 else ''}); drop it with `metacrm migrate --allow-data-loss`",
            err=True,
        )


def restore(
    directory: Annotated[
        str, typer.Argument(metavar="DIR | ENTITY", help="A directory written by `metacrm dump`, or an entity.")
    ],
    record_id: Annotated[
        str | None, typer.Argument(metavar="ID", help="With an entity: the archived record to bring back.")
    ] = None,
    db: DbOpt = DEFAULT_DB,
    model: ModelOpt = DEFAULT_MODEL,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """`restore DIR`: rebuild a dump into an EMPTY database (SQLite or PostgreSQL) with the
    model it recorded, in one transaction: all of it or, on any error, nothing.
    `restore ENTITY ID`: bring an archived record back (an entity with archive: true)."""
    if record_id is not None:
        from .data_cmds import restore_record

        restore_record(model, db, as_user, directory, record_id, format)
        return
    from ..io.dump import restore as restore_from

    with refusals():
        manifest = restore_from(directory, _tenant_source(db))
    tables = manifest["tables"]
    rows = sum(info["rows"] for info in tables.values())
    model = manifest["model"]
    typer.echo(
        f"restored {model['name']} ({model['sha256'][:12]}): {plural(len(tables), 'table')}, {plural(rows, 'row')}"
    )


def _tenant_source(db: str):
    """``db``, or the engine of the --tenant given (dump and restore take either)."""
    from .common import current_tenant, tenant_engine

    if current_tenant() is None:
        return db
    from ..runtime.engine import make_engine

    return tenant_engine(make_engine(db))


def register(app: typer.Typer) -> None:
    app.command()(dump)
    app.command()(restore)
