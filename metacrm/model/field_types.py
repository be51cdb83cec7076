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
# exact numbers: the declared shape, and rounding when a migration lowers the scale
DECIMAL_OPTIONS = NUMERIC_OPTIONS | {"scale", "precision", "round"}
MONEY_OPTIONS = NUMERIC_OPTIONS | {"round"}
CURRENCY_OPTIONS = NUMERIC_OPTIONS | {"currency", "currency_field", "round"}
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
        "decimal", "decimal", DECIMAL_OPTIONS, numeric=True, summable=True, description="an exact decimal number"
    ),
    FieldType("money", "money", MONEY_OPTIONS, numeric=True, summable=True, description="an amount with two decimals"),
    FieldType(
        "currency",
        "money",
        CURRENCY_OPTIONS,
        numeric=True,
        summable=True,
        description="an amount in a currency (ISO 4217), kept to the currency's decimals",
    ),
    FieldType(
        "duration",
        "integer",
        frozenset(),
        numeric=True,
        summable=True,
        description="a length of time (1h30m, 2d, PT1H30M), stored as seconds",
    ),
    FieldType(
        "percent",
        "decimal",
        DECIMAL_OPTIONS,
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
    # -- composite types (docs/types.md) --------------------------------------------------------
    FieldType(
        "emails",
        "json",
        frozenset(),
        description="several e-mail addresses, the first the primary; each searchable",
    ),
    FieldType(
        "phones",
        "json",
        frozenset(),
        description="several phone numbers (E.164), the first the primary; each searchable",
    ),
    FieldType(
        "tags",
        "json",
        frozenset(),
        description="free tags, trimmed and lower-cased, from the entity's vocabulary or new",
    ),
    FieldType(
        "rich_text",
        "text",
        frozenset(),
        description="formatted text (HTML, sanitised with nh3); its plain text is <field>.text",
    ),
    FieldType("country", "string", frozenset(), description="a country, as its ISO 3166-1 alpha-2 code"),
    # declared as links (``links: {manager: {to: user}}``), held as fields: a login, a list of logins
    FieldType("user", "string", frozenset(), description="a user of the CRM, by login (a `to: user` link)"),
    FieldType("users", "json", frozenset(), description="several users of the CRM, by login (a `to: user` many-link)"),
    # the column holds the id of the file's row in metacrm_files (set by attach, cleared by detach)
    FieldType("file", "file", FILE_OPTIONS, description="one attached file"),
    FieldType("image", "file", FILE_OPTIONS, description="one attached image (PNG, JPEG, GIF or WebP)"),
)
# several values in a JSON list on the row, each also in an index table (storage/valueindex.py)
MULTI_VALUE_TYPES = frozenset({"emails", "phones", "tags"})
USER_TYPES = frozenset({"user", "users"})

FIELD_TYPES: dict[str, FieldType] = {t.name: t for t in _TYPES}
ALL_TYPE_OPTIONS = NUMERIC_OPTIONS | TEXT_OPTIONS | CHOICE_OPTIONS | DECIMAL_OPTIONS | CURRENCY_OPTIONS | FILE_OPTIONS

# Exact numbers are NUMERIC(precision, scale) on PostgreSQL and a BIGINT of 10**-scale on SQLite:
# 18 digits in all fit both.
MAX_PRECISION = 18
DECIMAL_SCALE = 6  # a decimal's or percent's decimals when the model declares no ``scale``


def currency_precision(code: str) -> int | None:
    """The decimals of an ISO 4217 currency (JPY 0, RUB 2, BHD 3) from the CLDR data Babel
    ships; None for a code that is not a currency."""
    from babel.numbers import get_currency_precision, list_currencies

    if not isinstance(code, str) or code not in list_currencies():
        return None
    return get_currency_precision(code)


def decimal_shape(f) -> tuple[int, int] | None:
    """(precision, scale) of an exact-number field: total digits and decimals its column keeps;
    None for other types. A currency field's scale is its currency's decimals (with
    ``currency_field``: the most of its options', which the model builder sets)."""
    kind = f.type
    if kind == "money":
        return MAX_PRECISION, 2
    if kind in ("decimal", "percent"):
        scale = f.scale if f.scale is not None else DECIMAL_SCALE
        return (f.precision if f.precision is not None else MAX_PRECISION), scale
    if kind == "currency":
        scale = f.scale
        if scale is None:
            scale = (currency_precision(f.currency) if f.currency else None) or 2
        return MAX_PRECISION, scale
    return None


def default_problem(ftype: FieldType, value, options: tuple[str, ...]) -> str | None:
    """Why ``value`` cannot be the default of a field of this type (None when it can)."""
    kind = ftype.name
    if value is None:
        return None
    if kind in ("string", "text", "email", "phone", "url", "country", "rich_text"):
        return None if isinstance(value, str) else "must be text"
    if kind == "integer":
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be a whole number"
    if kind == "duration":
        from ..dates import parse_duration_seconds

        try:
            parse_duration_seconds(value)
        except ValueError as exc:
            return str(exc)
        return None
    if kind in ("decimal", "money", "percent", "currency"):
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
    if kind in MULTI_VALUE_TYPES:  # checked further when a record takes it
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return None
        return "must be text or a list of texts"
    if kind == "multichoice":
        if not isinstance(value, list):
            return "must be a list of options"
        bad = [v for v in value if v not in options]
        return f"names unknown options: {', '.join(map(str, bad))}" if bad else None
    return None


def at_scale(field, value):
    """A number as every command prints it: money with its two decimals (``54.30``), a
    currency amount with its currency's (``1200`` yen, ``1.250`` dinars), a decimal or percent
    without the zeros its storage pads it with (``54.3``, ``12``, never ``54.300000``). Other
    values pass through. ``field``: the Field, or a type name (its default scale)."""
    if not isinstance(value, Decimal) or not value.is_finite():
        return value
    type_name = field if isinstance(field, str) else field.type
    if type_name == "money":
        return value.quantize(Decimal("0.01"))
    if type_name == "currency":
        if not isinstance(field, str) and field.currency_field:
            return value  # read at its record's own currency's decimals (runtime/records.py)
        places = 2 if isinstance(field, str) else field.decimals
        return value.quantize(Decimal(1).scaleb(-places))
    if type_name not in ("decimal", "percent"):
        return value
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


__all__ = [
    "ALL_TYPE_OPTIONS",
    "FIELD_TYPES",
    "MAX_PRECISION",
    "MULTI_VALUE_TYPES",
    "USER_TYPES",
    "FieldType",
    "at_scale",
    "currency_precision",
    "decimal_shape",
    "default_problem",
]
