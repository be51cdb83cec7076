"""SQL functions the expression compiler needs, rendered per dialect.

- ``casefold(x)``: case folding that works beyond ASCII, with ``ё`` read as ``е``
  (:func:`metacrm.text.fold`). SQLite's own lower() and LIKE only fold ASCII letters, so on
  SQLite it calls ``metacrm_casefold``, a Python function every connection must register: the
  runtime calls :func:`install_sqlite_functions` from an engine ``connect`` event. PostgreSQL:
  ``translate(lower(x), 'ё', 'е')`` (lower() folds by the database's locale, Cyrillic included).
- ``binary_text(x)``: text ordered by code point (as Python orders str): ``COLLATE "C"`` on
  PostgreSQL; SQLite's default BINARY collation already is.
- ``json_has(list, option)``: a JSON array contains the text option (2-valued; a null list
  contains nothing).
- ``json_null(x)``: SQL NULL or JSON null.
- ``dialect_pick(a, b)``: ``a`` on SQLite, ``b`` elsewhere (exact arithmetic differs: SQLite
  computes on the scaled integers it stores, PostgreSQL on NUMERIC).
- ``metacrm_mul(a, b)`` (SQLite): the exact product, an error beyond 64 bits (SQLite's own
  ``*`` would silently turn into a float).
- ``exact_sum(x)``: SUM typed as its column. SQLite's SUM of integers fails past 64 bits
  ("integer overflow"; money is stored there in cents), so a query whose sum overflows runs
  again through :func:`split_sums`: every ``exact_sum`` becomes the sums of the high and the
  low 32 bits (neither overflows below 2**31 rows) joined by ``metacrm_join64(hi, lo)``, the
  exact sum as an integer, or as decimal text past 64 bits (the column's type reads both).
  Twice the work of a plain SUM, hence only on overflow.
- ``metacrm_localtime(text, zone)`` (SQLite): a stored UTC datetime as the local time of an
  IANA zone, ``YYYY-MM-DD HH:MM:SS`` text (for report periods in the model's time zone).
- ``metacrm_div(n, d, m)`` (SQLite): ``n * 10**m / d`` rounded half away from zero (``m`` may
  be negative: ``n / (d * 10**-m)``); null when ``d`` is 0 or a value is null.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import BigInteger, Boolean, Date, Text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

from ..text import fold
from . import textdate

SQLITE_CASEFOLD = "metacrm_casefold"
SQLITE_DIV = "metacrm_div"
SQLITE_MUL = "metacrm_mul"
SQLITE_JOIN64 = "metacrm_join64"
SQLITE_LOCALTIME = "metacrm_localtime"
SQLITE_LOWER = "metacrm_lower"
SQLITE_UPPER = "metacrm_upper"
SQLITE_DATE_ADD = "metacrm_date_add"
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


def _join64(hi, lo):
    """``hi * 2**32 + lo``: an integer when SQLite can hold it, else its decimal text."""
    if hi is None or lo is None:
        return None
    total = int(hi) * 4294967296 + int(lo)
    return total if -_INT64 <= total < _INT64 else str(total)


def _casefold(value):
    return fold(value) if isinstance(value, str) else value


def _localtime(value, zone):
    if value is None or zone is None:
        return None
    import datetime as dt

    from ..dates import local

    try:
        moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
        return local(moment, str(zone)).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None


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
        dbapi_connection.create_function(SQLITE_JOIN64, 2, _join64, deterministic=True)
        dbapi_connection.create_function(SQLITE_LOCALTIME, 2, _localtime, deterministic=True)
        dbapi_connection.create_function(SQLITE_LOWER, 1, textdate.lower, deterministic=True)
        dbapi_connection.create_function(SQLITE_UPPER, 1, textdate.upper, deterministic=True)
        dbapi_connection.create_function(SQLITE_DATE_ADD, 3, textdate.sqlite_date_add, deterministic=True)
    except sqlite3.NotSupportedError:  # pragma: no cover - SQLite older than 3.8.3
        dbapi_connection.create_function(SQLITE_CASEFOLD, 1, _casefold)
        dbapi_connection.create_function(SQLITE_DIV, 3, _div)
        dbapi_connection.create_function(SQLITE_MUL, 2, _mul)
        dbapi_connection.create_function(SQLITE_JOIN64, 2, _join64)
        dbapi_connection.create_function(SQLITE_LOCALTIME, 2, _localtime)
        dbapi_connection.create_function(SQLITE_LOWER, 1, textdate.lower)
        dbapi_connection.create_function(SQLITE_UPPER, 1, textdate.upper)
        dbapi_connection.create_function(SQLITE_DATE_ADD, 3, textdate.sqlite_date_add)


class casefold(FunctionElement):  # noqa: N801 - reads like the SQL function it is
    type = Text()
    name = "casefold"
    inherit_cache = True


@compiles(casefold)
def _casefold_default(element, compiler, **kw):
    return f"translate(lower({compiler.process(element.clauses, **kw)}), 'ё', 'е')"


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


class text_case(FunctionElement):  # noqa: N801
    """``text_case(x, 'lower' | 'upper')``: metacrm_lower/metacrm_upper on SQLite (Python's
    per-character mapping, see :mod:`metacrm.expr.textdate`), lower()/upper() elsewhere."""

    type = Text()
    name = "text_case"
    inherit_cache = True


def _case_parts(element, compiler, **kw):
    value, which = element.clauses.clauses  # which: a literal_column, part of the cache key
    return compiler.process(value, **kw), which.name


@compiles(text_case)
def _text_case_default(element, compiler, **kw):
    value, which = _case_parts(element, compiler, **kw)
    return f"{which}({value})"


@compiles(text_case, "sqlite")
def _text_case_sqlite(element, compiler, **kw):
    value, which = _case_parts(element, compiler, **kw)
    return f"{SQLITE_LOWER if which == 'lower' else SQLITE_UPPER}({value})"


class days_between(FunctionElement):  # noqa: N801
    """Whole days from the first date to the second."""

    type = BigInteger()
    name = "days_between"
    inherit_cache = True


@compiles(days_between)
def _days_between_default(element, compiler, **kw):
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"(CAST({b} AS DATE) - CAST({a} AS DATE))"


@compiles(days_between, "sqlite")
def _days_between_sqlite(element, compiler, **kw):
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(julianday({b}) - julianday({a}) AS INTEGER)"


class date_add(FunctionElement):  # noqa: N801
    """``date_add(d, n, unit)`` with ``n`` a whole number and ``unit`` one of d, w, m, y
    (both written in the SQL: they come from the expression's literal period)."""

    type = Date()
    name = "date_add"
    inherit_cache = True


def _date_add_parts(element, compiler, **kw):
    value, n, unit = element.clauses.clauses  # n, unit: literal_columns, part of the cache key
    return compiler.process(value, **kw), int(n.name), unit.name


@compiles(date_add)
def _date_add_default(element, compiler, **kw):
    value, n, unit = _date_add_parts(element, compiler, **kw)
    if unit in ("d", "w"):
        return f"(CAST({value} AS DATE) + {n * (7 if unit == 'w' else 1)})"
    months = n * 12 if unit == "y" else n
    return f"CAST(CAST({value} AS DATE) + make_interval(months => {months}) AS DATE)"


@compiles(date_add, "sqlite")
def _date_add_sqlite(element, compiler, **kw):
    value, n, unit = _date_add_parts(element, compiler, **kw)
    return f"{SQLITE_DATE_ADD}({value}, {n}, '{unit}')"


class _WholeSum(TypeDecorator):
    """The sum of an integer column: an int, read from SQLite's decimal text past 64 bits."""

    impl = BigInteger
    cache_ok = True

    def process_result_value(self, value, dialect):
        return None if value is None else int(value)


class exact_sum(FunctionElement):  # noqa: N801
    """SUM(x) of the column's type (see the module's docstring and :func:`split_sums`)."""

    name = "exact_sum"
    inherit_cache = True

    def __init__(self, column):
        super().__init__(column)
        self.type = column.type if column.type.python_type is not int else _WholeSum()


class _split_sum(exact_sum):  # noqa: N801
    name = "split_sum"
    inherit_cache = True


@compiles(exact_sum)
def _exact_sum(element, compiler, **kw):
    return f"sum({compiler.process(element.clauses, **kw)})"


@compiles(_split_sum, "sqlite")
def _split_sum_sqlite(element, compiler, **kw):
    x = compiler.process(element.clauses, **kw)
    return f"{SQLITE_JOIN64}(sum(({x}) >> 32), sum(({x}) & 4294967295))"


def split_sums(query):
    """The query with every :class:`exact_sum` computed in 32-bit halves (exact on SQLite
    however large; the same SQL elsewhere)."""
    from sqlalchemy.sql.visitors import replacement_traverse

    def replace(element):
        if isinstance(element, exact_sum) and not isinstance(element, _split_sum):
            return _split_sum(*element.clauses.clauses)
        return None

    return replacement_traverse(query, {}, replace)


def overflowed(exc: BaseException) -> bool:
    """Whether a database error is SQLite's "integer overflow" of a SUM."""
    return "integer overflow" in str(getattr(exc, "orig", exc))


__all__ = [
    "binary_text",
    "casefold",
    "date_add",
    "days_between",
    "dialect_pick",
    "exact_sum",
    "overflowed",
    "split_sums",
    "install_sqlite_functions",
    "json_has",
    "json_null",
    "text_case",
]
