"""Coercers: one function per field, built once from its declaration, turning an input value
(a Python value from the API, or a string from the command line or a CSV file) into the value
stored, or raising :class:`Invalid` with a message that names the value and what is allowed.

Every coercer maps ``None`` and ``""`` to ``None`` (no value). Coercers raise only ``Invalid``
(a ValueError; the record's validator collects one per field).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # pragma: no cover
    import regex

from .. import dates
from ..model.metamodel import Field

Coercer = Callable[[object], object]

UTC = dt.UTC


class Invalid(ValueError):
    """A value a coercer refuses; ``str(exc)`` is the reason, naming the value."""


# --------------------------------------------------------------------------- helpers


def show(value: object, limit: int = 60) -> str:
    """A value as messages quote it: strings quoted (Cyrillic kept), long ones cut."""
    if isinstance(value, str):
        text = repr(value if len(value) <= limit else value[:limit] + "…")
    elif isinstance(value, Decimal | dt.date):
        text = str(value)
    else:
        text = repr(value)
        if len(text) > limit + 2:
            text = text[:limit] + "…"
    return text


def type_name(value: object) -> str:
    return {
        bool: "a yes/no value",
        int: "a whole number",
        float: "a number",
        list: "a list",
        tuple: "a list",
        dict: "a mapping",
        set: "a set",
    }.get(type(value), type(value).__name__)


def number(value: float | int | None) -> str:
    """A declared bound as messages show it (0, 0.5)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def unstorable_text(value: object, depth: int = 0) -> str | None:
    """Why text in ``value`` (a string, or strings inside lists and mappings) cannot be stored
    alike on both databases, or None: a NUL character (PostgreSQL refuses it, SQLite would
    keep it) or a lone surrogate (not Unicode: invalid UTF-8 read from the command line, or
    "\\ud800" from code), which no database encodes."""
    if isinstance(value, str):
        if "\x00" in value:
            return f"{show(value)} contains a NUL character (\\x00), which cannot be stored"
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                bad = value[exc.start]
                return (
                    f"{show(value)} is not valid text: character {exc.start + 1} is a lone surrogate "
                    f"(U+{ord(bad):04X}; invalid UTF-8 input?)"
                )
        return None
    if depth < 64 and isinstance(value, list | tuple | dict):
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        for item in items:
            kind = type(item)
            if kind is str and item.isascii() and "\x00" not in item or kind is int or item is None:
                continue  # the common items, without a call each (a bulk create's many-link rows)
            found = unstorable_text(item, depth + 1)
            if found:
                return found
    return None


def _empty(value: object) -> bool:
    return value is None or value == ""


# --------------------------------------------------------------------------- text


def text_coercer(f: Field, *, strip: bool) -> Coercer:
    max_length = f.max_length
    pattern = compile_pattern(f.pattern) if f.pattern else None

    def coerce(value):
        if value is None:
            return None
        if isinstance(value, str):
            text = value.strip() if strip else value
        elif isinstance(value, int | float | Decimal) and not isinstance(value, bool):
            text = str(value)
        else:
            raise Invalid(f"{show(value)} is not text ({type_name(value)})")
        if text == "":
            return None
        return check_text(f, text, max_length, pattern)

    return coerce


# A field's ``pattern`` runs on the ``regex`` engine (the syntax and meaning of ``re``) with a
# time limit per value: a pattern that backtracks catastrophically (``^(a|aa)+$`` on a long
# non-matching value) refuses the value after this many seconds instead of hanging the process.
PATTERN_TIMEOUT = 0.1


def compile_pattern(text: str) -> regex.Pattern:
    """A field's pattern, compiled as ``re`` would read it (``regex`` in its version-0 mode)."""
    import regex  # imported when a validator of a field with a pattern is first built

    return regex.compile(text, flags=regex.VERSION0)


def check_text(f: Field, text: str, max_length: int | None, pattern: regex.Pattern | None) -> str:
    if max_length is not None and len(text) > max_length:
        raise Invalid(f"{show(text)} is {len(text)} characters long; the maximum is {max_length}")
    if pattern is not None:
        try:
            matched = pattern.fullmatch(text, timeout=PATTERN_TIMEOUT)
        except TimeoutError:
            raise Invalid(
                f"{show(text)} could not be checked against the pattern {f.pattern} within {PATTERN_TIMEOUT} s "
                "(the pattern backtracks too much on this value; simplify the pattern)"
            ) from None
        if matched is None:
            raise Invalid(f"{show(text)} does not match the pattern {f.pattern}")
    return text


# --------------------------------------------------------------------------- numbers

_INT = re.compile(r"\s*[+-]?[0-9]+\s*")
INT_LIMIT = 2**63  # a BIGINT column


def _bounds(f: Field, value: object, number_value, low=None, high=None):
    low = f.min if f.min is not None else low
    high = f.max if f.max is not None else high
    if low is not None and number_value < _as_decimal_bound(low, number_value):
        raise Invalid(f"{show(value)} is less than the minimum {number(low)}")
    if high is not None and number_value > _as_decimal_bound(high, number_value):
        raise Invalid(f"{show(value)} is more than the maximum {number(high)}")


def _as_decimal_bound(bound, number_value):
    if isinstance(number_value, Decimal) and isinstance(bound, float):
        return Decimal(repr(bound))
    return bound


def integer_coercer(f: Field) -> Coercer:
    def coerce(value):
        if value is None:
            return None
        if isinstance(value, bool):
            raise Invalid(f"{show(value)} is a yes/no value, not a whole number")
        if isinstance(value, int):
            result = value
        elif isinstance(value, str):
            if value.strip() == "":
                return None
            if _INT.fullmatch(value) is None:
                raise Invalid(f"{show(value)} is not a whole number")
            result = int(value)
        elif isinstance(value, float):
            if not value.is_integer():
                raise Invalid(f"{show(value)} is not a whole number")
            result = int(value)
        elif isinstance(value, Decimal):
            if not value.is_finite() or value != value.to_integral_value():
                raise Invalid(f"{show(value)} is not a whole number")
            result = int(value)
        else:
            raise Invalid(f"{show(value)} is not a whole number ({type_name(value)})")
        if not -INT_LIMIT < result < INT_LIMIT:
            raise Invalid(f"{show(value)} is too large for a whole number (at most 19 digits)")
        _bounds(f, value, result)
        return result

    return coerce


_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_THOUSANDS_COMMAS = re.compile(r"[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]*)?")
_SPACES = dict.fromkeys(map(ord, " \t\u00a0\u202f\u2009\u2007"), None)


def parse_decimal(value: object, *, percent: bool = False) -> Decimal:
    """A finite Decimal from a number or a string ("120 000,50", "1,234.5", "-3")."""
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise Invalid(f"{show(value)} is a yes/no value, not a number")
    elif isinstance(value, int):
        return Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise Invalid(f"{show(value)} is not a number")
        return Decimal(repr(value))
    elif isinstance(value, str):
        if _DECIMAL.fullmatch(value) is not None:  # the usual plain number: nothing to clean up
            return Decimal(value)
        text = value.translate(_SPACES)
        if percent and text.endswith("%"):
            text = text[:-1]
        if "," in text:
            if "." not in text and text.count(",") == 1:
                text = text.replace(",", ".")
            elif _THOUSANDS_COMMAS.fullmatch(text):
                text = text.replace(",", "")
            else:
                raise Invalid(f"{show(value)} is not a number; write it like 120000.50, 120000,50 or 120 000,50")
        if _DECIMAL.fullmatch(text) is None:
            raise Invalid(f"{show(value)} is not a number")
        return Decimal(text)
    else:
        raise Invalid(f"{show(value)} is not a number ({type_name(value)})")
    if not result.is_finite():
        raise Invalid(f"{show(value)} is not a number")
    return result


def digits(value: Decimal) -> tuple[int, int]:
    """(digits before the point, decimals) of a finite Decimal, ignoring trailing zeros."""
    _sign, coefficient, exponent = value.as_tuple()
    size = len(coefficient)
    while exponent < 0 and size > 1 and coefficient[size - 1] == 0:
        size -= 1
        exponent += 1
    if coefficient == (0,) or not any(coefficient[:size]):
        return 0, 0
    decimals = -exponent if exponent < 0 else 0
    return max(size + exponent, 0), decimals


CENT = Decimal("0.01")
ONE = Decimal(1)


def money_coercer(f: Field) -> Coercer:
    """Money (two decimals) and currency amounts (the currency's decimals: with a
    ``currency_field``, the most of its currencies'; each record's own currency is checked
    after the write, see runtime/rules.py)."""
    scale, whole = f.decimals, f.whole_digits
    quantum = Decimal(1).scaleb(-scale)
    noun = "money" if f.type == "money" else f.name
    if f.type == "money":
        too_fine = "money is kept to the cent"
    elif f.currency:
        too_fine = f"{f.name} is kept to {_places(scale)} ({f.currency})"
    else:
        too_fine = f"{f.name} is kept to at most {_places(scale)} (the most of its currencies')"

    def coerce(value):
        if _empty(value) or (isinstance(value, str) and value.strip() == ""):
            return None
        result = parse_decimal(value)
        if result:
            fitted = _fitted(result, quantum, whole)
            if fitted is not None:  # the usual amount: no more decimals or digits than kept
                _bounds(f, value, fitted)
                return fitted
        got_whole, decimals = digits(result)
        if decimals > scale:
            more = "is not a whole number" if scale == 0 else f"has more than {_places(scale)}"
            raise Invalid(f"{show(value)} {more}; {too_fine}")
        if got_whole > whole:
            raise Invalid(f"{show(value)} is too large; {noun} has at most {whole} digits before the decimal point")
        result = result.quantize(quantum) if result else Decimal(0).quantize(quantum)
        _bounds(f, value, result)
        return result

    return coerce


def _fitted(value: Decimal, quantum: Decimal, whole: int) -> Decimal | None:
    """``value`` at the scale of ``quantum`` when that loses nothing and it has at most
    ``whole`` digits before the point (what :func:`digits` would let through), else None (the
    caller's checks then say why). A non-zero ``value`` only."""
    try:
        fitted = value.quantize(quantum)
    except ArithmeticError:  # more digits than the context holds: too large, said by the checks
        return None
    if fitted != value or fitted.adjusted() >= whole:
        return None
    return fitted


def _places(scale: int) -> str:
    return "no decimals" if scale == 0 else "1 decimal" if scale == 1 else f"{scale} decimals"


def decimal_coercer(f: Field, *, percent: bool = False) -> Coercer:
    low, high = (0, 100) if percent else (None, None)
    what = "a percentage" if percent else "a decimal"
    scale, whole = f.decimals, f.whole_digits
    declared = f.scale is not None or f.precision is not None
    name = f"{f.name} ({what})" if declared else what

    def coerce(value):
        if _empty(value) or (isinstance(value, str) and value.strip() == ""):
            return None
        result = parse_decimal(value, percent=percent)
        got_whole, decimals = digits(result)
        if decimals > scale:
            raise Invalid(f"{show(value)} has more than {_places(scale)}; {name} has at most {scale}")
        if got_whole > whole:
            raise Invalid(f"{show(value)} is too large; {name} has at most {whole} digits before the decimal point")
        if not result:
            result = Decimal(0)
        elif result.as_tuple().exponent > 0:
            result = result.quantize(ONE)
        _bounds(f, value, result, low, high)
        return result

    return coerce


def duration_coercer(f: Field) -> Coercer:
    """A duration (``1h30m``, ``2d``, ``PT1H30M``, a number of seconds) as whole seconds."""

    def coerce(value):
        if _empty(value) or (isinstance(value, str) and value.strip() == ""):
            return None
        try:
            return dates.parse_duration_seconds(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None

    return coerce


# --------------------------------------------------------------------------- yes/no, dates

TRUE = frozenset({"true", "yes", "1", "да"})
FALSE = frozenset({"false", "no", "0", "нет"})


def boolean_coercer(f: Field) -> Coercer:
    def coerce(value):
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            word = value.strip().lower()
            if word in TRUE:
                return True
            if word in FALSE:
                return False
            if word == "":
                return None
        raise Invalid(f"{show(value)} is not a yes/no value; use true/false, yes/no, 1/0 or да/нет")

    return coerce


DATE_FORMATS = dates.DATE_FORMATS
DATETIME_FORMATS = dates.DATETIME_FORMATS


def parse_date(value: object) -> dt.date:
    """A date (metacrm.dates, the one date parser); Invalid naming the value otherwise."""
    try:
        return dates.parse_date(value)
    except dates.DateError as exc:
        raise Invalid(str(exc)) from None


def date_coercer(f: Field) -> Coercer:
    def coerce(value):
        if value is None or value == "":
            return None
        return parse_date(value)

    return coerce


def parse_datetime(value: object, zone: str | None = None) -> dt.datetime:
    """A moment in UTC (metacrm.dates); a value without a zone is local time of ``zone``."""
    try:
        return dates.parse_datetime(value, zone)
    except dates.DateError as exc:
        raise Invalid(str(exc)) from None


def datetime_coercer(f: Field, zone: str | None = None) -> Coercer:
    def coerce(value):
        if value is None or value == "":
            return None
        return parse_datetime(value, zone)

    return coerce


# --------------------------------------------------------------------------- e-mail, phone, url


@lru_cache(maxsize=65536)
def check_email(text: str) -> tuple[str | None, str | None]:
    """(normalized address, None) or (None, reason); cached, bulk imports repeat domains."""
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(text, check_deliverability=False).normalized, None
    except EmailNotValidError as exc:
        return None, str(exc)


def email_coercer(f: Field) -> Coercer:
    max_length = f.max_length

    def coerce(value):
        if value is None:
            return None
        if not isinstance(value, str):
            raise Invalid(f"{show(value)} is not an e-mail address ({type_name(value)})")
        text = value.strip()
        if text == "":
            return None
        address, reason = check_email(text)
        if address is None:
            raise Invalid(f"{show(value)} is not a valid e-mail address: {reason}")
        return check_text(f, address, max_length, None)

    return coerce


@lru_cache(maxsize=65536)
def check_phone(text: str, region: str | None) -> str | None:
    """The number in E.164 form, or None when it is not a valid number; cached."""
    import phonenumbers

    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not (phonenumbers.is_possible_number(parsed) and phonenumbers.is_valid_number(parsed)):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def phone_coercer(f: Field, region: str | None) -> Coercer:
    max_length = f.max_length
    pattern = compile_pattern(f.pattern) if f.pattern else None
    if region:
        hint = f"numbers without '+' are read as {region} numbers; others need '+' and the country code"
    else:
        hint = "international numbers need '+' and the country code (the model sets no region)"

    def coerce(value):
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise Invalid(f"{show(value)} is not a phone number ({type_name(value)})")
        text = value.strip()
        if text == "":
            return None
        number_ = check_phone(text, region)
        if number_ is None:
            raise Invalid(f"{show(value)} is not a valid phone number; {hint}")
        return check_text(f, number_, max_length, pattern)

    return coerce


MAX_VALUES = 50  # addresses or numbers in one emails / phones field
_LIST_SEPARATORS = re.compile(r"[,;\n]+")


def _several(value, what: str, *, numbers: bool = False) -> list | None:
    """The items of an emails / phones value: a list, or text holding them separated by
    commas, semicolons or line breaks; None for no value."""
    if value is None:
        return None
    if isinstance(value, str):
        items: list = _LIST_SEPARATORS.split(value)
    elif isinstance(value, list | tuple):
        items = list(value)
    elif numbers and isinstance(value, int) and not isinstance(value, bool):
        items = [str(value)]
    else:
        raise Invalid(f"{show(value)} is not {what} ({type_name(value)}); give one as text or several as a list")
    return items


def several_coercer(what: str, one: Coercer, key: Callable[[str], str], *, numbers: bool = False) -> Coercer:
    """A coercer of a list of values each checked by ``one`` (which maps blanks to None), kept
    in order, duplicates (equal ``key``) dropped: the first is the primary. An empty list is no
    value."""

    def coerce(value):
        items = _several(value, what, numbers=numbers)
        if items is None:
            return None
        out, seen = [], set()
        for item in items:
            if isinstance(item, str):
                item = item.strip()
            elif not (numbers and isinstance(item, int) and not isinstance(item, bool)):
                raise Invalid(f"{show(item)} is not {what} ({type_name(item)})")
            checked = one(item)
            if checked is None or key(checked) in seen:
                continue
            seen.add(key(checked))
            out.append(checked)
        if len(out) > MAX_VALUES:
            raise Invalid(f"{len(out)} values given; at most {MAX_VALUES} are allowed")
        return out or None

    return coerce


def emails_coercer(f: Field) -> Coercer:
    return several_coercer("an e-mail address", email_coercer(f), str.lower)


def phones_coercer(f: Field, region: str | None) -> Coercer:
    return several_coercer("a phone number", phone_coercer(f, region), str, numbers=True)


@lru_cache(maxsize=4096)
def check_country(text: str) -> str | None:
    """The ISO 3166-1 alpha-2 code of a country given by that code, its alpha-3 code, its
    numeric code or its English name (``fr``, ``FRA``, ``250``, ``France``); None when unknown.
    pycountry carries the ISO 3166 tables."""
    import pycountry

    text = text.strip()
    try:
        if len(text) == 2 and text.isalpha():
            found = pycountry.countries.get(alpha_2=text.upper())
        elif len(text) == 3 and text.isalpha():
            found = pycountry.countries.get(alpha_3=text.upper())
        elif text.isdigit():
            found = pycountry.countries.get(numeric=text.zfill(3))
        else:
            found = pycountry.countries.lookup(text)
    except LookupError:
        return None
    return found.alpha_2 if found is not None else None


def country_coercer(f: Field) -> Coercer:
    def coerce(value):
        if value is None:
            return None
        if not isinstance(value, str):
            raise Invalid(f"{show(value)} is not a country ({type_name(value)})")
        if value.strip() == "":
            return None
        code = check_country(value)
        if code is None:
            raise Invalid(f"{show(value)} is not a country; give its ISO 3166-1 code (FR, DEU) or English name")
        return code

    return coerce


RICH_TEXT_LIMIT = 1_000_000  # characters of HTML in one rich_text value
# nh3's safe defaults without images: a remote image in a note would be loaded by every reader
RICH_TEXT_DROPPED = frozenset({"img", "map", "area"})


@lru_cache(maxsize=1)
def _allowed_tags() -> frozenset:
    import nh3

    return frozenset(nh3.ALLOWED_TAGS) - RICH_TEXT_DROPPED


def sanitise_html(text: str) -> str:
    """HTML made safe to show: nh3 (ammonia) keeps the harmless tags and attributes and drops
    the rest: scripts, event handlers, ``javascript:`` links, styles, images."""
    import nh3

    return nh3.clean(text, tags=set(_allowed_tags()), link_rel="noopener noreferrer nofollow")


def html_text(html_: str | None) -> str | None:
    """The plain text of (sanitised) HTML: what search indexes and filters read. Block
    elements and line breaks separate words; character references are decoded."""
    if html_ is None:
        return None
    from html.parser import HTMLParser

    parts: list[str] = []

    class _Text(HTMLParser):
        def handle_starttag(self, tag, attrs):
            parts.append(" ")

        def handle_endtag(self, tag):
            parts.append(" ")

        def handle_data(self, data):
            parts.append(data)

    parser = _Text(convert_charrefs=True)
    parser.feed(html_)
    parser.close()
    return " ".join("".join(parts).split()) or None


def rich_text_coercer(f: Field) -> Coercer:
    def coerce(value):
        if value is None:
            return None
        if not isinstance(value, str):
            raise Invalid(f"{show(value)} is not text ({type_name(value)})")
        if len(value) > RICH_TEXT_LIMIT:
            raise Invalid(f"the text is {len(value)} characters long; at most {RICH_TEXT_LIMIT} are allowed")
        clean = sanitise_html(value).strip()
        return clean or None

    return coerce


TAG_LENGTH = 100


def normal_tag(text: str) -> str:
    """A tag as stored and matched: spaces trimmed and collapsed, case folded (``VIP`` and
    ``vip`` are one tag on both databases: Python folds, not SQLite's ASCII-only lower())."""
    return " ".join(text.split()).casefold()


def tag_coercer(f: Field) -> Coercer:
    def coerce(value):
        if not isinstance(value, str):
            raise Invalid(f"{show(value)} is not a tag ({type_name(value)})")
        tag = normal_tag(value)
        if not tag:
            return None
        if len(tag) > TAG_LENGTH:
            raise Invalid(f"{show(value)} is longer than {TAG_LENGTH} characters")
        return tag

    return coerce


def url_coercer(f: Field) -> Coercer:
    max_length = f.max_length
    pattern = compile_pattern(f.pattern) if f.pattern else None

    def coerce(value):
        if value is None:
            return None
        if not isinstance(value, str):
            raise Invalid(f"{show(value)} is not a web address ({type_name(value)})")
        text = value.strip()
        if text == "":
            return None
        try:
            parts = urlsplit(text)
            host = parts.hostname
        except ValueError:
            parts, host = None, None
        if parts is None or parts.scheme.lower() not in ("http", "https") or not host or any(c.isspace() for c in text):
            hint = ""
            if parts is not None and not parts.scheme and "." in text and not any(c.isspace() for c in text):
                hint = f" (did you mean 'https://{text}'?)"
            raise Invalid(f"{show(value)} is not a web address; use http:// or https:// and a host{hint}")
        return check_text(f, text, max_length, pattern)

    return coerce


# --------------------------------------------------------------------------- choices, json


def _option_resolver(f: Field) -> tuple[Callable[[str], str | None], str]:
    exact = {o.value: o.value for o in f.options}
    folded: dict[str, str] = {}
    for option in f.options:  # labels first so a value wins a clash with a label
        if option.label:
            folded.setdefault(option.label.strip().casefold(), option.value)
    for option in f.options:
        folded[option.value.casefold()] = option.value
    names = ", ".join(exact)

    def resolve(text: str) -> str | None:
        found = exact.get(text)
        if found is None:
            found = folded.get(text.strip().casefold())
        return found

    return resolve, names


def choice_coercer(f: Field) -> Coercer:
    resolve, names = _option_resolver(f)

    def coerce(value):
        if value is None or value == "":
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise Invalid(f"{show(value)} is not an option ({type_name(value)}); options: {names}")
        found = resolve(value)
        if found is None:
            if value.strip() == "":
                return None
            raise Invalid(f"{show(value)} is not an option; options: {names}")
        return found

    return coerce


def multichoice_coercer(f: Field) -> Coercer:
    resolve, names = _option_resolver(f)
    order = {o.value: i for i, o in enumerate(f.options)}

    def coerce(value):
        if value is None or value == "":
            return None
        if isinstance(value, str):
            whole = resolve(value)
            items = [whole] if whole is not None else [part for part in value.split(",") if part.strip()]
        elif isinstance(value, list | tuple | set | frozenset):
            items = list(value)
        else:
            raise Invalid(f"{show(value)} is not a list of options ({type_name(value)}); options: {names}")
        chosen, bad = set(), []
        for item in items:
            found = resolve(item) if isinstance(item, str) else None
            if found is None:
                bad.append(item.strip() if isinstance(item, str) else item)
            else:
                chosen.add(found)
        if bad:
            listed = ", ".join(show(b) for b in bad)
            verb = "is not an option" if len(bad) == 1 else "are not options"
            raise Invalid(f"{listed} {verb}; options: {names}")
        return sorted(chosen, key=order.__getitem__)

    return coerce


LOGIN_MAX = 100  # the users table's login column (storage/tables.py)


def _login(value) -> str | None:
    if not isinstance(value, str):
        raise Invalid(f"{show(value)} is not a user login ({type_name(value)})")
    login = value.strip()
    if len(login) > LOGIN_MAX:
        raise Invalid(f"{show(value)} is not a user login (longer than {LOGIN_MAX} characters)")
    return login or None


def user_coercer(f: Field) -> Coercer:
    """A ``to: user`` link: a login (whether such a user exists is checked against the users
    table, runtime/users.py); "" clears it."""

    def coerce(value):
        return None if value is None else _login(value)

    return coerce


def users_coercer(f: Field) -> Coercer:
    """A ``to: user`` many-link: logins as a list or comma-separated, in the order given, each
    once; an empty list clears it (None)."""

    def coerce(value):
        if value is None:
            return None
        if isinstance(value, str):
            items = value.split(",")
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise Invalid(f"{show(value)} is not a list of user logins ({type_name(value)})")
        logins = [login for login in map(_login, items) if login is not None]
        return list(dict.fromkeys(logins)) or None

    return coerce


def _no_constants(name: str):
    raise ValueError(name)


def json_coercer(f: Field) -> Coercer:
    def coerce(value):
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                return json.loads(value, parse_constant=_no_constants)
            except ValueError:
                return value
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise Invalid(f"{show(value)} is not a JSON value: {exc}") from None
        return value

    return coerce


def _no_value(value):
    """A file field's value: only ever the empty default (attach and detach set the column)."""
    if value is None:
        return None
    raise Invalid("is a file field: set it with attach")


# --------------------------------------------------------------------------- registry


def field_coercer(f: Field, *, region: str | None = None, zone: str | None = None) -> Coercer:
    """The coercer of one field, by its type (``region``: phone numbers without '+';
    ``zone``: the model's time zone, for dates and times written without one)."""
    kind = f.type
    if kind == "string":
        return text_coercer(f, strip=True)
    if kind == "text":
        return text_coercer(f, strip=False)
    if kind == "integer":
        return integer_coercer(f)
    if kind in ("money", "currency"):
        return money_coercer(f)
    if kind == "duration":
        return duration_coercer(f)
    if kind in ("decimal", "percent"):
        return decimal_coercer(f, percent=kind == "percent")
    if kind == "boolean":
        return boolean_coercer(f)
    if kind == "date":
        return date_coercer(f)
    if kind == "datetime":
        return datetime_coercer(f, zone)
    if kind == "email":
        return email_coercer(f)
    if kind == "phone":
        return phone_coercer(f, region)
    if kind == "url":
        return url_coercer(f)
    if kind == "country":
        return country_coercer(f)
    if kind == "rich_text":
        return rich_text_coercer(f)
    if kind == "tags":
        return several_coercer("a tag", tag_coercer(f), str)
    if kind == "emails":
        return emails_coercer(f)
    if kind == "phones":
        return phones_coercer(f, region)
    if kind == "choice":
        return choice_coercer(f)
    if kind == "multichoice":
        return multichoice_coercer(f)
    if kind == "json":
        return json_coercer(f)
    if kind == "user":
        return user_coercer(f)
    if kind == "users":
        return users_coercer(f)
    if f.kind == "file":
        return _no_value
    raise Invalid(f"field type '{kind}' has no validator")  # the model checks make this unreachable


__all__ = [
    "Coercer",
    "Invalid",
    "field_coercer",
    "unstorable_text",
    "parse_date",
    "parse_datetime",
    "parse_decimal",
    "show",
]
