"""Metamodel -> SQLAlchemy Core tables. Pure: no database; built once per model version.

``build_storage(model)`` returns a :class:`Storage` holding one ``MetaData`` with a table per
entity, a join table per many-link, and the system tables; the result is cached by the
model's sha256, so every CRM object on the same model version shares it.

A staged entity's table carries, besides ``pipeline``, ``stage``, ``stage_entered_at`` and
``closed_at``, the system column ``reached`` (BIGINT, not null, default 0): a bitmask of the
stages the record has ever entered, bit ``i`` standing for the ``i``-th stage of its pipeline
in declaration order (``Pipeline.stages``; see :func:`stage_bit`). Every path that enters a
stage ORs its bit in: creation (the initial stage), a move (in the compare-and-swap UPDATE)
and an import placement. It lets the funnel count "reached" and the conversions in one scan
of the entity table instead of a pass over the history; the history stays the record of
truth (:func:`metacrm.runtime.reports.rebuild_reached` recomputes the masks from it, which a
migration that reorders, inserts or renames stages must do). Stages past the 62nd of a
pipeline get no bit (the funnel of such a pipeline reads the history).

The history table is indexed by record (``entity, record_id, at``), by the stage entered
(``entity, pipeline, to_stage``) and by the stage left with the time spent in it
(``entity, pipeline, from_stage, seconds_in_stage, source``: the funnel's medians read the
times in order from the index alone). A staged table has, besides ``(stage, pipeline)`` and
``(stage, <amount>)`` for the board, ``([pipeline,] stage, reached[, <amount>])``: the
funnel's GROUP BY reads only that index.

Entity tables are created with ``AUTOINCREMENT`` on SQLite, so that the id of a deleted record
is never given to a new one (which would inherit its journal, notes and stage history; see
``migrate/ids.py``); PostgreSQL's BIGSERIAL sequences never give a value twice.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

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
    event,
)
from sqlalchemy.schema import DDL

from ..model.field_types import MULTI_VALUE_TYPES
from ..model.metamodel import Entity, Field, Link, Model, Pipeline
from . import naming
from .types import ExactDecimal, UTCDateTime, id_type, json_type

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
    outbox_table: Table | None = None
    journal_table: Table | None = None
    fired_table: Table | None = None
    token_table: Table | None = None
    password_table: Table | None = None
    session_table: Table | None = None
    form_state_table: Table | None = None
    preference_table: Table | None = None
    sequence_table: Table | None = None
    files_table: Table | None = None  # only for a model with file fields or attachments
    # (entity, pipeline) -> {stage: bit of the ``reached`` mask}
    reached_bits: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)

    def table(self, entity: str) -> Table:
        return self.tables[entity]

    def join_table(self, entity: str, link: str) -> Table:
        return self.join_tables[(entity, link)]

    def column(self, entity: str, name: str) -> Column[Any]:
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
    if kind == "country":
        return String(2)
    if kind in ("text", "rich_text"):
        return Text()
    if kind == "user":
        return String(100)  # a login, as the users table holds it
    if kind in ("integer", "duration"):  # a duration: whole seconds
        return BigInteger()
    if f.decimals is not None:  # money, currency, decimal, percent: their precision and scale
        return ExactDecimal(f.decimals + f.whole_digits, f.decimals)
    if kind == "boolean":
        return Boolean(create_constraint=False)
    if kind == "date":
        return Date()
    if kind == "datetime":
        return UTCDateTime()
    if f.kind == "file":  # the id of the file's row in metacrm_files
        return id_type()
    return json_type()  # json, multichoice


def _choice_checks(table: str, fields) -> list:
    """CHECK constraints keeping choice columns to their options."""
    out = []
    for f in fields:
        if f.type == "choice" and f.options:
            values = ", ".join("'" + v.replace("'", "''") + "'" for v in f.option_values)
            out.append(CheckConstraint(f"{f.name} IN ({values})", name=naming.check_name(table, f.name)))
    return out


MASK_BITS = 62  # bits 0..61 of a signed 64-bit integer: no sign trouble on either database


def stage_bit(pipeline: Pipeline, stage: str) -> int:
    """The bit of ``stage`` in the ``reached`` mask: 1 << its index in declaration order
    (0 for a stage past the 62nd, which the mask does not track)."""
    return stage_bits(pipeline)[stage]


def stage_bits(pipeline: Pipeline) -> dict[str, int]:
    """stage -> its bit in the ``reached`` mask, for every stage of the pipeline."""
    return {s: 1 << i if i < MASK_BITS else 0 for i, s in enumerate(pipeline.stages)}


def _system_columns(entity: Entity) -> list:
    cols = [
        Column("id", id_type(), primary_key=True, autoincrement=True),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
        Column("version", Integer(), nullable=False, server_default="1"),
        # the login of the user who created / last changed the record (null: the system)
        Column("created_by", String(100), nullable=True),
        Column("updated_by", String(100), nullable=True),
    ]
    if entity.owner:
        cols.append(Column("owner", String(100), nullable=True))
    if entity.archive:  # soft delete (docs/archive.md): set when archived, null while live
        cols += [Column("archived_at", UTCDateTime(), nullable=True), Column("archived_by", String(100), nullable=True)]
    if entity.has_stages:
        cols += [
            Column("pipeline", String(naming.MAX_NAME), nullable=False),
            Column("stage", String(naming.MAX_NAME), nullable=False),
            Column("stage_entered_at", UTCDateTime(), nullable=False),
            Column("closed_at", UTCDateTime(), nullable=True),
            Column("reached", BigInteger(), nullable=False, server_default="0"),
        ]
    return cols


def _link_columns(entity: Entity, link: Link, model: Model) -> list:
    column = naming.link_column(link.name)
    if link.polymorphic:
        return [
            Column(naming.link_entity_column(link.name), String(naming.MAX_NAME), nullable=not link.required),
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
    constraints += _choice_checks(name, entity.fields.values())
    for f in entity.fields.values():
        columns.append(Column(f.name, _column_type(f), nullable=not f.required))
        if f.unique:
            uq = naming.unique_name(name, [f.name])
            constraints.append(UniqueConstraint(f.name, name=uq))
            storage.unique_constraints[uq] = (entity.name, (f.name,))
        elif f.type in MULTI_VALUE_TYPES:
            continue  # found through its value index (storage/valueindex.py)
        elif f.index or f.type == "user" or (f.name in entity.text_search and f.type != "text"):
            indexes.append((f.name,))  # long text is found through the search index only
    for link in entity.links.values():
        if link.many:
            continue
        columns += _link_columns(entity, link, model)
        cols = _member_columns(entity, link.name)
        if link.unique:  # one-to-one: one record per target (its unique index serves lookups too)
            uq = naming.unique_name(name, cols)
            constraints.append(UniqueConstraint(*cols, name=uq))
            storage.unique_constraints[uq] = (entity.name, (link.name,))
        else:
            indexes.append(cols)
    if entity.owner:
        indexes.append(("owner",))
    # archive: true: counts, boards and funnels read live rows only (archived_at IS NULL): their
    # covering indexes carry the column last, so that they stay covering. Never first, nor alone:
    # SQLite's planner (no statistics) would take `archived_at IS NULL` for a selective equality
    # and read a page of a list through it, sorting every live row (bench: 5x slower)
    live = ("archived_at",) if entity.archive else ()
    if entity.has_stages:
        for pipeline in entity.pipelines.values():
            storage.reached_bits[(entity.name, pipeline.name)] = stage_bits(pipeline)
        indexes.append(("stage", "pipeline"))
        amounts = {p.amount for p in entity.pipelines.values() if p.amount}
        for amount in sorted(amounts):
            indexes.append(("stage", amount, *live))  # covering index for boards
            # a list ordered by the pipeline's money field (``find(order_by="-amount")``, the
            # web list's sorted column) and filtered by it (``amount > 500000``, its capped
            # count): read from the index instead of sorting the whole table
            indexes.append((amount,))
        # covering index for the funnel's one scan: GROUP BY stage, reached (of one pipeline)
        scope = ("pipeline",) if entity.multi_pipeline else ()
        for amount in sorted({p.amount or "" for p in entity.pipelines.values()}):
            indexes.append((*scope, "stage", "reached", *([amount] if amount else []), *live))
    for names in entity.indexes:
        indexes.append(tuple(c for n in names for c in _member_columns(entity, n)))
    for names in entity.unique:
        cols = [c for n in names for c in _member_columns(entity, n)]
        uq = naming.unique_name(name, cols)
        constraints.append(UniqueConstraint(*cols, name=uq))
        storage.unique_constraints[uq] = (entity.name, tuple(names))
    # AUTOINCREMENT on SQLite: a deleted record's id is never given to a new one (migrate/ids.py)
    table = Table(name, storage.metadata, *columns, *constraints, sqlite_autoincrement=True)
    seen = set()
    for cols in indexes:
        if cols in seen:
            continue
        seen.add(cols)
        Index(naming.index_name(name, cols), *[table.c[c] for c in cols])
    if entity.text_search:
        event.listen(table, "after_create", _SearchIndex(name, entity.text_search))
    return table


# -- the full-text search index (kept in sync by the database itself) ---------------------------
SEARCH_CONFIG = "russian"  # PostgreSQL text search configuration: stems Russian, keeps Latin words
# PostgreSQL indexes the first SEARCH_PREFIX characters of a record's search fields: a tsvector
# holds at most 1 MB ("string is too long for tsvector"), up to ~3.5 bytes per character of
# short distinct words, so 200,000 characters always fit (about 30,000 words: a long document).
SEARCH_PREFIX = 200_000


def fts_table_name(table: str) -> str:
    """SQLite: the external-content FTS5 table indexing an entity's search fields."""
    return naming.short(f"{table}__fts")


def search_index_name(table: str, fields: tuple[str, ...] = ()) -> str:
    """PostgreSQL: the functional GIN index over the tsvector of an entity's search fields
    (its name carries a digest of the fields, so a changed list is a different index)."""
    import hashlib

    digest = hashlib.sha1((",".join(fields) + f"|left {SEARCH_PREFIX}").encode()).hexdigest()[:8]
    return naming.short(f"ix_{table}__search_{digest}")


def search_document(fields: tuple[str, ...], table: str | None = None) -> str:
    """PostgreSQL: the text indexed (and matched: it must be the same expression): the first
    SEARCH_PREFIX characters of the fields joined by spaces (``table``: columns qualified)."""
    prefix = f'"{table}".' if table else ""
    joined = " || ' ' || ".join(f"coalesce({prefix}\"{f}\", '')" for f in fields)
    return f"left({joined}, {SEARCH_PREFIX})"


def search_ddl(dialect: str, table: str, fields: tuple[str, ...]) -> list[str]:
    """The statements creating the search index of a table: on SQLite an FTS5 table with
    triggers keeping it in sync on every insert, update and delete; on PostgreSQL a GIN index
    on ``to_tsvector('russian', ...)`` (always current). Other dialects: none."""
    if dialect == "sqlite":
        fts = fts_table_name(table)
        cols = ", ".join(f'"{f}"' for f in fields)
        new = ", ".join(f'new."{f}"' for f in fields)
        old = ", ".join(f'old."{f}"' for f in fields)
        insert_new = f'INSERT INTO "{fts}"(rowid, {cols}) VALUES (new.id, {new});'
        delete_old = f'INSERT INTO "{fts}"("{fts}", rowid, {cols}) VALUES (\'delete\', old.id, {old});'
        return [
            f"CREATE VIRTUAL TABLE \"{fts}\" USING fts5({cols}, content='{table}', content_rowid='id', "
            "tokenize='unicode61 remove_diacritics 2')",
            f'CREATE TRIGGER "{fts}_ai" AFTER INSERT ON "{table}" BEGIN {insert_new} END',
            f'CREATE TRIGGER "{fts}_ad" AFTER DELETE ON "{table}" BEGIN {delete_old} END',
            f'CREATE TRIGGER "{fts}_au" AFTER UPDATE OF {cols} ON "{table}" BEGIN {delete_old} {insert_new} END',
        ]
    if dialect == "postgresql":
        return [
            f'CREATE INDEX "{search_index_name(table, fields)}" ON "{table}" USING gin '
            f"(to_tsvector('{SEARCH_CONFIG}', {search_document(fields)}))"
        ]
    return []


class _SearchIndex:
    """An ``after_create`` listener creating a table's search index, both when
    ``metadata.create_all`` runs and when a migration creates the table through alembic
    (online, or rendering SQL for a dry run)."""

    def __init__(self, table: str, fields: tuple[str, ...]):
        self.table, self.fields = table, tuple(fields)

    def __call__(self, target, connection, **kw) -> None:
        runner = kw.get("_ddl_runner")
        alembic_exec = getattr(runner, "_exec", None)
        dialect = connection.dialect if connection is not None else getattr(runner, "dialect", None)
        if dialect is None:
            return
        for statement in search_ddl(dialect.name, self.table, self.fields):
            if alembic_exec is not None:
                alembic_exec(DDL(statement))
            else:
                connection.execute(DDL(statement))


def _member_columns(entity: Entity, name: str) -> tuple[str, ...]:
    """The columns of a field or single link (a polymorphic link's entity and id columns)."""
    if name in entity.fields:
        return (name,)
    link = entity.links[name]
    if link.polymorphic:
        return (naming.link_entity_column(name), naming.link_column(name))
    return (naming.link_column(name),)


def _polymorphic_join_table(entity: Entity, link: Link, storage: Storage) -> Table:
    """A many-link to several entities: ``(source_id, target_entity, target_id)``; no foreign
    key on the target (runtime/deletes.py enforces on_delete, as for a polymorphic link)."""
    name = naming.join_table_name(entity.name, link.name)
    table = Table(
        name,
        storage.metadata,
        Column(
            naming.JOIN_SOURCE,
            id_type(),
            ForeignKey(f"{entity.name}.id", ondelete="CASCADE", name=naming.fk_name(name, naming.JOIN_SOURCE)),
            nullable=False,
        ),
        Column(naming.JOIN_TARGET_ENTITY, String(naming.MAX_NAME), nullable=False),
        Column(naming.JOIN_TARGET, id_type(), nullable=False),
        PrimaryKeyConstraint(
            naming.JOIN_SOURCE, naming.JOIN_TARGET_ENTITY, naming.JOIN_TARGET, name=naming.pk_name(name)
        ),
    )
    cols = [naming.JOIN_TARGET_ENTITY, naming.JOIN_TARGET]
    Index(naming.index_name(name, cols), *[table.c[c] for c in cols])
    return table


def _join_table(entity: Entity, link: Link, storage: Storage) -> Table:
    if link.polymorphic:
        return _polymorphic_join_table(entity, link, storage)
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
        *(Column(f.name, _column_type(f), nullable=not f.required) for f in link.fields.values()),
        *_choice_checks(name, link.fields.values()),
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
        Column("entity", String(naming.MAX_NAME), nullable=False),
        Column("record_id", id_type(), nullable=False),
        Column("pipeline", String(naming.MAX_NAME), nullable=False),
        Column("from_stage", String(naming.MAX_NAME), nullable=True),
        Column("to_stage", String(naming.MAX_NAME), nullable=False),
        Column("at", UTCDateTime(), nullable=False),
        Column("by", String(100), nullable=True),
        Column("note", Text(), nullable=True),
        Column("seconds_in_stage", Integer(), nullable=True),
        Column("source", String(20), nullable=False, server_default="move"),
        Index("ix_metacrm_history_record", "entity", "record_id", "at"),
        Index("ix_metacrm_history_to", "entity", "pipeline", "to_stage"),
        # the funnel's medians: the times spent in a stage, in order (source: covered, not read)
        Index("ix_metacrm_history_left", "entity", "pipeline", "from_stage", "seconds_in_stage", "source"),
    )
    storage.user_table = Table(
        naming.USER_TABLE,
        md,
        Column("login", String(100), primary_key=True),
        Column("name", String(200), nullable=True),
        Column("roles", Text(), nullable=False, server_default=""),  # comma-separated role names
        Column("team", String(100), nullable=True),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("email", String(254), nullable=True),  # where notifications to the user go
        Column("disabled_at", UTCDateTime(), nullable=True),  # `metacrm user disable`: no sign-in, no token
    )
    storage.journal_table = Table(
        naming.JOURNAL_TABLE,
        md,
        Column("id", id_type(), primary_key=True, autoincrement=True),
        Column("entity", String(naming.MAX_NAME), nullable=False),
        Column("record_id", id_type(), nullable=False),
        Column("action", String(10), nullable=False),  # create update delete move link unlink note
        Column("at", UTCDateTime(), nullable=False),
        Column("by", String(100), nullable=True),
        Column("changes", json_type(), nullable=True),  # {field: [old, new]}
        Column("kind", String(20), nullable=True),  # an activity's kind: note call email meeting
        Column("text", Text(), nullable=True),
        Index("ix_metacrm_journal_record", "entity", "record_id", "at"),
    )
    # notifications written by automations in the triggering transaction, sent by `metacrm deliver`
    storage.outbox_table = Table(
        naming.OUTBOX_TABLE,
        md,
        Column("id", id_type(), primary_key=True, autoincrement=True),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("automation", String(100), nullable=True),  # the automation that wrote it
        Column("entity", String(naming.MAX_NAME), nullable=True),  # the record it is about
        Column("record_id", id_type(), nullable=True),
        Column("channel", String(10), nullable=False),  # email | webhook
        Column("recipient", Text(), nullable=False),  # an e-mail address or a URL
        Column("subject", Text(), nullable=True),
        Column("body", Text(), nullable=False),
        Column("payload", json_type(), nullable=True),  # a webhook's JSON
        Column("status", String(10), nullable=False, server_default="pending"),  # pending sending sent failed
        Column("attempts", Integer(), nullable=False, server_default="0"),
        Column("next_attempt_at", UTCDateTime(), nullable=False),
        Column("claimed_until", UTCDateTime(), nullable=True),  # a sender's lease on the message
        Column("last_error", Text(), nullable=True),
        Column("sent_at", UTCDateTime(), nullable=True),
        Index("ix_metacrm_outbox_due", "status", "next_attempt_at"),
    )
    # what `metacrm tick` fired: one row per automation, record and occurrence (the due value,
    # the stage entry, the scheduled minute); the unique key makes a second firing impossible.
    # Unused occurrence columns hold 1970-01-01 (NULLs would not collide in a unique key).
    storage.fired_table = Table(
        naming.FIRED_TABLE,
        md,
        Column("id", id_type(), primary_key=True, autoincrement=True),
        Column("automation", String(100), nullable=False),
        Column("entity", String(naming.MAX_NAME), nullable=False),
        Column("record_id", id_type(), nullable=False),  # 0: the schedule of an `at` automation
        Column("key", String(100), nullable=False),  # the kind and field, or the stage (sla)
        Column("occurrence_at", UTCDateTime(), nullable=False),
        Column("occurrence_on", Date(), nullable=False),
        Column("fired_at", UTCDateTime(), nullable=False),
        UniqueConstraint(
            "automation", "entity", "record_id", "key", "occurrence_at", "occurrence_on", name="uq_metacrm_fired"
        ),
    )
    # API tokens (metacrm token create): only a hash of the secret is kept
    storage.token_table = Table(
        naming.TOKEN_TABLE,
        md,
        Column("id", id_type(), primary_key=True, autoincrement=True),
        Column("login", String(100), nullable=False),
        Column("name", String(100), nullable=True),
        Column("hash", String(64), nullable=False, unique=True),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("last_used_at", UTCDateTime(), nullable=True),
        Column("expires_at", UTCDateTime(), nullable=True),
        Column("revoked_at", UTCDateTime(), nullable=True),
        sqlite_autoincrement=True,
    )
    # sign-in to the browser app (runtime/passwords.py): an argon2id hash per login, and the
    # sessions (only a hash of the cookie's secret is kept; the CSRF token is the session's)
    storage.password_table = Table(
        naming.PASSWORD_TABLE,
        md,
        Column("login", String(100), primary_key=True),
        Column("hash", String(200), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
    )
    storage.session_table = Table(
        naming.SESSION_TABLE,
        md,
        Column("hash", String(64), primary_key=True),
        Column("login", String(100), nullable=False),
        Column("csrf", String(64), nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("expires_at", UTCDateTime(), nullable=False),
    )
    # a user's own settings (runtime/preferences.py): interface language, time zone, list columns
    storage.preference_table = Table(
        naming.PREFERENCE_TABLE,
        md,
        Column("login", String(100), primary_key=True),
        Column("key", String(100), primary_key=True),
        Column("value", json_type(), nullable=True),
        Column("updated_at", UTCDateTime(), nullable=False),
    )
    # forms (runtime/forms.py): one row per form, locked by each submission; `turns` holds each
    # round-robin role's last assigned login
    storage.form_state_table = Table(
        naming.FORM_STATE_TABLE,
        md,
        Column("form", String(100), primary_key=True),
        Column("turns", json_type(), nullable=True),
        Column("submissions", Integer(), nullable=False, server_default="0"),
        Column("updated_at", UTCDateTime(), nullable=True),
    )
    # autonumber sequences (runtime/sysfields.py): one row per field and prefix, its last number
    storage.sequence_table = Table(
        naming.SEQUENCE_TABLE,
        md,
        Column("name", String(255), primary_key=True),
        Column("value", BigInteger(), nullable=False),
    )
    if storage.model is not None and storage.model.uses_files:
        storage.files_table = files_table(md)
    storage.lock_table = Table(
        naming.LOCK_TABLE,
        md,
        Column("name", String(50), primary_key=True),
        Column("holder", String(200), nullable=False),
        Column("since", UTCDateTime(), nullable=False),
    )


def files_table(md: MetaData) -> Table:
    """The files attached to records (runtime/files.py): one row per file of a file field
    (``field`` its name) or attachment (``field`` null); the content is kept by the file store
    under its SHA-256, so the same content is stored once. Created when a model first declares a
    file field or attachments."""
    return Table(
        naming.FILES_TABLE,
        md,
        Column("id", id_type(), primary_key=True, autoincrement=True),
        Column("entity", String(naming.MAX_NAME), nullable=False),
        Column("record_id", id_type(), nullable=False),
        Column("field", String(naming.MAX_NAME), nullable=True),
        Column("name", String(255), nullable=False),
        Column("size", BigInteger(), nullable=False),
        Column("mime", String(255), nullable=False),
        Column("sha256", String(64), nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("created_by", String(100), nullable=True),
        Index("ix_metacrm_files_record", "entity", "record_id"),
        Index("ix_metacrm_files_sha256", "sha256"),
        sqlite_autoincrement=True,  # a detached file's id is never given to another
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
