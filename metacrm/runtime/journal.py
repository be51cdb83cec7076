"""The journal: who changed what and when, and the activities added to records.

One table, ``metacrm_journal``: a row per created, updated, deleted, linked or unlinked
record, and per activity (a note, call, email or meeting). ``changes`` maps each
changed field or link to ``[old, new]`` in JSON-safe values (decimals, dates and times as
strings; many-links as sorted id lists). Rows are written with one executemany in the
transaction of the operation they record, so a refused operation leaves none.

:func:`timeline` merges, newest first, the journal of a record, its stage history rows (a
move is recorded once, in ``metacrm_history``; journal rows of moves written by earlier
versions are shown once), and the journal and stage history of the records linked to it (a
deal's tasks, a client's deals).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select

from ..model.metamodel import Entity
from ..storage import naming
from ..storage.tables import Storage
from ..types import JournalEntry, TimelineEntry
from .bulk import insert_rows
from .records import SYSTEM_OUT, ref_key

ACTIONS = ("create", "update", "delete", "move", "link", "unlink", "note", "archive", "restore", "purge", "attach", "detach")
KINDS = ("note", "call", "email", "meeting")
_SKIP = frozenset(("id", *SYSTEM_OUT, "archived_at", "archived_by"))


_PLAIN = frozenset((str, int, bool, float))


def safe(value: Any) -> Any:
    """A value as JSON can hold it: decimals, dates and datetimes as strings."""
    if value is None or type(value) in _PLAIN:
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [safe(v) for v in value]
        return sorted(items) if isinstance(value, set | frozenset) else items
    return value


def _tracked(ent: Entity, record: Mapping) -> dict:
    out = {}
    for key, value in record.items():
        if key in _SKIP:
            continue
        link = ent.links.get(key)
        if link is not None and link.many and value is not None:
            value = sorted(value, key=ref_key)  # many-links: sorted id lists ({"entity", "id"} by both)
        out[key] = safe(value)
    return out


def diff(ent: Entity, old: Mapping | None, new: Mapping | None) -> dict[str, list]:
    """``{name: [old, new]}`` for every field and link whose value differs (system columns
    aside); a missing side counts as null, and nulls on both sides are left out."""
    before, after = _tracked(ent, old or {}), _tracked(ent, new or {})
    changes = {}
    for key in dict.fromkeys([*before, *after]):
        a, b = before.get(key), after.get(key)
        if a in (None, []) and b in (None, []):
            continue
        if a != b:
            changes[key] = [a, b]
    return changes


def entry(
    entity: str,
    record_id: int,
    action: str,
    at: dt.datetime,
    by: str | None,
    changes: Mapping | None = None,
    *,
    kind: str | None = None,
    text: str | None = None,
) -> JournalEntry:
    return {
        "entity": entity,
        "record_id": record_id,
        "action": action,
        "at": at,
        "by": by,
        "changes": dict(changes or {}),
        "kind": kind,
        "text": text,
    }


def write(conn: Connection, storage: Storage, entries: Sequence[Mapping]) -> None:
    """The entries in one statement (executemany), in the caller's transaction. Moves are
    not written here: the stage history holds them (one row per move, with its note), and
    :func:`timeline` reads them from there."""
    entries = [e for e in entries if e["action"] != "move"]
    if entries:
        insert_rows(conn, storage.journal_table, entries)


def _journal_out(row: Mapping, *, via: str | None = None) -> dict:
    return {
        "at": row["at"],
        "entity": row["entity"],
        "record_id": row["record_id"],
        "action": row["action"],
        "by": row["by"],
        "changes": row["changes"] or {},
        "kind": row["kind"],
        "text": row["text"],
        "via": via,
        "source": "journal",
        "_order": (row["at"], 1, row["id"]),
    }


def _history_out(row: Mapping) -> dict:
    return {
        "at": row["at"],
        "entity": row["entity"],
        "record_id": row["record_id"],
        "action": "create" if row["source"] == "create" else "move",
        "by": row["by"],
        "changes": {"stage": [row["from_stage"], row["to_stage"]]},
        "kind": None,
        "text": row["note"],
        "via": None,
        "source": f"history:{row['source']}",
        "_order": (row["at"], 0, row["id"]),
    }


def linking_sources(storage: Storage, entity: Entity) -> list[tuple[str, str, Any]]:
    """(source entity, inverse or link name, subquery of the ids of its records linked to
    ``record_id`` bound later) for every link pointing at ``entity``: its inverse links and
    the polymorphic links that may target it, and the ``subject`` links of task lists (a
    task shows in its subject's timeline, inverse or not)."""
    model = storage.model
    out, seen = [], set()
    pairs = [(inv.source, inv.link, name) for name, inv in entity.inverses.items()]
    for source in model.entities.values():
        subject = source.task.subject if source.task is not None else None
        for link in source.links.values():
            if (link.polymorphic or link.name == subject) and entity.name in link.targets:
                pairs.append((source.name, link.name, f"{source.name}.{link.name}"))
    for source, link_name, via in pairs:
        if (source, link_name) not in seen:
            seen.add((source, link_name))
            out.append((source, link_name, via))
    return out


def linked_ids(storage: Storage, entity: Entity, source: str, link_name: str, record_id: int):
    """A SELECT of the ids of ``source`` records linked to the record through ``link_name``."""
    link = storage.model.entities[source].links[link_name]
    if link.many:
        join = storage.join_table(source, link_name)
        query = select(join.c.source_id).where(join.c.target_id == record_id)
        if link.polymorphic:
            query = query.where(join.c[naming.JOIN_TARGET_ENTITY] == entity.name)
        return query
    table = storage.table(source)
    query = select(table.c.id).where(table.c[naming.link_column(link_name)] == record_id)
    if link.polymorphic:
        query = query.where(table.c[naming.link_entity_column(link_name)] == entity.name)
    return query


def timeline(
    conn: Connection,
    storage: Storage,
    entity: Entity,
    record_id: int,
    *,
    limit: int,
    allowed=None,
) -> list[TimelineEntry]:
    """Newest first: the record's journal and stage history (moves the journal holds shown
    once), and the journal of the records linked to it. ``allowed(source_entity)`` gives
    the row filter of what the acting user may read of a linked entity (None: all), or
    False to leave that entity out. One query per source, each at most ``limit`` rows."""
    journal, history = storage.journal_table, storage.history_table
    own = conn.execute(
        select(journal)
        .where(journal.c.entity == entity.name, journal.c.record_id == record_id)
        .order_by(journal.c.at.desc(), journal.c.id.desc())
        .limit(limit)
    ).mappings()
    items = [_journal_out(r) for r in own]
    journaled = {r["at"] for r in items if r["action"] in ("create", "move")}
    if entity.has_stages:
        moves = conn.execute(
            select(history)
            .where(history.c.entity == entity.name, history.c.record_id == record_id)
            .order_by(history.c.at.desc(), history.c.id.desc())
            .limit(limit)
        ).mappings()
        items += [_history_out(r) for r in moves if r["at"] not in journaled]
    for source, link_name, via in linking_sources(storage, entity):
        clause = allowed(source) if allowed is not None else None
        if clause is False:
            continue
        ids = linked_ids(storage, entity, source, link_name, record_id)
        if clause is not None:
            table = storage.table(source)
            ids = select(table.c.id).where(table.c.id.in_(ids), clause)
        rows = conn.execute(
            select(journal)
            .where(journal.c.entity == source, journal.c.record_id.in_(ids))
            .order_by(journal.c.at.desc(), journal.c.id.desc())
            .limit(limit)
        ).mappings()
        linked = [_journal_out(r, via=via) for r in rows]
        items += linked
        if storage.model.entities[source].has_stages:  # their moves live in the stage history
            held = {(r["record_id"], r["at"]) for r in linked if r["action"] in ("create", "move")}
            moves = conn.execute(
                select(history)
                .where(history.c.entity == source, history.c.record_id.in_(ids))
                .order_by(history.c.at.desc(), history.c.id.desc())
                .limit(limit)
            ).mappings()
            items += [{**_history_out(r), "via": via} for r in moves if (r["record_id"], r["at"]) not in held]
    items.sort(key=lambda i: i["_order"], reverse=True)
    out, seen = [], set()
    for item in items:
        key = (item["source"], item["entity"], item["record_id"], item["_order"][2])
        if key in seen:  # a record linked through two links shows once
            continue
        seen.add(key)
        item.pop("_order")
        out.append(item)
        if len(out) >= limit:
            break
    return out


def created_entries(ent: Entity, records: Iterable[Mapping], at, by) -> list[dict]:
    """The create rows of a batch: each non-empty value as ``[null, value]`` (what ``diff``
    gives against nothing, computed directly: this runs once per imported record). Values of
    the common types are made JSON-safe by a lookup on their type, not a chain of checks."""
    many = {name for name, link in ent.links.items() if link.many}
    out = []
    name = ent.name
    for r in records:
        changes = {}
        for key, value in r.items():
            if value is None or key in _SKIP:
                continue
            kind = type(value)
            if kind in _PLAIN:
                changes[key] = [None, value]
            elif kind is Decimal:
                changes[key] = [None, str(value)]
            elif key in many:  # many-links: sorted id lists
                if value != []:
                    changes[key] = [None, sorted(value, key=ref_key) if kind is list else safe(sorted(value, key=ref_key))]
            elif value != []:
                changes[key] = [None, safe(value)]
        out.append(
            {
                "entity": name,
                "record_id": r["id"],
                "action": "create",
                "at": at,
                "by": by,
                "changes": changes,
                "kind": None,
                "text": None,
            }
        )
    return out


def created_entries_of_rows(ent: Entity, rows: Sequence[Mapping], manys: Sequence[Mapping], at, by) -> list[dict] | None:
    """The create rows of a batch read straight from the stored rows and many-link ids,
    without making each record first (a bulk create that returns nothing and runs no
    reactions has no other use for them): the same changes, in the same order, as
    :func:`created_entries` of the records. None when the entity has links with fields,
    polymorphic links or currency amounts (whose records say more than their rows)."""
    from .records import currency_quanta, shape

    plan = shape(ent)
    if any(kind == "polymorphic" or fields for _, kind, _, _, fields in plan.links) or currency_quanta(ent):
        return None
    members = [(name, name, False) for name in plan.fields]
    members += [(name, column, kind == "many") for name, kind, column, _, _ in plan.links]
    if ent.owner:
        members.append(("owner", "owner", False))
    if ent.has_stages:
        if ent.multi_pipeline:
            members.append(("pipeline", "pipeline", False))
        members.append(("stage", "stage", False))
    name = ent.name
    out = []
    for row, many in zip(rows, manys, strict=True):
        changes = {}
        for key, column, is_many in members:
            if is_many:
                ids = many.get(key)
                if ids:
                    changes[key] = [None, sorted(ids)]
                continue
            value = row[column]
            if value is None:
                continue
            kind = type(value)
            if kind in _PLAIN:
                changes[key] = [None, value]
            elif kind is Decimal:
                changes[key] = [None, str(value)]
            elif value != []:
                changes[key] = [None, safe(value)]
        out.append(
            {
                "entity": name,
                "record_id": row["id"],
                "action": "create",
                "at": at,
                "by": by,
                "changes": changes,
                "kind": None,
                "text": None,
            }
        )
    return out


_PLAIN = frozenset((str, int, float, bool))
