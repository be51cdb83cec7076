"""What actions read: the triggering records and what they link to, fetched in batches;
templates rendered from them; ``values`` resolved against them.

Records are read with one query per entity and batch, and each link path an automation
reads (``{client.email}``, ``email:client.email``, ``$record.client.city``) with one query
per link and batch, never one per record.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal

from sqlalchemy import select

from ..dates import local_today
from ..model.metamodel import Entity, Model
from ..runtime import records as rec
from ..runtime.access import readable
from ..runtime.titles import HIDDEN, title_text
from ..storage import naming
from .compiled import TITLE, relative_seconds

EMPTY = "—"  # what a placeholder shows for no value
OWNER = "_owner"  # a linked record's owner, as a key of the linked dicts
_SYSTEM = ("id", "owner", "stage", "pipeline", "created_at", "updated_at")


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    ids = sorted(set(ids))
    for start in range(0, len(ids), rec.BATCH):
        yield ids[start : start + rec.BATCH]


def load_records(conn, storage, entity: Entity, ids: Iterable[int]) -> dict[int, dict]:
    """id -> the record as crm.get returns it, one query per batch of ids."""
    table = storage.table(entity.name)
    out: dict[int, dict] = {}
    for chunk in _chunks(list(ids)):
        rows = conn.execute(select(table).where(table.c.id.in_(chunk))).mappings().all()
        for record in rec.rows_to_records(conn, storage, entity, rows):
            out[record["id"]] = record
    return out


def _columns(model: Model, storage, target: str, fields: Iterable[str]) -> list:
    ent = model.entities[target]
    table = storage.table(target)
    cols = [table.c.id.label("id")]
    if ent.owner:  # whose it is: a notification to a user hides what the user may not read
        cols.append(table.c.owner.label(OWNER))
    for name in sorted(set(fields)):
        if name == TITLE:
            if ent.title:
                cols.append(table.c[ent.title].label(TITLE))
        elif name in ent.fields or (name != "id" and name in _SYSTEM and name in table.c):
            cols.append(table.c[name].label(name))
    return cols


def _link_columns(link, join, fields: Iterable[str]) -> list:
    """The link's own fields asked as ``link.FIELD`` (``products.link.qty``), from its join table."""
    return [join.c[f[5:]].label(f) for f in sorted(fields) if f.startswith("link.") and f[5:] in link.fields]


def linked(conn, storage, entity: Entity, ids: Sequence[int], name: str, fields: Iterable[str]) -> dict[int, list]:
    """record id -> the records its link or inverse link ``name`` reaches, as dicts holding
    ``id``, ``_entity`` and the asked ``fields`` (``_title``: the title), oldest first."""
    model = storage.model
    fields = set(fields)
    out: dict[int, list] = defaultdict(list)
    if not ids:
        return out
    queries = []  # (target entity, select whose first column is the source id)
    link = entity.links.get(name)
    if link is not None:
        source = storage.table(entity.name)
        if link.many:
            join = storage.join_table(entity.name, name)
            for target_name in link.targets:  # one query per target entity of a polymorphic one
                target = storage.table(target_name)
                query = (
                    select(
                        join.c.source_id.label("_src"),
                        *_columns(model, storage, target_name, fields),
                        *_link_columns(link, join, fields),
                    )
                    .select_from(join)
                    .join(target, target.c.id == join.c.target_id)
                )
                if link.polymorphic:
                    query = query.where(join.c[naming.JOIN_TARGET_ENTITY] == target_name)
                queries.append((target_name, query, join.c.source_id))
        else:
            column = source.c[naming.link_column(name)]
            for target_name in link.targets:
                target = storage.table(target_name)
                query = (
                    select(source.c.id.label("_src"), *_columns(model, storage, target_name, fields))
                    .select_from(source)
                    .join(target, target.c.id == column)
                )
                if link.polymorphic:
                    query = query.where(source.c[naming.link_entity_column(name)] == target_name)
                queries.append((target_name, query, source.c.id))
    else:
        inv = entity.inverses[name]
        declared = model.entities[inv.source].links[inv.link]
        target = storage.table(inv.source)
        if declared.many:
            join = storage.join_table(inv.source, inv.link)
            query = (
                select(
                    join.c.target_id.label("_src"),
                    *_columns(model, storage, inv.source, fields),
                    *_link_columns(declared, join, fields),
                )
                .select_from(join)
                .join(target, target.c.id == join.c.source_id)
            )
            if declared.polymorphic:
                query = query.where(join.c[naming.JOIN_TARGET_ENTITY] == entity.name)
            queries.append((inv.source, query, join.c.target_id))
        else:
            column = target.c[naming.link_column(inv.link)]
            query = select(column.label("_src"), *_columns(model, storage, inv.source, fields))
            if declared.polymorphic:
                query = query.where(target.c[naming.link_entity_column(inv.link)] == entity.name)
            queries.append((inv.source, query, column))
    for target_name, query, key in queries:
        for chunk in _chunks(ids):
            for row in conn.execute(query.where(key.in_(chunk)).order_by(key, "id")).mappings():
                item = {k: v for k, v in row.items() if k != "_src"}
                item["_entity"] = target_name
                out[row["_src"]].append(item)
    return out


def load_links(conn, storage, entity: Entity, ids: Sequence[int], paths: Mapping[str, set]) -> dict[int, dict]:
    """record id -> {link: [linked dicts]} for every link path an automation reads."""
    out: dict[int, dict] = defaultdict(dict)
    for name, fields in paths.items():
        if entity.member(name) is None or name in entity.fields:
            continue
        for record_id, items in linked(conn, storage, entity, ids, name, fields).items():
            out[record_id][name] = items
    return out


# -- showing values ---------------------------------------------------------------------------
def show(model: Model, entity: Entity, name: str, value, record: Mapping | None = None) -> str:
    """A value as a person reads it in a message: stage and choice labels, dates without
    seconds (UTC), decimals as stored, nothing as ``—``."""
    if value is None or value == [] or value == "":
        return EMPTY
    if name in ("stage", "pipeline") and entity.has_stages:
        pipeline_name = (record or {}).get("pipeline") or next(iter(entity.pipelines))
        pipeline = entity.pipelines.get(pipeline_name) or entity.default_pipeline
        if name == "pipeline":
            chosen = entity.pipelines.get(value)
            return chosen.caption if chosen else str(value)
        stage = pipeline.stages.get(value) if pipeline else None
        return stage.caption if stage else str(value)
    f = entity.fields.get(name)
    if f is not None and f.options:
        labels = {o.value: o.label or o.value for o in f.options}
        if isinstance(value, list):
            return ", ".join(labels.get(v, str(v)) for v in value)
        return labels.get(value, str(value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):  # local time of the model's zone, named: 2026-12-10 14:30 MSK
        from ..dates import local

        return local(value, model.timezone).strftime("%Y-%m-%d %H:%M %Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _titles(items: list, hidden: frozenset) -> str:
    if not items:
        return EMPTY
    out = []
    for item in items:
        if (item["_entity"], item["id"]) in hidden:
            out.append(HIDDEN)
        else:
            out.append(title_text(item["_entity"], item["id"], item.get(TITLE)))
    return ", ".join(out)


def render(
    model: Model, entity: Entity, parts: tuple, record: Mapping, links: Mapping, hidden: frozenset = frozenset()
) -> str:
    """A parsed template filled from the record and its linked records; a linked record in
    ``hidden`` (``(entity, id)`` pairs: what the recipient may not read) shows as HIDDEN,
    its title and its fields alike."""
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif len(part) == 1:
            name = part[0]
            if name in entity.fields or name in _SYSTEM:
                out.append(show(model, entity, name, record.get(name), record))
            else:  # a link or inverse: the titles of what it reaches
                out.append(_titles(links.get(name, []), hidden))
        else:
            link, name = part
            items = links.get(link, [])
            values = [
                HIDDEN
                if (i["_entity"], i["id"]) in hidden
                else show(model, model.entities[i["_entity"]], name, i.get(name), i)
                for i in items
                if (i["_entity"], i["id"]) in hidden or i.get(name) not in (None, "", [])
            ]
            out.append(", ".join(values) if values else EMPTY)
    return "".join(out)


def hidden_from(model: Model, actor, links: Mapping, members: set[str]) -> frozenset:
    """The ``(entity, id)`` of the linked records (dicts of :func:`linked`) that ``actor`` may
    not read, decided from their owners as metacrm.runtime.access decides it (``members``:
    the logins of the actor's team, the actor included)."""
    out = set()
    for items in links.values():
        for item in items:
            ent = model.entities[item["_entity"]]
            if not readable(model, actor, ent, item.get(OWNER), members, item):
                out.add((ent.name, item["id"]))
    return frozenset(out)


def path_values(record: Mapping, links: Mapping, path: str) -> list:
    """The non-empty values at ``field`` or ``link.field`` of a record."""
    if "." in path:
        link, name = path.split(".", 1)
        return [i.get(name) for i in links.get(link, []) if i.get(name) not in (None, "")]
    value = record.get(path)
    if value in (None, "", []):
        return []
    return list(value) if isinstance(value, list) else [value]


# -- values of create and update ----------------------------------------------------------------
def _reference(entity: Entity, record: Mapping, member) -> object:
    """``$record`` as the value of a link: the id, ``{entity, id}`` for a polymorphic link,
    a one-id list for a many-link."""
    from ..model.metamodel import Link

    if isinstance(member, Link):
        if member.polymorphic:
            return {"entity": entity.name, "id": record["id"]}
        if member.many:
            return [record["id"]]
    return record["id"]


def resolve(
    value,
    *,
    target: Entity,
    name: str,
    entity: Entity,
    record: Mapping,
    links: Mapping,
    now: dt.datetime,
    zone: str | None = None,
):
    """A written value of an action: constants as they are; ``$record``, ``$record.field``,
    ``$record.link.field``, ``$now`` and relative times (``+2d``, ``-4h``) on date and
    datetime fields (a date field gets the day in ``zone``, the model's time zone); ``$$``
    starts a literal ``$``."""
    if isinstance(value, list):
        return [
            resolve(v, target=target, name=name, entity=entity, record=record, links=links, now=now, zone=zone)
            for v in value
        ]
    if not isinstance(value, str):
        return value
    f = target.fields.get(name)
    if value.startswith("$$"):
        return value[1:]
    if value == "$record":
        return _reference(entity, record, target.member(name))
    if value == "$now":
        return local_today(zone, now) if f is not None and f.type == "date" else now
    if value.startswith("$record."):
        path = value[len("$record.") :]
        if "." not in path:
            return record.get(path)
        values = path_values(record, links, path)
        if target.links.get(name) is not None and target.links[name].many:
            return values
        return values[0] if values else None
    if f is not None and f.type in ("date", "datetime"):
        seconds = relative_seconds(value)
        if seconds is not None:
            moment = now + dt.timedelta(seconds=seconds)
            return local_today(zone, moment) if f.type == "date" else moment
    return value
