"""Engines set up the same way for every CRM object, and the driver errors they can raise
translated into metacrm's own.

SQLite: foreign keys on, WAL journal with ``synchronous=NORMAL`` (a committed transaction
survives a crash of the process; a power loss may lose the last transactions, never corrupt
the file), a 30 s busy timeout (``sqlite:///crm.db?timeout=5`` or ``busy_timeout=5`` sets
another), and write transactions opened with ``BEGIN IMMEDIATE`` so two writers queue instead
of failing half-way. PostgreSQL: psycopg 3, pre-ping, a pool sized by ``pool_size`` /
``max_overflow`` (a checkout waiting past the pool's timeout raises DatabaseUnavailable).

Every transaction (:func:`reading`, :func:`writing`, and the savepoints of
``crm.transaction()``) runs inside :func:`driver_errors`: a database that cannot be opened
raises DatabaseUnavailable naming the URL (never its password); "database is locked" after
the busy timeout raises ConflictError saying how long it waited; a number out of range
(SQLite's 64-bit integers, PostgreSQL's NUMERIC and BIGINT), text the database cannot hold
and PostgreSQL's program limits raise ValidationError. Anything else is a bug and propagates.

Threads: a file database or PostgreSQL gets a pool (each thread's operation checks out its
own connection). ``sqlite:///:memory:`` is one connection's private database, so it is kept
to the thread that first opened it: another thread is refused with a MetaCRMError saying so
(sharing one connection between threads would mix their transactions).
"""

from __future__ import annotations

import re
import threading
import time
import weakref
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ..errors import ConflictError, DatabaseUnavailable, MetaCRMError, SetupError, ValidationError
from ..extras import POSTGRES, import_extra
from ..logs import log_slow_queries, slow_query_ms

WRITE = "metacrm_write"
BUSY_TIMEOUT = 30.0  # seconds a SQLite writer waits for another one before "database is locked"


def normalise_url(url: str):
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def shown_url(url) -> str:
    """A database URL as it may be shown: without its password."""
    if not isinstance(url, str):
        return url.render_as_string(hide_password=True)
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def make_engine(
    url: str, *, busy_timeout: float | None = None, pool_size: int | None = None, max_overflow: int | None = None
) -> Engine:
    """An engine for ``url`` set up as the module's docstring says.

    ``busy_timeout`` (SQLite only): seconds a writer waits for another before "database is
    locked"; it overrides the URL's ``?timeout=``. ``pool_size`` / ``max_overflow``
    (PostgreSQL only): the connection pool of this process (``max_overflow`` is 0 when
    ``pool_size`` is given without it); a checkout that waits past the pool's timeout raises
    DatabaseUnavailable. An option the dialect has no use for is refused (SetupError), never
    ignored."""
    try:
        parsed = normalise_url(url)
        backend = parsed.get_backend_name()
    except Exception as exc:  # sqlalchemy.exc.ArgumentError and friends
        raise DatabaseUnavailable(
            f"not a database URL: {shown_url(str(url))!r} (expected sqlite:///FILE or postgresql://HOST/DATABASE)"
        ) from exc
    threshold = slow_query_ms()  # a bad $METACRM_SLOW_QUERY_MS is refused before anything connects
    if backend == "sqlite":
        if pool_size is not None or max_overflow is not None:
            raise SetupError(
                "pool_size/max_overflow: SQLite has no connection pool to size (a file database opens one "
                "connection per thread); give them for PostgreSQL only"
            )
        timeout = _busy_timeout(parsed, busy_timeout)
        engine = create_engine(parsed, connect_args={"timeout": timeout, "check_same_thread": False})
        _setup_sqlite(engine, timeout)
        log_slow_queries(engine, threshold)
        return engine
    if backend != "postgresql":
        raise DatabaseUnavailable(
            f"unsupported database '{backend}' in {shown_url(parsed)}: use sqlite:/// or postgresql://"
        )
    if busy_timeout is not None:
        raise SetupError("busy_timeout: only SQLite waits for a busy database file; PostgreSQL locks rows instead")
    if parsed.get_driver_name() == "psycopg":
        import_extra(POSTGRES)  # the driver is the [postgres] extra: say so rather than ModuleNotFoundError
    engine = create_engine(parsed, pool_pre_ping=True, **_pool(pool_size, max_overflow))
    log_slow_queries(engine, threshold)
    return engine


def _busy_timeout(parsed, busy_timeout: float | None) -> float:
    """The SQLite busy timeout: the keyword, else the URL's ``?timeout=``, else BUSY_TIMEOUT."""
    given = busy_timeout if busy_timeout is not None else parsed.query.get("timeout", BUSY_TIMEOUT)
    try:
        timeout = float(given)
    except (TypeError, ValueError):
        timeout = -1.0
    if not 0 <= timeout <= 86400:  # also refuses NaN
        what = "busy_timeout" if busy_timeout is not None else f"{shown_url(parsed)}: timeout"
        raise (SetupError if busy_timeout is not None else DatabaseUnavailable)(
            f"{what} must be a number of seconds (0 to 86400), not {given!r}"
        )
    return timeout


def _pool(pool_size: int | None, max_overflow: int | None) -> dict:
    """create_engine's pool arguments (none: SQLAlchemy's default of 5 + 10 overflow)."""
    pool: dict = {}
    for name, value, least in (("pool_size", pool_size, 1), ("max_overflow", max_overflow, 0)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= 10_000:
            raise SetupError(f"{name} must be a whole number from {least} to 10000, not {value!r}")
        pool[name] = value
    if pool_size is not None:
        pool.setdefault("max_overflow", 0)
    return pool


def _setup_sqlite(engine: Engine, timeout: float = BUSY_TIMEOUT) -> None:
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

    if engine.url.database not in (None, "", ":memory:"):
        _QUEUES[engine] = (threading.Lock(), timeout)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, record):
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see below)
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
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
    started = time.monotonic()
    with _queued(engine, started), _open(engine, started) as conn, driver_errors(engine, started):
        with conn.execution_options(**{WRITE: True}).begin():
            yield conn


# SQLite file engine -> (lock, busy timeout): the writers of one process queue on a lock and are
# woken in turn when it is released, instead of polling the file lock with SQLite's busy handler
# (which sleeps up to 100 ms between tries and lets newcomers overtake: seconds of tail latency
# under a burst of writes). The file lock stays the authority between processes.
_QUEUES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextmanager
def _queued(engine: Engine, started: float):
    queue = _QUEUES.get(engine)
    if queue is None:
        yield
        return
    lock, timeout = queue
    if not (lock.acquire(timeout=timeout) if timeout > 0 else lock.acquire(blocking=False)):
        raise ConflictError(
            f"{shown_url(engine.url)} is locked by another writer (waited {time.monotonic() - started:.1f} s); "
            "try again when it is done"
        )
    try:
        yield
    finally:
        lock.release()


@contextmanager
def reading(engine: Engine):
    started = time.monotonic()
    with _open(engine, started) as conn, driver_errors(engine, started), conn.begin():
        yield conn


def _open(engine: Engine, started: float) -> Connection:
    try:
        return engine.connect()
    except PoolTimeout as exc:
        raise translate(exc, engine) from exc
    except DBAPIError as exc:
        error = translate(exc, engine, started)
        if not isinstance(error, ConflictError):
            error = DatabaseUnavailable(f"cannot open the database {shown_url(engine.url)}: {_reason(exc)}")
        raise error from exc


@contextmanager
def driver_errors(engine: Engine, started: float | None = None):
    """Driver errors of the block raised as metacrm errors (see the module's docstring)."""
    try:
        yield
    except (DBAPIError, OverflowError, UnicodeError) as exc:
        error = translate(exc, engine, started)
        if error is None:
            raise
        raise error from exc


_LOCKED = ("database is locked", "database table is locked", "database schema is locked")
_OVERFLOW = ("integer overflow", "user-defined function raised exception")


def translate(exc: BaseException, engine: Engine | None = None, started: float | None = None) -> MetaCRMError | None:
    """The metacrm error for a driver error caused by input or by another process, or None."""
    if isinstance(exc, OverflowError):  # Python's own: a date past the calendar, an int past 64 bits
        if "date" in str(exc):
            return ValidationError("a date is out of range: the calendar runs from year 1 to 9999")
        return ValidationError("a number is out of range: more than 64 bits")
    if isinstance(exc, UnicodeError):
        return ValidationError("text is not valid Unicode (a lone surrogate, from invalid UTF-8 input?)")
    if isinstance(exc, PoolTimeout):  # every connection of this process's pool stayed busy
        where = shown_url(engine.url) if engine is not None else "the database"
        return DatabaseUnavailable(f"{where}: every pooled connection is busy (the pool is full); try again shortly")
    if not isinstance(exc, DBAPIError):
        return None
    reason = _reason(exc)
    code = getattr(exc.orig, "sqlstate", None)
    if any(text in reason for text in _LOCKED):
        waited = f" (waited {time.monotonic() - started:.1f} s)" if started is not None else ""
        where = shown_url(engine.url) if engine is not None else "the database"
        return ConflictError(f"{where} is locked by another process{waited}; try again when it is done")
    if code == "22008":  # datetime field overflow
        return ValidationError("a date is out of range: the calendar runs from year 1 to 9999")
    if code == "22003" or any(text in reason for text in _OVERFLOW):
        return ValidationError("a number is out of range: a sum or product has more than 18 digits")
    if "NUL (0x00)" in reason or code in ("22021", "22P05"):
        return ValidationError("text cannot contain NUL characters (\\x00)")
    if code == "54000" or "string or blob too big" in reason:  # e.g. a tsvector over 1 MB
        return ValidationError(f"a value is too large for the database: {reason}")
    if exc.connection_invalidated or code in ("08001", "08006", "3D000", "28000", "28P01"):
        where = shown_url(engine.url) if engine is not None else "the database"
        return DatabaseUnavailable(f"cannot use the database {where}: {reason}")
    return None


def _reason(exc: DBAPIError) -> str:
    """The driver's message, first line only."""
    text = str(exc.orig).strip() or exc.orig.__class__.__name__
    return text.splitlines()[0]
