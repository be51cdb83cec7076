"""Metamodel -> SQLAlchemy Core tables. Pure: no database; built once per model version.

``build_storage(model)`` returns a :class:`Storage` holding one ``MetaData`` with a table per
entity, a join table per many-link, and the system tables; the result is cached by the
model's sha256, so every CRM object on the same model version shares it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from ..model.metamodel import Entity, Field, Link, Model
from . import naming
from .types import UTCDateTime, decimal_type, id_type, json_type, money_type

ON_DELETE = {"restrict": "RESTRICT", "cascade": "CASCADE", "set_null": "SET NULL"}


@dataclass
class Storage:
    """The tables of one model version, and how fields map onto them."""

    model: Model
    metadata: MetaData
    tables: dict[str, Table] = field(default_factory=dict)
    join_tables: dict[tuple[str, str], Table] = field(default_factory=dict)
    # constraint name -> (entity, field/link names) to name the field in unique violations
    unique_constraints: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    model_table: Table | None = None
    history_table: Table | None = None
    lock_table: Table | None = None
    user_table: Table | None = None

    def table(self, entity: str) -> Table:
        return self.tables[entity]

    def join_table(self, entity: str, link: str) -> Table:
        return self.join_tables[(entity, link)]

    def column(self, entity: str, name: str) -> Column:
        """The column holding a field, a system column, or a single link's id."""
        table = self.tables[entity]
        if name in table.c:
            return table.c[name]
        return table.c[naming.link_column(name)]

    def entity_tables(self) -> list[Table]:
        """Entity and join tables in dependency order (what migrate creates)."""
        return [t for t in self.metadata.sorted_tables if not t.name.startswith(naming.SYSTEM_PREFIX)]


def _column_type(f: Field):
    kind = f.type
    if kind in ("string", "email", "phone", "url", "choice"):
        return String(f.max_length) if f.max_length else Text()
    if kind == "text":
        return Text()
    if kind == "integer":
        return BigInteger()
    if kind == "money":
        return money_type()
    if kind in ("decimal", "percent"):
        return decimal_type()
    if kind == "boolean":
        return Boolean(create_constraint=False)
    if kind == "date":
        return Date()
    if kind == "datetime":
        return UTCDateTime()
    return json_type()  # json, multichoice


def _system_columns(entity: Entity) -> list:
    cols = [
        Column("id", id_type(), primary_key=True, autoincrement=True),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
        Column("version", Integer(), nullable=False, server_default="1"),
    ]
    if entity.owner:
        cols.append(Column("owner", String(100), nullable=True))
    if entity.has_stages:
        cols += [
            Column("pipeline", String(30), nullable=False),
            Column("stage", String(30), nullable=False),
            Column("stage_entered_at", UTCDateTime(), nullable=False),
            Column("closed_at", UTCDateTime(), nullable=True),
        ]
    return cols


def _link_columns(entity: Entity, link: Link, model: Model) -> list:
    column = naming.link_column(link.name)
    if link.polymorphic:
        return [
            Column(naming.link_entity_column(link.name), String(30), nullable=not link.required),
            Column(column, id_type(), nullable=not link.required),
        ]
    target = naming.table_name(link.target)
    return [
        Column(
            column,
            id_type(),
            ForeignKey(
                f"{target}.id",
                ondelete=ON_DELETE[link.on_delete],
                name=naming.fk_name(entity.name, column),
            ),
            nullable=not link.required,
        )
    ]


def _entity_table(entity: Entity, model: Model, storage: Storage) -> Table:
    name = naming.table_name(entity.name)
    columns = _system_columns(entity)
    constraints: list = []
    indexes: list[tuple[str, ...]] = []
    for f in entity.fields.values():
        columns.append(Column(f.name, _column_type(f), nullable=not f.required))
        if f.type == "choice" and f.options:
            values = ", ".join("'" + v.replace("'", "''") + "'" for v in f.option_values)
            constraints.append(CheckConstraint(f"{f.name} IN ({values})", name=naming.check_name(name, f.name)))
        if f.unique:
            uq = naming.unique_name(name, [f.name])
            constraints.append(UniqueConstraint(f.name, name=uq))
            storage.unique_constraints[uq] = (entity.name, (f.name,))
        elif f.index or f.name in entity.search:
            indexes.append((f.name,))
    for link in entity.links.values():
        if link.many:
            continue
        columns += _link_columns(entity, link, model)
        if link.polymorphic:
            indexes.append((naming.link_entity_column(link.name), naming.link_column(link.name)))
        else:
            indexes.append((naming.link_column(link.name),))
    if entity.owner:
        indexes.append(("owner",))
    if entity.has_stages:
        indexes.append(("stage", "pipeline"))
        amounts = {p.amount for p in entity.pipelines.values() if p.amount}
        for amount in sorted(amounts):
            indexes.append(("stage", amount))  # covering index for boards and funnels
    for names in entity.indexes:
        indexes.append(tuple(_member_column(entity, n) for n in names))
    for names in entity.unique:
        cols = [_member_column(entity, n) for n in names]
        uq = naming.unique_name(name, cols)
        constraints.append(UniqueConstraint(*cols, name=uq))
        storage.unique_constraints[uq] = (entity.name, tuple(names))
    table = Table(name, storage.metadata, *columns, *constraints)
    seen = set()
    for cols in indexes:
        if cols in seen:
            continue
        seen.add(cols)
        Index(naming.index_name(name, cols), *[table.c[c] for c in cols])
    return table


def _member_column(entity: Entity, name: str) -> str:
    return name if name in entity.fields else naming.link_column(name)


def _join_table(entity: Entity, link: Link, storage: Storage) -> Table:
    name = naming.join_table_name(entity.name, link.name)
    target_delete = "RESTRICT" if link.on_delete == "restrict" else "CASCADE"
    table = Table(
        name,
        storage.metadata,
        Column(
            naming.JOIN_SOURCE,
            id_type(),
            ForeignKey(f"{entity.name}.id", ondelete="CASCADE", name=naming.fk_name(name, naming.JOIN_SOURCE)),
            nullable=False,
        ),
        Column(
            naming.JOIN_TARGET,
            id_type(),
            ForeignKey(f"{link.target}.id", ondelete=target_delete, name=naming.fk_name(name, naming.JOIN_TARGET)),
            nullable=False,
        ),
        PrimaryKeyConstraint(naming.JOIN_SOURCE, naming.JOIN_TARGET, name=naming.pk_name(name)),
    )
    Index(naming.index_name(name, [naming.JOIN_TARGET]), table.c[naming.JOIN_TARGET])
    return table


def _system_tables(storage: Storage) -> None:
    md = storage.metadata
    storage.model_table = Table(
        naming.MODEL_TABLE,
        md,
        Column("id", id_type(), primary_key=True, autoincrement=True),
        Column("sha256", String(64), nullable=False),
        Column("name", String(100), nullable=False),
        Column("canonical", Text(), nullable=False),
        Column("applied_at", UTCDateTime(), nullable=False),
        Column("applied_by", String(100), nullable=True),
        Column("metacrm_version", String(20), nullable=False),
    )
    storage.history_table = Table(
        naming.HISTORY_TABLE,
        md,
        Column("id", id_type(), primary_key=True, autoincrement=True),
        Column("entity", String(30), nullable=False),
        Column("record_id", id_type(), nullable=False),
        Column("pipeline", String(30), nullable=False),
        Column("from_stage", String(30), nullable=True),
        Column("to_stage", String(30), nullable=False),
        Column("at", UTCDateTime(), nullable=False),
        Column("by", String(100), nullable=True),
        Column("note", Text(), nullable=True),
        Column("seconds_in_stage", Integer(), nullable=True),
        Column("source", String(20), nullable=False, server_default="move"),
        Index("ix_metacrm_history_record", "entity", "record_id", "at"),
        Index("ix_metacrm_history_to", "entity", "pipeline", "to_stage"),
    )
    storage.user_table = Table(
        naming.USER_TABLE,
        md,
        Column("login", String(100), primary_key=True),
        Column("name", String(200), nullable=True),
        Column("roles", Text(), nullable=False, server_default=""),  # comma-separated role names
        Column("team", String(100), nullable=True),
        Column("created_at", UTCDateTime(), nullable=False),
    )
    storage.lock_table = Table(
        naming.LOCK_TABLE,
        md,
        Column("name", String(50), primary_key=True),
        Column("holder", String(200), nullable=False),
        Column("since", UTCDateTime(), nullable=False),
    )


def _build(model: Model) -> Storage:
    storage = Storage(model=model, metadata=MetaData())
    for entity in model.entities.values():
        storage.tables[entity.name] = _entity_table(entity, model, storage)
    for entity in model.entities.values():
        for link in entity.links.values():
            if link.many:
                storage.join_tables[(entity.name, link.name)] = _join_table(entity, link, storage)
    _system_tables(storage)
    return storage


_CACHE: dict[str, Storage] = {}
_LOCK = threading.Lock()


def build_storage(model: Model) -> Storage:
    """The tables of a model version; built once per sha256 and shared."""
    with _LOCK:
        storage = _CACHE.get(model.sha256)
        if storage is None:
            storage = _build(model)
            if len(_CACHE) > 16:
                _CACHE.clear()
            _CACHE[model.sha256] = storage
        return storage
