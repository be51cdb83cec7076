"""The one date parser: every command, option and field value that takes a date or a date and
time reads it here (CLI field values, CSV imports, the API, filter literals, ``--as-of``,
``--now``, report ranges), and every datetime shown to a person is formatted here.

Accepted dates: ``2026-12-10`` and ``10.12.2026`` (day first, as written in Russia and most of
Europe). Accepted dates and times: either date, then ``T`` or a space and ``14:30`` or
``14:30:15`` (fractions of a second allowed), then optionally a zone: ``Z``, ``+03:00``,
``+0300`` or ``+03``. A date and time without a zone is the local time of the model's
``timezone:`` (UTC when the model sets none); a date alone where a moment is expected is its
midnight there. Stored values are UTC; shown values are in the model's zone with the offset.

Pure standard library (zoneinfo with the tzdata package where the system has no zone files),
so the CLI pays nothing to import it.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache

UTC = dt.UTC
DEFAULT_ZONE = "UTC"
DATE_FORMATS = "use YYYY-MM-DD or DD.MM.YYYY"
DATETIME_FORMATS = (
    "use YYYY-MM-DD or DD.MM.YYYY, optionally with a time (2026-12-10T14:30, 10.12.2026 14:30) "
    "and a zone (+03:00, Z); no zone means the model's time zone"
)

_DATE = (
    r"(?:(?P<y>[0-9]{4})-(?P<m>[0-9]{1,2})-(?P<d>[0-9]{1,2})|(?P<d2>[0-9]{1,2})\.(?P<m2>[0-9]{1,2})\.(?P<y2>[0-9]{4}))"
)
_TIME = r"(?:[T ]\s*(?P<H>[0-9]{1,2}):(?P<M>[0-9]{2})(?::(?P<S>[0-9]{2})(?:[.,](?P<f>[0-9]{1,6}))?)?)"
_ZONE = r"\s*(?P<z>Z|z|UTC|[+-][0-9]{2}(?::?[0-9]{2})?)"
_DATE_RE = re.compile(rf"\s*{_DATE}\s*")
_DATETIME_RE = re.compile(rf"\s*{_DATE}{_TIME}?(?:{_ZONE})?\s*")


class DateError(ValueError):
    """A value that is not a date (or a date and time); ``str(exc)`` names it and the forms."""


def _show(value: object) -> str:
    return repr(value if not isinstance(value, str) or len(value) <= 60 else value[:60] + "…")


@lru_cache(maxsize=64)
def zone_info(name: str | None) -> dt.tzinfo:
    """The tzinfo of an IANA zone name (``Europe/Moscow``); UTC for None, '' or 'UTC'.
    Raises DateError naming the zone when it is unknown."""
    if not name or name == "UTC":
        return UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise DateError(f"unknown time zone {name!r}; use an IANA name such as 'Europe/Moscow' or 'UTC'") from None


def _ymd(match: re.Match) -> tuple[int, int, int]:
    g = match.groupdict()
    if g["y"] is not None:
        return int(g["y"]), int(g["m"]), int(g["d"])
    return int(g["y2"]), int(g["m2"]), int(g["d2"])


def parse_date(value: object) -> dt.date:
    """A date from a date object or text (``2026-12-10``, ``10.12.2026``); DateError otherwise."""
    if isinstance(value, dt.datetime):
        raise DateError(f"{_show(value)} is a date and time; a date is expected")
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str):
        raise DateError(f"{_show(value)} is not a date; {DATE_FORMATS}")
    match = _DATE_RE.fullmatch(value)
    if match is None:
        raise DateError(f"{_show(value)} is not a date; {DATE_FORMATS}")
    try:
        return dt.date(*_ymd(match))
    except ValueError as exc:
        raise DateError(f"{_show(value)} is not a date: {exc} ({DATE_FORMATS})") from None


def parse_datetime(value: object, zone: str | None = None) -> dt.datetime:
    """A moment (aware, in UTC) from a datetime, a date (its midnight) or text; a value
    without a zone is the local time of ``zone`` (an IANA name; UTC when None)."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        moment = _parse_text(value)
    else:
        raise DateError(f"{_show(value)} is not a date and time; {DATETIME_FORMATS}")
    try:
        if moment.tzinfo is None or moment.utcoffset() is None:
            moment = moment.replace(tzinfo=zone_info(zone))
        return moment.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        if isinstance(exc, DateError):
            raise
        raise DateError(f"{_show(value)} is out of range: {exc}") from None


def read_datetime_text(value: str) -> dt.datetime:
    """The date and time written in ``value``, as written: naive when it gives no zone, else
    aware in its own offset (no conversion, so no calendar overflow); DateError otherwise.
    For checking an option's syntax before the model (and its zone) is known."""
    return _parse_text(value)


def _parse_text(value: str) -> dt.datetime:
    match = _DATETIME_RE.fullmatch(value)
    if match is None:
        try:  # the rest of ISO 8601 Python reads (week dates, ordinal dates, 20261210T1430)
            return dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise DateError(f"{_show(value)} is not a date and time; {DATETIME_FORMATS}") from None
    g = match.groupdict()
    fraction = (g["f"] or "").ljust(6, "0")
    tz = None
    if g["z"] is not None:
        z = g["z"]
        if z in ("Z", "z", "UTC"):
            tz = UTC
        else:
            digits = z[1:].replace(":", "")
            hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
            if hours > 23 or minutes > 59:
                raise DateError(f"{_show(value)} has an invalid zone offset {z!r}")
            offset = dt.timedelta(hours=hours, minutes=minutes)
            tz = dt.timezone(-offset if z[0] == "-" else offset)
    try:
        return dt.datetime(
            *_ymd(match), int(g["H"] or 0), int(g["M"] or 0), int(g["S"] or 0), int(fraction or 0), tzinfo=tz
        )
    except ValueError as exc:
        raise DateError(f"{_show(value)} is not a date and time: {exc} ({DATE_FORMATS}, then HH:MM)") from None


def parse_date_or_datetime(value: object, zone: str | None = None) -> dt.date | dt.datetime:
    """A date when the text is a date alone, else a moment (as :func:`parse_datetime`)."""
    if isinstance(value, str) and _DATE_RE.fullmatch(value):
        return parse_date(value)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    return parse_datetime(value, zone)


def local(moment: dt.datetime, zone: str | None) -> dt.datetime:
    """A stored moment (aware, or naive meaning UTC) as the local time of ``zone``, aware."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone_info(zone))


def local_today(zone: str | None, now: dt.datetime | None = None) -> dt.date:
    """Today's date in ``zone`` (at ``now``, default the current moment)."""
    return local(now or dt.datetime.now(UTC), zone).date()


# -- durations ---------------------------------------------------------------------------------

DURATION_FORMATS = "use 1h30m, 2d 4h, 45m, 90 (seconds), 1:30 (h:mm), or ISO 8601 (PT1H30M, P2D)"
_DURATION_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_PARTS = re.compile(r"\s*([0-9]+)\s*([wdhms])", re.IGNORECASE)
_DURATION_TEXT = re.compile(r"(?:\s*[0-9]+\s*[wdhms])+\s*", re.IGNORECASE)
_CLOCK = re.compile(r"\s*([0-9]+):([0-5][0-9])(?::([0-5][0-9]))?\s*")
_ISO_CALENDAR = re.compile(r"\s*-?P[^T]*[YM]", re.IGNORECASE)
DURATION_MAX = 10**15  # seconds (~31 million years): far inside a BIGINT


def parse_duration_seconds(value: object) -> int:
    """Whole seconds of a duration: ``1h30m``, ``2d 4h``, ``90`` (seconds), ``1:30`` or
    ``1:30:15`` (hours and minutes), ISO 8601 ``PT1H30M``/``P2D``/``P1W`` (read by pydantic's
    parser). Months and years are refused (no fixed length), as are negative durations and
    fractions of a second. Raises ValueError naming the value and the accepted forms."""
    if isinstance(value, bool):
        raise ValueError(f"{_show(value)} is a yes/no value, not a duration; {DURATION_FORMATS}")
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int):
        seconds = value
    elif isinstance(value, float):
        seconds = value
    elif isinstance(value, str):
        seconds = _duration_text(value)
    else:
        raise ValueError(f"{_show(value)} is not a duration; {DURATION_FORMATS}")
    if isinstance(seconds, float):
        if seconds != seconds or not seconds.is_integer():
            raise ValueError(f"{_show(value)} is not a whole number of seconds; {DURATION_FORMATS}")
        seconds = int(seconds)
    if seconds < 0:
        raise ValueError(f"{_show(value)} is negative; a duration is 0 or more")
    if seconds > DURATION_MAX:
        raise ValueError(f"{_show(value)} is too long; a duration is at most {DURATION_MAX} seconds")
    return seconds


def _duration_text(value: str) -> int | float:
    text = value.strip()
    if text.isdigit():
        return int(text)
    if _DURATION_TEXT.fullmatch(text):
        return sum(int(n) * _DURATION_UNITS[u.lower()] for n, u in _DURATION_PARTS.findall(text))
    clock = _CLOCK.fullmatch(text)
    if clock:
        hours, minutes, secs = clock.groups()
        return int(hours) * 3600 + int(minutes) * 60 + int(secs or 0)
    if text[:1] in "Pp" or text[:2] in ("-P", "-p", "+P"):
        if _ISO_CALENDAR.match(text):
            raise ValueError(
                f"{_show(value)} counts months or years, which have no fixed length; use days (P30D) or weeks (P4W)"
            )
        from pydantic import TypeAdapter
        from pydantic import ValidationError as PydanticError

        try:
            return TypeAdapter(dt.timedelta).validate_python(text.upper()).total_seconds()
        except PydanticError:
            pass
    raise ValueError(f"{_show(value)} is not a duration; {DURATION_FORMATS}")


def format_duration(seconds: int | None) -> str | None:
    """Seconds as a person reads a duration, exactly: ``1h 30m``, ``2d``, ``1d 2h 3m 4s``,
    ``0s``; None stays None. :func:`parse_duration_seconds` reads it back."""
    if seconds is None:
        return None
    seconds = int(seconds)
    sign, rest = ("-", -seconds) if seconds < 0 else ("", seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + (" ".join(parts) or "0s")


def format_datetime(moment: dt.datetime, zone: str | None) -> str:
    """A moment as shown to a person: local time of ``zone`` in ISO 8601 with its offset
    (``2026-12-10T14:30:00+03:00``; ``+00:00`` in UTC)."""
    return local(moment, zone).isoformat()


__all__ = [
    "DATETIME_FORMATS",
    "DATE_FORMATS",
    "DEFAULT_ZONE",
    "DURATION_FORMATS",
    "DateError",
    "format_datetime",
    "format_duration",
    "local",
    "local_today",
    "parse_date",
    "parse_date_or_datetime",
    "parse_datetime",
    "parse_duration_seconds",
    "read_datetime_text",
    "zone_info",
]
