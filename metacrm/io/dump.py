"""Backups that move between databases: ``dump(source, dir)`` and ``restore(dir, url)``.

A dump is a directory: ``manifest.json`` plus one JSON Lines file per table metacrm creates
(the tables of :class:`metacrm.storage.tables.Storage` for the recorded model: entity tables,
join tables, the recorded model versions, stage history, journal with notes and activities,
users, outbox, fired automations; the migration lock table is written empty, a lock belongs
to a process on the source database). All of it is read in ONE read transaction (REPEATABLE
READ on PostgreSQL, one SQLite read transaction), so the snapshot is consistent.

Why JSON Lines: one object per row, keys the column names, values exact and dialect-free:
money and decimals as strings (``"1250.00"``: no float), datetimes as ISO text with their zone
(UTC), dates as ISO text, JSON columns as JSON (keys sorted), booleans as booleans. Rows are
written in primary key order (text keys in byte order on both dialects), so a dump of a
restored database is byte-identical to the dump it was restored from.

The manifest holds the format, the metacrm version, the model's name and sha256, the source
dialect, and per table its row count, the sha256 of its file and the highest id ever given
(``sequence``: SQLite's ``sqlite_sequence``, PostgreSQL's serial sequence, at least max(id)).

``restore`` checks the whole dump first (manifest, files, checksums, the recorded model), then
into an EMPTY database (any dialect) in one transaction: creates the schema of the dump's last
recorded model the way ``metacrm migrate`` does on an empty database, inserts every row in
dependency order (links closing a cycle or pointing at a later row of their own table are set
by an UPDATE once their targets are in), sets each id sequence to the dumped value (so no
deleted record's id is given again after a restore either), and compares the row counts. Any
failure rolls everything back (DDL is transactional on both PostgreSQL and SQLite): the target
stays empty. The model used is the one recorded in the dump; no other model is accepted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from decimal import Decimal
from pathlib import Path

from sqlalchemy import JSON, Date, bindparam, func, inspect, select, text
from sqlalchemy.exc import SAWarning

from ..errors import DataError, MetaCRMError, MigrationError
from ..storage import naming
from ..storage.tables import Storage, build_storage
from ..storage.types import ExactDecimal, UTCDateTime

FORMAT = "metacrm-dump"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


# -- values -----------------------------------------------------------------------------------
def _sorted_json(value):
    if isinstance(value, dict):
        return {k: _sorted_json(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_json(v) for v in value]
    return value


def _encoder(column):
    kind = column.type
    if isinstance(kind, ExactDecimal):
        return lambda v: None if v is None else str(v)
    if isinstance(kind, UTCDateTime):
        return lambda v: None if v is None else v.astimezone(dt.UTC).isoformat()
    if isinstance(kind, Date):
        return lambda v: None if v is None else v.isoformat()
    if isinstance(kind, JSON):
        return _sorted_json
    return lambda v: v


def _decoder(column):
    kind = column.type
    if isinstance(kind, ExactDecimal):
        return lambda v: None if v is None else Decimal(v)
    if isinstance(kind, UTCDateTime):
        return lambda v: None if v is None else dt.datetime.fromisoformat(v)
    if isinstance(kind, Date):
        return lambda v: None if v is None else dt.date.fromisoformat(v)
    return lambda v: v


# -- which tables -----------------------------------------------------------------------------
def dumped_tables(storage: Storage) -> list:
    """Every table metacrm creates for the model, in dependency order (cycles broken)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SAWarning)  # link cycles: handled by the deferred columns
        return list(storage.metadata.sorted_tables)


def derived_table(dialect: str, name: str) -> bool:
    """Tables the database keeps by itself and a dump leaves out: SQLite's sequence table
    (carried as each table's ``sequence``), its full-text search tables and the value indexes
    of emails / phones fields (rebuilt by their triggers as the rows are inserted)."""
    from ..storage.valueindex import is_index_table

    if is_index_table(name):  # the lookup index of emails / phones: rebuilt by its triggers
        return True
    return dialect == "sqlite" and (name.startswith("sqlite_") or "__fts" in name)


def _order(conn, table):
    keys = list(table.primary_key.columns) or list(table.columns)
    if conn.dialect.name == "postgresql":  # byte order for text keys, as SQLite's BINARY
        return [k.collate("C") if k.type.python_type is str else k for k in keys]
    return keys


def _sequence(conn, table) -> int:
    """The highest id the table ever gave (0 for a table without an integer id)."""
    if "id" not in table.c:
        return 0
    highest = int(conn.execute(select(func.max(table.c.id))).scalar() or 0)
    if conn.dialect.name == "sqlite":
        from ..migrate.ids import sequence_value

        return max(highest, sequence_value(conn, table.name))
    name = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": f'"{table.name}"'}).scalar()
    if name:
        last, called = conn.execute(text(f"SELECT last_value, is_called FROM {name}")).one()
        highest = max(highest, int(last) if called else int(last) - 1)
    return highest


# -- dump -------------------------------------------------------------------------------------
def dump(source, path: str | os.PathLike) -> dict:
    """Write a consistent snapshot of the CRM at ``source`` (a database URL, an Engine or a
    CRM) to the directory ``path`` (new or empty); returns the manifest. The model is the one
    the database records. Refuses (MetaCRMError) a database holding no model, or a target
    directory that is not empty; a failure leaves no directory behind."""
    from ..migrate.history import model_from_record

    target = Path(path)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DataError(f"{target}: exists and is not an empty directory; a dump needs a new or empty one")
    engine, own = _engine(source)
    try:
        conn = engine.connect()
        if engine.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn, conn.begin():
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            row = _last_model(conn)
            if row is None:
                raise MigrationError("the database holds no metacrm model: nothing to dump")
            model = model_from_record(row)
            storage = build_storage(model)
            left_out = _left_out(conn, storage)
            temp = Path(tempfile.mkdtemp(prefix=".metacrm-dump-", dir=target.absolute().parent))
            try:
                tables = {t.name: _dump_table(conn, t, temp) for t in dumped_tables(storage)}
                from .. import __version__

                manifest = {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "metacrm_version": __version__,
                    "model": {"name": model.name, "sha256": model.sha256},
                    "dialect": engine.dialect.name,
                    "dumped_at": dt.datetime.now(dt.UTC).isoformat(),
                    "tables": tables,
                    "left_out": left_out,
                }
                (temp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
                if target.exists():
                    target.rmdir()
                os.replace(temp, target)
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise
        return manifest
    finally:
        if own:
            engine.dispose()


def _engine(source):
    from ..runtime.engine import make_engine

    if isinstance(source, str | os.PathLike):
        engine = make_engine(str(source))
        file = engine.url.database if engine.dialect.name == "sqlite" else None
        if file and file != ":memory:" and not Path(file).is_file():
            engine.dispose()  # never create a database to read it
            raise MigrationError(f"no database at {file}: nothing to dump")
        return engine, True
    engine = getattr(source, "engine", source)
    return engine, False


def _last_model(conn):
    table = build_storage_system().model_table
    if not inspect(conn).has_table(table.name):
        return None
    row = conn.execute(select(table).order_by(table.c.id.desc()).limit(1)).mappings().first()
    return dict(row) if row else None


def build_storage_system():
    from ..migrate.history import _system_storage

    return _system_storage()


def _left_out(conn, storage: Storage) -> list[str]:
    """Tables and columns the database holds that the model does not (kept by migrations that
    removed fields, links or entities without --allow-data-loss): not in the dump. Refuses a
    database missing a column the model has (it needs `metacrm migrate` first)."""
    insp = inspect(conn)
    dialect = conn.dialect.name
    ours = {t.name: t for t in dumped_tables(storage)}
    out = []
    for name in sorted(insp.get_table_names()):
        if derived_table(dialect, name):
            continue
        table = ours.get(name)
        if table is None:
            out.append(name)
            continue
        live = {c["name"] for c in insp.get_columns(name)}
        missing = [c.name for c in table.columns if c.name not in live]
        if missing:
            raise MigrationError(
                f"table {name} lacks column {missing[0]} of the recorded model: run `metacrm migrate` before a dump"
            )
        out += [f"{name}.{c}" for c in sorted(live - set(table.c.keys()))]
    for name in ours:
        if not insp.has_table(name):
            raise MigrationError(f"the database lacks table {name} of the recorded model: run `metacrm migrate` first")
    return out


def _dump_table(conn, table, folder: Path) -> dict:
    file = folder / f"{table.name}.jsonl"
    digest = hashlib.sha256()
    rows = 0
    encoders = [(c.name, _encoder(c)) for c in table.columns]
    with open(file, "wb") as out:
        if table.name != naming.LOCK_TABLE:  # a held lock belongs to the source's processes
            result = conn.execution_options(yield_per=2000).execute(select(table).order_by(*_order(conn, table)))
            for row in result.mappings():
                line = (json.dumps({n: enc(row[n]) for n, enc in encoders}, ensure_ascii=False) + "\n").encode()
                digest.update(line)
                out.write(line)
                rows += 1
    return {"file": file.name, "rows": rows, "sha256": digest.hexdigest(), "sequence": _sequence(conn, table)}


# -- restore ----------------------------------------------------------------------------------
def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of the dump at ``path``, after checking every file against it (DataError
    naming the first problem)."""
    folder = Path(path)
    file = folder / MANIFEST
    if not file.is_file():
        raise DataError(f"{file}: no such file; not a metacrm dump")
    try:
        manifest = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{file}: not a metacrm dump manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{file}: dump format version {manifest.get('format_version')}; this metacrm reads {FORMAT_VERSION}"
        )
    for name, info in manifest["tables"].items():
        data = folder / info["file"]
        if not data.is_file():
            raise DataError(f"{data}: missing (table {name} of the dump)")
        digest = hashlib.sha256()
        lines = 0
        with open(data, "rb") as f:
            for line in f:
                digest.update(line)
                lines += 1
        if digest.hexdigest() != info["sha256"] or lines != info["rows"]:
            raise DataError(
                f"{data}: checksum or row count differs from the manifest ({lines} rows, manifest {info['rows']}); "
                "the dump is damaged"
            )
    return manifest


def restore(path: str | os.PathLike, url) -> dict:
    """Rebuild the dump at ``path`` into the EMPTY database at ``url`` (either dialect), in one
    transaction; returns the manifest. Raises DataError for a damaged dump (nothing touched)
    and MigrationError for a database that is not empty (nothing changed) or a failed restore
    (rolled back: the database stays empty)."""
    from ..migrate.history import model_from_record
    from ..runtime.engine import make_engine

    manifest = read_manifest(path)
    folder = Path(path)
    model_rows = _rows(folder, manifest, naming.MODEL_TABLE, build_storage_system().model_table)
    if not model_rows:
        raise DataError(f"{folder}: the dump records no model")
    model = model_from_record(model_rows[-1])
    if model.sha256 != manifest["model"]["sha256"] or model_rows[-1]["sha256"] != model.sha256:
        raise DataError(f"{folder}: the recorded model does not match the manifest's sha256; the dump is damaged")
    storage = build_storage(model)
    missing = [t.name for t in dumped_tables(storage) if t.name not in manifest["tables"]]
    if missing:
        raise DataError(f"{folder}: the dump has no table {missing[0]} of its model; the dump is damaged")
    engine = make_engine(url) if isinstance(url, str | os.PathLike) else url  # or a tenant's engine
    try:
        _restore(engine, folder, manifest, model, storage)
    finally:
        engine.dispose()
    return manifest


def _restore(engine, folder: Path, manifest: dict, model, storage: Storage) -> None:
    from ..migrate.apply import apply_plan, default_user, plan_for_database
    from ..migrate.lock import holder_text, pg_lock
    from ..migrate.valueindex import sync_value_indexes
    from ..runtime.engine import WRITE

    with engine.connect().execution_options(**{WRITE: True}) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            pg_lock(conn, holder_text(), wait=30.0)
        present = [n for n in inspect(conn).get_table_names() if not derived_table(conn.dialect.name, n)]
        if present:
            shown = ", ".join(sorted(present)[:3]) + (", ..." if len(present) > 3 else "")
            raise MigrationError(
                f"the database is not empty ({len(present)} tables: {shown}); restore needs an empty database"
            )
        plan = plan_for_database(conn, model, user=default_user(), count_all=False)
        apply_plan(conn, plan)
        sync_value_indexes(conn, model)  # the triggers fill them as the rows go in
        tables = dumped_tables(storage)
        position = {t.name: i for i, t in enumerate(tables)}
        try:
            later: list = []
            for table in tables:
                later += _insert(conn, table, _rows(folder, manifest, table.name, table), position)
            for table, column, values in later:  # the links held back, now that every row is in
                update = table.update().where(table.c.id == bindparam("_id")).values({column: bindparam("_v")})
                conn.execute(update, values)
            for table in tables:
                _set_sequence(conn, table, int(manifest["tables"][table.name]["sequence"]))
            for table in tables:
                count = conn.execute(select(func.count()).select_from(table)).scalar()
                expected = 0 if table.name == naming.LOCK_TABLE else manifest["tables"][table.name]["rows"]
                if count != expected:
                    raise DataError(f"table {table.name}: {count} rows restored, the dump has {expected}")
        except MetaCRMError:
            raise
        except Exception as exc:  # a constraint the rows break: one line, rolled back
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise MigrationError(f"restore failed: {first}; the database was left empty") from exc


def _rows(folder: Path, manifest: dict, name: str, table) -> list[dict]:
    decoders = {c.name: _decoder(c) for c in table.columns}
    out = []
    with open(folder / manifest["tables"][name]["file"], encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            try:
                raw = json.loads(line)
                out.append({k: decoders[k](v) for k, v in raw.items()})
            except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
                raise DataError(
                    f"{folder / manifest['tables'][name]['file']}:{number}: unreadable row ({exc})"
                ) from None
    return out


def _insert(conn, table, rows: list[dict], position: dict[str, int]) -> list:
    """Insert the rows; the columns linking to a table not inserted yet (a cycle) or to this
    one (a record may link to a later one) go in as NULL. Returns those links, (table, column,
    [{"_id": id, "_v": target}]), to set once every row is in."""
    if not rows:
        return []
    here = position[table.name]
    deferred = [
        fk.parent.name
        for fk in table.foreign_keys
        if position.get(fk.column.table.name, -1) >= here and fk.parent.nullable
    ]
    first = [{**r, **dict.fromkeys(deferred)} for r in rows] if deferred else rows
    for start in range(0, len(first), 1000):
        conn.execute(table.insert(), first[start : start + 1000])
    later = []
    for column in deferred:
        values = [{"_id": r["id"], "_v": r[column]} for r in rows if r.get(column) is not None]
        if values:
            later.append((table, column, values))
    return later


def _set_sequence(conn, table, value: int) -> None:
    """Make the next id of ``table`` exceed ``value`` and every id it holds."""
    if "id" not in table.c:
        return
    highest = max(value, int(conn.execute(select(func.max(table.c.id))).scalar() or 0))
    if highest <= 0:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT setval(pg_get_serial_sequence(:t, 'id'), :v)"), {"t": f'"{table.name}"', "v": highest}
        )
        return
    if table.dialect_options["sqlite"].get("autoincrement"):
        conn.execute(text("DELETE FROM sqlite_sequence WHERE name = :t"), {"t": table.name})
        conn.execute(text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :v)"), {"t": table.name, "v": highest})
