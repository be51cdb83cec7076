"""Engines made by the host application: :func:`adopt` checks that metacrm can work on one
and sets it up (the SQLite functions and pragmas metacrm needs), or refuses it in one line.

Supported: ``sqlite+pysqlite`` (a file, or ``:memory:`` from metacrm's own engine) and
``postgresql+psycopg`` (psycopg 3). Refused: other drivers, an AsyncEngine (its sync_engine
cannot run outside the event loop's greenlet either), an engine in AUTOCOMMIT (metacrm's
operations are transactions), an in-memory SQLite engine metacrm did not make (its pool
would give each thread its own empty database, or mix their transactions on one connection). A CRM on an adopted engine never disposes it: the host does.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from ..errors import SetupError
from .engine import BUSY_TIMEOUT, TurnPool, check_options, configure_sqlite, in_memory

SUPPORTED = "sqlite+pysqlite or postgresql+psycopg (psycopg 3)"


def adopt(engine: Engine, *, busy_timeout: float | None = None) -> Engine:
    """The host's ``engine``, set up for metacrm (see the module's docstring)."""
    _refuse_async(engine)
    if not isinstance(engine, Engine):
        raise SetupError(f"metacrm.connect() takes a database URL or a SQLAlchemy Engine, not {type(engine).__name__}")
    dialect = engine.dialect
    name, driver = dialect.name, dialect.driver
    if (name, driver) not in (("sqlite", "pysqlite"), ("postgresql", "psycopg")) or dialect.is_async:
        label = f"{name}+{driver}{' (async)' if dialect.is_async else ''}"
        raise SetupError(f"metacrm cannot use an engine with the driver {label}: use {SUPPORTED}")
    level = engine.get_execution_options().get("isolation_level") or dialect._on_connect_isolation_level
    if str(level).upper() == "AUTOCOMMIT":
        raise SetupError(
            "metacrm cannot use an engine in AUTOCOMMIT: its operations are transactions "
            "(create the engine without isolation_level='AUTOCOMMIT')"
        )
    check_options(name, busy_timeout=busy_timeout)
    if name == "sqlite":
        if in_memory(engine.url) and not isinstance(engine.pool, TurnPool):
            raise SetupError(
                f"an in-memory SQLite engine on a {type(engine.pool).__name__} cannot be shared between threads "
                "(each would see its own empty database, or mix their transactions on one connection): "
                "use metacrm.connect(model, 'sqlite:///:memory:') and share its crm.engine, or a file"
            )
        configure_sqlite(engine, BUSY_TIMEOUT if busy_timeout is None else float(busy_timeout))
    return engine


def _refuse_async(engine) -> None:
    try:
        from sqlalchemy.ext.asyncio import AsyncEngine
    except ImportError:  # pragma: no cover - part of SQLAlchemy; greenlet may be missing
        return
    if isinstance(engine, AsyncEngine):
        raise SetupError(
            "metacrm cannot use an AsyncEngine (nor its sync_engine, which runs only inside the event loop): "
            "give it a sync engine, create_engine() on the same database with sqlite+pysqlite or "
            "postgresql+psycopg, and call metacrm from async code through a thread (see docs/embedding.md)"
        )
