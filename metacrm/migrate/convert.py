"""Field type changes: which conversions exist, the SQL that converts a column, and the check
that counts the values that would not convert.

Two families:

- **from text** (string, text, email, phone, url, choice): what the value means is decided by
  the same coercer the validators use (``metacrm.validation.values``). SQL recognises the
  *canonical* spellings it converts exactly (``-12``, ``12.50``, ``2024-05-01``, ``true``...);
  only the other distinct values are read and run through the coercer: the ones it refuses are
  the values that would not convert, the ones it accepts (``12,5``, ``01.05.2024``, ``Yes``)
  are rewritten to their canonical spelling before the column is converted in SQL.
- **from numbers and dates**: SQL decides alone (a money amount with cents does not become an
  integer, a decimal too large for money...).

Money and decimals are scaled integers on SQLite (cents, millionths) and NUMERIC on
PostgreSQL (see ``storage/types.py``); a date is ``YYYY-MM-DD`` text on SQLite, a datetime
``YYYY-MM-DD HH:MM:SS.ffffff`` UTC text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from ..model.field_types import MULTI_VALUE_TYPES
from ..model.metamodel import Field

TEXTS = frozenset({"string", "text", "email", "phone", "url", "choice", "country"})
SCALE = {"integer": 0, "duration": 0, "money": 2, "currency": 2, "decimal": 6, "percent": 6}  # default decimals
DIGITS = {"integer": 18, "duration": 18, "money": 16, "currency": 16, "decimal": 12, "percent": 12}


def scale_of(f: Field) -> int:
    """Decimals a number field's column keeps (its declared scale, its currency's)."""
    return f.decimals if f.decimals is not None else SCALE[f.type]


def digits_of(f: Field) -> int:
    """Digits before the point a number field's column holds."""
    return f.whole_digits if f.whole_digits is not None else DIGITS[f.type]
TRUE_WORDS = ("true", "yes", "1", "да")
FALSE_WORDS = ("false", "no", "0", "нет")
UTC = dt.UTC


@dataclass
class Conversion:
    """How one column converts. ``expr(c)``: the SQL of the new value from the stored one
    (None: the stored value is kept as it is); ``canonical(c)`` (text sources): a predicate
    true for the values that SQL converts exactly, the others go through ``coerce`` (None:
    every value does); ``bad(c)`` (other sources): a predicate true for the values that do not
    convert. ``c`` is the quoted column."""

    src: Field
    dst: Field
    dialect: str
    expr: Callable[[str], str | None]
    canonical: Callable[[str], str | None] | None = None
    bad: Callable[[str], str | None] | None = None
    coerce: Callable | None = None  # value -> canonical text of the new value (raises Invalid)
    rounded: Callable[[str], str] | None = None  # the values that lose digits and are rounded

    @property
    def from_text(self) -> bool:
        return self.src.type in TEXTS


def conversion(
    src: Field, dst: Field, dialect: str, region: str | None = None, *, round_: bool = False
) -> Conversion | str:
    """The conversion of a column from ``src``'s type to ``dst``'s, or why there is none
    (``round_``: numbers with more decimals than ``dst`` keeps are rounded, not refused)."""
    a, b = src.type, dst.type
    sqlite = dialect == "sqlite"
    if a in TEXTS and b in MULTI_VALUE_TYPES:  # email -> emails: the value becomes the primary
        return Conversion(src, dst, dialect, *_text_to_list(dst, sqlite, region))
    if a in TEXTS and b == "rich_text":  # plain text becomes HTML showing it as it was
        return Conversion(src, dst, dialect, lambda c: None, lambda c: None, coerce=_text_to_html)
    if b == "user" and a in TEXTS:  # logins into a `to: user` link: each must name a stored user
        return Conversion(src, dst, dialect, lambda c: None, _stored_login, coerce=_no_user)
    if a == "user" and b in ("string", "text"):
        a = "string"
    if a in TEXTS:
        if b in TEXTS or b in SCALE or b in ("boolean", "date", "datetime"):
            return Conversion(
                src, dst, dialect, _text_expr(dst, sqlite), _canonical(dst, sqlite), coerce=_canonical_text(dst, region)
            )
    elif a in SCALE:
        if b in SCALE:
            expr, canonical, bad, rounded = _number_to_number(src, dst, sqlite, round_)
            return Conversion(src, dst, dialect, expr, canonical, bad, rounded=rounded)
        if b in ("string", "text"):
            return Conversion(src, dst, dialect, *_number_to_text(src, dst, sqlite))
    elif a == "date":
        if b == "datetime":
            if sqlite:
                return Conversion(src, dst, dialect, lambda c: f"{c} || ' 00:00:00.000000'", bad=lambda c: None)
            return Conversion(
                src, dst, dialect, lambda c: f"CAST({c} AS TIMESTAMP) AT TIME ZONE 'UTC'", bad=lambda c: None
            )
        if b in ("string", "text"):
            expr = (lambda c: None) if sqlite else (lambda c: f"CAST({c} AS TEXT)")
            limit = dst.max_length
            return Conversion(src, dst, dialect, expr, bad=lambda c: f"{limit} < 10" if limit else None)
    if a == "datetime" and b == "date":
        return "a datetime would lose its time of day; add a date field and fill it instead"
    return f"there is no conversion from {a} to {b}; add a new field, fill it, then remove the old one"


# -- from text ------------------------------------------------------------------------------------


def _text_expr(dst: Field, sqlite: bool) -> Callable[[str], str | None]:
    b = dst.type
    if b in TEXTS:
        return lambda c: None
    if b in ("integer", "duration"):
        return lambda c: f"CAST({c} AS {'INTEGER' if sqlite else 'BIGINT'})"
    if b in SCALE:
        scale = scale_of(dst)
        if sqlite:  # '12.5' -> '1250' (digits moved past the point, padded), then an integer
            pad = "0" * scale
            return lambda c: (
                f"CAST(CASE WHEN instr({c}, '.') > 0 THEN replace({c}, '.', '') || "
                f"substr('{pad}', 1, {scale} - (length({c}) - instr({c}, '.'))) ELSE {c} || '{pad}' END AS INTEGER)"
            )
        return lambda c: f"CAST({c} AS NUMERIC({scale + digits_of(dst)}, {scale}))"
    if b == "boolean":
        words = _in(TRUE_WORDS)
        yes, no = ("1", "0") if sqlite else ("true", "false")
        return lambda c: f"CASE WHEN {c} IN ({words}) THEN {yes} WHEN {c} IS NOT NULL THEN {no} END"
    if b == "date":
        return (lambda c: None) if sqlite else (lambda c: f"CAST({c} AS DATE)")
    # datetime: every value is rewritten to 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC) first
    return (lambda c: None) if sqlite else (lambda c: f"CAST({c} AS TIMESTAMP) AT TIME ZONE 'UTC'")


def _canonical(dst: Field, sqlite: bool) -> Callable[[str], str | None]:
    """The values SQL converts exactly (None: none, the coercer sees every value)."""
    b = dst.type
    if b in ("email", "phone", "url", "country", "datetime") or (b in ("string", "text") and dst.pattern):
        return lambda c: None
    if b == "choice":
        options = _in(dst.option_values)
        return lambda c: f"{c} IN ({options})"
    if b in ("string", "text"):
        limit = dst.max_length
        return lambda c: f"length({c}) <= {limit}" if limit else "1 = 1"
    if b == "boolean":
        words = _in(TRUE_WORDS + FALSE_WORDS)
        return lambda c: f"{c} IN ({words})"
    if b == "date":
        if sqlite:
            return lambda c: (
                f"({c} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]' AND date({c}, '+0 days') = {c} AND {c} >= '0001')"
            )
        # days past the 28th are left to the coercer (SQL would fail on 2024-02-30)
        return lambda c: (
            f"({c} ~ '^[0-9]{{4}}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$' AND {c} >= '0001')"
        )
    scale, digits = scale_of(dst), digits_of(dst)
    convert = _text_expr(dst, sqlite)
    if sqlite:

        def form(c: str) -> str:
            # first a cheap test that most integers pass (their text is what SQLite's integer
            # gives back: no leading zero, no sign but '-'); the GLOB tests decide the others
            fast = f"(CAST(CAST({c} AS INTEGER) AS TEXT) = {c} AND length({c}) <= {digits})"
            s = f"(CASE WHEN {c} GLOB '-*' THEN substr({c}, 2) ELSE {c} END)"
            whole = f"({s} <> '' AND {s} NOT GLOB '*[^0-9]*' AND length({s}) <= {digits})"
            if not scale:
                return f"({fast} OR {whole})"
            dot = f"instr({s}, '.')"
            part = (
                f"({s} NOT GLOB '*[^0-9.]*' AND {dot} BETWEEN 2 AND {digits + 1} "
                f"AND length({s}) - {dot} BETWEEN 1 AND {scale} AND substr({s}, {dot} + 1) NOT GLOB '*[^0-9]*')"
            )
            return f"({fast} OR {whole} OR {part})"

    else:

        def form(c: str) -> str:
            # ^-?[0-9]{1,D}(\.[0-9]{1,S})?$, with the lengths checked apart: PostgreSQL's regex
            # engine is several times slower with bounded repetitions
            if not scale:
                return f"({c} ~ '^-?[0-9]+$' AND length(ltrim({c}, '-')) <= {digits})"
            return (
                f"({c} ~ '^-?[0-9]+(\\.[0-9]+)?$' AND length(split_part(ltrim({c}, '-'), '.', 1)) <= {digits} "
                f"AND length(split_part({c}, '.', 2)) <= {scale})"
            )

    low, high = _bounds(dst)
    if low is None and high is None:
        return form

    def bounded(c: str) -> str:
        value = f"(CASE WHEN {form(c)} THEN {convert(c)} END)"
        parts = [form(c)]
        if low is not None:
            parts.append(f"{value} >= {_scaled(low, scale if sqlite else 0)}")
        if high is not None:
            parts.append(f"{value} <= {_scaled(high, scale if sqlite else 0)}")
        return "(" + " AND ".join(parts) + ")"

    return bounded


def _canonical_text(dst: Field, region: str | None) -> Callable:
    """value -> the canonical spelling of what the coercer makes of it (raises Invalid)."""
    from ..validation.values import field_coercer

    coerce = field_coercer(dst, region=region)
    b = dst.type

    def spell(value):
        result = coerce(value)
        if result is None:
            return None
        if b == "boolean":
            return "true" if result else "false"
        if b in SCALE and b not in ("integer", "duration"):
            return format(result, "f")
        if b == "date":
            return result.isoformat()
        if b == "datetime":
            return result.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        return str(result)

    return spell


def _text_to_list(dst: Field, sqlite: bool, region: str | None):
    """Text to an emails / phones list: every value goes through the field's coercer (so text
    holding several, ``a@x.org, b@y.org``, gives them all) and is rewritten to its canonical
    spelling first, the JSON list on SQLite (which does not enforce lengths), the values joined
    by commas on PostgreSQL (never longer than the text it replaces); SQL then makes the list."""
    import json

    from ..validation.values import field_coercer

    coerce = field_coercer(dst, region=region)

    def spell(value):
        result = coerce(value)
        if result is None:
            return None
        return json.dumps(result, ensure_ascii=False) if sqlite else ",".join(result)

    if sqlite:
        return (lambda c: f"json({c})"), (lambda c: None), None, spell
    return (lambda c: f"to_jsonb(string_to_array({c}, ','))"), (lambda c: None), None, spell


def _stored_login(c: str) -> str:
    """A text value that is the login of a stored user (what a `to: user` link may hold)."""
    from ..storage import naming

    return f'{c} IN (SELECT login FROM "{naming.USER_TABLE}")'


def _no_user(value):
    """A text value that is no stored user's login does not convert (it is not guessed)."""
    from ..validation.values import Invalid

    raise Invalid(f"no user {value!r}")


def _text_to_html(value):
    """Plain text as the HTML that shows it: characters escaped, line breaks kept (``<br>``);
    blank text is no value. Its plain-text field is filled after the migration
    (migrate/valueindex.py ``fill_rich_texts``)."""
    import html

    if value is None or not str(value).strip():
        return None
    return html.escape(str(value).strip(), quote=False).replace("\r\n", "\n").replace("\n", "<br>")


# -- from numbers ---------------------------------------------------------------------------------


def _number_to_number(src: Field, dst: Field, sqlite: bool, round_: bool = False):
    """(expr, canonical, bad, rounded) of a number column changing type or scale. Fewer
    decimals: the values that would lose digits are ``bad`` (refused), or with ``round_``
    rounded half away from zero (``rounded`` counts them)."""
    s, d = scale_of(src), scale_of(dst)
    limit = 10 ** digits_of(dst)
    low, high = _bounds(dst)
    rounded = None
    if sqlite:  # stored: value * 10**s (integers)
        if d >= s:
            factor = 10 ** (d - s)

            def expr(c):
                return f"{c} * {factor}" if factor != 1 else None

            lossy = None
        else:
            factor = 10 ** (s - d)
            half = factor // 2

            def expr(c):
                if round_:  # SQLite's integer division truncates toward zero: add half away from it
                    return f"(CASE WHEN {c} < 0 THEN -((-{c} + {half}) / {factor}) ELSE ({c} + {half}) / {factor} END)"
                return f"{c} / {factor}"

            def lossy(c):
                return f"{c} % {factor} <> 0"

            if round_:
                rounded, lossy = lossy, None

        unit = 10**s

        def bad(c):
            parts = [f"abs({c}) >= {limit * unit}"]
            if lossy:
                parts.append(lossy(c))
            if low is not None:
                parts.append(f"{c} < {_scaled(low, s)}")
            if high is not None:
                parts.append(f"{c} > {_scaled(high, s)}")
            return " OR ".join(parts)

        return expr, None, bad, rounded

    target = "BIGINT" if d == 0 and dst.type in ("integer", "duration") else f"NUMERIC({d + digits_of(dst)}, {d})"

    def pg_expr(c):
        if round_ and d < s:  # PostgreSQL's round() of a numeric: half away from zero
            return f"CAST(round({c}, {d}) AS {target})"
        return f"CAST({c} AS {target})"

    if round_ and d < s:

        def rounded(c):
            return f"{c} <> round({c}, {d})"

    def pg_bad(c):
        parts = [f"abs({c}) >= {limit}"]
        if d < s and not round_:
            parts.append(f"{c} <> round({c}, {d})")
        if low is not None:
            parts.append(f"{c} < {_scaled(low, 0)}")
        if high is not None:
            parts.append(f"{c} > {_scaled(high, 0)}")
        return " OR ".join(parts)

    return pg_expr, None, pg_bad, rounded


def _number_to_text(src: Field, dst: Field, sqlite: bool):
    s = scale_of(src)
    limit = dst.max_length
    if sqlite and s:
        unit = 10**s
        pad = "0" * s

        def expr(c):
            return (
                f"(CASE WHEN {c} < 0 THEN '-' ELSE '' END || (abs({c}) / {unit}) || '.' || "
                f"substr('{pad}' || (abs({c}) % {unit}), -{s}))"
            )

    else:

        def expr(c):
            return f"CAST({c} AS TEXT)"

    def bad(c):
        return f"length({expr(c)}) > {limit}" if limit else None

    return expr, None, bad


# -- helpers --------------------------------------------------------------------------------------


def _bounds(f: Field):
    low, high = f.min, f.max
    if f.type == "percent":
        low = 0 if low is None else low
        high = 100 if high is None else high
    return low, high


def _scaled(bound, scale: int) -> str:
    value = Decimal(repr(bound)) * (Decimal(10) ** scale)
    return str(int(value)) if value == value.to_integral_value() else str(value)


def _in(values) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def canonical_spelling(conv: Conversion, value) -> tuple[bool, str | None]:
    """(converts, its canonical text) of one stored text value."""
    from ..validation.values import Invalid

    try:
        return True, conv.coerce(value)
    except Invalid:
        return False, None


__all__ = ["Conversion", "conversion", "canonical_spelling", "TEXTS"]
