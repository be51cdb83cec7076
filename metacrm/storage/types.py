"""Column types that behave the same on SQLite and PostgreSQL.

- Money and decimals are exact everywhere: PostgreSQL NUMERIC; on SQLite, which has no exact
  decimal type (SQLAlchemy would store a float), a scaled BIGINT (cents for money), so that
  comparisons, ordering and SUM stay exact in SQL.
- Datetimes are stored in UTC and come back timezone-aware: TIMESTAMP WITH TIME ZONE on
  PostgreSQL, naive UTC text on SQLite.
- JSON is JSONB on PostgreSQL, JSON text on SQLite.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import JSON, BigInteger, DateTime, Integer, Numeric
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

UTC = dt.UTC


class ExactDecimal(TypeDecorator):
    """NUMERIC(precision, scale) on PostgreSQL; an integer count of 10**-scale on SQLite."""

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int, scale: int):
        super().__init__()
        self.precision = precision
        self.scale = scale
        self._factor = Decimal(10) ** scale
        self._quantum = Decimal(1).scaleb(-scale)

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = value if isinstance(value, Decimal) else Decimal(str(value))
        if dialect.name == "sqlite":
            return int((value * self._factor).to_integral_value())
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if dialect.name == "sqlite":
            return (Decimal(int(value)) / self._factor).quantize(self._quantum)
        return Decimal(value).quantize(self._quantum)

    @property
    def python_type(self):
        return Decimal


def money_type() -> ExactDecimal:
    return ExactDecimal(18, 2)


def decimal_type() -> ExactDecimal:
    return ExactDecimal(18, 6)  # 12 digits before the point: fits a scaled BIGINT on SQLite


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out; naive input is taken as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect):
        """The bind processing, remembering the last value: the rows of a batch share their
        ``created_at``/``updated_at`` (one datetime object), converted once instead of per row."""
        inner = super().bind_processor(dialect)
        memo = [(None, None)]

        def process(value):
            seen = memo[0]  # one tuple, replaced whole: safe across threads
            if value is not None and value is seen[0]:
                return seen[1]
            out = inner(value) if inner is not None else value
            memo[0] = (value, out)
            return out

        return process

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):  # pragma: no cover - SQLite returns datetimes already
            value = dt.datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @property
    def python_type(self):
        return dt.datetime


def json_type():
    return JSON().with_variant(JSONB(), "postgresql")


def id_type():
    """BIGINT keys on PostgreSQL; INTEGER on SQLite so that the key is the rowid."""
    return BigInteger().with_variant(Integer(), "sqlite")


def now_utc() -> dt.datetime:
    return dt.datetime.now(UTC)
