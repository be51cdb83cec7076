"""Engines set up the same way for every CRM object.

SQLite: foreign keys on, WAL journal with ``synchronous=NORMAL`` (a committed transaction
survives a crash of the process; a power loss may lose the last transactions, never corrupt
the file), a 30 s busy timeout, and write transactions opened with ``BEGIN IMMEDIATE`` so two
writers queue instead of failing half-way. PostgreSQL: psycopg 3, pre-ping.
"""

from __future__ import annotations

from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url

from ..errors import MigrationError
from ..extras import POSTGRES, import_extra
from ..logs import log_slow_queries, slow_query_ms

WRITE = "metacrm_write"


def normalise_url(url: str):
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str) -> Engine:
    try:
        parsed = normalise_url(url)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError and friends
        raise MigrationError(f"not a database URL: {url!r} ({exc})") from exc
    threshold = slow_query_ms()  # a bad $METACRM_SLOW_QUERY_MS is refused before anything connects
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})
        _setup_sqlite(engine)
        log_slow_queries(engine, threshold)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise MigrationError(f"unsupported database '{parsed.get_backend_name()}': use sqlite:/// or postgresql://")
    if parsed.get_driver_name() == "psycopg":
        import_extra(POSTGRES)  # the driver is the [postgres] extra: say so rather than ModuleNotFoundError
    engine = create_engine(parsed, pool_pre_ping=True)
    log_slow_queries(engine, threshold)
    return engine


def _setup_sqlite(engine: Engine) -> None:
    from ..expr.functions import install_sqlite_functions

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, record):
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see below)
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if engine.url.database and engine.url.database != ":memory:":
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
        install_sqlite_functions(dbapi_conn)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection):
        immediate = conn.get_execution_options().get(WRITE)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def writing(engine: Engine):
    """A write transaction: BEGIN IMMEDIATE on SQLite, a plain transaction on PostgreSQL."""
    with engine.connect().execution_options(**{WRITE: True}) as conn, conn.begin():
        yield conn


@contextmanager
def reading(engine: Engine):
    with engine.connect() as conn, conn.begin():
        yield conn
