"""SQL functions the expression compiler needs, rendered per dialect.

- ``casefold(x)``: case folding that works beyond ASCII. SQLite's own lower() and LIKE only
  fold ASCII letters, so on SQLite it calls ``metacrm_casefold``, a Python function every
  connection must register: the runtime calls :func:`install_sqlite_functions` from an engine
  ``connect`` event. PostgreSQL's lower() folds by the database's locale (Cyrillic included).
- ``binary_text(x)``: text ordered by code point (as Python orders str): ``COLLATE "C"`` on
  PostgreSQL; SQLite's default BINARY collation already is.
- ``json_has(list, option)``: a JSON array contains the text option (2-valued; a null list
  contains nothing).
- ``json_null(x)``: SQL NULL or JSON null.
- ``dialect_pick(a, b)``: ``a`` on SQLite, ``b`` elsewhere (exact arithmetic differs: SQLite
  computes on the scaled integers it stores, PostgreSQL on NUMERIC).
- ``metacrm_mul(a, b)`` (SQLite): the exact product, an error beyond 64 bits (SQLite's own
  ``*`` would silently turn into a float).
- ``metacrm_div(n, d, m)`` (SQLite): ``n * 10**m / d`` rounded half away from zero (``m`` may
  be negative: ``n / (d * 10**-m)``); null when ``d`` is 0 or a value is null.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import Boolean, Text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

SQLITE_CASEFOLD = "metacrm_casefold"
SQLITE_DIV = "metacrm_div"
SQLITE_MUL = "metacrm_mul"
_INT64 = 2**63


def _mul(a, b):
    """Exact product of two stored integers; an error, never a silent float, beyond 64 bits."""
    if a is None or b is None:
        return None
    product = int(a) * int(b)
    if not -_INT64 <= product < _INT64:
        # not OverflowError: sqlite3 reports that one as "string or blob too big"
        raise ValueError("metacrm: a product is out of range (more than 18 digits)")
    return product


def _casefold(value):
    return value.casefold() if isinstance(value, str) else value


def _div(n, d, m):
    if n is None or d is None or m is None:
        return None
    n, d, m = int(n), int(d), int(m)
    if d == 0:
        return None
    if m >= 0:
        n *= 10**m
    else:
        d *= 10**-m
    q, r = divmod(abs(n), abs(d))
    if 2 * r >= abs(d):
        q += 1
    return -q if (n < 0) != (d < 0) else q


def install_sqlite_functions(dbapi_connection) -> None:
    """Register metacrm's SQL functions on a sqlite3 connection (call it from a 'connect' event)."""
    try:
        dbapi_connection.create_function(SQLITE_CASEFOLD, 1, _casefold, deterministic=True)
        dbapi_connection.create_function(SQLITE_DIV, 3, _div, deterministic=True)
        dbapi_connection.create_function(SQLITE_MUL, 2, _mul, deterministic=True)
    except sqlite3.NotSupportedError:  # pragma: no cover - SQLite older than 3.8.3
        dbapi_connection.create_function(SQLITE_CASEFOLD, 1, _casefold)
        dbapi_connection.create_function(SQLITE_DIV, 3, _div)
        dbapi_connection.create_function(SQLITE_MUL, 2, _mul)


class casefold(FunctionElement):  # noqa: N801 - reads like the SQL function it is
    type = Text()
    name = "casefold"
    inherit_cache = True


@compiles(casefold)
def _casefold_default(element, compiler, **kw):
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(casefold, "sqlite")
def _casefold_sqlite(element, compiler, **kw):
    return f"{SQLITE_CASEFOLD}({compiler.process(element.clauses, **kw)})"


class binary_text(FunctionElement):  # noqa: N801
    type = Text()
    name = "binary_text"
    inherit_cache = True


@compiles(binary_text)
def _binary_default(element, compiler, **kw):
    return compiler.process(element.clauses, **kw)


@compiles(binary_text, "postgresql")
def _binary_postgresql(element, compiler, **kw):
    return f'({compiler.process(element.clauses, **kw)}) COLLATE "C"'


class json_has(FunctionElement):  # noqa: N801
    type = Boolean()
    name = "json_has"
    inherit_cache = True


@compiles(json_has)
def _json_has_sqlite(element, compiler, **kw):
    column, option = (compiler.process(c, **kw) for c in element.clauses)
    return (
        f"(json_type({column}) = 'array' AND EXISTS "
        f"(SELECT 1 FROM json_each({column}) AS metacrm_each WHERE metacrm_each.value = {option}))"
    )


@compiles(json_has, "postgresql")
def _json_has_postgresql(element, compiler, **kw):
    column, option = (compiler.process(c, **kw) for c in element.clauses)
    return f"coalesce(({column}) @> jsonb_build_array(CAST({option} AS TEXT)), false)"


class json_null(FunctionElement):  # noqa: N801
    type = Boolean()
    name = "json_null"
    inherit_cache = True


@compiles(json_null)
def _json_null_sqlite(element, compiler, **kw):
    column = compiler.process(element.clauses, **kw)
    return f"({column} IS NULL OR json_type({column}) = 'null')"


@compiles(json_null, "postgresql")
def _json_null_postgresql(element, compiler, **kw):
    column = compiler.process(element.clauses, **kw)
    return f"({column} IS NULL OR jsonb_typeof({column}) = 'null')"


class dialect_pick(FunctionElement):  # noqa: N801
    """Its first argument on SQLite, its second elsewhere."""

    name = "dialect_pick"
    inherit_cache = True


@compiles(dialect_pick)
def _pick_default(element, compiler, **kw):
    return compiler.process(element.clauses.clauses[1], **kw)


@compiles(dialect_pick, "sqlite")
def _pick_sqlite(element, compiler, **kw):
    return compiler.process(element.clauses.clauses[0], **kw)


__all__ = ["binary_text", "casefold", "dialect_pick", "install_sqlite_functions", "json_has", "json_null"]
