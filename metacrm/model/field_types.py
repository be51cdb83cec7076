"""The registry of field types: one row per type, naming its storage kind and what it accepts.

Storage (``storage/``) maps ``kind`` to a column type per dialect; validation maps it to a
pydantic annotation; the model checks use ``options`` to say which field options apply.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

NUMERIC_OPTIONS = frozenset({"min", "max"})
TEXT_OPTIONS = frozenset({"max_length", "pattern"})
CHOICE_OPTIONS = frozenset({"options"})
FILE_OPTIONS = frozenset({"accept", "max_size"})


@dataclass(frozen=True, slots=True)
class FieldType:
    name: str
    kind: str  # storage kind: string, text, integer, decimal, money, boolean, date, datetime, json, file
    options: frozenset[str]  # type-specific field options that apply (beyond the common ones)
    numeric: bool = False
    summable: bool = False  # reports may sum it
    description: str = ""


_TYPES = (
    FieldType("string", "string", TEXT_OPTIONS, description="one line of text"),
    FieldType("text", "text", TEXT_OPTIONS, description="text of any length"),
    FieldType("integer", "integer", NUMERIC_OPTIONS, numeric=True, summable=True, description="a whole number"),
    FieldType(
        "decimal", "decimal", NUMERIC_OPTIONS, numeric=True, summable=True, description="an exact decimal number"
    ),
    FieldType(
        "money", "money", NUMERIC_OPTIONS, numeric=True, summable=True, description="an amount with two decimals"
    ),
    FieldType(
        "percent",
        "decimal",
        NUMERIC_OPTIONS,
        numeric=True,
        description="a percentage, 0 to 100 unless min/max say otherwise",
    ),
    FieldType("boolean", "boolean", frozenset(), description="yes or no"),
    FieldType("date", "date", frozenset(), description="a calendar date"),
    FieldType("datetime", "datetime", frozenset(), description="a moment in time"),
    FieldType("email", "string", frozenset({"max_length"}), description="an e-mail address"),
    FieldType("phone", "string", TEXT_OPTIONS, description="a phone number"),
    FieldType("url", "string", TEXT_OPTIONS, description="a web address"),
    FieldType("choice", "string", CHOICE_OPTIONS, description="one of the declared options"),
    FieldType("multichoice", "json", CHOICE_OPTIONS, description="several of the declared options"),
    FieldType("json", "json", frozenset(), description="any structured value"),
    # the column holds the id of the file's row in metacrm_files (set by attach, cleared by detach)
    FieldType("file", "file", FILE_OPTIONS, description="one attached file"),
    FieldType("image", "file", FILE_OPTIONS, description="one attached image (PNG, JPEG, GIF or WebP)"),
)

FIELD_TYPES: dict[str, FieldType] = {t.name: t for t in _TYPES}
ALL_TYPE_OPTIONS = NUMERIC_OPTIONS | TEXT_OPTIONS | CHOICE_OPTIONS | FILE_OPTIONS


def default_problem(ftype: FieldType, value, options: tuple[str, ...]) -> str | None:
    """Why ``value`` cannot be the default of a field of this type (None when it can)."""
    kind = ftype.name
    if value is None:
        return None
    if kind in ("string", "text", "email", "phone", "url"):
        return None if isinstance(value, str) else "must be text"
    if kind == "integer":
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be a whole number"
    if kind in ("decimal", "money", "percent"):
        if isinstance(value, bool):
            return "must be a number"
        try:
            Decimal(str(value))
        except InvalidOperation:
            return "must be a number"
        return None
    if kind == "boolean":
        return None if isinstance(value, bool) else "must be true or false"
    if kind == "date":
        if isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
            return None
        if value == "today":
            return None
        return "must be a date (YYYY-MM-DD) or 'today'"
    if kind == "datetime":
        if isinstance(value, _dt.datetime) or value == "now":
            return None
        if isinstance(value, str):
            try:
                _dt.datetime.fromisoformat(value)
                return None
            except ValueError:
                pass
        return "must be a date and time (ISO 8601) or 'now'"
    if kind == "choice":
        return None if value in options else f"must be one of the options: {', '.join(options)}"
    if kind == "multichoice":
        if not isinstance(value, list):
            return "must be a list of options"
        bad = [v for v in value if v not in options]
        return f"names unknown options: {', '.join(map(str, bad))}" if bad else None
    return None


def at_scale(type_name: str, value):
    """A number as every command prints it: money with its two decimals (``54.30``), a
    decimal or percent without the zeros its storage pads it with (``54.3``, ``12``, never
    ``54.300000``). Other values pass through."""
    if not isinstance(value, Decimal) or not value.is_finite():
        return value
    if type_name == "money":
        return value.quantize(Decimal("0.01"))
    if type_name not in ("decimal", "percent"):
        return value
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


__all__ = ["ALL_TYPE_OPTIONS", "FIELD_TYPES", "FieldType", "at_scale", "default_problem"]
