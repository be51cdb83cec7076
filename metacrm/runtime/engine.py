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
raises DatabaseUnavailable naming the URL (never its password); a deadlock, a serialization
failure, a lock that is not available (PostgreSQL 40P01, 40001, 55P03) and SQLite's "database is
locked" after the busy timeout raise ``ConflictError(retryable=True)`` (nothing was written; the
same call may be tried again, see ``crm.retrying``); a connection lost during an operation (the
server ended the session or went away) raises ConnectionLost, retryable too; a number out of range
(SQLite's 64-bit integers, PostgreSQL's NUMERIC and BIGINT), text the database cannot hold
and PostgreSQL's program limits raise ValidationError. Anything else is a bug and propagates.

Threads: a file database or PostgreSQL gets a pool (each thread's operation checks out its
own connection). ``sqlite:///:memory:`` is one connection's private database: it gets a
StaticPool (that one connection) handed to one thread at a time, so threads queue for it
instead of mixing their transactions. An engine made elsewhere is set up by
:func:`metacrm.runtime.host.adopt`.
"""

from __future__ import annotations

import re
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import StaticPool
from sqlalchemy.pool.base import _ConnectionFairy

from ..errors import ConflictError, ConnectionLost, DatabaseUnavailable, MetaCRMError, SetupError, ValidationError
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
    url: str,
    *,
    busy_timeout: float | None = None,
    pool_size: int | None = None,
    max_overflow: int | None = None,
) -> Engine:
    """The engine for ``url``, set up for metacrm. ``busy_timeout`` (SQLite, seconds): how long a
    writer waits for another one (overrides the URL's ``?timeout=``). ``pool_size`` and
    ``max_overflow`` (PostgreSQL or a SQLite file): the connections the pool keeps and the ones
    it may open beyond them (0 when only ``pool_size`` is given)."""
    try:
        parsed = normalise_url(url)
        backend = parsed.get_backend_name()
    except Exception as exc:  # sqlalchemy.exc.ArgumentError and friends
        raise DatabaseUnavailable(
            f"not a database URL: {shown_url(str(url))!r} (expected sqlite:///FILE or postgresql://HOST/DATABASE)"
        ) from exc
    threshold = slow_query_ms()  # a bad $METACRM_SLOW_QUERY_MS is refused before anything connects
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseUnavailable(
            f"unsupported database '{backend}' in {shown_url(parsed)}: use sqlite:/// or postgresql://"
        )
    check_options(backend, busy_timeout=busy_timeout, pool_size=pool_size, max_overflow=max_overflow)
    pool = pool_options(pool_size, max_overflow)
    if backend == "sqlite":
        try:
            timeout = float(parsed.query.get("timeout", BUSY_TIMEOUT))
        except ValueError:
            timeout = -1.0
        if not 0 <= timeout <= 86400:
            raise DatabaseUnavailable(f"{shown_url(parsed)}: timeout must be a number of seconds (0 to 86400)")
        if busy_timeout is not None:
            timeout = float(busy_timeout)
        options: dict = {"connect_args": {"timeout": timeout, "check_same_thread": False}}
        if in_memory(parsed):
            if pool:
                raise SetupError(
                    "pool_size and max_overflow do not apply to sqlite:///:memory: (one shared connection)"
                )
            options["poolclass"] = TurnPool  # one connection, handed to one thread at a time
        engine = create_engine(parsed, **options, **pool)
        configure_sqlite(engine, timeout)
        log_slow_queries(engine, threshold)
        return engine
    if parsed.get_driver_name() == "psycopg":
        import_extra(POSTGRES)  # the driver is the [postgres] extra: say so rather than ModuleNotFoundError
    engine = create_engine(parsed, pool_pre_ping=True, **pool)
    log_slow_queries(engine, threshold)
    return engine


POOL_LIMIT = 1000  # connections: more is a typo (PostgreSQL's max_connections defaults to 100)


def check_options(
    backend: str, *, busy_timeout: float | None = None, pool_size: int | None = None, max_overflow: int | None = None
) -> None:
    """Refuse, in one line, an option value that is out of range or does not apply to ``backend``."""
    if busy_timeout is not None:
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, int | float) or not 0 <= busy_timeout <= 86400:
            raise SetupError(f"busy_timeout must be a number of seconds from 0 to 86400, not {busy_timeout!r}")
        if backend != "sqlite":
            raise SetupError(
                "busy_timeout applies to SQLite only (how long a writer waits for another); on PostgreSQL set "
                "lock_timeout instead, e.g. postgresql://HOST/DB?options=-c%20lock_timeout%3D5000"
            )
    for name, value, least in (("pool_size", pool_size, 1), ("max_overflow", max_overflow, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not least <= value <= POOL_LIMIT):
            raise SetupError(f"{name} must be a whole number from {least} to {POOL_LIMIT}, not {value!r}")


def pool_options(pool_size: int | None, max_overflow: int | None) -> dict:
    """create_engine()'s arguments for the pool options (max_overflow 0 when only pool_size is given)."""
    options: dict = {}
    if pool_size is not None:
        options.update(pool_size=pool_size, max_overflow=0)
    if max_overflow is not None:
        options["max_overflow"] = max_overflow
    return options


def in_memory(url) -> bool:
    """Whether a SQLite URL names an in-memory database (``sqlite://``, ``:memory:``, ``mode=memory``)."""
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory" or (
        str(url.database).startswith("file::memory:")
    )


_CONFIGURED: weakref.WeakSet = weakref.WeakSet()  # the engines configure_sqlite set up
_READY = "metacrm_ready"  # in a pooled connection's info once configure_sqlite set it up


def configure_sqlite(engine: Engine, timeout: float = BUSY_TIMEOUT) -> None:
    """Set up a pysqlite engine for metacrm: on every connection the pool hands out (those it
    already holds as well as new ones) foreign keys, the busy timeout, WAL on a file, metacrm's
    SQL functions and ``BEGIN`` emitted by SQLAlchemy (``BEGIN IMMEDIATE`` for writes), so
    savepoints work. Configuring an engine twice does nothing."""
    from ..expr.functions import install_sqlite_functions

    engine = getattr(engine, "_proxied", engine)  # engine.execution_options(...): set up the engine it wraps
    if engine in _CONFIGURED:
        return
    _CONFIGURED.add(engine)
    if not in_memory(engine.url):  # the writers of this process queue (see _queued); re-entrant for nested writes
        _QUEUES[engine] = (threading.RLock(), timeout)

    @event.listens_for(engine, "checkout")
    def _ready(dbapi_conn, record, proxy):
        if record.info.get(_READY):
            if dbapi_conn.isolation_level is not None:  # reset by SQLAlchemy after an isolation_level option
                dbapi_conn.isolation_level = None
            return
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see below)
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        if not in_memory(engine.url):
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
        install_sqlite_functions(dbapi_conn)
        record.info[_READY] = True

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection):
        immediate = conn.get_execution_options().get(WRITE)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def ready(conn: Connection) -> bool:
    """Whether a connection was set up by configure_sqlite (or needs none: PostgreSQL)."""
    return conn.dialect.name != "sqlite" or bool(conn.connection._connection_record.info.get(_READY))


class TurnPool(StaticPool):
    """The one connection of an in-memory SQLite database, handed to one thread at a time: a
    thread's nested checkouts share it (as SQLAlchemy's SingletonThreadPool does); another
    thread waits until the first gives it back, so their transactions never mix."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._fairy = threading.local()  # this thread's checked-out connection, if any
        self._turn = threading.Lock()  # held from a thread's first checkout to its last checkin

    def connect(self):
        current = getattr(self._fairy, "current", None)
        fairy = current() if current is not None else None
        if fairy is not None:
            return fairy._checkout_existing()
        self._turn.acquire()
        try:
            return _ConnectionFairy._checkout(self, self._fairy)
        except BaseException:
            self._turn.release()
            raise

    def _do_return_conn(self, record) -> None:
        self._fairy.__dict__.pop("current", None)
        self._turn.release()


@contextmanager
def writing(engine: Engine, before: Callable[[Connection], object] | None = None):
    """A write transaction: BEGIN IMMEDIATE on SQLite, a plain transaction on PostgreSQL.
    ``before``: called with the connection before the transaction begins (a read in
    autocommit on the same connection: see metacrm.runtime.moves.read_before)."""
    started = time.monotonic()
    with _queued(engine, started), _open(engine, started) as conn, driver_errors(engine, started):
        if before is not None:
            before(conn)
        with conn.execution_options(**{WRITE: True}).begin():
            yield conn


# SQLite file engine -> (lock, busy timeout): the writers of one process queue on a lock and are
# woken in turn when it is released, instead of polling the file lock with SQLite's busy handler
# (which sleeps up to 100 ms between tries and lets newcomers overtake: seconds of tail latency
# under a burst of writes). The file lock stays the authority between processes.
_QUEUES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextmanager
def _queued(engine: Engine, started: float):
    queue = _QUEUES.get(getattr(engine, "_proxied", engine))  # an option engine queues on the engine it wraps
    if queue is None:
        yield
        return
    lock, timeout = queue
    if not (lock.acquire(timeout=timeout) if timeout > 0 else lock.acquire(blocking=False)):
        raise ConflictError(
            f"{shown_url(engine.url)} is locked by another writer (waited {time.monotonic() - started:.1f} s); "
            "try again when it is done",
            retryable=True,
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
# PostgreSQL's transient conflicts between transactions: what the server says, for the message
_TRANSIENT = {
    "40P01": "a deadlock with another transaction",
    "40001": "a serialization failure (another transaction changed the same rows)",
    "55P03": "a lock another transaction holds",
}
# the session ended under an operation: admin shutdown, crash shutdown, connection failure or gone
_LOST_STATES = ("57P01", "57P02", "08003", "08006")
_LOST = (
    "server closed the connection",
    "connection is closed",
    "the connection is closed",
    "connection already closed",
    "terminating connection",
    "consuming input failed",
    "connection was closed",
    "ssl connection has been closed",
    "could not receive data from server",
    "could not send data to server",
    "connection reset by peer",
)
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
    where = shown_url(engine.url) if engine is not None else "the database"
    if any(text in reason for text in _LOCKED):
        waited = f" (waited {time.monotonic() - started:.1f} s)" if started is not None else ""
        return ConflictError(
            f"{where} is locked by another process{waited}; nothing was written, try again when it is done",
            retryable=True,
        )
    if code in _TRANSIENT:
        return ConflictError(
            f"the operation was stopped by {_TRANSIENT[code]} ({code}: {reason}); nothing was written, try again",
            retryable=True,
        )
    if lost(exc):
        return ConnectionLost(
            f"the connection to {where} was lost during the operation ({reason}); it was not committed, try again"
        )
    if code == "22008":  # datetime field overflow
        return ValidationError("a date is out of range: the calendar runs from year 1 to 9999")
    if code == "22003" or any(text in reason for text in _OVERFLOW):
        return ValidationError("a number is out of range: a sum or product has more than 18 digits")
    if "NUL (0x00)" in reason or code in ("22021", "22P05"):
        return ValidationError("text cannot contain NUL characters (\\x00)")
    if code == "54000" or "string or blob too big" in reason:  # e.g. a tsvector over 1 MB
        return ValidationError(f"a value is too large for the database: {reason}")
    if code in ("08001", "3D000", "28000", "28P01"):
        return DatabaseUnavailable(f"cannot use the database {where}: {reason}")
    return None


def lost(exc: DBAPIError) -> bool:
    """Whether the driver error says the connection broke (rather than the statement failed)."""
    if exc.connection_invalidated or getattr(exc.orig, "sqlstate", None) in _LOST_STATES:
        return True
    text = str(exc.orig).lower()
    return any(marker in text for marker in _LOST)


def _reason(exc: DBAPIError) -> str:
    """The driver's message, first line only."""
    text = str(exc.orig).strip() or exc.orig.__class__.__name__
    return text.splitlines()[0]
