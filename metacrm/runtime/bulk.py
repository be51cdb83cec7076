"""Helpers of ``crm.create_many``: the collector's pause around a bulk write, the switch that
keeps automations quiet for one call, and the list of every bad record of a batch.

Every record of a batch is checked, each check on the records that passed the ones before
(values, initial requires, owners, links, unique values, duplicate rules): a batch with a bad
amount in record 1 and a client that does not exist in record 2 reports both. The checks work
on the good records only, so their issues are numbered by position among them; ``Issues``
puts each back at the record's index in the batch.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from functools import lru_cache
from operator import itemgetter

from ..errors import FieldIssue, ValidationError

# set while a create_many(..., automations=False) runs (this thread or task only): the
# automation reactor is left out of every write the call makes, derived values still run
QUIET: ContextVar[bool] = ContextVar("metacrm_no_automations", default=False)


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector paused for the block (bulk writes allocate many small
    objects and no cycles: the collector's passes cost about a fifth of the time), and
    enabled again after it only if it was enabled before."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def firing(on: bool) -> Iterator[None]:
    """``on=False``: the model's automations do not fire for the writes of the block."""
    if on:
        yield
        return
    token = QUIET.set(True)
    try:
        yield
    finally:
        QUIET.reset(token)


class Misplaced(ValidationError):
    """Imported records that do not fit the stage they were placed in (``issues`` by position)."""


class Issues:
    """The issues of one batch, by the record's index in the batch (see the module docstring)."""

    def __init__(self, issues: list[FieldIssue] | None = None) -> None:
        self.items: list[FieldIssue] = list(issues or ())

    @property
    def bad(self) -> set[int | None]:
        return {issue.index for issue in self.items}

    def collect(self, positions: list[int], check: Callable[[], object]) -> None:
        """Run ``check`` (a check over the good records, which are at ``positions`` in the
        batch); keep what it refuses, renumbered to the batch."""
        try:
            check()
        except ValidationError as exc:
            for issue in exc.issues:
                index = issue.index
                at = positions[index] if index is not None and 0 <= index < len(positions) else index
                self.items.append(replace(issue, index=at))

    def sorted(self) -> list[FieldIssue]:
        return sorted(self.items, key=lambda issue: -1 if issue.index is None else issue.index)


# --------------------------------------------------------------------------- bulk inserts

# Below this many rows an INSERT goes through SQLAlchemy as usual (a COPY has a fixed cost).
FAST_ROWS = 64


def insert_rows(conn, table, rows: Sequence, keys: tuple[str, ...] | None = None) -> None:
    """Insert ``rows`` (mappings with the same keys, or with ``keys`` tuples of the values of
    those columns in that order) into ``table`` in the caller's transaction.

    A batch goes to the driver without SQLAlchemy's per-row parameter handling (a dict and a
    list per row, about a third of a bulk create): each column's own bind processing (the
    same SQLAlchemy type conversions, metacrm's exact decimals and UTC datetimes) is applied
    to a tuple per row, then PostgreSQL gets one ``COPY ... FROM STDIN`` (psycopg writes the
    rows in C, instead of one pipelined INSERT per row) and SQLite one ``executemany``.
    Constraints, defaults and errors are the database's, as for an INSERT; a driver error is
    raised as SQLAlchemy's (IntegrityError for a constraint) so callers translate it as ever.
    """
    if not rows:
        return
    name = conn.dialect.name
    if not (name == "sqlite" or (name == "postgresql" and len(rows) >= FAST_ROWS)):
        conn.execute(table.insert(), list(rows) if keys is None else [dict(zip(keys, row, strict=True)) for row in rows])
        return
    sql, data = _prepared(conn.dialect, table, rows, keys)
    if name == "sqlite":
        driver_run(conn, sql, data, many=True).close()
        return
    _copy(conn, sql, data)


def insert_row(conn, table, row: Mapping) -> int:
    """Insert one row; its new id. SQLite: the driver's ``lastrowid`` after a prepared INSERT
    (no statement compiled per call); elsewhere ``INSERT ... RETURNING id``."""
    if conn.dialect.name == "sqlite":
        sql, data = _prepared(conn.dialect, table, (row,))
        cursor = driver_run(conn, sql, data[0])
        cursor.close()
        return cursor.lastrowid
    from .records import insert_returning_id

    return conn.execute(insert_returning_id(table), row).scalar_one()


def driver_run(conn, sql: str, params, *, many: bool = False):
    """Run ``sql`` (the driver's own text and parameters, converted already) on the DBAPI
    cursor of ``conn``, in its transaction; returns the cursor. For the statements of the hot
    paths (a create's rows, a move): SQLAlchemy's execution context (about 15-30 us a
    statement) is left out. What it would add is kept: a driver error goes through
    SQLAlchemy's handling (raised as its IntegrityError etc., a lost connection invalidated),
    and a slow statement is logged as the engine's event hooks log it (metacrm.logs)."""
    from ..logs import slow_limit, slow_query

    cursor = conn.connection.dbapi_connection.cursor()
    started = time.perf_counter()
    try:
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
    except Exception as exc:
        conn._handle_dbapi_exception(exc, sql, params, cursor, None)  # raises SQLAlchemy's error
        raise
    seconds = time.perf_counter() - started
    limit = slow_limit(conn.engine)
    if limit is not None and seconds >= limit:
        slow_query(conn.dialect.name, sql, seconds, limit, len(params) if many else None)
    return cursor


def _prepared(dialect, table, rows: Sequence, keys: tuple[str, ...] | None = None) -> tuple[str, list[tuple]]:
    """The statement of ``rows``' keys and a tuple of converted values per row (``keys``:
    the rows are such tuples already)."""
    if keys is None:
        keys = tuple(rows[0])
        get = itemgetter(*keys)
        data = [(get(row),) for row in rows] if len(keys) == 1 else [get(row) for row in rows]
    else:
        data = rows
    sql, convert = _insert_plan(dialect, table, keys)
    if not convert:
        return sql, data
    converted = []
    for values in data:
        values = list(values)
        for at, process in convert:
            values[at] = process(values[at])
        converted.append(tuple(values))
    return sql, converted


def _copy(conn, sql: str, data: list) -> None:
    import psycopg
    from sqlalchemy.exc import DBAPIError

    dbapi = conn.connection.dbapi_connection
    try:
        with dbapi.cursor() as cursor, cursor.copy(sql) as copy:
            write = copy.write_row
            for values in data:
                write(values)
    except psycopg.Error as exc:  # as SQLAlchemy raises it for an INSERT: IntegrityError etc.
        raise DBAPIError.instance(sql, None, exc, psycopg.Error, dialect=conn.dialect) from exc


@lru_cache(maxsize=256)
def _insert_plan(dialect, table, keys: tuple[str, ...]) -> tuple[str, tuple]:
    """The statement for ``keys`` (``INSERT ... VALUES (?, ...)`` on SQLite, ``COPY ... FROM
    STDIN`` on PostgreSQL) and the (position, bind processor) of the columns that have one."""
    prep = dialect.identifier_preparer
    columns = [table.c[key] for key in keys]
    names = ", ".join(prep.quote(column.name) for column in columns)
    if dialect.name == "postgresql":
        sql = f"COPY {prep.format_table(table)} ({names}) FROM STDIN"
    else:
        sql = f"INSERT INTO {prep.format_table(table)} ({names}) VALUES ({', '.join('?' * len(columns))})"
    convert = []
    for at, column in enumerate(columns):
        process = column.type._cached_bind_processor(dialect)
        if process is not None:
            convert.append((at, process))
    return sql, tuple(convert)


def create_one(conn, storage, ent, row: Mapping, many: Mapping, history: Mapping | None, entry: Mapping) -> int:
    """PostgreSQL: insert one record's row, its join rows, its stage history row and its
    journal row in one statement (see :func:`create_statement`); returns the new id."""
    links = tuple(name for name, ids in many.items() if ids)
    statement = create_statement(
        storage.table(ent.name),
        tuple(row),
        tuple((name, storage.join_table(ent.name, name)) for name in links),
        storage.history_table if history is not None else None,
        storage.journal_table,
    )
    params = {f"r_{key}": value for key, value in row.items()}
    params.update({f"t_{name}": list(many[name]) for name in links})
    if history is not None:
        params.update({f"h_{key}": value for key, value in history.items() if key != "record_id"})
    params.update({f"j_{key}": value for key, value in entry.items() if key != "record_id"})
    cursor = execute_prepared(conn, statement, params)
    try:
        return cursor.fetchone()[0]
    finally:
        cursor.close()


@lru_cache(maxsize=256)
def create_statement(table, keys: tuple[str, ...], joins: tuple, history, journal):
    """``WITH r AS (INSERT INTO table ... RETURNING id), j_link AS (INSERT INTO the join
    table SELECT r.id, unnest(:ids) FROM r), h AS (INSERT INTO history SELECT ..., r.id, ...
    FROM r) INSERT INTO journal SELECT ..., r.id, ... FROM r RETURNING record_id``: a new
    record with everything its creation writes, in one round trip (PostgreSQL runs every
    data-modifying CTE once, whether the main statement reads it or not)."""
    from sqlalchemy import ARRAY, BigInteger, bindparam, func, insert, select

    def bound(target, prefix: str, name: str):
        return bindparam(f"{prefix}_{name}", type_=target.c[name].type)

    r = insert(table).values({key: bound(table, "r", key) for key in keys}).returning(table.c.id).cte("r")
    ctes = []
    for name, join in joins:
        targets = func.unnest(bindparam(f"t_{name}", type_=ARRAY(BigInteger())))
        pairs = select(r.c.id, targets).select_from(r)
        ctes.append(insert(join).from_select(["source_id", "target_id"], pairs).cte(f"j_{name}"))

    def rows_of(target, prefix: str):
        names = [column.name for column in target.c if not column.primary_key]
        values = [r.c.id if name == "record_id" else bound(target, prefix, name) for name in names]
        return names, select(*values).select_from(r)

    if history is not None:
        ctes.append(insert(history).from_select(*rows_of(history, "h")).cte("h"))
    statement = insert(journal).from_select(*rows_of(journal, "j")).returning(journal.c.record_id)
    return statement.add_cte(*ctes) if ctes else statement


def execute_prepared(conn, statement, params: Mapping):
    """``statement`` (a Core statement built once) run through the driver as its compiled
    text, each value bound as SQLAlchemy would (its processors): positional on SQLite, by
    name on PostgreSQL. SQLAlchemy's per-execution work (cache key, compiled-parameter
    setup, execution context) is left out of a hot path such as a move or a single create.
    Returns the DBAPI cursor (``rowcount``, ``fetchone()``); the caller closes it."""
    compiled, names, convert = _driver_form(conn.dialect, statement)
    values = compiled.construct_params(params, _check=False)
    if names:
        bound = tuple(convert[name](values[name]) if name in convert else values[name] for name in names)
    else:
        bound = {name: convert[name](value) if name in convert else value for name, value in values.items()}
    return driver_run(conn, compiled.string, bound)


@lru_cache(maxsize=256)
def _driver_form(dialect, statement) -> tuple:
    compiled = statement.compile(dialect=dialect)
    return compiled, tuple(compiled.positiontup or ()), dict(compiled._bind_processors)
