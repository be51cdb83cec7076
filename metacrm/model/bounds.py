"""What the database can hold: a field's ``min``/``max`` must be finite numbers inside its
column's range, and its ``max_length`` no longer than its column type allows.

Ranges follow the columns of :mod:`metacrm.storage.tables` on both dialects: integers are
BIGINT (signed 64 bits); money is NUMERIC(18, 2) (a BIGINT of cents on SQLite); decimals and
percents NUMERIC(18, 6); strings VARCHAR(n), at most 10,485,760 characters on PostgreSQL;
text is TEXT, whose values PostgreSQL caps at 1 GB (268,435,455 characters of 4 bytes).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from decimal import Decimal

from .metamodel import Field

INT64 = (-(2**63), 2**63 - 1)
_MONEY = Decimal("9999999999999999.99")  # NUMERIC(18, 2)
_DECIMAL = Decimal("999999999999.999999")  # NUMERIC(18, 6)
RANGES = {
    "integer": INT64,
    "money": (-_MONEY, _MONEY),
    "decimal": (-_DECIMAL, _DECIMAL),
    "percent": (-_DECIMAL, _DECIMAL),
}
STORED_AS = {"integer": "a 64-bit integer", "money": "NUMERIC(18,2)", "decimal": "NUMERIC(18,6)"}
STORED_AS["percent"] = STORED_AS["decimal"]
VARCHAR_MAX = 10_485_760  # PostgreSQL's limit for VARCHAR(n)
TEXT_MAX = 268_435_455  # 1 GB of 4-byte characters: PostgreSQL's limit for one value


def _show(number) -> str:
    return format(number, ",") if isinstance(number, int) else str(number)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def field_range(f: Field) -> tuple[Decimal | int, Decimal | int, str] | None:
    """(lowest, highest, column) a numeric field's column holds; None for other types."""
    if f.type == "integer":
        return (*INT64, STORED_AS["integer"])
    if f.decimals is None:
        return None
    whole, scale = f.whole_digits, f.decimals
    high = (Decimal(10) ** whole - Decimal(1).scaleb(-scale)).quantize(Decimal(1).scaleb(-scale))
    return -high, high, f"NUMERIC({whole + scale},{scale})"


def bound_problems(f: Field, decl: dict, where: str) -> Iterator[tuple[str, str, str]]:
    """``(type, message, option)`` for each bound or length of ``f`` the database cannot hold;
    messages start with ``where`` (the field, as the caller names it)."""
    for option in ("min", "max"):
        value = decl.get(option)
        if not isinstance(value, int | float) or isinstance(value, bool) or field_range(f) is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            yield "field.bound_invalid", f"{where}: {option} must be a finite number, not {value}", option
            continue
        low, high, stored = field_range(f)
        if not low <= Decimal(str(value)) <= high:
            yield (
                "field.bound_out_of_range",
                f"{where}: {option} {_show(value)} is beyond what {_article(f.type)} {f.type} field holds "
                f"({stored}: {_show(low)} to {_show(high)})",
                option,
            )
    length = decl.get("max_length")
    if isinstance(length, int) and not isinstance(length, bool):
        limit, what = (TEXT_MAX, "a text value") if f.type == "text" else (VARCHAR_MAX, "a VARCHAR column")
        if length > limit:
            yield (
                "field.length_out_of_range",
                f"{where}: max_length {_show(length)} is beyond what {what} holds (at most {_show(limit)} characters)",
                "max_length",
            )


__all__ = ["INT64", "TEXT_MAX", "VARCHAR_MAX", "bound_problems", "field_range"]
