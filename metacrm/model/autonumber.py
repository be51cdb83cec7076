"""Autonumber patterns (``autonumber: "PO-{YYYY}-{####}"``) and the model checks of the
system-managed field keys ``readonly`` and ``autonumber``. Pure: no database.

A pattern is literal text with placeholders in braces: ``{YYYY}`` (the year, four digits),
``{YY}`` (two digits), ``{MM}`` (the month, two digits), ``{DD}`` (the day) and exactly one
number placeholder, ``{#}``, ``{####}``... (the number, padded with zeros to as many digits as
there are ``#``; a longer number is written whole). The date is the record's creation date in
the model's time zone.

Each distinct *prefix* (the pattern with its date placeholders filled and the number
placeholder left as it is) has its own sequence: ``PO-{YYYY}-{####}`` starts again at 1 each
year, ``PO-{####}`` never does. See docs/sysfields.md.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

_TOKEN = re.compile(r"\{([^{}]*)\}")
DATE_TOKENS = {"YYYY": "%Y", "YY": "%y", "MM": "%m", "DD": "%d"}
AUTONUMBER_TYPES = ("string", "text")


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid autonumber pattern (None when it is)."""
    numbers = 0
    for token in _TOKEN.findall(pattern):
        if token and set(token) == {"#"}:
            numbers += 1
        elif token not in DATE_TOKENS:
            allowed = ", ".join(f"{{{t}}}" for t in DATE_TOKENS)
            return f"unknown placeholder {{{token}}} (placeholders: {allowed} and one number {{####}})"
    stray = _TOKEN.sub("", pattern)
    if "{" in stray or "}" in stray:
        return "has an unbalanced brace"
    if numbers != 1:
        return f"needs exactly one number placeholder such as {{####}}, it has {numbers}"
    return None


def prefix(pattern: str, day: dt.date) -> str:
    """The pattern with its date placeholders filled: the key of its sequence."""
    return _TOKEN.sub(lambda m: day.strftime(DATE_TOKENS[m[1]]) if m[1] in DATE_TOKENS else m[0], pattern)


def render(prefixed: str, number: int) -> str:
    """The number written into a prefix (from :func:`prefix`)."""
    return _TOKEN.sub(lambda m: str(number).zfill(len(m[1])), prefixed, count=1)


def field_problems(entity, f, decl: dict) -> Iterator[tuple[str, str, str]]:
    """(problem type, message, key) for a field's ``readonly`` and ``autonumber``."""
    where = f"field '{entity.name}.{f.name}'"
    if f.autonumber is None:
        if "autonumber" in decl:
            yield (
                "field.autonumber_invalid",
                f"{where}: autonumber must be a pattern such as 'PO-{{####}}'",
                "autonumber",
            )
        return
    why = pattern_problem(f.autonumber)
    if why:
        yield "field.autonumber_invalid", f"{where}: autonumber {f.autonumber!r} {why}", "autonumber"
    if f.type not in AUTONUMBER_TYPES:
        yield (
            "field.autonumber_invalid",
            f"{where}: autonumber applies to a string or text field, not {f.type}",
            "autonumber",
        )
    for key in ("formula", "rollup", "default", "fill", "required"):
        if key in decl and decl[key] not in (None, False):
            yield (
                "field.autonumber_invalid",
                f"{where}: an autonumber field is always filled by the system; it cannot also have '{key}'",
                key,
            )
    if decl.get("readonly") is False:
        yield "field.autonumber_invalid", f"{where}: an autonumber field is always readonly", "readonly"


__all__ = ["AUTONUMBER_TYPES", "DATE_TOKENS", "field_problems", "pattern_problem", "prefix", "render"]
