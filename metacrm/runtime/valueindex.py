"""Reading the lookup index of multi-value fields (``emails``, ``phones``): see
:mod:`metacrm.storage.valueindex`. One subquery on the index's ``value`` B-tree; never a scan of
the JSON lists."""

from __future__ import annotations

from sqlalchemy import func, literal, select

from ..model.metamodel import Field
from ..storage.valueindex import index_table


def lookup_key(f: Field, value):
    """The SQL expression of ``value`` as the index holds it (addresses lower-cased by the
    database, as the triggers do)."""
    return func.lower(literal(value)) if f.type == "emails" else literal(value)


def holds_value(table, entity: str, f: Field, value, *, suffix: bool = False):
    """``table.id IN (the records whose field ``f`` holds ``value``)``; ``suffix``: a number
    ending with the digits ``value`` (a phone number written without its country)."""
    index = index_table(entity, f.name)
    test = index.c.value.like("%" + value) if suffix else index.c.value == lookup_key(f, value)
    return table.c.id.in_(select(index.c.record_id).where(test))


def holding(entity: str, f: Field, keys):
    """(record_id, value) of the records whose field ``f`` holds any of ``keys`` (index keys)."""
    index = index_table(entity, f.name)
    return select(index.c.record_id, index.c.value).where(index.c.value.in_(keys))


__all__ = ["holding", "holds_value", "lookup_key"]
