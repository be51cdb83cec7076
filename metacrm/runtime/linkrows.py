"""The rows of many-links that carry fields (``links: {products: {many: true, fields: {...}}}``).

A many-link is stored as a join table ``(source_id, target_id)``; a link with ``fields`` adds a
column per field. Everything here works in sets on the caller's connection: the rows of a batch
of records are built in Python and written with one executemany per link.

A linked pair's values are, in order of precedence: the values given for it (validated by the
link's coercers, metacrm.validation.links), the values it already holds (an update that lists a
target already linked keeps its values), the fields' declared defaults. A required field
without any of these refuses the write, naming ``entity.link.field``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import and_, select, update
from sqlalchemy.engine import Connection

from ..errors import FieldIssue, ValidationError
from ..model.metamodel import Entity, Link, Model
from ..storage import naming
from ..storage.tables import Storage
from ..validation.links import LinkRows, link_values_coercer
from ..validation.values import Invalid

_COERCERS: dict[tuple, object] = {}


def coercer(model: Model, link: Link):
    """The link's values coercer (cached per model version and link)."""
    key = (model.sha256, link.entity, link.name)
    got = _COERCERS.get(key)
    if got is None:
        if len(_COERCERS) > 256:
            _COERCERS.clear()
        got = _COERCERS[key] = link_values_coercer(link, region=model.region or None, zone=model.timezone)
    return got


def defaults(model: Model, link: Link) -> dict:
    """Every field of the link with its declared default, coerced (None without one)."""
    from ..validation.values import field_coercer

    out = {}
    for f in link.fields.values():
        value = f.default
        if value is None:
            out[f.name] = None
        elif f.type == "date" and value == "today":
            out[f.name] = dt.date.today()
        elif f.type == "datetime" and value == "now":
            out[f.name] = dt.datetime.now(dt.UTC)
        else:
            try:
                out[f.name] = field_coercer(f, region=model.region or None, zone=model.timezone)(value)
            except Invalid:  # the model checks report a bad default
                out[f.name] = None
    return out


def validate(model: Model, ent: Entity, link: Link, values: Mapping | None) -> dict:
    """The values given for one linked pair, coerced; ValidationError naming ``entity.link.field``."""
    if not values:
        return {}
    if not link.fields:
        raise ValidationError(
            f"{ent.name}.{link.name}: this link carries no fields; values {sorted(values)} cannot be set",
            [FieldIssue(ent.name, link.name, "carries no fields", dict(values))],
        )
    from ..validation.links import LinkFieldInvalid

    try:
        return coercer(model, link)(values)
    except LinkFieldInvalid as exc:
        issue = FieldIssue(ent.name, f"{link.name}.{exc.field}", str(exc), values.get(exc.field))
        raise ValidationError(issue.format(), [issue]) from None
    except Invalid as exc:
        issue = FieldIssue(ent.name, link.name, str(exc), dict(values))
        raise ValidationError(issue.format(), [issue]) from None


def rows(
    model: Model,
    ent: Entity,
    link: Link,
    pairs: Iterable[tuple[int, int, Mapping | None]],
    existing: Mapping[tuple[int, int], Mapping] | None = None,
    *,
    indexes: Mapping[int, int] | None = None,
) -> list[dict]:
    """Join rows for ``(source_id, target_id, values given)`` triples: defaults, then what the
    pair already holds, then the values given. A required field left empty is refused
    (``indexes``: source id -> the record's index in a batch, for the message)."""
    base = defaults(model, link) if link.fields else {}
    required = [f.name for f in link.fields.values() if f.required]
    out, issues = [], []
    for source, target, given in pairs:
        row = {naming.JOIN_SOURCE: source, naming.JOIN_TARGET: target, **base}
        if existing and (source, target) in existing:
            row.update(existing[(source, target)])
        if given:
            row.update(given)
        for name in required:
            if row.get(name) is None:
                issues.append(
                    FieldIssue(
                        ent.name,
                        f"{link.name}.{name}",
                        f"is required for each linked {link.target} (missing for {link.target} {target})",
                        None,
                        None if indexes is None else indexes.get(source),
                    )
                )
        out.append(row)
    if issues:
        from .records import refused

        raise refused(issues)
    return out


def given_of(value) -> Mapping[int, Mapping]:
    """The values given per target in a many-link value (empty for a plain id list)."""
    return value.values if isinstance(value, LinkRows) else {}


def fields_of(conn: Connection, storage: Storage, ent: Entity, link: Link, source_ids: Sequence[int]) -> dict:
    """``{(source_id, target_id): {field: value}}`` of the stored rows of these records."""
    if not link.fields or not source_ids:
        return {}
    join = storage.join_table(ent.name, link.name)
    out = {}
    cols = [join.c[f] for f in link.fields]
    for start in range(0, len(source_ids), 1000):
        chunk = list(source_ids[start : start + 1000])
        query = select(join.c[naming.JOIN_SOURCE], join.c[naming.JOIN_TARGET], *cols).where(
            join.c[naming.JOIN_SOURCE].in_(chunk)
        )
        for row in conn.execute(query):
            out[(row[0], row[1])] = dict(zip(link.fields, row[2:], strict=True))
    return out


def set_values(conn: Connection, storage: Storage, ent: Entity, link: Link, source: int, target: int, values: Mapping):
    """Change the values of one stored pair; returns the number of rows changed (0 or 1)."""
    join = storage.join_table(ent.name, link.name)
    clause = and_(join.c[naming.JOIN_SOURCE] == source, join.c[naming.JOIN_TARGET] == target)
    return conn.execute(update(join).where(clause).values(**values)).rowcount


def shown(link: Link, target: int, values: Mapping) -> dict:
    """One linked pair as records show it under ``"<link>.link"``: the target's id, then the fields."""
    return {"id": target, **{name: values.get(name) for name in link.fields}}


def key(link_name: str) -> str:
    """The record key holding a link's rows with their fields: ``products.link``."""
    return f"{link_name}.link"


__all__ = ["coercer", "defaults", "fields_of", "given_of", "key", "rows", "set_values", "shown", "validate"]
