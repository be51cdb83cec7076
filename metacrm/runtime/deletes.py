"""Deleting a record with its declared consequences, decided by the runtime before any row
is touched: every ``cascade`` is followed to a closure, every ``restrict`` that would be
broken refuses the whole delete (naming who links to what), ``set_null`` links are cleared.
Polymorphic links have no foreign key in the database, so this is where they are enforced;
the database's own foreign keys stay as the safety net.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import and_, delete, select, update
from sqlalchemy.engine import Connection

from ..errors import FieldIssue, ValidationError
from ..model.metamodel import Link, Model
from ..storage import naming
from ..storage.tables import Storage
from .records import BATCH


@dataclass(frozen=True)
class _Ref:
    """A link from ``source`` (entity) to ``target`` (entity)."""

    source: str
    link: Link
    target: str


def incoming(model: Model) -> dict[str, list[_Ref]]:
    """target entity -> the links that point at it."""
    refs: dict[str, list[_Ref]] = defaultdict(list)
    for entity in model.entities.values():
        for link in entity.links.values():
            for target in link.targets:
                refs[target].append(_Ref(entity.name, link, target))
    return refs


def _chunks(ids):
    ids = sorted(ids)
    for start in range(0, len(ids), BATCH):
        yield ids[start : start + BATCH]


def _referrers(conn: Connection, storage: Storage, ref: _Ref, ids) -> list[tuple[int, int]]:
    """(referring record id, referenced id) pairs for a link and a set of target ids."""
    pairs: list[tuple[int, int]] = []
    for chunk in _chunks(ids):
        if ref.link.many:
            join = storage.join_table(ref.source, ref.link.name)
            q = select(join.c.source_id, join.c.target_id).where(join.c.target_id.in_(chunk))
            if ref.link.polymorphic:
                q = q.where(join.c[naming.JOIN_TARGET_ENTITY] == ref.target)
        else:
            table = storage.table(ref.source)
            column = table.c[naming.link_column(ref.link.name)]
            q = select(table.c.id, column).where(column.in_(chunk))
            if ref.link.polymorphic:
                q = q.where(table.c[naming.link_entity_column(ref.link.name)] == ref.target)
        pairs.extend((int(a), int(b)) for a, b in conn.execute(q))
    return pairs


def delete_records(
    conn: Connection,
    storage: Storage,
    entity: str,
    ids: set[int],
    *,
    cleared: list | None = None,
    removed: dict | None = None,
) -> dict[str, set[int]]:
    """Delete records and what cascades from them; returns every deleted id by entity.

    ``cleared``, when given, receives ``(entity, record id, link, old value)`` for each link of
    a surviving record that the delete emptied (set_null links, many-link rows), so that the
    caller can journal those changes too. ``removed``, when given, receives ``{entity: {id:
    record}}``: the values of every deleted record as they were (one query per table and
    many-link), so that cascaded deletes can be journaled with their values."""
    model = storage.model
    refs = incoming(model)
    doomed: dict[str, set[int]] = defaultdict(set)
    order: list[str] = []
    frontier = {entity: set(ids)}
    # 1. the closure of cascades
    while frontier:
        next_frontier: dict[str, set[int]] = defaultdict(set)
        for target, target_ids in frontier.items():
            new = target_ids - doomed[target]
            if not new:
                continue
            doomed[target] |= new
            order.append(target)
            for ref in refs.get(target, ()):
                if ref.link.on_delete == "cascade" and not ref.link.many:
                    for source_id, _ in _referrers(conn, storage, ref, new):
                        next_frontier[ref.source].add(source_id)
        frontier = {k: v for k, v in next_frontier.items() if v - doomed.get(k, set())}
    # 2. restricts that records outside the closure would break
    issues = []
    for target, target_ids in list(doomed.items()):
        for ref in refs.get(target, ()):
            if ref.link.on_delete != "restrict":
                continue
            blockers = [
                (s, t) for s, t in _referrers(conn, storage, ref, target_ids) if s not in doomed.get(ref.source, ())
            ]
            for source_id, target_id in blockers[:5]:
                issues.append(
                    FieldIssue(
                        target,
                        None,
                        f"{target} {target_id} is linked from {ref.source} {source_id} through "
                        f"{ref.source}.{ref.link.name} (on_delete: restrict)",
                        target_id,
                    )
                )
    if issues:
        first = issues[0]
        raise ValidationError(
            f"cannot delete: {first.message}" + (f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""), issues
        )
    if removed is not None:
        from .records import rows_to_records

        for name in order:
            table = storage.table(name)
            for chunk in _chunks(doomed[name]):
                rows = conn.execute(select(table).where(table.c.id.in_(chunk))).mappings().all()
                for record in rows_to_records(conn, storage, model.entities[name], rows):
                    removed.setdefault(name, {})[record["id"]] = record
    # 3. clear set_null links and remove many-link rows pointing at doomed records
    for target, target_ids in list(doomed.items()):
        for ref in refs.get(target, ()):
            for chunk in _chunks(target_ids):
                if cleared is not None and (ref.link.many or ref.link.on_delete == "set_null"):
                    survivors = doomed.get(ref.source, set())
                    for source_id, target_id in _referrers(conn, storage, ref, chunk):
                        if source_id not in survivors:
                            old = {"entity": ref.target, "id": target_id} if ref.link.polymorphic else target_id
                            cleared.append((ref.source, source_id, ref.link.name, old))
                if ref.link.many:
                    join = storage.join_table(ref.source, ref.link.name)
                    clause = join.c.target_id.in_(chunk)
                    if ref.link.polymorphic:
                        clause = and_(clause, join.c[naming.JOIN_TARGET_ENTITY] == ref.target)
                    conn.execute(delete(join).where(clause))
                elif ref.link.on_delete == "set_null":
                    table = storage.table(ref.source)
                    column = naming.link_column(ref.link.name)
                    clause = table.c[column].in_(chunk)
                    values = {column: None}
                    if ref.link.polymorphic:
                        entity_col = naming.link_entity_column(ref.link.name)
                        clause = and_(clause, table.c[entity_col] == ref.target)
                        values[entity_col] = None
                    conn.execute(update(table).where(clause).values(**values))
    # 4. delete, the last discovered (the most dependent) first, with their attached files' rows
    files = storage.files_table
    for name in reversed(order):
        table = storage.table(name)
        for chunk in _chunks(doomed[name]):
            for link in model.entities[name].links.values():
                if link.many:
                    join = storage.join_table(name, link.name)
                    conn.execute(delete(join).where(join.c.source_id.in_(chunk)))
            conn.execute(delete(table).where(table.c.id.in_(chunk)))
            if files is not None and model.entities[name].has_files:  # the content stays until prune
                conn.execute(delete(files).where(files.c.entity == name, files.c.record_id.in_(chunk)))
    return dict(doomed)
