"""Files attached to records: attach, detach, download, files, prune (docs/files.md)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from .common import fail
from .data_cmds import DEFAULT_DB, DEFAULT_MODEL, AsOpt, DbOpt, FormatOpt, ModelOpt, opened
from .output import Format, emit_record, emit_records, to_json

FilesOpt = Annotated[
    str | None,
    typer.Option(
        "--files",
        envvar="METACRM_FILES",
        help="Where the files are kept: a directory or s3://BUCKET/PREFIX (default: DB.files beside an SQLite file).",
    ),
]
EntityArg = Annotated[str, typer.Argument(help="Entity name.")]
IdArg = Annotated[str, typer.Argument(metavar="ID", help="The record's id.")]
FileIdArg = Annotated[str, typer.Argument(metavar="FILE_ID", help="The file's id (metacrm files ENTITY ID).")]
COLUMNS = ["id", "field", "name", "size", "mime", "created_at", "created_by"]


@contextmanager
def store(model: str, db: str, as_user: str | None, files: str | None):
    with opened(model, db, as_user) as crm:
        if files:
            crm._files_location = files
        yield crm


def attach(
    entity: EntityArg,
    record_id: IdArg,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The file to attach.")],
    field: Annotated[
        str | None, typer.Option("--field", help="A file or image field (default: an attachment).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="The name it is stored under (default: its own).")] = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    files: FilesOpt = None,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Attach a file to a record: to a file field (--field), or as one more attachment."""
    with store(model, db, as_user, files) as crm:
        info = crm.attach(entity, record_id, file, field=field, name=name)
    emit_record(info, format)


def detach(
    entity: EntityArg,
    record_id: IdArg,
    file_id: FileIdArg,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    files: FilesOpt = None,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Remove a file from a record (its content goes at the next `metacrm prune`)."""
    with store(model, db, as_user, files) as crm:
        info = crm.detach(entity, record_id, file_id)
    if format is Format.json:
        typer.echo(to_json({"detached": info}))
    else:
        typer.echo(f"detached file {info['id']} ({info['name']}) from {entity} {info['record_id']}")


def download(
    entity: EntityArg,
    record_id: IdArg,
    file_id: FileIdArg,
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="Where to write it: a file, a directory, or - for stdout (default: ./NAME)."
        ),
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    files: FilesOpt = None,
    as_user: AsOpt = None,
) -> None:
    """Write a file of a record (by default to its own name in the current directory)."""
    import shutil
    import sys

    with store(model, db, as_user, files) as crm:
        if output == "-":
            _, stream = crm.open_file(entity, record_id, file_id)
            with stream:
                shutil.copyfileobj(stream, sys.stdout.buffer, 1 << 20)
            sys.stdout.buffer.flush()
            return
        if output is None:
            name = crm.file_info(entity, record_id, file_id)["name"]
            if Path(name).exists():
                fail(f"{name} exists here: give -o PATH to write it elsewhere (or over it)")
            output = name
        try:
            info = crm.download(entity, record_id, file_id, output)
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or exc}")
    typer.echo(f"wrote {info['path']} ({info['size']} bytes, {info['mime']})", err=True)


def files_(
    entity: EntityArg,
    record_id: IdArg,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    as_user: AsOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """The files of a record: its file fields' and its attachments."""
    with opened(model, db, as_user) as crm:
        rows = crm.files(entity, record_id)
    emit_records(rows, format, None if format is Format.json else COLUMNS)


def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be removed.")] = False,
    grace: Annotated[
        float, typer.Option("--grace", help="Keep content younger than this many seconds (an attach under way).")
    ] = 3600.0,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    files: FilesOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Remove stored file content no record refers to (detached files, deleted records' files)."""
    with store(model, db, None, files) as crm:
        done = crm.prune(dry_run=dry_run, grace=grace)
    if format is Format.json:
        typer.echo(to_json(done))
        return
    verb = "would remove" if dry_run else "removed"
    typer.echo(
        f"{verb} {done['removed']} stored file(s) and {done['rows']} file row(s) of records that are gone; "
        f"kept {done['kept']}"
    )


def register(app: typer.Typer) -> None:
    app.command()(attach)
    app.command()(detach)
    app.command()(download)
    app.command("files")(files_)
    app.command()(prune)
