"""Rows <-> records, link checks and the SQL of reads; used by the CRM facade.

Everything here works on an open connection inside the caller's transaction, and in sets:
one query per link or many-link for a whole batch of records, never one per record.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from functools import lru_cache

from sqlalchemy import and_, bindparam, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..errors import ConflictError, FieldIssue, NotFound, ValidationError
from ..model.metamodel import Entity, Link
from ..model.suggest import did_you_mean, listing
from ..storage import naming
from ..storage.tables import Storage
from ..validation.links import LinkRows

SYSTEM_OUT = ("created_at", "updated_at", "version", "created_by", "updated_by")
ORDERABLE_SYSTEM = (
    "id",
    "created_at",
    "updated_at",
    "version",
    "created_by",
    "updated_by",
    "owner",
    "archived_at",
    "archived_by",
    "pipeline",
    "stage",
    "stage_entered_at",
    "closed_at",
)
BATCH = 1000


@lru_cache(maxsize=512)
def row_by_id(table):
    """``SELECT * FROM table WHERE id = :_id``, built once per table: a statement built anew
    for every read costs more in Python than the read itself."""
    return select(table).where(table.c.id == bindparam("_id"))


@lru_cache(maxsize=512)
def insert_returning_id(table):
    return insert(table).returning(table.c.id)


@lru_cache(maxsize=512)
def insert_into(table):
    return insert(table)


@lru_cache(maxsize=512)
def id_present(table):
    return select(table.c.id).where(table.c.id == bindparam("_id"))


@lru_cache(maxsize=512)
def ids_present(table, dialect: str = "sqlite"):
    """``SELECT id FROM table WHERE id IN :_ids`` (an expanding parameter), built once. On
    PostgreSQL the ids are one array joined to the table (``FROM unnest(:_ids) AS wanted
    JOIN table ON table.id = wanted.id``): the text stays the same for every batch (prepared
    once, not a statement of up to 1,000 parameters parsed per batch), and the join is a hash
    join or index lookups where ``IN`` or ``= ANY`` compares every row with every id (a
    quarter of a bulk create's time on PostgreSQL went there)."""
    if dialect == "postgresql":
        from sqlalchemy import BigInteger, func
        from sqlalchemy.dialects.postgresql import ARRAY

        wanted = func.unnest(bindparam("_ids", type_=ARRAY(BigInteger()))).table_valued("id").render_derived(name="wanted")
        return select(table.c.id).select_from(wanted.join(table, table.c.id == wanted.c.id))
    if dialect == "sqlite":
        return select(table.c.id).where(table.c.id.in_(select(json_ids().c.value)))
    return select(table.c.id).where(table.c.id.in_(bindparam("_ids", expanding=True)))


def json_ids():
    """SQLite: ``json_each(:_ids)``, the ids of a batch given as one JSON array (an expanding
    ``IN`` renders and binds a parameter per id on every execution); pass ``json.dumps(ids)``."""
    from sqlalchemy import String, func

    return func.json_each(bindparam("_ids", type_=String())).table_valued("value")


def many_links(entity: Entity) -> list[Link]:
    return [link for link in entity.links.values() if link.many]


class Shape:
    """How an entity's values map to its row and back, worked out once per entity (a bulk
    create maps every record both ways: asking the metamodel per value cost more than the
    mapping). See :func:`shape`."""

    __slots__ = ("columns", "single", "link_columns", "fields", "users", "links", "plain_many")

    def __init__(self, entity: Entity) -> None:
        # keys stored as they are: fields, owner, pipeline
        self.columns = frozenset((*entity.fields, "owner", "pipeline"))
        # a plain single link -> its column (polymorphic and many-links take the general way)
        self.single = {
            link.name: naming.link_column(link.name)
            for link in entity.links.values()
            if not link.many and not link.polymorphic
        }
        # every column a single link fills (each row of a batch carries them all)
        columns: list[str] = []
        for link in entity.links.values():
            if not link.many:
                columns.append(naming.link_column(link.name))
                if link.polymorphic:
                    columns.append(naming.link_entity_column(link.name))
        self.link_columns = tuple(columns)
        self.fields = tuple(entity.fields)
        # many-links whose items are ids (sorted as they are; a polymorphic one's by ref_key)
        self.plain_many = frozenset(link.name for link in entity.links.values() if link.many and not link.polymorphic)
        self.users = frozenset(f.name for f in entity.fields.values() if f.type == "users")
        # (name, "many" | "polymorphic" | "single", column, entity column, has fields)
        self.links = tuple(
            (
                link.name,
                "many" if link.many else "polymorphic" if link.polymorphic else "single",
                naming.link_column(link.name),
                naming.link_entity_column(link.name),
                bool(link.fields),
            )
            for link in entity.links.values()
        )


_SHAPES: dict[int, tuple[Entity, Shape]] = {}


def shape(entity: Entity) -> Shape:
    """The :class:`Shape` of ``entity``, made once (entities are frozen; kept by identity)."""
    cached = _SHAPES.get(id(entity))
    if cached is not None and cached[0] is entity:
        return cached[1]
    made = Shape(entity)
    if len(_SHAPES) > 1024:
        _SHAPES.clear()
    _SHAPES[id(entity)] = (entity, made)
    return made


def row_to_record(entity: Entity, row: Mapping, many: Mapping[str, list] | None = None) -> dict:
    """A stored row as the public record dict (``many``: each many-link's ids, and for a link
    with fields its rows under ``"<link>.link"``)."""
    plan = shape(entity)
    record: dict = {"id": row["id"]}
    users = plan.users
    for name in plan.fields:
        value = row[name]
        record[name] = [] if value is None and name in users else value  # a many-link: a list
    for name, kind, column, kind_column, fields in plan.links:
        if kind == "many":
            record[name] = list((many or {}).get(name, ()))
            if fields:
                record[f"{name}.link"] = list((many or {}).get(f"{name}.link", ()))
        elif kind == "polymorphic":
            target_id = row[column]
            record[name] = None if target_id is None else {"entity": row[kind_column], "id": target_id}
        else:
            record[name] = row[column]
    if entity.owner:
        record["owner"] = row["owner"]
    if entity.has_stages:
        if entity.multi_pipeline:
            record["pipeline"] = row["pipeline"]
        record["stage"] = row["stage"]
    for name in SYSTEM_OUT:
        record[name] = row[name]
    if entity.archive:
        record["archived_at"] = row["archived_at"]
        record["archived_by"] = row["archived_by"]
    for name, source, quanta in currency_quanta(entity):
        amount, code = record[name], record[source]
        if amount is not None and code in quanta:
            record[name] = amount.quantize(quanta[code])
    return record


_QUANTA: dict[int, tuple[Entity, tuple]] = {}


def currency_quanta(entity: Entity) -> tuple[tuple[str, str, dict[str, Decimal]], ...]:
    """(field, its currency_field, {code: quantum}) of each currency field of ``entity`` whose
    currency a record names: its amounts come back at their own currency's decimals (the
    column keeps the most of them)."""
    cached = _QUANTA.get(id(entity))
    if cached is not None and cached[0] is entity:
        return cached[1]
    from ..model.field_types import currency_precision

    found = []
    for f in entity.fields.values():
        source = entity.fields.get(f.currency_field or "") if f.type == "currency" else None
        if source is not None:
            quanta = {}
            for code in source.option_values:
                places = currency_precision(code)
                if places is not None:
                    quanta[code] = Decimal(1).scaleb(-places)
            found.append((f.name, source.name, quanta))
    if len(_QUANTA) > 1024:
        _QUANTA.clear()
    _QUANTA[id(entity)] = (entity, tuple(found))
    return tuple(found)


def fetch_many_links(conn: Connection, storage: Storage, entity: Entity, ids: Sequence[int]) -> dict[int, dict]:
    """record id -> {many-link name: [target ids]} for a batch of records: one query per link."""
    result: dict[int, dict] = defaultdict(dict)
    links = many_links(entity)
    if not links or not ids:
        return result
    for link in links:
        join = storage.join_table(entity.name, link.name)
        if link.polymorphic:  # {"entity", "id"} items, by entity then id
            _fetch_polymorphic(conn, join, link, ids, result)
            continue
        names = tuple(link.fields)
        key = f"{link.name}.link"
        for start in range(0, len(ids), BATCH):
            chunk = list(ids[start : start + BATCH])
            rows = conn.execute(
                select(join.c.source_id, join.c.target_id, *(join.c[n] for n in names))
                .where(join.c.source_id.in_(chunk))
                .order_by(join.c.source_id, join.c.target_id)
            )
            for source_id, target_id, *values in rows:
                result[source_id].setdefault(link.name, []).append(target_id)
                if names:  # the link's fields, in the same query
                    result[source_id].setdefault(key, []).append(
                        {"id": target_id, **dict(zip(names, values, strict=True))}
                    )
    return result


def _fetch_polymorphic(conn: Connection, join, link: Link, ids: Sequence[int], result: dict) -> None:
    kind, target = join.c[naming.JOIN_TARGET_ENTITY], join.c[naming.JOIN_TARGET]
    for start in range(0, len(ids), BATCH):
        chunk = list(ids[start : start + BATCH])
        query = select(join.c.source_id, kind, target).where(join.c.source_id.in_(chunk))
        for source_id, entity, target_id in conn.execute(query.order_by(join.c.source_id, kind, target)):
            result[source_id].setdefault(link.name, []).append({"entity": entity, "id": target_id})


def ref_key(value):
    """The sort key of a many-link's items: an id, or (entity, id) of a polymorphic one."""
    return (value["entity"], value["id"]) if isinstance(value, dict) else value


def join_row(link: Link, source: int, target) -> dict:
    """A join table row: the source's id and the target (an id, or ``{"entity", "id"}``)."""
    if link.polymorphic:
        return {
            naming.JOIN_SOURCE: source,
            naming.JOIN_TARGET_ENTITY: target["entity"],
            naming.JOIN_TARGET: target["id"],
        }
    return {naming.JOIN_SOURCE: source, naming.JOIN_TARGET: target}


def targets_clause(join, link: Link, targets: Sequence):
    """The join rows pointing at ``targets`` (ids, or ``{"entity", "id"}`` of a polymorphic link)."""
    from sqlalchemy import or_

    if not link.polymorphic:
        return join.c[naming.JOIN_TARGET].in_(list(targets))
    by_entity: dict[str, list[int]] = defaultdict(list)
    for t in targets:
        by_entity[t["entity"]].append(t["id"])
    return or_(
        *(
            and_(join.c[naming.JOIN_TARGET_ENTITY] == entity, join.c[naming.JOIN_TARGET].in_(ids))
            for entity, ids in sorted(by_entity.items())
        )
    )


def linked_targets(conn: Connection, join, link: Link, *where) -> list:
    """The targets of the join rows ``where`` selects: ids, or ``{"entity", "id"}``."""
    if link.polymorphic:
        query = select(join.c[naming.JOIN_TARGET_ENTITY], join.c[naming.JOIN_TARGET]).where(*where)
        return [{"entity": e, "id": i} for e, i in conn.execute(query)]
    return list(conn.execute(select(join.c[naming.JOIN_TARGET]).where(*where)).scalars())


def rows_to_records(conn: Connection, storage: Storage, entity: Entity, rows: Iterable[Mapping]) -> list[dict]:
    rows = list(rows)
    many = fetch_many_links(conn, storage, entity, [r["id"] for r in rows])
    return [row_to_record(entity, row, many.get(row["id"])) for row in rows]


def link_targets(entity: Entity, values: Mapping, *, polymorphic_only: bool = False) -> dict[str, set[int]]:
    """target entity -> ids the values point at (single, polymorphic and many links)."""
    wanted: dict[str, set[int]] = defaultdict(set)
    add_targets(wanted, [link for link in entity.links.values() if link.polymorphic or not polymorphic_only], values)
    return wanted


def add_targets(wanted: dict[str, set[int]], links: Sequence[Link], values: Mapping) -> None:
    """Add the ids ``values`` point at through ``links`` to ``wanted`` (target entity -> ids)."""
    for link in links:
        value = values.get(link.name)
        if value is None:
            continue
        if link.many and link.polymorphic:
            for ref in value:
                wanted[ref["entity"]].add(ref["id"])
        elif link.many:
            wanted[link.target].update(value)
        elif link.polymorphic:
            wanted[value["entity"]].add(value["id"])
        else:
            wanted[link.target].add(value)


def check_links_exist(
    conn: Connection,
    storage: Storage,
    entity: Entity,
    records: Sequence[Mapping],
    *,
    indexed: bool = False,
    actor=None,
    trust_keys: bool = False,
) -> None:
    """Refuse links to records that do not exist, or that the acting user may not read (said
    the same way, so ids cannot be probed): one query per target entity for the batch.

    ``trust_keys``: leave out the links a foreign key guards (all but polymorphic ones), for
    the system user, who may link to any record: the insert itself then refuses a missing
    target, and the caller explains the refusal by running this check again in full.

    An archived target (``archive: true``) is refused too, said as such to whoever may read it
    (a foreign key would let it through, so links to such entities are always checked here)."""
    from .access import SYSTEM as SYSTEM_ACTOR
    from .access import archive_clause, row_clause

    entities = storage.model.entities

    def checked(link: Link) -> bool:
        return not trust_keys or link.polymorphic or any(entities[t].archive for t in link.targets)

    wanted: dict[str, set[int]] = defaultdict(set)
    links = [link for link in entity.links.values() if checked(link)]
    for values in records:
        add_targets(wanted, links, values)
    if trust_keys and not wanted:
        return
    existing: dict[str, set[int]] = {}
    archived: dict[str, set[int]] = {}
    for target, ids in wanted.items():
        table = storage.table(target)
        ent = entities[target]
        visible = row_clause(storage, ent, actor) if actor is not None else archive_clause(ent, table)
        found: set[int] = set()
        ordered = sorted(ids)
        for start in range(0, len(ordered), BATCH):
            chunk = ordered[start : start + BATCH]
            if visible is None:  # prebuilt: building an IN clause costs more than running it
                if len(chunk) == 1:
                    found.update(conn.execute(id_present(table), {"_id": chunk[0]}).scalars())
                else:
                    dialect = conn.dialect.name
                    given = json.dumps(chunk) if dialect == "sqlite" else chunk
                    found.update(conn.execute(ids_present(table, dialect), {"_ids": given}).scalars())
                continue
            query = select(table.c.id).where(table.c.id.in_(chunk), visible)
            found.update(conn.execute(query).scalars())
        existing[target] = found
        if ent.archive and len(found) < len(ordered):  # which of the others are archived (and readable)
            missing = [i for i in ordered if i not in found]
            shown = row_clause(storage, ent, actor or SYSTEM_ACTOR, archived="only")
            archived[target] = {
                i
                for start in range(0, len(missing), BATCH)
                for i in conn.execute(
                    select(table.c.id).where(table.c.id.in_(missing[start : start + BATCH]), shown)
                ).scalars()
            }
    if all(ids <= existing[target] for target, ids in wanted.items()):
        return  # every target found: no record to name
    # a record the user may not read is named exactly as a missing one, and the text says both
    unseen = "" if actor is None or actor.system else f" that user '{actor.login}' may read"
    issues = []
    for index, values in enumerate(records):
        for link in links:
            value = values.get(link.name)
            if value is None:
                continue
            if link.many and link.polymorphic:
                pairs = [(v["entity"], v["id"]) for v in value]
            elif link.many:
                pairs = [(link.target, v) for v in value]
            elif link.polymorphic:
                pairs = [(value["entity"], value["id"])]
            else:
                pairs = [(link.target, value)]
            for target, target_id in pairs:
                if target_id not in existing.get(target, ()):
                    gone = target_id in archived.get(target, ())
                    issues.append(
                        FieldIssue(
                            entity.name,
                            link.name,
                            f"{target} {target_id} is archived: restore it before linking to it"
                            if gone
                            else f"no {target} with id {target_id}{unseen}",
                            target_id,
                            index if indexed else None,
                        )
                    )
    if issues:
        raise refused(issues)


def refused(issues: Sequence[FieldIssue]) -> ValidationError:
    first = issues[0].format()
    more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
    return ValidationError(first + more, issues)


def split_values(entity: Entity, values: Mapping) -> tuple[dict, dict[str, list[int]]]:
    """Validated values -> (column values of the entity's row, many-link ids by link)."""
    row: dict = {}
    many: dict[str, list[int]] = {}
    plan = shape(entity)
    columns, single = plan.columns, plan.single
    for key, value in values.items():
        if key in columns:
            row[key] = value
            continue
        if key in single:
            row[single[key]] = value
            continue
        link = entity.links.get(key)
        if link is None:
            continue
        if link.many and link.polymorphic:  # {"entity", "id"} items, deduplicated by the coercer
            many[key] = list(value or ())
        elif link.many:  # LinkRows (a link with fields) keep the values given per target
            many[key] = value if isinstance(value, LinkRows) else list(dict.fromkeys(value or ()))
        elif link.polymorphic:
            row[naming.link_entity_column(key)] = None if value is None else value["entity"]
            row[naming.link_column(key)] = None if value is None else value["id"]
        else:
            row[naming.link_column(key)] = value
    return row, many


def order_clause(storage: Storage, entity: Entity, order_by: str | Sequence[str] | None) -> list:
    """``"-amount,title"`` or ``["-amount", "title"]`` -> ORDER BY terms (id last, for a stable order)."""
    table = storage.table(entity.name)
    if order_by is None:
        return [table.c.id]
    names = order_by.split(",") if isinstance(order_by, str) else list(order_by)
    terms = []
    allowed = [*entity.fields, *(link.name for link in entity.links.values() if not link.many)]
    allowed += [n for n in ORDERABLE_SYSTEM if n in table.c]
    for raw in names:
        name = raw.strip()
        descending = name.startswith("-")
        name = name.lstrip("-+").strip()
        if name not in allowed:
            hint = did_you_mean(name, allowed)
            raise ValidationError(
                f"{entity.name}: cannot order by unknown field '{name}'"
                + (f" ({hint})" if hint else "")
                + f"; fields: {listing(allowed, 40)}",
                [FieldIssue(entity.name, name, "unknown field")],
            )
        column = storage.column(entity.name, name)
        f = entity.fields.get(name)
        if f is not None and f.type == "choice" and any(o.order is not None for o in f.options):
            column = option_order(f, column)
        terms.append(column.desc() if descending else column.asc())
    terms.append(table.c.id)
    return terms


def option_order(f, column):
    """A choice column as its options sort (their ``order``): a CASE giving each its rank."""
    from sqlalchemy import case

    return case(f.option_rank, value=column, else_=len(f.options))


def translate_integrity(exc: IntegrityError, storage: Storage, entity: Entity, values: Mapping | None = None):
    """A database constraint violation as a metacrm error naming the entity and field."""
    orig = exc.orig
    text = str(orig)
    constraint = getattr(getattr(orig, "diag", None), "constraint_name", None)
    fields: tuple[str, ...] = ()
    if constraint and constraint in storage.unique_constraints:
        fields = storage.unique_constraints[constraint][1]
    elif "UNIQUE constraint failed:" in text:
        columns = [c.strip().split(".")[-1] for c in text.split("UNIQUE constraint failed:")[1].split(",")]
        fields = tuple(dict.fromkeys(_member_of_column(entity, c) for c in columns))
    if fields or "unique" in text.lower() or "duplicate key" in text.lower():
        shown = ", ".join(f"{f}={_shown(values.get(f))}" for f in fields) if values else ", ".join(fields)
        field = fields[0] if len(fields) == 1 else None
        return ValidationError(
            f"{entity.name}.{'+'.join(fields) or '?'}: {shown or 'value'} is already used by another {entity.name}",
            [FieldIssue(entity.name, field, "is already used", values.get(field) if values and field else None)],
        )
    if "foreign key" in text.lower():
        return ConflictError(
            f"{entity.name}: a linked record was changed or deleted meanwhile ({text.splitlines()[0]})",
            entity=entity.name,
        )
    return ValidationError(f"{entity.name}: refused by the database: {text.splitlines()[0]}")


def _member_of_column(entity: Entity, column: str) -> str:
    """The field or link stored in a column (a link's ``<name>_id`` and ``<name>_entity``)."""
    for suffix in ("_id", "_entity"):
        if column.endswith(suffix) and column[: -len(suffix)] in entity.links:
            return column[: -len(suffix)]
    return column


def _shown(value) -> str:
    return shown_value(value) if isinstance(value, dict) else repr(value)


def unique_prechecks(
    conn: Connection, storage: Storage, entity: Entity, records: Sequence[Mapping]
) -> list[FieldIssue]:
    """Duplicates of unique fields inside a batch and against stored rows, per record index."""
    issues: list[FieldIssue] = []
    table = storage.table(entity.name)
    for f in entity.fields.values():
        if not f.unique:
            continue
        seen: dict = {}
        values = [(i, r.get(f.name)) for i, r in enumerate(records) if r.get(f.name) is not None]
        for i, value in values:
            if value in seen:
                issues.append(
                    FieldIssue(
                        entity.name,
                        f.name,
                        f"{value!r} is already used by record {seen[value]} of this batch",
                        value,
                        i,
                    )
                )
            else:
                seen[value] = i
        stored: set = set()
        distinct = list(seen)
        for start in range(0, len(distinct), BATCH):
            chunk = distinct[start : start + BATCH]
            stored.update(conn.execute(select(table.c[f.name]).where(table.c[f.name].in_(chunk))).scalars())
        for value in stored:
            i = seen[value]
            issues.append(
                FieldIssue(entity.name, f.name, f"{value!r} is already used by another {entity.name}", value, i)
            )
    return sorted(issues, key=lambda x: x.index or 0)


def unique_link_issues(
    conn: Connection,
    storage: Storage,
    entity: Entity,
    records: Sequence[Mapping],
    *,
    indexed: bool = True,
    exclude: int | None = None,
) -> list[FieldIssue]:
    """One-to-one links (``unique: true``): a target linked twice in the batch, or already
    linked from another record (named: the holder), per record. One query per unique link."""
    issues: list[FieldIssue] = []
    table = storage.table(entity.name)
    for link in entity.links.values():
        if not link.unique or link.many:
            continue
        seen: dict = {}
        for i, values in enumerate(records):
            value = values.get(link.name)
            if value is None:
                continue
            key = (value["entity"], value["id"]) if link.polymorphic else (link.target, value)
            if key in seen:
                issues.append(
                    FieldIssue(
                        entity.name,
                        link.name,
                        f"{key[0]} {key[1]} is linked by record {seen[key]} of this batch too; the link is one-to-one",
                        value,
                        i if indexed else None,
                    )
                )
            else:
                seen[key] = i
        if not seen:
            continue
        column = table.c[naming.link_column(link.name)]
        kind = table.c[naming.link_entity_column(link.name)] if link.polymorphic else None
        pairs = list(seen)
        for start in range(0, len(pairs), BATCH):
            chunk = pairs[start : start + BATCH]
            query = select(table.c.id, column, *([kind] if kind is not None else [])).where(
                column.in_({target_id for _, target_id in chunk})
            )
            if exclude is not None:
                query = query.where(table.c.id != exclude)
            for row in conn.execute(query):
                key = (row[2], row[1]) if kind is not None else (link.target, row[1])
                if key not in seen:
                    continue
                i = seen[key]
                issues.append(
                    FieldIssue(
                        entity.name,
                        link.name,
                        f"{key[0]} {key[1]} is already linked from {entity.name} {row[0]}; the link is one-to-one",
                        records[i].get(link.name),
                        i if indexed else None,
                    )
                )
    return sorted(issues, key=lambda x: x.index or 0)


def allocate_ids(conn: Connection, table, count: int) -> list[int]:
    """``count`` new ids for ``table``, taken inside the caller's write transaction.

    PostgreSQL: from the table's sequence (``nextval`` in one statement). SQLite: after the
    largest id, which is safe because a metacrm write transaction holds the database's write
    lock from its start (``BEGIN IMMEDIATE``) and ids are ``INTEGER PRIMARY KEY`` (max + 1).
    """
    from sqlalchemy import func, text

    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
            {"t": table.name, "n": count},
        )
        return [r[0] for r in rows]
    start = conn.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one()
    return list(range(start + 1, start + 1 + count))


def where_id(table, record_id: int, version: int | None = None):
    clause = table.c.id == record_id
    if version is not None:
        clause = and_(clause, table.c.version == version)
    return clause


def link_member(ent: Entity, name: str):
    """The link, ``to: user`` link or inverse link of that name; ValidationError listing the
    valid ones."""
    member = ent.member(name)
    if member is None or name in ent.fields and not member.user_link:
        links = [*ent.links, *(f.name for f in ent.user_links), *ent.inverses]
        hint = did_you_mean(name, links)
        raise ValidationError(
            f"{ent.name}: unknown link '{name}'" + (f" ({hint})" if hint else "") + f"; links: {listing(links)}",
            [FieldIssue(ent.name, name, "unknown link")],
        )
    return member


def as_id(entity: Entity, record_id) -> int:
    try:
        value = int(str(record_id).strip())
    except (TypeError, ValueError):
        raise ValidationError(
            f"{entity.name}: {shown_value(record_id)} is not a record id (a whole number)", entity=entity.name
        ) from None
    if not 1 <= value <= MAX_INT:  # ids are 64-bit: a larger one names no record
        raise NotFound(f"{entity.name} {value} not found", entity=entity.name, record_id=value)
    return value


def shown_value(value) -> str:
    """A value in a message as the user wrote it, not as Python prints it: ``'abc'``,
    ``deal:5`` for a polymorphic reference, ``1,2`` for a list."""
    if isinstance(value, dict) and set(value) == {"entity", "id"}:
        return f"{value['entity']}:{value['id']}"
    if isinstance(value, list | tuple):
        return ",".join(shown_value(v) for v in value)
    if isinstance(value, str):
        return f"'{value}'"
    return str(value)


MAX_INT = 2**63 - 1  # the largest integer both databases store (BIGINT, SQLite INTEGER)


def non_negative(value, what: str) -> int:
    """A limit or offset: a whole number >= 0; one past 64 bits means "no limit" and is
    capped (the database could not take it, and no table holds that many rows)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number < 0:
        raise ValidationError(f"{what} must be a whole number >= 0, not {shown_value(value)}")
    return min(number, MAX_INT)
