"""Engines set up the same way for every CRM object.

SQLite: foreign keys on, WAL journal with ``synchronous=NORMAL`` (a committed transaction
survives a crash of the process; a power loss may lose the last transactions, never corrupt
the file), a 30 s busy timeout, and write transactions opened with ``BEGIN IMMEDIATE`` so two
writers queue instead of failing half-way. PostgreSQL: psycopg 3, pre-ping.

Threads: a file database or PostgreSQL gets a pool (each thread's operation checks out its
own connection). ``sqlite:///:memory:`` is one connection's private database, so it is kept
to the thread that first opened it: another thread is refused with a MetaCRMError saying so
(sharing one connection between threads would mix their transactions).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url

from ..errors import MetaCRMError, MigrationError

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
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})
        _setup_sqlite(engine)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise MigrationError(f"unsupported database '{parsed.get_backend_name()}': use sqlite:/// or postgresql://")
    return create_engine(parsed, pool_pre_ping=True)


def _setup_sqlite(engine: Engine) -> None:
    from ..expr.functions import install_sqlite_functions

    if engine.url.database in (None, "", ":memory:"):
        opener: list[int] = []  # the thread that opened the in-memory database

        @event.listens_for(engine, "do_connect")
        def _one_thread(dialect, conn_rec, cargs, cparams):
            if not opener:
                opener.append(threading.get_ident())
            elif opener[0] != threading.get_ident():
                raise MetaCRMError(
                    "sqlite:///:memory: is private to the thread that opened it (another thread would see an empty "
                    "database): use a file (sqlite:///crm.db) or PostgreSQL to share a CRM between threads"
                )

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
