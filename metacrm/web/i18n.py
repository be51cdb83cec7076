"""The browser app's language, number and date formats and time zone (docs/web.md, "Language
and time zone").

The interface's own words are gettext messages (``_("New")`` in templates and in web/*.py),
translated by the catalogues in ``metacrm/web/locale/{ru,en}/LC_MESSAGES/messages.mo`` (Babel;
the ``.po`` sources beside them, ``babel.cfg`` at the top of the repository for extraction).
Labels from the model (entities, fields, stages, options) are shown as the model gives them.

Each request is answered in one ``Lang``: the signed-in user's ``locale`` preference if set,
else the best match of the browser's Accept-Language among ``LOCALES``, else English; times in
the user's ``timezone`` preference, else the model's ``timezone`` if it has one, else UTC. The
language in force is a context variable (``use``): the template's ``_``/``ngettext`` and the
``shown`` formatter read it, so one Jinja environment serves every language.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import re
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from babel import Locale
from babel.dates import format_date, format_time
from babel.numbers import format_currency, format_decimal, get_decimal_symbol
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).parent / "locale"
LOCALES = ("en", "ru")  # the interface's languages: a catalogue each under locale/
DEFAULT_LOCALE = "en"
NAMES = {"en": "English", "ru": "Русский"}  # each language by its own name, for the settings page
UTC = dt.UTC
COMMON_ZONES = (
    "UTC",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Kaliningrad",
    "Europe/Moscow",
    "Europe/Samara",
    "Asia/Yekaterinburg",
    "Asia/Omsk",
    "Asia/Novosibirsk",
    "Asia/Krasnoyarsk",
    "Asia/Irkutsk",
    "Asia/Yakutsk",
    "Asia/Vladivostok",
    "Asia/Magadan",
    "Asia/Kamchatka",
    "Asia/Almaty",
    "Asia/Tashkent",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Australia/Sydney",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Sao_Paulo",
)
_QUALITY = re.compile(r"^q=([0-9.]+)$")


def N_(message: str) -> str:
    """Marks a message for extraction; it is translated where it is shown."""
    return message


@functools.cache
def translations(code: str) -> NullTranslations:
    """The compiled catalogue of a language (English's is the identity where it has no entry)."""
    return Translations.load(str(LOCALE_DIR), [code], domain="messages")


@functools.cache
def _zones() -> frozenset[str]:
    """The IANA names (not the system's aliases of its own clock or the database's variants)."""
    odd = {"localtime", "posixrules", "Factory"}
    return frozenset(
        z for z in zoneinfo.available_timezones() if z not in odd and not z.startswith(("posix/", "right/"))
    )


def zone(name: Any) -> zoneinfo.ZoneInfo | None:
    """The IANA time zone of that name, or None when it is not one."""
    if not isinstance(name, str) or not 0 < len(name) <= 64 or name not in _zones():
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # pragma: no cover - listed yet unreadable
        return None


def negotiate(header: str | None) -> str | None:
    """The best of LOCALES for an Accept-Language header (``ru-RU,ru;q=0.9,en;q=0.8``), or None."""
    if not header:
        return None
    wanted: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:50]):
        tag, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            if param.startswith("q="):  # a malformed weight is no vote
                match = _QUALITY.match(param)
                try:
                    quality = float(match.group(1)) if match else 0.0
                except ValueError:
                    quality = 0.0
        if tag and quality > 0:
            wanted.append((-quality, index, tag.lower()))
    for _quality, _index, tag in sorted(wanted):
        primary = tag.replace("_", "-").split("-")[0]
        if primary in LOCALES:
            return primary
        if tag == "*":
            return DEFAULT_LOCALE
    return None


class Lang:
    """One language and time zone: gettext, and values formatted for the page."""

    def __init__(
        self, code: str = DEFAULT_LOCALE, tz: zoneinfo.ZoneInfo | dt.tzinfo = UTC, currency: str | None = None
    ):
        self.code = code if code in LOCALES else DEFAULT_LOCALE
        self.locale = Locale.parse(self.code)
        self.tz = tz
        self.tz_name = getattr(tz, "key", None) or "UTC"
        self.currency = currency
        self._catalogue = translations(self.code)

    def __repr__(self) -> str:
        return f"Lang({self.code!r}, {self.tz_name!r})"

    # -- words ---------------------------------------------------------------------------------------
    def gettext(self, message: str, **params: Any) -> str:
        text = self._catalogue.gettext(message)
        return text % params if params else text

    def ngettext(self, singular: str, plural: str, n: int, **params: Any) -> str:
        text = self._catalogue.ngettext(singular, plural, n)
        params.setdefault("num", n)
        return text % params

    # -- values --------------------------------------------------------------------------------------
    def number(self, value: Any, digits: int | None = None) -> str:
        """A number with the locale's separators: ``digits`` decimals, else as many as it has."""
        if value is None:
            return ""
        if digits is not None:
            pattern = "#,##0." + "0" * digits if digits > 0 else "#,##0"
            return format_decimal(value, pattern, locale=self.locale)
        return format_decimal(value, locale=self.locale, decimal_quantization=False)

    def money(self, value: Any, currency: str | None = None) -> str:
        """An amount with two decimals; with a currency, as the locale writes it (``1 234,50 ₽``)."""
        currency = currency or self.currency
        if currency:
            return format_currency(value, currency, locale=self.locale)
        return self.number(value, 2)

    def moment(self, value: dt.datetime) -> str:
        """A date and time in the user's time zone, with the zone's abbreviation."""
        if value.tzinfo is None:  # stored datetimes are UTC
            value = value.replace(tzinfo=UTC)
        local = value.astimezone(self.tz)
        pattern = self.locale.datetime_formats["medium"].format
        text = pattern(
            format_time(local, "short", tzinfo=None, locale=self.locale),
            format_date(local.date(), "medium", locale=self.locale),
        )
        return f"{text} {local.tzname() or self.tz_name}"

    def date(self, value: dt.date) -> str:
        return format_date(value, "medium", locale=self.locale)

    def local_input(self, value: dt.datetime) -> str:
        """A datetime as a datetime-local input holds it: wall-clock time in the user's zone."""
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(self.tz).strftime("%Y-%m-%dT%H:%M")

    def from_local_input(self, text: str) -> str:
        """A datetime-local input's value (the user's wall-clock time) as an ISO datetime with its
        offset, which the library stores as UTC; text that is not such a value is passed on
        untouched, for the library's message."""
        try:
            value = dt.datetime.fromisoformat(text.strip())
        except ValueError:
            return text
        if value.tzinfo is not None:
            return text
        return value.replace(tzinfo=self.tz).astimezone(UTC).isoformat()

    def decimal_input(self, value: Decimal) -> str:
        """A decimal as an input holds it: no grouping, the locale's decimal sign (the library reads
        both ``1234.50`` and ``1234,50``)."""
        return str(value).replace(".", get_decimal_symbol(self.locale))


ENGLISH = Lang()
_current: contextvars.ContextVar[Lang] = contextvars.ContextVar("metacrm_lang", default=ENGLISH)


def current() -> Lang:
    return _current.get()


def use(lang: Lang) -> contextvars.Token:
    """Make ``lang`` the language of what follows in this context (a request's handler)."""
    return _current.set(lang)


@contextmanager
def using(lang: Lang) -> Iterator[Lang]:
    token = _current.set(lang)
    try:
        yield lang
    finally:
        _current.reset(token)


def gettext(message: str, **params: Any) -> str:
    return _current.get().gettext(message, **params)


def ngettext(singular: str, plural: str, n: int, **params: Any) -> str:
    return _current.get().ngettext(singular, plural, n, **params)


_ = gettext


def choose(model, prefs: dict | None, accept_language: str | None) -> Lang:
    """The language and zone of a request: the user's settings, else the browser's language and the
    model's time zone, else English and UTC."""
    prefs = prefs or {}
    code = prefs.get("locale") if prefs.get("locale") in LOCALES else None
    code = code or negotiate(accept_language) or DEFAULT_LOCALE
    tz = zone(prefs.get("timezone")) or zone(getattr(model, "timezone", None)) or UTC
    return _lang(code, tz, getattr(model, "currency", None))


@functools.lru_cache(maxsize=256)
def _lang(code: str, tz: dt.tzinfo, currency: str | None) -> Lang:
    return Lang(code, tz, currency)


__all__ = [
    "COMMON_ZONES",
    "DEFAULT_LOCALE",
    "LOCALES",
    "NAMES",
    "Lang",
    "N_",
    "choose",
    "current",
    "gettext",
    "negotiate",
    "ngettext",
    "use",
    "using",
    "zone",
]
