"""Files attached to records: ``file`` and ``image`` fields (one file each) and an entity's
``attachments: true`` (any number). See docs/files.md.

The content goes to the CRM's file store (runtime/filestore.py: a local directory, or an S3
bucket), addressed by its SHA-256; the metadata goes to ``metacrm_files`` (id, entity, record,
field or null for an attachment, name, size, MIME type, sha256, created_at, created_by), and a
file field's column holds the id of its row. Row-level access is the record's: reading a file
needs read access to its record, attaching and detaching need update access. A file id that
is not one of that record's files answers exactly as one that does not exist, and a record the
user may not read answers as the record does everywhere (the HTTP API: as an absent one).

Where the store is: ``connect(..., files=LOCATION)``, else the environment's ``METACRM_FILES``,
else, for an SQLite file ``crm.db``, the directory ``crm.db.files`` beside it. PostgreSQL (or
an in-memory SQLite) has no default: the database may be reached from several machines, and a
directory that depends on where a command happens to run would split the files between them.
"""

from __future__ import annotations

import io
import mimetypes
import os
import shutil
import time
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import delete, insert, select, update

from ..errors import ConflictError, FieldIssue, NotFound, SetupError, ValidationError
from ..model.file_rules import IMAGE_TYPES, accepts, show_size
from ..model.metamodel import Entity, FileSpec
from ..model.suggest import listing
from ..storage.types import now_utc
from ..types import FileDownload, FileInfo, PruneReport
from . import journal
from . import records as rec
from .access import require
from .filestore import FileStore, TooLarge, failing, open_store

ATTACHMENTS = "attachments"
DEFAULT_TYPE = "application/octet-stream"
MAX_NAME = 255
PRUNE_GRACE = 3600.0  # seconds: content younger than this is never pruned (an attach may be under way)
# served inline by the web (shown in the page); every other type is a download
INLINE_TYPES = frozenset(IMAGE_TYPES)


def default_location(url) -> str | None:
    """The store beside an SQLite file (``crm.db`` -> ``crm.db.files``); None elsewhere."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return database + ".files"


def clean_name(name: str) -> str:
    """A file's name as stored and offered for download: its last path part, without control
    characters, at most 255 characters (the extension kept)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip().strip(".")
    if len(base) > MAX_NAME:
        stem, dot, ext = base.rpartition(".")
        base = stem[: MAX_NAME - len(ext) - 1] + dot + ext if dot and len(ext) < 20 else base[:MAX_NAME]
    return base


def guess_type(name: str) -> str:
    """The MIME type a file's extension says (``application/octet-stream`` when unknown)."""
    return mimetypes.guess_type(name, strict=False)[0] or DEFAULT_TYPE


def image_type(head: bytes) -> str | None:
    """The raster image type of content by its signature (puremagic), or None."""
    import puremagic

    try:
        found = puremagic.from_string(head, mime=True)
    except (puremagic.PureError, ValueError):
        return None
    return found if found in IMAGE_TYPES else None


def _info(row: Mapping) -> FileInfo:
    return {
        "id": row["id"],
        "entity": row["entity"],
        "record_id": row["record_id"],
        "field": row["field"],
        "name": row["name"],
        "size": row["size"],
        "mime": row["mime"],
        "sha256": row["sha256"],
        "created_at": row["created_at"],
        "created_by": row["created_by"],
    }


class FilesMixin:
    """crm.attach / detach / files / file_info / open_file / download / prune."""

    _files_location: str | None = None
    _file_store: FileStore | None = None

    @property
    def file_store(self) -> FileStore:
        """The store of this CRM's files (SetupError when none is configured)."""
        if self._file_store is None:
            location = self._files_location or os.environ.get("METACRM_FILES") or default_location(self.engine.url)
            tenant = self.engine.get_execution_options().get("metacrm_tenant")
            if location and tenant:  # a store per tenant: one tenant's prune never sees another's files
                location = f"{location.rstrip('/')}/{tenant}"
            if not location:
                raise SetupError(
                    f"no file store for this {self.engine.url.get_backend_name()} database: give one with "
                    "connect(..., files=DIR), --files DIR or METACRM_FILES (a directory, or s3://BUCKET/PREFIX)"
                )
            self._file_store = open_store(location)
        return self._file_store

    def _spec(self, ent: Entity, field: str | None) -> FileSpec:
        spec = ent.file_spec(field)
        if spec is not None:
            return spec
        names = [f.name for f in ent.file_fields]
        if field is None:
            allowed = f"its file fields: {listing(names)} (--field NAME)" if names else "it has no file fields either"
            message = f"{ent.name} has no attachments (the model does not declare attachments: true); {allowed}"
        else:
            what = "is not a file field" if field in ent.fields else "is not a field"
            tail = "; or leave the field out for an attachment" if ent.attachments else ""
            message = f"{ent.name}.{field}: {what}; file fields: {listing(names) or 'none'}{tail}"
        raise ValidationError(message, [FieldIssue(ent.name, field, message, field)])

    def _files_table(self):
        if self.storage.files_table is None:  # the model declares no files at all
            raise ValidationError("the model declares no file fields and no attachments")
        return self.storage.files_table

    # -- attach -----------------------------------------------------------------------------
    def attach(
        self,
        entity: str,
        record_id: int,
        source: str | os.PathLike[str] | bytes | BinaryIO,
        *,
        field: str | None = None,
        name: str | None = None,
    ) -> FileInfo:
        """Attach a file to a record: to the file field ``field`` (replacing the file it held),
        or, without ``field``, as one more attachment. ``source``: a path, bytes or a binary
        file object (``name`` then names the file; a path gives its own name). Refused
        (ValidationError naming the field) when the file is not of a type the field accepts,
        is larger than its max_size, or, for an image field, is not a PNG, JPEG, GIF or WebP
        image. Returns the file's metadata (``id``: what detach and download take)."""
        self._ready()
        ent = self._entity(entity)
        spec = self._spec(ent, field)
        table = self._files_table()
        require(self.model, self.actor, ent.name, "update")
        where = f"{ent.name}.{field}" if field else f"{ent.name} attachments"
        if isinstance(source, str | os.PathLike):
            name = name or os.fspath(source)
        elif name is None:
            name = getattr(source, "name", None)
        shown = clean_name(name) if isinstance(name, str) else ""
        if not shown:
            raise ValidationError(f"{where}: give the file a name (name=...)", [FieldIssue(ent.name, field, "no name")])
        mime = guess_type(shown)
        with self._reading() as conn:  # refused before any content is stored
            self._get_row(conn, ent, record_id, "update")
        if not accepts(spec, shown, mime):
            message = f"{where}: '{shown}' ({mime}) is not accepted; accepted: {', '.join(spec.accept)}"
            raise ValidationError(message, [FieldIssue(ent.name, field, message, shown)])
        stored = self._put(ent, field, where, source, spec)
        if spec.image:
            detected = image_type(stored.head)
            if detected is None:
                message = f"{where}: '{shown}' is not an image (PNG, JPEG, GIF or WebP)"
                raise ValidationError(message, [FieldIssue(ent.name, field, message, shown)])
            mime = detected
        with self._writing() as conn:
            row = self._get_row(conn, ent, record_id, "update")
            now = now_utc()
            values = {
                "entity": ent.name,
                "record_id": row["id"],
                "field": field,
                "name": shown,
                "size": stored.size,
                "mime": mime,
                "sha256": stored.sha256,
                "created_at": now,
                "created_by": self.user,
            }
            file_id = conn.execute(insert(table).values(**values).returning(table.c.id)).scalar_one()
            info = _info({"id": file_id, **values})
            if field is None:
                self._log(conn, [journal.entry(ent.name, row["id"], "attach", now, self.user, text=_said(info))])
                return info
            old = row[field]
            if old is not None:
                conn.execute(delete(table).where(table.c.id == old))
            self._set_field(conn, ent, row, field, file_id, now, _said(info))
            return info

    def _put(self, ent: Entity, field: str | None, where: str, source, spec: FileSpec):
        opened = None
        if isinstance(source, bytes | bytearray | memoryview):
            stream: BinaryIO = io.BytesIO(bytes(source))
        elif isinstance(source, str | os.PathLike):
            try:
                stream = opened = open(source, "rb")  # noqa: SIM115 (closed below)
            except OSError as exc:
                message = f"{where}: cannot read {os.fspath(source)}: {exc.strerror or exc}"
                raise ValidationError(message, [FieldIssue(ent.name, field, message)]) from None
        else:
            stream = source
        store = self.file_store
        try:
            with failing(store.location):
                return store.put(stream, limit=spec.max_size)
        except TooLarge:
            assert spec.max_size is not None
            message = f"{where}: the file is larger than {show_size(spec.max_size)} (max_size)"
            raise ValidationError(message, [FieldIssue(ent.name, field, message)]) from None
        finally:
            if opened is not None:
                opened.close()

    def _set_field(self, conn, ent: Entity, row: Mapping, field: str, value, now, text: str) -> None:
        """A file field's column changed (attach, detach): version, journal, stage requires."""
        table = self.storage.table(ent.name)
        done = conn.execute(
            update(table)
            .where(table.c.id == row["id"], table.c.version == row["version"])  # compare and swap
            .values({field: value, "updated_at": now, "updated_by": self.user, "version": table.c.version + 1})
        )
        if done.rowcount == 0:  # another write got there first (PostgreSQL: read committed)
            raise ConflictError(
                f"{ent.name} {row['id']} was changed by someone else meanwhile; nothing was written: try again",
                entity=ent.name,
                record_id=row["id"],
                retryable=True,
            )
        entry = journal.entry(ent.name, row["id"], "update", now, self.user, {field: [row[field], value]}, text=text)
        self._log(conn, [entry])
        fresh = conn.execute(rec.row_by_id(table), {"_id": row["id"]}).mappings().one()
        self._check_rules(conn, ent, [row["id"]], row=fresh, touched=[field])

    # -- detach, list, read -----------------------------------------------------------------
    def _file_row(self, conn, ent: Entity, record: Mapping, file_id) -> Mapping:
        """A file of the record; NotFound, the same for an unknown id and another record's."""
        table = self._files_table()
        try:
            number = int(file_id)
        except (TypeError, ValueError):
            number = None
        row = None
        if number is not None and not isinstance(file_id, bool) and -(2**63) <= number < 2**63:
            row = (
                conn.execute(
                    select(table).where(
                        table.c.id == number, table.c.entity == ent.name, table.c.record_id == record["id"]
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"{ent.name} {record['id']} has no file {file_id}", entity=ent.name, record_id=record["id"])
        return row

    def detach(self, entity: str, record_id: int, file_id: int) -> FileInfo:
        """Remove a file from a record (a file field becomes empty; refused when the stage the
        record is in requires the field). The content stays in the store until ``prune``.
        Returns the removed file's metadata."""
        self._ready()
        ent = self._entity(entity)
        table = self._files_table()
        require(self.model, self.actor, ent.name, "update")
        with self._writing() as conn:
            record = self._get_row(conn, ent, record_id, "update")
            row = self._file_row(conn, ent, record, file_id)
            conn.execute(delete(table).where(table.c.id == row["id"]))
            info, now = _info(row), now_utc()
            field = row["field"]
            if field is not None and field in ent.fields and record[field] == row["id"]:
                self._set_field(conn, ent, record, field, None, now, _said(info))
            else:
                self._log(conn, [journal.entry(ent.name, record["id"], "detach", now, self.user, text=_said(info))])
            return info

    def files(self, entity: str, record_id: int) -> list[FileInfo]:
        """The files of a record (its file fields' and its attachments), oldest first."""
        self._ready()
        ent = self._entity(entity)
        with self._reading() as conn:
            record = self._get_row(conn, ent, record_id)
            if self.storage.files_table is None or not ent.has_files:
                return []
            table = self.storage.files_table
            rows = conn.execute(
                select(table).where(table.c.entity == ent.name, table.c.record_id == record["id"]).order_by(table.c.id)
            ).mappings()
            return [_info(r) for r in rows]

    def file_info(self, entity: str, record_id: int, file_id: int) -> FileInfo:
        """One file's metadata (NotFound unless it is a file of that record)."""
        self._ready()
        ent = self._entity(entity)
        with self._reading() as conn:
            return _info(self._file_row(conn, ent, self._get_row(conn, ent, record_id), file_id))

    def open_file(self, entity: str, record_id: int, file_id: int) -> tuple[FileInfo, BinaryIO]:
        """A file's metadata and its content as a binary stream (the caller closes it)."""
        info = self.file_info(entity, record_id, file_id)
        store = self.file_store
        with failing(store.location):
            return info, store.open(info["sha256"])

    def download(self, entity: str, record_id: int, file_id: int, target: str | os.PathLike[str]) -> FileDownload:
        """Write a file's content to ``target`` (a file path; a directory gets the file's own
        name); returns the metadata with ``path``."""
        info, stream = self.open_file(entity, record_id, file_id)
        path = Path(target)
        if path.is_dir():
            path = path / info["name"]
        with stream, open(path, "wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
        return {**info, "path": str(path)}

    # -- prune ------------------------------------------------------------------------------
    def prune(self, *, dry_run: bool = False, grace: float = PRUNE_GRACE) -> PruneReport:
        """Remove from the store the content no file row refers to any more (detached files,
        files of deleted and purged records, refused attaches), and the rows of files whose
        record is gone. Content younger than ``grace`` seconds is kept (an attach may be
        writing it). ``dry_run``: only count. Returns ``{"rows", "removed", "kept",
        "dry_run"}``: file rows removed, stored contents removed and kept."""
        self._ready()
        table = self.storage.files_table
        orphans: list[int] = []
        referenced: set[str] = set()
        with self._writing() as conn:
            if table is not None:
                holding = list(conn.execute(select(table.c.entity).distinct()).scalars())  # entities with files
                for name in holding:
                    if name not in self.model.entities:  # an entity no longer in the model
                        orphans += conn.execute(select(table.c.id).where(table.c.entity == name)).scalars()
                        continue
                    entity_table = self.storage.table(name)
                    gone = select(table.c.id).where(
                        table.c.entity == name,
                        ~select(entity_table.c.id).where(entity_table.c.id == table.c.record_id).exists(),
                    )
                    orphans += conn.execute(gone).scalars()
                if orphans and not dry_run:
                    for start in range(0, len(orphans), rec.BATCH):
                        conn.execute(delete(table).where(table.c.id.in_(orphans[start : start + rec.BATCH])))
                kept = select(table.c.sha256).distinct()
                if dry_run and orphans:
                    kept = kept.where(table.c.id.not_in(orphans))
                referenced = set(conn.execute(kept).scalars())
        store = self.file_store
        removed = kept_count = 0
        cutoff = time.time() - grace
        with failing(store.location):
            for sha256, modified in list(store.stored()):
                if sha256 in referenced or modified > cutoff:
                    kept_count += 1
                    continue
                removed += 1
                if not dry_run:
                    store.remove(sha256)
        return {"rows": len(orphans), "removed": removed, "kept": kept_count, "dry_run": dry_run}


def _said(info: Mapping) -> str:
    return f"{info['name']} (file {info['id']}, {show_size(info['size'])})"


def disposition(info: Mapping) -> tuple[str, str]:
    """(Content-Type, Content-Disposition) for serving a file: a raster image inline, any
    other type as a download; the name in RFC 6266 form (an ASCII fallback and ``filename*``)."""
    from urllib.parse import quote

    mime = info["mime"]
    kind = "inline" if mime in INLINE_TYPES else "attachment"
    ascii_name = info["name"].encode("ascii", "ignore").decode().replace('"', "").replace("\\", "").strip()
    if not ascii_name or ascii_name.startswith("."):  # a name in another script: file.pdf
        ascii_name = "file" + ascii_name
    header = f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(info['name'], safe='')}"
    return mime, header


__all__ = ["FilesMixin", "clean_name", "default_location", "disposition", "guess_type"]
