"""The text and date functions of the expression language, in pure Python: the one definition
the Python compiler runs, SQLite runs (registered on every connection as ``metacrm_lower``,
``metacrm_upper`` and ``metacrm_date_add``) and PostgreSQL's SQL matches.

- ``lower``/``upper`` map each character on its own and keep it when its mapping would change
  the length of the text (``ß`` stays ``ß`` in upper case, as PostgreSQL keeps it).
- ``trim`` takes spaces (only spaces) off both ends, as SQL's ``trim(x)``.
- ``date_add(d, n, unit)``: ``d`` plus ``n`` days (``d``), weeks (``w``), months (``m``) or
  years (``y``); adding months keeps the day and clamps it to the month's last day (31 January
  plus a month is 28 or 29 February), as PostgreSQL's ``date + interval`` does.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re

PERIOD_UNITS = {"d": "days", "w": "weeks", "m": "months", "y": "years"}
_PERIOD = re.compile(r"\s*([+-]?)\s*(\d{1,5})\s*([dwmy])\s*", re.IGNORECASE)
MAX_PERIOD = 99_999


def _case(text: str, upper: bool) -> str:
    out = []
    for ch in text:
        mapped = ch.upper() if upper else ch.lower()
        out.append(mapped if len(mapped) == 1 else ch)
    return "".join(out)


def lower(text):
    return None if text is None else _case(str(text), False)


def upper(text):
    return None if text is None else _case(str(text), True)


def trim(text):
    return None if text is None else str(text).strip(" ")


def parse_period(text: str) -> tuple[int, str] | None:
    """``'30d'`` -> (30, 'd'); ``'-1m'`` -> (-1, 'm'); None when it is not a period."""
    m = _PERIOD.fullmatch(text)
    if not m:
        return None
    n = int(m.group(2))
    return (-n if m.group(1) == "-" else n), m.group(3).lower()


def add_period(day: dt.date | None, n: int | None, unit: str):
    """``day`` plus ``n`` units (see the module's docstring); None for null; ValueError past
    the years 1 to 9999."""
    if day is None or n is None:
        return None
    if unit == "d":
        return day + dt.timedelta(days=n)
    if unit == "w":
        return day + dt.timedelta(weeks=n)
    months = n * 12 if unit == "y" else n
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    if not 1 <= year <= 9999:
        raise ValueError("metacrm: date_add goes past the year 9999 or before the year 1")
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def sqlite_date_add(value, n, unit):
    """``add_period`` on SQLite's stored date text (``YYYY-MM-DD``), giving that text back."""
    if value is None or n is None or unit is None:
        return None
    day = dt.date.fromisoformat(str(value)[:10])
    return add_period(day, int(n), str(unit)).isoformat()


def days_between(a, b):
    """Whole days from ``a`` to ``b`` (negative when ``b`` is earlier); None for null."""
    if a is None or b is None:
        return None
    return (b - a).days


def substring(text, start: int, length: int | None):
    """Characters of ``text`` from the 1-based ``start``, at most ``length`` of them."""
    if text is None:
        return None
    s = str(text)
    return s[start - 1 :] if length is None else s[start - 1 : start - 1 + length]


__all__ = [
    "MAX_PERIOD",
    "PERIOD_UNITS",
    "add_period",
    "days_between",
    "lower",
    "parse_period",
    "sqlite_date_add",
    "substring",
    "trim",
    "upper",
]
