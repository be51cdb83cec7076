"""Logging for operators, under the ``metacrm`` logger; silent until the application says otherwise.

::

    metacrm.migrate  INFO     a migration applied: model, from -> to, its steps by kind, seconds
                     INFO     waiting for the migration lock another migration holds
                     WARNING  a migration refused or not applied (lock timeout, broken links)
                     ERROR    a migration failed at a step and was rolled back
                     DEBUG    each step as it starts; "nothing to migrate"
    metacrm.notify   INFO     a message sent; a delivery run's totals; messages queued again
                     WARNING  an attempt failed and will be retried (when, and the reason)
                     ERROR    a message failed for good (the reason)
    metacrm.sql      WARNING  a statement slower than $METACRM_SLOW_QUERY_MS (default 1000 ms)
    metacrm.retry    WARNING  crm.retrying calls an operation again after a transient failure

Records carry no field values: a slow statement is logged as SQL text (whitespace collapsed,
cut at 300 characters) without its parameters, which may be personal data; a delivery names
the message id and channel, not the recipient. A ``NullHandler`` on ``metacrm`` keeps all of it
silent unless the host configures logging (``logging.basicConfig(level="INFO")``); the command
line prints it on stderr with ``--log-level LEVEL`` (env ``METACRM_LOG``).
"""

from __future__ import annotations

import logging
import os
import re
import time
import weakref

from .errors import SetupError

logger = logging.getLogger("metacrm")  # its NullHandler is added by metacrm/__init__.py
sql_log = logging.getLogger("metacrm.sql")

SLOW_ENV = "METACRM_SLOW_QUERY_MS"
SLOW_DEFAULT_MS = 1000.0
STATEMENT_CHARS = 300
_STARTED = "_metacrm_started"
_SPACE = re.compile(r"\s+")


def slow_query_ms() -> float:
    """The slow query threshold in milliseconds: ``$METACRM_SLOW_QUERY_MS``, else 1000."""
    raw = os.environ.get(SLOW_ENV, "").strip()
    if not raw:
        return SLOW_DEFAULT_MS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise SetupError(f"{SLOW_ENV} must be a number of milliseconds >= 0 (0 logs every statement), not {raw!r}")
    return value


def short_statement(statement: str) -> str:
    """The SQL text on one line, cut at STATEMENT_CHARS characters."""
    text = _SPACE.sub(" ", statement).strip()
    return text if len(text) <= STATEMENT_CHARS else text[: STATEMENT_CHARS - 1] + "…"


# engine -> the threshold in seconds: read by the statements metacrm runs straight on the
# driver (metacrm.runtime.bulk.driver_run), which SQLAlchemy's cursor events do not see
_LIMITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def log_slow_queries(engine, threshold_ms: float | None = None) -> None:
    """Log a WARNING on ``metacrm.sql`` for every statement on ``engine`` that runs for
    ``threshold_ms`` or longer (default: ``slow_query_ms()``), with its text and no parameters."""
    from sqlalchemy import event

    threshold = slow_query_ms() if threshold_ms is None else threshold_ms
    limit = threshold / 1000.0
    _LIMITS[engine] = limit

    @event.listens_for(engine, "before_cursor_execute")
    def _started(conn, cursor, statement, parameters, context, executemany):
        if context is not None:
            setattr(context, _STARTED, time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _finished(conn, cursor, statement, parameters, context, executemany):
        started = getattr(context, _STARTED, None)
        if started is None:
            return
        seconds = time.perf_counter() - started
        if seconds >= limit:
            slow_query(conn.dialect.name, statement, seconds, limit, len(parameters) if executemany and parameters is not None else None)


def slow_limit(engine) -> float | None:
    """The slow query threshold of ``engine`` in seconds (None: not logged)."""
    return _LIMITS.get(getattr(engine, "_proxied", engine))


def slow_query(dialect: str, statement: str, seconds: float, limit: float, rows: int | None = None) -> None:
    """Log one statement that took ``seconds`` (at least ``limit``): its text, no parameters."""
    if not sql_log.isEnabledFor(logging.WARNING):
        return
    short = short_statement(statement)
    many = f" (executemany, {rows} rows)" if rows is not None else ""
    sql_log.warning(
        "slow query: %.1f ms on %s%s (threshold %g ms): %s",
        seconds * 1000,
        dialect,
        many,
        limit * 1000,
        short,
        extra={"duration_ms": seconds * 1000, "statement": short},
    )


class _CliHandler(logging.StreamHandler):
    """The command line's handler: writes to the current ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        import sys

        self.stream = sys.stderr
        super().emit(record)


LEVELS = ("debug", "info", "warning", "error")


def log_to_stderr(level: str):
    """Print metacrm's log records at ``level`` and above on stderr (the command line's
    ``--log-level``); returns a function that undoes it. Raises SetupError for an unknown level."""
    name = level.strip().lower()
    if name not in LEVELS:
        raise SetupError(f"unknown log level {level!r}: use {', '.join(LEVELS)}")
    handler = _CliHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(name.upper())

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(before)

    return undo
