"""JSON as the API writes it: money and decimals as strings (exact), dates and times in ISO
8601, text as UTF-8 (not \\u escapes)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal


def _default(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(data) -> bytes:
    return json.dumps(data, ensure_ascii=False, default=_default, separators=(",", ":")).encode("utf-8")
