"""An entity's ``rules:`` and its fields' ``required_if`` / ``readonly_if``, enforced on every
write path of the facade.

The checks run inside the write's transaction, after the write (and after what the reactors
did with it: computed fields, automations), against the rows as stored: one query per rule
and per ``required_if`` field for a whole batch of records, with the same compiled SQL as
filters, so paths through links, the stage and computed fields are read exactly as a filter
reads them. A refusal raises, the transaction rolls back, and nothing is written.

- a rule is broken when its ``check`` is false (``NOT check`` holds); an unknown result (a value
  it reads is empty) passes, as in a SQL CHECK;
- a ``required_if`` field is missing when the condition holds and the field is empty;
- a ``readonly_if`` field may not be changed by an update while the condition holds on the
  record as stored before the update (automations' actions are exempt: the model's own logic);
- a record sitting in a stage keeps what the stage ``requires``: an update or unlink that
  empties such a field or link is refused, naming the stage.

Queries are compiled once per model version, entity and expression.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import and_, bindparam, not_, select
from sqlalchemy.engine import Connection

from ..errors import FieldIssue, ValidationError
from ..model.metamodel import Entity
from ..storage.tables import Storage

_QUERIES: dict[tuple, object] = {}


def _query(storage: Storage, entity: Entity, kind: str, expr: str, field: str | None = None, *, span: bool = False):
    """The query of one check over the records ``_ids`` (with ``span``: ``_lo`` to ``_hi``)."""
    key = (storage.model.sha256, id(storage), entity.name, kind, expr, field, span)
    query = _QUERIES.get(key)
    if query is None:
        from ..expr import compile_sql

        table = storage.table(entity.name)
        what = f"{entity.name}: {kind}"
        clause = compile_sql(storage, entity.name, expr, what=what)
        if span:  # a batch of consecutive ids: a range, not a thousand bound parameters
            ids = table.c.id.between(bindparam("_lo"), bindparam("_hi"))
        else:
            ids = table.c.id.in_(bindparam("_ids", expanding=True))
        if kind == "rule":
            query = select(table.c.id).where(and_(ids, not_(clause)))
        elif kind == "required_if":
            query = select(table.c.id, table.c[field]).where(and_(ids, clause))
        elif kind == "currency":  # the amount and the currency of the records it holds
            currency = entity.fields[field].currency_field
            query = select(table.c.id, table.c[field], table.c[currency]).where(and_(ids, clause))
        else:  # readonly_if: does the condition hold
            query = select(table.c.id).where(and_(ids, clause))
        if len(_QUERIES) > 2048:
            _QUERIES.clear()
        _QUERIES[key] = query
    return query


_HAS: dict[int, tuple[Entity, bool]] = {}


def has_checks(entity: Entity) -> bool:
    """Whether a write of ``entity`` has rules, ``required_if`` fields or currency amounts to
    check (worked out once per entity: every create and move asks)."""
    cached = _HAS.get(id(entity))
    if cached is not None and cached[0] is entity:
        return cached[1]
    found = bool(entity.rules) or any(f.required_if for f in entity.fields.values()) or bool(currency_checks(entity))
    if len(_HAS) > 1024:
        _HAS.clear()
    _HAS[id(entity)] = (entity, found)
    return found


def currency_checks(entity: Entity) -> list[tuple[str, str]]:
    """(field, expression true for a record whose amount has more decimals than its currency
    keeps) for each currency field whose currency the record names (``currency_field``) and
    whose column keeps more decimals than some of those currencies (JPY 0 beside USD 2)."""
    from ..model.field_types import currency_precision

    out = []
    for f in entity.fields.values():
        source = entity.fields.get(f.currency_field or "") if f.type == "currency" else None
        if source is None:
            continue
        by_places: dict[int, list[str]] = {}
        for code in source.option_values:
            places = currency_precision(code)
            if places is not None and places < f.decimals:
                by_places.setdefault(places, []).append(code)
        parts = [
            f"({source.name} in ({', '.join(repr(c) for c in codes)}) and {f.name} <> round({f.name}, {places}))"
            for places, codes in sorted(by_places.items())
        ]
        parts.append(f"({source.name} is null and {f.name} is not null)")  # an amount names its currency
        out.append((f.name, " or ".join(parts)))
    return out


def _empty(value) -> bool:
    return value is None or value == "" or value == []


def violations(
    conn: Connection, storage: Storage, entity: Entity, ids: Sequence[int]
) -> list[tuple[int, str | None, str]]:
    """``(record id, field or None, why)`` for every broken rule and missing ``required_if``
    value among the stored records ``ids``, in record order."""
    if not ids or not has_checks(entity):
        return []
    found: list[tuple[int, str | None, str]] = []
    lo, hi = min(ids), max(ids)
    span = hi - lo + 1 == len(set(ids))  # exactly the ids of the range
    params = {"_lo": lo, "_hi": hi} if span else {"_ids": list(ids)}
    for rule in entity.rules:
        for record_id in conn.execute(_query(storage, entity, "rule", rule.check, span=span), params).scalars():
            named = f"rule '{rule.name}': {rule.message}" if rule.name else f"rule '{rule.message}'"
            found.append((record_id, None, f"breaks {named}"))
    for f in entity.fields.values():
        if f.required_if:
            query = _query(storage, entity, "required_if", f.required_if, f.name, span=span)
            for record_id, value in conn.execute(query, params):
                if _empty(value):
                    found.append((record_id, f.name, f"{f.name} is required when {f.required_if}"))
    for name, expr in currency_checks(entity):
        from ..model.field_types import currency_precision

        for record_id, amount, code in conn.execute(_query(storage, entity, "currency", expr, name, span=span), params):
            if code is None:
                found.append((record_id, name, f"{name} {amount.normalize():f} has no currency; set {entity.fields[name].currency_field}"))
                continue
            places = currency_precision(code)
            kept = "no decimals" if places == 0 else f"{places} decimal{'s' if places != 1 else ''}"
            found.append((record_id, name, f"{name} {amount.normalize():f} {code} has more decimals than {code} keeps ({kept})"))
    order = {record_id: i for i, record_id in enumerate(ids)}
    found.sort(key=lambda v: order[v[0]])
    return found


def check_created(conn: Connection, storage: Storage, entity: Entity, ids: Sequence[int], *, first: int | None) -> None:
    """Refuse new records that break a rule; ``first``: the index of ``ids[0]`` in the caller's
    list of records (None for a single create)."""
    found = violations(conn, storage, entity, ids)
    if not found:
        return
    index = {record_id: i for i, record_id in enumerate(ids)}
    issues = [
        FieldIssue(
            entity.name,
            field,
            f"new record {why}" if field is None else why.removeprefix(f"{field} "),
            index=None if first is None else first + index[rid],
        )
        for rid, field, why in found
    ]
    first_issue = issues[0].format()
    more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
    raise ValidationError(first_issue + more, issues, entity=entity.name)


def check_stored(conn: Connection, storage: Storage, entity: Entity, ids: Sequence[int]) -> None:
    """Refuse a change that leaves stored records breaking a rule (update, link, move...)."""
    found = violations(conn, storage, entity, ids)
    if not found:
        return
    lines = [f"{entity.name} {rid}{' ' if f is None else ': '}{why}" for rid, f, why in found]
    issues = [FieldIssue(entity.name, f, line) for (_, f, _), line in zip(found, lines, strict=True)]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    raise ValidationError(lines[0] + more, issues, entity=entity.name, record_id=found[0][0])


def check_readonly(conn: Connection, storage: Storage, entity: Entity, current: Mapping, values: Mapping) -> None:
    """Refuse an update that changes a ``readonly_if`` field while its condition holds on the
    record as stored (``current``: its row before the update)."""
    for f in entity.fields.values():
        if not f.readonly_if or f.name not in values or values[f.name] == current.get(f.name):
            continue
        query = _query(storage, entity, "readonly_if", f.readonly_if, f.name)
        if conn.execute(query, {"_ids": [current["id"]]}).first() is not None:
            raise ValidationError(
                f"{entity.name} {current['id']}: {f.name} is read-only while {f.readonly_if}",
                [FieldIssue(entity.name, f.name, f"is read-only while {f.readonly_if}", values[f.name])],
                record_id=current["id"],
            )


def check_stage_keeps(conn: Connection, storage: Storage, entity: Entity, row: Mapping, touched: Sequence[str]) -> None:
    """A record sitting in a stage keeps what the stage ``requires``: refuse a write that
    emptied one of ``touched`` (the fields and links the write set) that the stage requires."""
    if not entity.has_stages or not touched:
        return
    from .moves import missing_requires

    pipeline = entity.pipelines[row["pipeline"]]
    stage = pipeline.stages[row["stage"]]
    if not set(touched) & set(stage.requires):
        return
    emptied = [n for n in missing_requires(conn, storage, entity, row, stage.name, pipeline) if n in touched]
    if emptied:
        names = ", ".join(emptied)
        raise ValidationError(
            f"{entity.name} {row['id']} is in stage '{stage.name}', which requires {names}; it cannot be emptied",
            [FieldIssue(entity.name, n, f"is required in stage '{stage.name}'") for n in emptied],
            record_id=row["id"],
        )


def check_emptied(conn: Connection, storage: Storage, cleared: Sequence[tuple]) -> None:
    """After a delete: the surviving records whose link it emptied (``(entity, id, link, old)``
    each) still satisfy their rules, and keep a link their stage requires."""
    from .records import row_by_id

    emptied: dict[str, dict[int, list[str]]] = {}
    for source, source_id, link, _old in cleared:
        emptied.setdefault(source, {}).setdefault(source_id, []).append(link)
    for source, records in emptied.items():
        entity = storage.model.entities[source]
        if entity.has_stages and any(s.requires for p in entity.pipelines.values() for s in p.stages.values()):
            table = storage.table(source)
            for record_id, links in records.items():
                row = conn.execute(row_by_id(table), {"_id": record_id}).mappings().one()
                check_stage_keeps(conn, storage, entity, row, links)
        check_stored(conn, storage, entity, sorted(records))


_PREDICATES: dict[tuple, object] = {}


def move_reasons(storage: Storage, entity: Entity, row: Mapping, target: str) -> list[str]:
    """The ``required_if`` fields a move to ``target`` would leave missing, as reasons for
    ``allowed_moves`` (``"lost_reason is required when stage = 'lost'"``). Only conditions over
    the record's own columns are answered here; one reading through links is left to the move
    itself, which checks every rule after the write."""
    out = []
    for f in entity.fields.values():
        if not f.required_if or not _empty(row.get(f.name)):
            continue
        key = (storage.model.sha256, entity.name, f.name)
        predicate = _PREDICATES.get(key)
        if predicate is None:
            from ..expr import compile_python

            predicate = _PREDICATES[key] = compile_python(storage.model, entity.name, f.required_if, what="required_if")
        if predicate.lists or not all(p in row for p in predicate.paths):
            continue
        values = {p: row[p] for p in predicate.paths}
        if "stage" in values:
            values["stage"] = target
        if predicate(values):
            out.append(f"{f.name} is required when {f.required_if}")
    return out


__all__ = [
    "check_created",
    "check_emptied",
    "check_readonly",
    "check_stage_keeps",
    "check_stored",
    "has_checks",
    "move_reasons",
    "violations",
]
