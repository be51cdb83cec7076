"""Reads from a streaming replica: ``metacrm.connect(model, url, read_url=REPLICA)``.

The CRM keeps a second engine (``crm.read_engine``) on the replica, made as the database's
own and of the same dialect. Where a read goes:

- the plain reads named in :data:`READS` (get, find, count, search, the reports, the board,
  tasks, timelines...) read the replica;
- every other operation (create, update, move, users, tokens, tick, deliver, migrate...) is a
  write, or a read that decides something (who a token belongs to, the version an If-Match
  names, the model version the database holds): it and every read it makes, even through a
  public read, go to the database (:func:`on_primary` wraps those methods when the class, or
  a subclass of it, is made);
- inside ``crm.transaction()``, ``crm.joined()`` or a write, reads join that transaction;
- ``with crm.primary():`` sends the block's reads to the database;
- ``with crm.request():`` is one request: once it wrote (an operation that writes records,
  ``crm.transaction()``, a migration), its later reads go to the database, so it reads its
  own writes. The HTTP app opens one per HTTP request, a command of the command line is
  one. Outside any request each call is its own: a read after a write may not see it yet
  (the replica's lag).

A replica that cannot be reached fails the read with DatabaseUnavailable naming the replica
(ConnectionLost when the connection broke during the read): no silent fallback to the
database, whose capacity the replica exists to protect and whose failure would then hide.
Nothing here is timed: routing never guesses the lag (the HTTP app's short-lived cookie
after a write aside, metacrm.web.app.ReadRouting).
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Self

from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError

from ..errors import ConnectionLost, DatabaseUnavailable, SetupError
from .engine import in_memory, make_engine, reading, shown_url

# The public CRM methods that only read and may read the replica. Any other public method
# reads the database while it runs (a new method is safe before it is listed here).
READS = frozenset(
    {
        "allowed_moves",
        "board",
        "card",
        "count",
        "download",
        "duplicates",
        "file_info",
        "files",
        "find",
        "find_duplicates",
        "funnel",
        "get",
        "history",
        "open_file",
        "related",
        "report_group",
        "search",
        "tags",
        "task_entities",
        "tasks",
        "timeline",
        "titles",
    }
)
# methods that are not operations: scopes, life cycle, the views
_LEFT_AS_THEY_ARE = frozenset({"as_user", "close", "joined", "primary", "request", "retrying", "transaction"})

_PRIMARY: ContextVar[bool] = ContextVar("metacrm_read_primary", default=False)
_REQUEST: ContextVar[_Request | None] = ContextVar("metacrm_request", default=None)


class _Request:
    """One request's state, shared by the threads and tasks it runs in (a ContextVar holds
    the object, copies of the context share it)."""

    __slots__ = ("wrote",)

    def __init__(self) -> None:
        self.wrote = False


def current_request() -> _Request | None:
    """The request open in this context (``crm.request()``), or None."""
    return _REQUEST.get()


def wrote() -> None:
    """Mark the current request (if any) as having written: its later reads use the database.
    Called where the CRM writes what its reads show (``crm._writing()``, ``crm.transaction()``,
    ``crm.migrate()``); bookkeeping written beside (a token's last use, a session) is not
    marked: those are read on the database anyway."""
    request = _REQUEST.get()
    if request is not None:
        request.wrote = True


def open_replica(
    engine: Engine,
    read_url: str | os.PathLike[str] | Engine,
    *,
    busy_timeout: float | None = None,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    owned: bool = True,
) -> tuple[Engine, bool]:
    """``(the engine on the replica for a CRM on engine, whether the CRM owns it)``.

    ``read_url``: a URL, made into an engine by make_engine with the same options as the
    database's (the pool options only when the database's engine is the CRM's own); or the
    host application's engine on the replica (set up by host.adopt, never disposed by the CRM,
    keeping its own pool: give the same one to every tenant's CRM so they share it). Refused
    in one line when its dialect is not the database's or it is an in-memory SQLite database
    (private to its connection: never a replica). The replica serves the tenant ``engine``
    works for, if any."""
    if isinstance(read_url, Engine):
        from .host import adopt

        replica, mine = adopt(read_url, busy_timeout=busy_timeout if engine.dialect.name == "sqlite" else None), False
        url = replica.url.render_as_string(hide_password=True)
    else:
        url = os.fspath(read_url)
        if not isinstance(url, str) or not url.strip():
            raise SetupError(f"read_url must be a database URL or an Engine, not {read_url!r}")
        replica, mine = (
            make_engine(
                url,
                busy_timeout=busy_timeout if engine.dialect.name == "sqlite" else None,
                pool_size=pool_size if owned else None,
                max_overflow=max_overflow if owned else None,
            ),
            True,
        )
    primary, other = engine.dialect.name, replica.dialect.name
    refusal = None
    if other != primary:
        refusal = (
            f"read_url {shown_url(url)} is a {_NAMES.get(other, other)} database: a replica of a "
            f"{_NAMES.get(primary, primary)} database must be {_NAMES.get(primary, primary)} too"
        )
    elif other == "sqlite" and in_memory(make_url(replica.url)):
        refusal = f"read_url {shown_url(url)} is a private in-memory database: a replica must be a file"
    if refusal is not None:
        if mine:
            replica.dispose()
        raise SetupError(refusal)
    return _same_tenant(engine, replica, mine)


def _same_tenant(engine: Engine, replica: Engine, mine: bool) -> tuple[Engine, bool]:
    """The replica's engine for the tenant ``engine`` works for (metacrm.runtime.tenants): its
    schema on PostgreSQL (the standby has the primary's schemas; the same pool), its file
    beside the replica's on SQLite (an engine of its own). The tenant is not looked up on the
    replica: the database said it exists, and a replica that lags may not know it yet (its
    reads then fail, naming it)."""
    from . import tenants

    tenant = tenants.tenant_of(engine)
    if tenant is None:
        return replica, mine
    try:
        own = tenants.for_tenant(replica, tenant)
    except BaseException:
        if mine:
            replica.dispose()
        raise
    if own.dialect.name == "sqlite":  # the tenant's file has an engine of its own
        if mine:
            replica.dispose()
        return own, True
    return own, mine


_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


# what the replica answers when it lacks a table or column of the model (PostgreSQL's
# undefined_table, undefined_column; SQLite's messages)
_BEHIND_STATES = ("42P01", "42703")
_BEHIND = ("no such table", "no such column")


@contextmanager
def replica_read(engine: Engine) -> Iterator[Connection]:
    """A read transaction on the replica; its failure to open or a lost connection says it
    was the replica, and so does a table or column of the model it does not hold (it has not
    replayed a migration yet, or it is no replica of this database)."""
    try:
        with reading(engine) as conn:
            yield conn
    except ConnectionLost as exc:
        raise ConnectionLost(f"read replica: {exc}") from exc
    except DatabaseUnavailable as exc:
        raise DatabaseUnavailable(f"read replica: {exc}") from exc
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        if getattr(exc.orig, "sqlstate", None) not in _BEHIND_STATES and not reason.startswith(_BEHIND):
            raise
        raise DatabaseUnavailable(
            f"read replica {shown_url(engine.url)} does not hold this model's tables yet ({reason}): it has not "
            "replayed the database's last migration, or it is not a replica of the database"
        ) from exc


class ReplicaMixin:
    """``crm.request()``, ``crm.primary()`` and where a read goes (see the module)."""

    engine: Engine
    read_engine: Engine | None

    def __init_subclass__(cls, **kw: Any) -> None:
        """The CRM class, and a host application's subclass of it, get their operations
        wrapped by :func:`on_primary` when the class is made."""
        super().__init_subclass__(**kw)
        on_primary(cls)

    @contextmanager
    def request(self) -> Iterator[Self]:
        """One request: once the block wrote, its later reads go to the database (read your
        writes); before, the plain reads go to the replica. Nested, it joins the outer one.
        Without a replica it changes nothing."""
        if _REQUEST.get() is not None:
            yield self
            return
        token = _REQUEST.set(_Request())
        try:
            yield self
        finally:
            _REQUEST.reset(token)

    @contextmanager
    def primary(self) -> Iterator[Self]:
        """The block's reads go to the database, never to the replica (a read that decides a
        write: ``with crm.primary(): current = crm.get(...)``)."""
        token = _PRIMARY.set(True)
        try:
            yield self
        finally:
            _PRIMARY.reset(token)

    @property
    def reads_replica(self) -> bool:
        """Whether a plain read made here and now would read the replica."""
        if self.read_engine is None or _PRIMARY.get() or getattr(self, "_tx", None) is not None:
            return False
        request = _REQUEST.get()
        return request is None or not request.wrote

    def _replica_reading(self):
        """Called outside any transaction of this thread or task (see CRM._reading)."""
        if self.reads_replica:
            return replica_read(self.read_engine)  # type: ignore[arg-type]
        return reading(self.engine)


def on_primary(cls: type) -> type:
    """Wrap every public method of ``cls`` that is not in READS so that, on a CRM with a
    replica, it and everything it calls read the database (a write that reads first, through
    ``self.get`` or ``self.find``, decides on current rows, never on the replica's past)."""
    for name in dir(cls):
        if name.startswith("_") or name in READS or name in _LEFT_AS_THEY_ARE:
            continue
        method = inspect.getattr_static(cls, name)
        if inspect.isfunction(method) and not getattr(method, "_on_primary", False):
            setattr(cls, name, _pinned(method))
    return cls


def _pinned(method):
    @functools.wraps(method)
    def call(self, *args: Any, **kw: Any):
        if getattr(self, "read_engine", None) is None or _PRIMARY.get():
            return method(self, *args, **kw)
        token = _PRIMARY.set(True)
        try:
            return method(self, *args, **kw)
        finally:
            _PRIMARY.reset(token)

    call._on_primary = True  # type: ignore[attr-defined]
    return call
