"""One migration at a time: an advisory lock on PostgreSQL, a lock row on SQLite.

PostgreSQL: ``pg_try_advisory_xact_lock`` on a key derived from the schema, polled until the
wait runs out; the lock ends with the migration's transaction, whatever happens to the
process. The holder is found through ``pg_locks`` and ``pg_stat_activity`` (a migration sets
its ``application_name`` to the holder text for the length of its transaction).

SQLite: a row in ``metacrm_lock`` (name ``migrate``, holder ``user@host pid N``) committed
before the migration's transaction and deleted after it. A row left by a process that no
longer runs on this host is stale and taken over.

A second migration waits up to ``wait`` seconds, then raises MigrationError naming the holder.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import re
import socket
import time
from contextlib import contextmanager

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from ..errors import MigrationError
from ..storage.types import now_utc

LOCK_NAME = "migrate"
POLL = 0.1
log = logging.getLogger("metacrm.migrate")


def holder_text(user: str | None = None) -> str:
    """``user@host pid N``: who holds a migration lock."""
    try:
        who = user or getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        who = user or "unknown"
    return f"{who}@{socket.gethostname()} pid {os.getpid()}"


def _refused(holder: str, since, wait: float) -> MigrationError:
    when = f" since {since:%Y-%m-%d %H:%M:%S} UTC" if since is not None else ""
    return MigrationError(
        f"another migration is running: the migration lock is held by {holder}{when}; waited {wait:g}s"
    )


# -- SQLite ---------------------------------------------------------------------------------------


def _lock_table():
    from .history import _system_storage

    return _system_storage().lock_table


def _alive(holder: str) -> bool:
    """False only when the holder ran on this host and its process is gone."""
    found = re.search(r"@(?P<host>\S+) pid (?P<pid>\d+)$", holder or "")
    if not found or found["host"] != socket.gethostname():
        return True
    try:
        os.kill(int(found["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def sqlite_lock(engine, holder: str, *, wait: float):
    """Hold the SQLite migration lock row for the duration of the block."""
    from ..runtime.engine import reading, writing

    table = _lock_table()
    with writing(engine) as conn:
        table.create(conn, checkfirst=True)
    deadline = time.monotonic() + wait
    waiting = False
    while True:
        with reading(engine) as conn:
            row = conn.execute(select(table.c.holder, table.c.since).where(table.c.name == LOCK_NAME)).first()
        if row is not None and not _alive(row.holder):
            log.warning("taking over the migration lock left by %s: that process is gone", row.holder)
            with writing(engine) as conn:
                conn.execute(delete(table).where(table.c.name == LOCK_NAME, table.c.holder == row.holder))
            continue
        if row is not None and not waiting:
            log.info("waiting up to %gs for the migration lock held by %s", wait, row.holder)
            waiting = True
        if row is None:
            try:
                with _short_busy(engine, deadline) as conn, conn.begin():
                    conn.execute(insert(table).values(name=LOCK_NAME, holder=holder, since=now_utc()))
                break
            except (IntegrityError, OperationalError):
                pass  # another process took it first, or it is busy: look again
        if time.monotonic() >= deadline:
            if row is None:
                with reading(engine) as conn:
                    row = conn.execute(select(table.c.holder, table.c.since).where(table.c.name == LOCK_NAME)).first()
            raise _refused(row.holder if row else "another process", row.since if row else None, wait)
        time.sleep(POLL)
    try:
        yield
    finally:
        from ..runtime.engine import writing as _writing

        with _writing(engine) as conn:
            conn.execute(delete(table).where(table.c.name == LOCK_NAME, table.c.holder == holder))


@contextmanager
def _short_busy(engine, deadline: float):
    """A write connection whose busy timeout ends at ``deadline`` (not SQLite's 30 s)."""
    from ..runtime.engine import WRITE

    with engine.connect().execution_options(**{WRITE: True}) as conn:
        raw = conn.connection.driver_connection
        usual = raw.execute("PRAGMA busy_timeout").fetchone()[0]  # the engine's (busy_timeout=)
        remaining = max(0, int((deadline - time.monotonic()) * 1000))
        raw.execute(f"PRAGMA busy_timeout = {max(remaining, 50)}")
        try:
            yield conn
        finally:
            raw.execute(f"PRAGMA busy_timeout = {int(usual)}")


# -- PostgreSQL -------------------------------------------------------------------------------------


def pg_lock_key(conn) -> int:
    """A signed 64-bit advisory lock key for migrations of this schema."""
    schema = conn.execute(select(func.current_schema())).scalar_one()
    digest = hashlib.sha256(f"metacrm-migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def pg_lock(conn, holder: str, *, wait: float) -> None:
    """Take the migration lock inside ``conn``'s transaction (released when it ends)."""
    key = pg_lock_key(conn)
    conn.execute(select(func.set_config("application_name", f"metacrm migrate {holder}"[:63], True)))
    deadline = time.monotonic() + wait
    waiting = False
    while not conn.execute(select(func.pg_try_advisory_xact_lock(key))).scalar_one():
        if not waiting:
            log.info("waiting up to %gs for the migration lock: another migration of this schema is running", wait)
            waiting = True
        if time.monotonic() >= deadline:
            who, since = _pg_holder(conn, key)
            raise _refused(who, since, wait)
        time.sleep(POLL)


def _pg_holder(conn, key: int) -> tuple[str, object]:
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    row = conn.execute(
        text(
            "SELECT a.application_name, a.usename, a.client_addr, a.pid, a.xact_start "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :hi AND l.objid = :lo AND l.objsubid = 1"
        ),
        {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF},
    ).first()
    if row is None:
        return "another session", None
    name = (row.application_name or "").removeprefix("metacrm migrate ").strip()
    who = name or f"{row.usename}@{row.client_addr or 'local'}"
    return f"{who} (PostgreSQL backend pid {row.pid})", row.xact_start
