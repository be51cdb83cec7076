"""The CRM facade: ``metacrm.connect(model, url)`` and what a developer calls on it.

Every public method is one transaction: it validates first, then writes, and a refusal
leaves the database exactly as it was. Records are plain dicts.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar, overload

from sqlalchemy import and_, bindparam, insert, inspect, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from ..errors import FieldIssue, MetaCRMError, MigrationError, NotFound, PermissionDenied, SetupError, ValidationError
from ..model.metamodel import Entity, Model
from ..model.suggest import listing
from ..notify import DeliveryMixin
from ..storage import naming
from ..storage.tables import Storage, build_storage
from ..storage.types import now_utc
from ..types import DuplicateGroup, DuplicateMatch, Record, RecordedModel
from . import journal, linkrows, sysfields
from . import records as rec
from .access import (
    SYSTEM,
    Actor,
    archive_clause,
    archived_mode,
    check_create,
    check_row,
    readable,
    require,
    row_clause,
    scope,
    team_members,
)
from .bulk import QUIET, Issues, Misplaced, create_one, firing, insert_row, insert_rows, paused_gc
from .deletes import delete_records
from .duplicates import duplicate_groups, find_duplicates, merge_into
from .engine import driver_errors, make_engine, reading, ready, writing
from .files import FilesMixin
from .forms import FormsMixin
from .react import build_reactors
from .reads import ReadsMixin
from .records import as_id as _as_id
from .records import link_member as _link_member
from .replica import ReplicaMixin, open_replica, wrote
from .reports import ReportsMixin
from .search import SearchMixin
from .stages_api import StagesMixin
from .tags import TagsMixin
from .tasks import TasksMixin
from .users import UsersMixin, check_owners_exist, check_users_exist

if TYPE_CHECKING:
    from ..migrate.steps import Plan
    from ..validation.records import RecordValidator

# The open transactions of this thread or asyncio task, by CRM scope (a CRM object and its
# as_user() views share one): never stored on the CRM object, which threads and tasks share.
# A thread starts with none; an asyncio task (and asyncio.to_thread) starts with a copy of its
# creator's, so work it awaits from inside a transaction joins that transaction.
_OPEN: ContextVar[Mapping[object, Any] | None] = ContextVar("metacrm_open_transactions", default=None)
# The host connections joined by crm.joined(), by CRM scope (the same connection is in _OPEN).
_HOST: ContextVar[Mapping[object, Any] | None] = ContextVar("metacrm_host_connections", default=None)
T = TypeVar("T")


class _Scope:
    """The identity transactions are kept under: one per CRM object, shared by its
    as_user() views (so a view joins the transaction its thread or task has open)."""

    __slots__ = ()


def connect(
    model: Model | str | os.PathLike[str],
    url_or_engine: str | Engine = "sqlite:///crm.db",
    *,
    user: str | None = None,
    busy_timeout: float | None = None,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    files: str | os.PathLike[str] | None = None,
    read_url: str | os.PathLike[str] | Engine | None = None,
    tenant: str | None = None,
) -> CRM:
    """A CRM on the database at ``url_or_engine`` for ``model`` (a Model or a path to one).

    ``url_or_engine``: a database URL, or the host application's SQLAlchemy Engine (set up for
    metacrm by :func:`metacrm.runtime.host.adopt`; the CRM never disposes it). Options:
    ``busy_timeout`` (SQLite, seconds a writer waits for another), ``pool_size`` and
    ``max_overflow`` (the pool of a URL's engine), ``files`` (where attached files are kept: a
    directory or ``s3://BUCKET/PREFIX``; default ``$METACRM_FILES``, else beside an SQLite file,
    see docs/files.md), ``read_url`` (a streaming replica of the database, as a URL or the
    host's engine on it: lists, search, reports and the board read from it, writes and the reads of a request that wrote go to
    the database; see :mod:`metacrm.runtime.replica` and docs/scaling.md), ``tenant`` (the
    CRM of that tenant of the database: its PostgreSQL schema on the same pool, or its SQLite
    file; NotFound unless ``metacrm tenant create`` made it; docs/scaling.md; the replica
    serves the same tenant). Never changes the schema: on a new database
    call ``migrate()`` first; on a database holding another version of the model every data
    operation raises MigrationError.
    """
    if not isinstance(model, Model):
        from ..model.loader import load_model

        model = load_model(model)
    if isinstance(url_or_engine, str | os.PathLike):
        engine, owned = (
            make_engine(str(url_or_engine), busy_timeout=busy_timeout, pool_size=pool_size, max_overflow=max_overflow),
            True,
        )
    else:
        from .host import adopt

        if pool_size is not None or max_overflow is not None:
            raise SetupError("pool_size and max_overflow apply to a URL: a host engine keeps the pool it was made with")
        engine, owned = adopt(url_or_engine, busy_timeout=busy_timeout), False
    if tenant is not None:
        engine, owned = _tenant_engine(engine, owned, tenant)
    crm = CRM(model, engine, user=user)
    crm._owns_engine = owned
    if read_url is not None:
        crm.read_engine, crm._owns_read_engine = open_replica(
            engine, read_url, busy_timeout=busy_timeout, pool_size=pool_size, max_overflow=max_overflow, owned=owned
        )
    if files is not None:
        crm._files_location = os.fspath(files)
    return crm


def _tenant_engine(engine: Engine, owned: bool, tenant: str) -> tuple[Engine, bool]:
    """The engine of ``tenant`` of the database ``engine`` opens, and whether the CRM owns it."""
    from . import tenants

    try:
        tenants.check_name(tenant)
        tenants.require(engine, tenant)
        tenant_engine = tenants.for_tenant(engine, tenant)
    except BaseException:
        if owned:
            engine.dispose()
        raise
    if tenant_engine.dialect.name == "sqlite":  # its own file and engine: the root's is not needed
        if owned:
            engine.dispose()
        return tenant_engine, True
    return tenant_engine, owned


class CRM(  # ReplicaMixin wraps the operations that are not plain reads: they read the database
    ReplicaMixin,
    ReadsMixin,
    StagesMixin,
    UsersMixin,
    ReportsMixin,
    SearchMixin,
    TasksMixin,
    DeliveryMixin,
    FormsMixin,
    FilesMixin,
    TagsMixin,
):
    model: Model
    engine: Engine
    user: str | None
    storage: Storage

    def __init__(self, model: Model, engine: Engine, *, user: str | None = None) -> None:
        self.model = model
        self.engine = engine
        self.user = user
        self.storage = build_storage(model)
        self._validator_cell: list[Mapping[str, RecordValidator]] = []  # built on first use (shared by views)
        self._state: str | None = None  # "empty", "current", "other"
        self._roles: frozenset[str] | None = None
        self._owns_engine = True
        self.read_engine: Engine | None = None  # a streaming replica for reads (connect(read_url=...))
        self._owns_read_engine = False
        self._scope = _Scope()  # keys this thread's or task's open transaction in _OPEN
        self._team: str | None = None
        self._reactor_cell: list[tuple] = []  # the reactors, compiled on the first write (shared by views)
        # the journal's `by` while an automation acts: set only on the private view an automation
        # acts through (metacrm.automation.actions._actor), never on a CRM the caller shares
        self._by: str | None = None
        if user is not None:
            info = self.user_info(user)
            self._enabled(user)
            self._roles, self._team = frozenset(info["roles"]), info["team"]

    @property
    def validators(self) -> Mapping[str, RecordValidator]:
        """``{entity: RecordValidator}`` (metacrm.validation), made on first use: a command
        that only reads never imports pydantic."""
        cell = self._validator_cell
        if not cell:
            from ..validation import build_validators

            cell.append(build_validators(self.model))
        return cell[0]

    @property
    def _reactors(self) -> tuple:
        """What runs after a write (see metacrm.runtime.react), compiled on first use: a
        command that only reads never compiles the model's formulas and automations."""
        cell = self._reactor_cell
        if not cell:
            cell.append(build_reactors(self.model))
        return cell[0]

    # -- life cycle ---------------------------------------------------------------------------
    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()
        if self._owns_read_engine and self.read_engine is not None:
            self.read_engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<CRM {self.model.name} on {self.engine.url.render_as_string(hide_password=True)}>"

    # -- transactions ---------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Self]:
        """Several operations as one: all of them are written, or (on any error) none.

        ``with crm.transaction(): crm.create(...); crm.create_many(...)``. Operations inside
        see each other's writes; a nested ``transaction()`` joins the outer one. The
        transaction belongs to the thread or asyncio task that opened it: the same CRM used
        meanwhile from another thread or task works in its own transactions.
        """
        outer = self._tx
        if outer is not None and self._host_conn() is outer:  # in joined(): a savepoint of the host's
            with _savepoint(outer):
                yield self
            return
        if outer is not None:
            yield self
            return
        wrote()  # the request's later reads go to the database (metacrm.runtime.replica)
        with writing(self.engine) as conn, self._within(conn):
            yield self

    def retrying(
        self,
        fn: Callable[..., T],
        *args: Any,
        attempts: int = 3,
        delay: float = 0.05,
        max_delay: float = 1.0,
        **kw: Any,
    ) -> T:
        """``fn(*args, **kw)``, called again while it fails on a transient database failure
        (a retryable ConflictError: deadlock, serialization failure, lock wait ran out; or
        ConnectionLost), up to ``attempts`` calls in all with a growing, jittered wait between
        them; then the last error is raised. For idempotent operations only:
        ``crm.retrying(crm.move, "deal", 5, "won")``. Inside ``crm.transaction()`` it calls
        ``fn`` once (the failure aborted the whole transaction, which only its opener can
        retry). See :mod:`metacrm.runtime.retry`."""
        from .retry import retrying

        if self._tx is not None:
            attempts = 1
        return retrying(fn, *args, attempts=attempts, delay=delay, max_delay=max_delay, **kw)

    @contextmanager
    def joined(self, conn: Connection) -> Iterator[Self]:
        """Run metacrm's operations in the host application's own connection and transaction.

        ``with engine.begin() as conn, crm.joined(conn): crm.create(...)``: while the block
        runs, this thread's or task's operations on this CRM (and its as_user() views) use
        ``conn``, each as a savepoint of the host's transaction (``crm.transaction()`` too);
        metacrm commits nothing: the host's commit or rollback decides. ``conn`` must come from
        the engine this CRM was connected with (``metacrm.connect(model, engine)``).
        """
        if not isinstance(conn, Connection):
            raise SetupError(f"crm.joined() takes a SQLAlchemy Connection, not {type(conn).__name__}")
        if conn.closed or conn.invalidated:
            raise SetupError("crm.joined() was given a closed connection")
        if str(conn.get_execution_options().get("isolation_level", "")).upper() == "AUTOCOMMIT":
            raise SetupError("crm.joined() cannot use a connection in AUTOCOMMIT: there is no transaction to join")
        if conn.engine.pool is not self.engine.pool:
            raise SetupError(
                "crm.joined() takes a connection of the CRM's own engine: connect with metacrm.connect(model, engine)"
            )
        if not ready(conn):
            raise SetupError(
                "this connection was opened before metacrm.connect() set up its engine: open a new one "
                "(engine.connect() or engine.begin())"
            )
        outer = self._tx
        if outer is not None and outer is not conn:
            raise SetupError("crm.joined() inside another transaction of this CRM: finish that one first")
        token = _HOST.set({**(_HOST.get() or {}), self._scope: conn})
        try:
            with self._within(conn):
                yield self
        finally:
            _HOST.reset(token)

    def _host_conn(self):
        """The host connection this thread or task joined with crm.joined(), or None."""
        hosts = _HOST.get()
        return None if hosts is None else hosts.get(self._scope)

    @property
    def _tx(self):
        """The connection of the transaction this thread or task has open on this CRM (or on
        a view of it), or None."""
        open_now = _OPEN.get()
        return None if open_now is None else open_now.get(self._scope)

    @contextmanager
    def _within(self, conn):
        """While the block runs, this thread's or task's operations on this CRM (and on its
        as_user() views) join ``conn``'s transaction, each as a savepoint."""
        token = _OPEN.set({**(_OPEN.get() or {}), self._scope: conn})
        try:
            yield conn
        finally:
            _OPEN.reset(token)

    def _writing(self, before: Callable[[Connection], object] | None = None):
        """A write transaction, or inside crm.transaction() a savepoint: each operation stays
        all-or-nothing even when an outer transaction goes on after its refusal. ``before``:
        called with the connection before a transaction of its own begins (engine.writing)."""
        wrote()  # the request's later reads go to the database (metacrm.runtime.replica)
        outer = self._tx
        return _savepoint(outer) if outer is not None else writing(self.engine, before)

    def _log(self, conn, entries, extra=(), *, written: bool = False) -> None:
        """Journal what a write changed, then react to it (derived fields, automations) in
        the same transaction: see :mod:`metacrm.runtime.react`. ``extra``: entries the
        reactors see but the journal does not keep (the record a merge removed).
        ``written``: the entries are in the journal already (written with the record)."""
        if self._by is not None and not written:  # an automation's write: `alice (automation contract_review)`
            entries = [{**e, "by": self._by} for e in entries]
        if not written:
            journal.write(conn, self.storage, entries)
        reactors = self._reactors
        if reactors and QUIET.get():  # create_many(..., automations=False)
            reactors = tuple(r for r in reactors if not getattr(r, "automation", False))
        if extra and reactors:
            entries = [*extra, *entries]
        if reactors and entries:
            with self._within(conn):  # what the reactors write joins this transaction
                for reactor in reactors:
                    reactor(self, conn, entries)

    def _reading(self):
        """A read transaction: inside a transaction of this thread or task, that one;
        else on the read replica when the CRM has one and the read may go there (see
        :mod:`metacrm.runtime.replica`), else on the database."""
        outer = self._tx
        if outer is not None:
            return _joined(outer)
        if self.read_engine is not None:
            return self._replica_reading()
        return reading(self.engine)

    def _derived_values(self, conn, ent: Entity, records) -> None:
        """Put the computed and roll-up values, which the reactors set after the write, into
        the records a write returns (one query; nothing when the entity has none)."""
        if self._reactors and any(f.derived for f in ent.fields.values()):
            from .derived import refresh

            refresh(self, conn, ent, records)

    # -- the recorded model -------------------------------------------------------------------
    def recorded_model(self) -> RecordedModel | None:
        """The model version the database holds (sha256, name, applied_at...), or None."""
        table = self.storage.model_table
        with self._reading() as conn:
            if not inspect(conn).has_table(table.name):
                return None
            row = conn.execute(select(table).order_by(table.c.id.desc()).limit(1)).mappings().first()
        return dict(row) if row else None

    def _ready(self) -> None:
        if self._state == "current":
            return
        with self.primary():  # the version the database holds, not what a replica has replayed yet
            self._check_ready()

    def _check_ready(self) -> None:
        recorded = self.recorded_model()
        if recorded is None:
            self._state = "empty"
            raise MigrationError("the database holds no metacrm model yet: run `metacrm migrate` (crm.migrate()) first")
        if recorded["sha256"] != self.model.sha256:
            self._state = "other"
            raise MigrationError(
                f"the database holds another version of the model (sha256 {recorded['sha256'][:12]}, "
                f"applied {recorded['applied_at']:%Y-%m-%d %H:%M}) than {self.model.name} "
                f"(sha256 {self.model.sha256[:12]}): run `metacrm migrate` (`metacrm migrate --dry-run` shows the plan)"
            )
        self._earlier_metacrm()
        self._state = "current"

    def _earlier_metacrm(self) -> None:
        """Refuse a database made by an earlier metacrm (one reading transaction, nothing of
        metacrm.migrate imported): SQLite entity tables created without AUTOINCREMENT (a new
        record could get a deleted one's id and inherit its past), or entity tables without
        the created_by/updated_by columns."""
        from .earlier import missing_audit_columns, reusing_tables

        with self._reading() as conn:
            reusing = reusing_tables(conn, self.model)
            unaudited = [] if reusing else missing_audit_columns(conn, self.model, first_only=True)
        if reusing:
            self._state = "other"
            raise MigrationError(
                f"the database was made by an earlier metacrm: its tables {', '.join(reusing)} can give the id of a "
                "deleted record to a new one: run `metacrm migrate` (`metacrm migrate --dry-run` shows the plan)"
            )
        if unaudited:
            self._state = "other"
            raise MigrationError(
                f"the database was made by an earlier metacrm: its table {unaudited[0]} has no created_by/updated_by "
                "columns: run `metacrm migrate` (`metacrm migrate --dry-run` shows the plan)"
            )

    def migrate(self, *, dry_run: bool = False, allow_data_loss: bool = False, lock_wait: float = 30.0) -> Plan:
        """Bring the database to the model and record it; returns the plan (a list of steps;
        empty when the database already holds this model).

        A new database gets every table. A database holding another version of the model is
        migrated from the recorded version (see docs/migrations.md): renames are declared
        with ``renamed_from``, removed fields, links and entities are kept unless
        ``allow_data_loss``, and any refused step (destructive without the flag, data that
        does not fit, a change not supported yet) raises MigrationError naming each, with
        nothing changed. ``dry_run`` returns the plan, counted and with its SQL
        (``plan.statements``), and changes nothing. A second migration waits up to
        ``lock_wait`` seconds for a running one, then raises MigrationError naming it.
        """
        from ..migrate import migrate_database

        with reading(self.engine):  # a database that does not open: DatabaseUnavailable, said first
            pass
        with driver_errors(self.engine):
            plan = migrate_database(
                self.engine,
                self.model,
                dry_run=dry_run,
                allow_data_loss=allow_data_loss,
                user=self.user,
                lock_wait=lock_wait,
            )
        if not dry_run:
            wrote()  # the request's later reads need the new tables: the database's (metacrm.runtime.replica)
            self._state = "current"
            self.ensure_search_index()  # new or changed search fields, or indexes of an older metacrm
        return plan

    # -- helpers ------------------------------------------------------------------------------
    def _entity(self, name: str) -> Entity:
        return self.model.entity(name)

    @property
    def actor(self) -> Actor:
        """Who this CRM object acts as (row-level access applies unless it is the system)."""
        return Actor(self.user, self._roles, self._team) if self.user is not None else SYSTEM

    @property
    def _actor_or_none(self) -> Actor | None:
        return None if self.user is None else self.actor

    def _get_row(
        self, conn, entity: Entity, record_id, action: str = "read", query=None, *, archived: bool = False
    ) -> Mapping:
        """The stored row; NotFound when there is none, PermissionDenied when the acting user
        may not do ``action`` on it. An archived record may be read; any other ``action`` on it
        is refused (ConflictError: restore it first) unless ``archived`` (restore, purge).
        ``query``: another prebuilt SELECT by ``:_id`` of the row."""
        table = self.storage.table(entity.name)
        record_id = _as_id(entity, record_id)
        query = rec.row_by_id(table) if query is None else query
        row = conn.execute(query, {"_id": record_id}).mappings().first()
        if row is None:
            raise NotFound(f"{entity.name} {record_id} not found", entity=entity.name, record_id=record_id)
        if self.user is not None:
            check_row(conn, self.storage, entity, self.actor, action, row)
        if entity.archive and action != "read" and not archived and row["archived_at"] is not None:
            from .archive import refuse_archived

            refuse_archived(entity, row, action)
        return row

    def _new_rows(self, entity: Entity, values: Sequence[Mapping], now) -> tuple[list[dict], list[dict]]:
        """The rows of new records (every field and link column, the system columns, the
        initial stage and its ``reached`` bit) and each one's many-link ids. The system
        columns, the same for the whole batch, are made once and copied into each row."""
        links = rec.shape(entity).link_columns  # every row of a batch has the same keys (executemany)
        common = {"created_at": now, "updated_at": now, "version": 1, "created_by": self.user, "updated_by": self.user}
        if entity.archive:
            common.update(archived_at=None, archived_by=None)
        staged, fixed = entity.has_stages, False
        if staged and len(entity.pipelines) == 1 and not entity.pipeline_field:  # one pipeline: one start
            pipeline = next(iter(entity.pipelines.values()))
            bit = self.storage.reached_bits[(entity.name, pipeline.name)][pipeline.initial]
            common.update(pipeline=pipeline.name, stage=pipeline.initial, stage_entered_at=now, closed_at=None, reached=bit)
            fixed = True
        owner = entity.owner
        rows, manys = [], []
        for data in values:
            row, many = rec.split_values(entity, data)
            for column in links:
                if column not in row:
                    row[column] = None
            row.update(common)
            if owner and row.get("owner") is None:
                row["owner"] = self.user
            if staged and not fixed:
                self._start_in_pipeline(entity, row, now)
            elif not staged:
                row.pop("pipeline", None)
            rows.append(row)
            manys.append(many)
        return rows, manys

    def _start_in_pipeline(self, entity: Entity, row: dict, now) -> None:
        """A new row of an entity with several pipelines (or a field choosing one): the initial
        stage of its pipeline and that stage's ``reached`` bit."""
        pipeline = entity.pipelines[_pipeline_of(entity, row)]
        row.update(pipeline=pipeline.name, stage=pipeline.initial, stage_entered_at=now, closed_at=None)
        chooser = entity.fields.get(entity.pipeline_field or "")
        if chooser is not None and row.get(chooser.name) is None and pipeline.name in chooser.option_values:
            row[chooser.name] = pipeline.name  # the field shows the pipeline it chose
        row["reached"] = self.storage.reached_bits[(entity.name, pipeline.name)][pipeline.initial]

    def _initial_requires(self, entity: Entity, values: Sequence[Mapping], *, indexed: bool) -> None:
        if not entity.has_stages:
            return
        issues = []
        for index, value in enumerate(values):
            pipeline = entity.pipelines[_pipeline_of(entity, value)]
            stage = pipeline.stages[pipeline.initial]
            chosen = value.get(entity.pipeline_field) if entity.pipeline_field else None
            if chosen is not None and value.get("pipeline") and chosen != value["pipeline"]:
                issues.append(
                    FieldIssue(
                        entity.name,
                        entity.pipeline_field,
                        f"is '{chosen}' but the record is created in pipeline '{value['pipeline']}'; they must agree",
                        chosen,
                        index if indexed else None,
                    )
                )
            for name in stage.requires:
                if value.get(name) in (None, [], ""):
                    issues.append(
                        FieldIssue(
                            entity.name,
                            name,
                            f"is required to enter stage '{stage.name}'",
                            None,
                            index if indexed else None,
                        )
                    )
        if issues:
            raise rec.refused(issues)

    def _history_rows(self, entity: Entity, rows: Sequence[Mapping], ids: Sequence[int]) -> list[dict]:
        return [
            {
                "entity": entity.name,
                "record_id": record_id,
                "pipeline": row["pipeline"],
                "from_stage": None,
                "to_stage": row["stage"],
                "at": row["created_at"],
                "by": self.user,
                "note": None,
                "seconds_in_stage": None,
                "source": "create",
            }
            for row, record_id in zip(rows, ids, strict=True)
        ]

    def _split_stages(self, ent: Entity, records: list[Mapping]) -> tuple[list, list[str | None], list[FieldIssue]]:
        """Take ``stage`` out of imported records, checking it names a stage of the pipeline
        (by name or label): ``(records, stages, issues)``."""
        out, stages, issues = [], [], []
        for index, record in enumerate(records):
            if not isinstance(record, Mapping):  # the validator says what a record must be
                out.append(record)
                stages.append(None)
                continue
            record = dict(record)
            stage = record.pop("stage", None)
            stage = stage.strip() if isinstance(stage, str) else stage
            pipeline = ent.pipelines.get(_pipeline_of(ent, record))
            if stage in (None, ""):
                stage = None
            elif pipeline is not None and stage not in pipeline.stages:
                by_label = {(s.label or "").casefold(): s.name for s in pipeline.stages.values() if s.label}
                if str(stage).casefold() in by_label:
                    stage = by_label[str(stage).casefold()]
                else:
                    issues.append(
                        FieldIssue(
                            ent.name,
                            "stage",
                            f"{stage!r} is not a stage of pipeline '{pipeline.name}'; stages: {listing(pipeline.stages)}",
                            stage,
                            index,
                        )
                    )
            out.append(record)
            stages.append(stage)
        return out, stages, issues

    def _place(self, conn, ent: Entity, rows, ids, stages) -> tuple:
        """Move imported records from the initial stage to their stage, recorded as imports."""
        table = self.storage.table(ent.name)
        placed, history, changes = [], [], []
        for row, record_id, stage in zip(rows, ids, stages, strict=True):
            if stage is None or stage == row["stage"]:
                placed.append(row)
                continue
            pipeline = ent.pipelines[row["pipeline"]]
            closed = row["created_at"] if pipeline.stages[stage].closed else None
            history.append(
                {
                    "entity": ent.name,
                    "record_id": record_id,
                    "pipeline": row["pipeline"],
                    "from_stage": row["stage"],
                    "to_stage": stage,
                    "at": row["created_at"],
                    "by": self.user,
                    "note": "import",
                    "seconds_in_stage": 0,
                    "source": "import",
                }
            )
            reached = row["reached"] | self.storage.reached_bits[(ent.name, row["pipeline"])][stage]
            changes.append({"_id": record_id, "_stage": stage, "_closed": closed, "_reached": reached})
            placed.append({**row, "stage": stage, "closed_at": closed, "reached": reached})
        if changes:  # one executemany, not an UPDATE per record
            conn.execute(
                update(table)
                .where(table.c.id == bindparam("_id"))
                .values(stage=bindparam("_stage"), closed_at=bindparam("_closed"), reached=bindparam("_reached")),
                changes,
            )
        if history:
            conn.execute(insert(self.storage.history_table), history)
        return tuple(placed)

    def _write_join(
        self, conn, entity: Entity, record_id: int, many: Mapping[str, list[int]], *, replace: bool
    ) -> None:
        from sqlalchemy import delete

        for link_name, ids in many.items():
            join = self.storage.join_table(entity.name, link_name)
            link = entity.links[link_name]
            if link.fields:  # a target listed again keeps its values unless new ones are given
                kept = linkrows.fields_of(conn, self.storage, entity, link, [record_id]) if replace else {}
                given = linkrows.given_of(ids)
                pairs = linkrows.rows(self.model, entity, link, ((record_id, t, given.get(t)) for t in ids), kept)
            else:
                pairs = [rec.join_row(link, record_id, t) for t in ids]
            if replace:
                conn.execute(delete(join).where(join.c.source_id == record_id))
            if pairs:
                conn.execute(insert(join), pairs)

    # -- writes -------------------------------------------------------------------------------
    def create(self, entity: str, data: Mapping[str, Any]) -> Record:
        """Validate and store one record; returns it with its id."""
        return self.create_many(entity, [data], returning=True, _single=True)[0]

    @overload
    def create_many(
        self,
        entity: str,
        records: Iterable[Mapping[str, Any]],
        *,
        import_stages: bool = False,
        automations: bool = True,
        returning: Literal[True] = True,
        permission: str = "create",
        _single: bool = False,
    ) -> list[Record]: ...

    @overload
    def create_many(
        self,
        entity: str,
        records: Iterable[Mapping[str, Any]],
        *,
        import_stages: bool = False,
        automations: bool = True,
        returning: Literal[False],
        permission: str = "create",
        _single: bool = False,
    ) -> int: ...

    @overload
    def create_many(
        self,
        entity: str,
        records: Iterable[Mapping[str, Any]],
        *,
        import_stages: bool = False,
        automations: bool = True,
        returning: bool,
        permission: str = "create",
        _single: bool = False,
    ) -> list[Record] | int: ...

    def create_many(
        self,
        entity: str,
        records: Iterable[Mapping[str, Any]],
        *,
        import_stages: bool = False,
        automations: bool = True,
        returning: bool = True,
        permission: str = "create",
        _single: bool = False,
    ) -> list[Record] | int:
        """Store many records in one transaction: all of them, or none. Every bad record is
        reported (index, field, reason) in one ValidationError: its values, and the checks
        that need the database (owners, links, unique values, duplicate rules, placement) for
        the records whose values are good.

        Records are validated and written in batches, so memory stays bounded by the batch:
        ``returning=False`` returns only the number of records created (for bulk loads).
        ``import_stages=True`` is the explicit path for imports of records that are already
        somewhere in their pipeline: each record may carry a ``stage`` (any stage of its
        pipeline, by name or label); the record starts in the initial stage and the placement
        is written to the stage history as an ``import`` move. A placed record must fit its
        stage: the stage's ``requires`` filled and, when every move into the stage has a
        ``when``, one of those conditions true (roles are not checked). Without it, ``stage``
        is refused. ``automations=False``: the model's automations do not fire for these
        records (derived fields are computed all the same); by default they fire as for any
        create (``created`` and ``updated`` triggers; a placement fires no ``enters``).
        ``permission`` is the action whose scope the acting user needs (``"import"`` for imports).
        """
        self._ready()
        ent = self._entity(entity)
        require(self.model, self.actor, ent.name, permission)  # before any value is validated
        if _single:
            return self._create_many(ent, records, import_stages, returning, permission, True)
        with firing(automations):
            return self._create_many(ent, records, import_stages, returning, permission, False)

    def _create_many(self, ent: Entity, records, import_stages: bool, returning: bool, permission: str, single: bool):
        out: list[dict] = []
        created = 0
        issues: list[FieldIssue] = []
        flagged: list | None = None if single else []  # `warn` duplicate matches: one warning at the end
        try:
            with self._writing() as conn:
                offset = 0
                for batch in _batches(records, rec.BATCH):
                    with nullcontext() if single else paused_gc():  # the collector runs between batches
                        values, stages, positions, bad = self._validate_batch(
                            conn,
                            ent,
                            batch,
                            import_stages,
                            single,
                            permission=permission,
                            offset=offset,
                            found=flagged if not issues else [],
                        )
                        issues += [i if single else _shift(i, offset) for i in bad]
                        try:
                            if not issues:
                                first = None if single else offset
                                out.extend(
                                    self._insert_batch(conn, ent, values, stages, returning=returning, first=first)
                                )
                                created += len(values)
                            elif import_stages and any(stages):  # nothing is written: placement checked in a savepoint
                                self._dry_placement(conn, ent, values, stages)
                        except Misplaced as exc:
                            issues += [_shift(replace(i, index=positions[i.index or 0]), offset) for i in exc.issues]
                    offset += len(batch)
                if issues:
                    raise rec.refused(sorted(issues, key=lambda i: i.index or 0))
        except IntegrityError as exc:
            one = records[0] if single and isinstance(records, list | tuple) else None
            if one is not None and self.user is None:
                self._explain_links(ent, one, exc)
            if one is not None:
                one = self._validated_or_raw(ent, one)
            raise self._name_stored(ent, rec.translate_integrity(exc, self.storage, ent, one)) from exc
        except ValidationError as exc:
            named = self._name_stored(ent, exc)
            if named is exc:
                raise
            raise named from None
        if flagged:
            import warnings

            from ..errors import DuplicateWarning

            warnings.warn(DuplicateWarning.of_many(ent.name, flagged), stacklevel=3)
        return out if returning else created

    def _validated_or_raw(self, ent: Entity, data: Mapping) -> Mapping:
        """A record's values as validation leaves them (stored form), else as given."""
        try:
            return self.validators[ent.name].create(data)
        except MetaCRMError:
            return data

    def _name_stored(self, ent: Entity, exc: ValidationError) -> ValidationError:
        """A refusal for values of unique fields that stored records hold, each naming the
        record that holds it (``client 3``) when the acting user may read it, as an import
        does; the same error when no such record is named."""
        issues, named = list(exc.issues), False
        for k, issue in enumerate(issues):
            taken = issue.message == "is already used" or issue.message.endswith(
                f"is already used by another {ent.name}"
            )
            if not (taken and issue.field and issue.entity == ent.name and issue.value is not None):
                continue
            try:
                archived = "include" if ent.archive else "exclude"  # an archived record keeps its unique values
                found = self.find(ent.name, f"{issue.field} = :value", {"value": issue.value}, limit=1, archived=archived)
            except MetaCRMError:
                continue
            if found:
                holder = f"{ent.name} {found[0]['id']}"
                if found[0].get("archived_at") is not None:
                    holder = f"archived {holder} (restore or purge it)"
                message = f"{issue.value!r} is already used by {holder}"
                issues[k], named = dataclasses.replace(issue, message=message), True
        return rec.refused(issues) if named else exc

    def _dry_placement(self, conn, ent: Entity, values: list[dict], stages: list) -> None:
        """The placement problems of good records that will not be written (another record was
        refused): inserted in a savepoint that is rolled back at once, so the refusal names them
        too. Automations do not fire for them."""
        try:
            with _savepoint(conn), firing(False):
                self._insert_batch(conn, ent, values, stages, returning=False)
                raise _Undone
        except Misplaced:
            raise
        except (_Undone, IntegrityError, ValidationError):
            pass  # undone; anything else refused here is refused again once the other records are fixed

    def _explain_links(self, ent: Entity, data: Mapping, exc: IntegrityError) -> None:
        """A single create refused by a foreign key (its links were left to the keys): the
        full link check says which link points at nothing, as it would have before."""
        with self._reading() as conn:
            values = self.validators[ent.name].create(data)
            try:
                rec.check_links_exist(conn, self.storage, ent, [values])
            except ValidationError as refused:
                raise refused from exc

    def _validate_batch(
        self,
        conn,
        ent: Entity,
        batch: list,
        import_stages: bool,
        single: bool,
        *,
        permission: str,
        offset: int = 0,
        found: list | None = None,
    ) -> tuple[list[dict], list, list[int], list[FieldIssue]]:
        """``(values, stages, positions, issues)``: the good records' values and stages, their
        positions in the batch, and every issue of the bad ones (by index in the batch). A
        single record raises its issues instead. See :mod:`metacrm.runtime.bulk`."""
        validator = self.validators[ent.name]
        stages: list[str | None] = [None] * len(batch)
        issues = Issues()
        if import_stages and ent.has_stages:
            batch, stages, split = self._split_stages(ent, batch)
            issues.items += split
        batch = _chosen_by_pipeline(ent, batch)
        if sysfields.user_bound(self.user, permission):
            try:
                sysfields.refuse_readonly_values(ent, batch, indexed=not single)
            except ValidationError as exc:
                if single:
                    raise
                issues.items += exc.issues
        if single:
            if issues.items:
                raise rec.refused(issues.items)
            values = [validator.create(batch[0])]
            self._initial_requires(ent, values, indexed=False)
            positions = [0]
        else:
            values, positions = [], []
            for index, data in enumerate(batch):
                try:
                    one = validator.create(data, index=index)
                except ValidationError as exc:
                    issues.items += exc.issues
                    continue
                values.append(one)
                positions.append(index)
            issues.collect(positions, lambda: self._initial_requires(ent, values, indexed=True))
            values, positions = _good(values, positions, issues)
        if self.user is not None:
            owners = {v.get("owner") or self.user for v in values}
            check_create(conn, self.storage, ent, self.actor, owners, action=permission, records=values)
        if single:
            self._check_db(conn, ent, values, True, offset, found)
            return values, stages, positions, []
        issues.collect(positions, lambda: self._check_db(conn, ent, values, False, offset, found))
        if issues.items:
            values, positions = _good(values, positions, issues)
            stages = [stages[n] for n in positions]
            return values, stages, positions, issues.sorted()
        return values, stages, positions, []

    def _check_db(self, conn, ent: Entity, values: list[dict], single: bool, offset: int, found: list | None) -> None:
        """The checks of new records that read the database: owners, links, unique values,
        duplicate rules (one ValidationError with every issue found)."""
        issues = Issues()
        every = list(range(len(values)))
        if ent.owner or ent.user_links:
            issues.collect(every, lambda: check_owners_exist(conn, self.storage, ent, values, indexed=not single))
        issues.collect(
            every,
            lambda: rec.check_links_exist(
                conn,
                self.storage,
                ent,
                values,
                indexed=not single,
                actor=self._actor_or_none,
                trust_keys=single and self.user is None,  # the foreign keys answer; explained in _explain_links
            ),
        )
        if not single:  # a single record: the unique constraint itself answers (translated)
            issues.items += rec.unique_prechecks(conn, self.storage, ent, values)
        if any(link.unique for link in ent.links.values()):  # one-to-one: name the record holding it
            issues.items += rec.unique_link_issues(conn, self.storage, ent, values, indexed=not single)
        if ent.duplicates:
            issues.collect(every, lambda: self._check_duplicates(conn, ent, values, single, offset, sink=found))
        if issues.items:
            raise rec.refused(issues.sorted())

    def _check_duplicates(
        self,
        conn,
        ent: Entity,
        values: list[dict],
        single: bool,
        offset: int = 0,
        *,
        exclude: int | None = None,
        sink: list | None = None,
    ) -> None:
        """Refuse records that a ``block`` duplicate rule matches, and warn (DuplicateWarning)
        about those a ``warn`` rule matches. Every stored record counts (but ``exclude``, the
        record being updated); the existing record's id is named only when the acting user
        may read it."""
        import warnings

        from ..errors import DuplicateWarning

        table = self.storage.table(ent.name)
        others = [c for c in (archive_clause(ent, table), None if exclude is None else table.c.id != exclude) if c is not None]
        found = find_duplicates(conn, self.storage, ent, values, clause=and_(*others) if others else None)
        blocked = [m for m in found if m.rule.action == "block"]
        if not blocked:
            for m in found:
                warning = DuplicateWarning(
                    f"{ent.name}"
                    + ("" if single else f" record {offset + m.index}")
                    + f": {m.describe(ent.name, named=self.user is None)}",
                    entity=ent.name,
                    index=offset + m.index,
                    field=m.rule.field,
                    existing=m.existing if self.user is None else None,
                )
                if sink is not None:  # create_many: one warning for the whole call
                    sink.append(warning)
                else:
                    warnings.warn(warning, stacklevel=4)
            return
        readable = {m.existing for m in blocked}
        clause = None if self.user is None else row_clause(self.storage, ent, self.actor)
        if clause is not None:
            table = self.storage.table(ent.name)
            query = select(table.c.id).where(table.c.id.in_([i for i in readable if i is not None]), clause)
            readable = set(conn.execute(query).scalars())
        raise rec.refused(
            [
                FieldIssue(
                    ent.name,
                    m.rule.field,
                    m.describe(ent.name, named=m.existing is None or m.existing in readable),
                    values[m.index].get(m.rule.field),
                    None if single else m.index,
                )
                for m in blocked
            ]
        )

    def find_duplicates(self, entity: str, data: Mapping[str, Any]) -> list[DuplicateMatch]:
        """The stored records a prospective record would duplicate, by rule (``block`` and
        ``warn`` alike): ``[{"rule", "match", "action", "field", "id"}]``; nothing is written."""
        self._ready()
        ent = self._entity(entity)
        values = self.validators[ent.name].create(data)
        with self._reading() as conn:
            clause = row_clause(self.storage, ent, self.actor)  # archived records are no duplicates
            found = find_duplicates(conn, self.storage, ent, [values], clause=clause)
        return [
            {
                "rule": m.rule.describe(),
                "match": m.rule.match,
                "action": m.rule.action,
                "field": m.rule.field,
                "id": m.existing,
            }
            for m in found
        ]

    def duplicates(self, entity: str) -> list[DuplicateGroup]:
        """Groups of stored records that duplicate each other under the entity's rules:
        ``[{"rule", "match", "action", "records": [ids...]}]`` (only records the user may read)."""
        self._ready()
        ent = self._entity(entity)
        with self._reading() as conn:
            clause = row_clause(self.storage, ent, self.actor)  # archived records are no duplicates
            return duplicate_groups(conn, self.storage, ent, clause=clause)

    def merge(self, entity: str, keep: int, other: int) -> Record:
        """Merge record ``other`` into record ``keep`` in one transaction: every link, join
        row, stage history entry and journal entry of ``other`` moves to ``keep``; ``keep``'s
        empty fields and single links take ``other``'s values; ``other`` is removed and a
        ``merge`` entry is journaled. Returns the kept record."""
        self._ready()
        ent = self._entity(entity)
        with self._writing() as conn:
            kept = self._get_row(conn, ent, keep, "update")
            gone = self._get_row(conn, ent, other, "delete")
            if kept["id"] == gone["id"]:
                raise ValidationError(f"cannot merge {ent.name} {kept['id']} into itself")
            before = rec.rows_to_records(conn, self.storage, ent, [kept])[0]
            # the reactors (not the journal) see the removal of `other` with its values
            removed = rec.rows_to_records(conn, self.storage, ent, [gone])[0] if self._reactors else None
            moved = merge_into(conn, self.storage, ent, kept["id"], gone["id"])
            columns = [*ent.fields]
            for link in ent.links.values():
                if not link.many:
                    columns.append(naming.link_column(link.name))
                    if link.polymorphic:
                        columns.append(naming.link_entity_column(link.name))
            fills = {c: gone[c] for c in columns if kept[c] is None and gone[c] is not None}
            delete_records(conn, self.storage, ent.name, {gone["id"]})
            table = self.storage.table(ent.name)
            now = now_utc()
            conn.execute(
                update(table)
                .where(table.c.id == kept["id"])
                .values(**fills, updated_at=now, updated_by=self.user, version=table.c.version + 1)
            )
            row = conn.execute(select(table).where(table.c.id == kept["id"])).mappings().one()
            after = rec.rows_to_records(conn, self.storage, ent, [row])[0]
            changes = journal.diff(ent, before, after)
            text = f"merged {ent.name} {gone['id']}" + "".join(f"; {k}: {v}" for k, v in moved.items())
            extra = ()
            if removed is not None:
                merged = f"merged into {ent.name} {kept['id']}"
                gone_values = journal.diff(ent, removed, None)
                extra = [journal.entry(ent.name, gone["id"], "delete", now, self.user, gone_values, text=merged)]
            self._log(conn, [journal.entry(ent.name, kept["id"], "merge", now, self.user, changes, text=text)], extra)
            self._derived_values(conn, ent, [after])
        return after

    def _insert_batch(
        self,
        conn,
        ent: Entity,
        values: list[dict],
        stages: list,
        *,
        returning: bool = True,
        first: int | None = None,
    ) -> list[dict]:
        table = self.storage.table(ent.name)
        now = now_utc()
        rows, manys = self._new_rows(ent, values, now)  # a stage's reached mask starts with its initial bit
        sysfields.number_rows(conn, self.storage, ent, rows, self.model.timezone)
        if len(rows) == 1 and conn.dialect.name == "postgresql" and not any(stages) and _plain_links(ent, manys[0]):
            return self._insert_one(conn, ent, rows[0], manys[0], now, returning=returning)
        if len(rows) == 1:
            ids = [insert_row(conn, table, rows[0])]
        else:  # ids taken up front, then one plain executemany (RETURNING in order costs a statement per row)
            ids = rec.allocate_ids(conn, table, len(rows))
            for row, record_id in zip(rows, ids, strict=True):
                row["id"] = record_id
            insert_rows(conn, table, rows)
        shown: dict[int, dict] = {}  # record id -> {"<link>.link": rows} for links with fields
        for link in rec.many_links(ent):
            if link.fields:
                index = None if first is None else {record_id: first + n for n, record_id in enumerate(ids)}
                pairs = linkrows.rows(
                    self.model,
                    ent,
                    link,
                    (
                        (record_id, t, linkrows.given_of(many.get(link.name)).get(t))
                        for record_id, many in zip(ids, manys, strict=True)
                        for t in many.get(link.name, ())
                    ),
                    indexes=index,
                )
                key = linkrows.key(link.name)
                for pair in pairs:
                    shown.setdefault(pair["source_id"], {}).setdefault(key, []).append(
                        linkrows.shown(link, pair["target_id"], pair)
                    )
            elif not link.polymorphic:  # (source, target) tuples, no dict per pair
                name = link.name
                pairs = [(record_id, t) for record_id, many in zip(ids, manys, strict=True) for t in many.get(name, ())]
                if pairs:
                    insert_rows(conn, self.storage.join_table(ent.name, name), pairs, JOIN_KEYS)
                continue
            else:
                pairs = [
                    rec.join_row(link, record_id, t)
                    for record_id, many in zip(ids, manys, strict=True)
                    for t in many.get(link.name, ())
                ]
            if pairs:
                insert_rows(conn, self.storage.join_table(ent.name, link.name), pairs)
        if ent.has_stages:  # the "create" rows of the stage history, as tuples
            by = self.user
            history = [
                (ent.name, record_id, row["pipeline"], None, row["stage"], row["created_at"], by, None, None, "create")
                for row, record_id in zip(rows, ids, strict=True)
            ]
            insert_rows(conn, self.storage.history_table, history, HISTORY_KEYS)
            rows = self._place(conn, ent, rows, ids, stages)
        if not returning and not self._reactors:  # the records would serve only the journal
            for row, record_id in zip(rows, ids, strict=True):
                row["id"] = record_id
            entries = journal.created_entries_of_rows(ent, rows, manys, now, self.user)
            if entries is not None:
                self._log(conn, entries)  # one executemany
                if ent.has_stages and any(stages):
                    self._placed_fit(conn, ent, rows, ids)
                self._check_rules(conn, ent, ids, first=first, created=True)
                return []
        out = []
        plain = rec.shape(ent).plain_many
        for record_id, row, many in zip(ids, rows, manys, strict=True):
            # _new_rows made every field and link column already (executemany needs equal keys)
            row["id"] = record_id  # written already: the row is only read from here on
            linked = {k: sorted(v) if k in plain else sorted(v, key=rec.ref_key) for k, v in many.items()}
            for k, rows_ in shown.get(record_id, {}).items():
                linked[k] = sorted(rows_, key=lambda r: r["id"])
            out.append(rec.row_to_record(ent, row, linked))
        self._log(conn, journal.created_entries(ent, out, now, self.user))  # one executemany
        if ent.has_stages and any(stages):  # after the reactors: a guard may read a derived field
            self._placed_fit(conn, ent, rows, ids)
        self._check_rules(conn, ent, ids, first=first, created=True)
        self._derived_values(conn, ent, out)
        return out if returning else []

    def _insert_one(self, conn, ent: Entity, row: dict, many: dict, now, *, returning: bool) -> list[dict]:
        """PostgreSQL, one new record: the row, its join rows, its stage history row and its
        journal row in one statement (one round trip; see bulk.create_statement), then the
        reactors and checks as for a batch."""
        record = rec.row_to_record(ent, {**row, "id": 0}, {k: sorted(v) for k, v in many.items()})
        entry = journal.created_entries(ent, [record], now, self._by or self.user)[0]
        history = self._history_rows(ent, [row], [0])[0] if ent.has_stages else None
        record_id = create_one(conn, self.storage, ent, row, many, history, entry)
        record["id"] = entry["record_id"] = record_id
        self._log(conn, [entry], written=True)
        self._check_rules(conn, ent, [record_id], created=True)
        self._derived_values(conn, ent, [record])
        return [record] if returning else []

    def _placed_fit(self, conn, ent: Entity, rows, ids) -> None:
        """Refuse imported records that do not fit the stage they were placed in (its
        ``requires``, the ``when`` of the moves into it): see moves.placement_problems."""
        from .moves import placement_problems

        table = self.storage.table(ent.name)
        stored = [{**row, "id": record_id} for row, record_id in zip(rows, ids, strict=True)]
        if self._reactors:  # derived values (and automations) may have changed the rows
            fresh = {}
            for start in range(0, len(ids), rec.BATCH):
                query = select(table).where(table.c.id.in_(ids[start : start + rec.BATCH]))
                fresh.update({r["id"]: dict(r) for r in conn.execute(query).mappings()})
            stored = [fresh.get(row["id"], row) for row in stored]
        problems = placement_problems(conn, self.storage, ent, stored)
        if problems:
            refused = rec.refused(
                [
                    FieldIssue(
                        ent.name, name, reason, stored[n].get(name) if name != "stage" else stored[n]["stage"], n
                    )
                    for n, name, reason in problems
                ]
            )
            raise Misplaced(str(refused), refused.issues)

    def update(
        self,
        entity: str,
        record_id: int,
        data: Mapping[str, Any],
        *,
        version: int | None = None,
        _action: str = "update",
    ) -> Record:
        """Change fields and links of one record. With ``version``, refuse (ConflictError)
        when the record changed since that version was read. The journal records the fields
        and links whose value changed."""
        self._ready()
        ent = self._entity(entity)
        require(self.model, self.actor, ent.name, "update")  # before any value is validated
        values = self.validators[ent.name].patch(data)
        table = self.storage.table(ent.name)
        try:
            with self._writing() as conn:
                current = self._get_row(conn, ent, record_id, "update")
                self._check_readonly(conn, ent, current, values)
                if sysfields.user_bound(self.user):
                    sysfields.refuse_readonly_changes(ent, values, current)
                if "owner" in values and values["owner"] != current.get("owner") and self.user is not None:
                    check_row(conn, self.storage, ent, self.actor, "reassign", current)
                    self._check_new_owner(conn, ent, current, values["owner"])
                chosen = values.get(ent.pipeline_field) if ent.pipeline_field else None
                if chosen is not None and chosen != current["pipeline"]:
                    raise rec.refused(
                        [
                            FieldIssue(
                                ent.name,
                                ent.pipeline_field,
                                f"chooses the pipeline, which is fixed at creation ('{current['pipeline']}'); "
                                f"it cannot become '{chosen}'",
                                chosen,
                            )
                        ]
                    )
                new_owner = values.get("owner") is not None and values["owner"] != current.get("owner")
                if new_owner or any(f.name in values for f in ent.user_links):
                    check_users_exist(
                        conn, self.storage, ent, [values if new_owner else {**values, "owner": None}], current=current
                    )
                rec.check_links_exist(conn, self.storage, ent, [values], actor=self._actor_or_none)
                if any(ent.links[k].unique for k in values if k in ent.links):
                    held = rec.unique_link_issues(
                        conn, self.storage, ent, [values], indexed=False, exclude=current["id"]
                    )
                    if held:
                        raise rec.refused(held)
                before = rec.rows_to_records(conn, self.storage, ent, [current])[0]
                row, many = rec.split_values(ent, values)
                row.pop("pipeline", None)
                row.update(updated_at=now_utc(), updated_by=self.user, version=table.c.version + 1)
                result = conn.execute(update(table).where(rec.where_id(table, current["id"], version)).values(**row))
                if result.rowcount == 0:
                    from ..errors import ConflictError

                    raise ConflictError(
                        f"{ent.name} {current['id']} was changed by someone else (version {current['version']}, "
                        f"you had {version}); read it again and retry",
                        entity=ent.name,
                        record_id=current["id"],
                        expected_version=version,
                        actual_version=current["version"],
                    )
                self._write_join(conn, ent, current["id"], many, replace=True)
                # read back as written, even when a reassignment took it out of the user's sight
                fresh = conn.execute(rec.row_by_id(table), {"_id": current["id"]}).mappings().one()
                after = rec.rows_to_records(conn, self.storage, ent, [fresh])[0]
                if any(r.field in values or (r.within and r.within in values) for r in ent.duplicates):
                    # a changed value may make the record a duplicate, as a create would
                    self._check_duplicates(conn, ent, [after], True, exclude=current["id"])
                self._journal_change(conn, ent, before, after, _action)
                self._check_rules(conn, ent, [current["id"]], row=fresh, touched=list(values))
                self._derived_values(conn, ent, [after])
                return after
        except IntegrityError as exc:
            raise self._name_stored(ent, rec.translate_integrity(exc, self.storage, ent, values)) from exc

    def _check_new_owner(self, conn, ent: Entity, current: Mapping, owner) -> None:
        """A reassignment may not take a record out of its user's sight: with a ``team`` scope the
        new owner must be of the user's team, and the user must still be able to read the record
        afterwards. Said as such (rather than a later "may not read" of the record just written)."""
        if owner is None:
            return
        members = team_members(conn, self.storage, self.actor)
        fault = None
        if scope(self.model, self.actor, ent.name, "reassign") == "team" and self.actor.team and owner not in members:
            fault = f"who is not in team '{self.actor.team}' (scope for reassign: team)"
        elif not readable(self.model, self.actor, ent, owner, members, {**current, "owner": owner}):
            granted = scope(self.model, self.actor, ent.name, "read")
            fault = f"whose records user '{self.user}' may not read (scope for read: {granted})"
        if fault:
            raise PermissionDenied(
                f"user '{self.user}' may not reassign {ent.name} {current['id']} to '{owner}', {fault}",
                action="reassign",
                user=self.user,
                entity=ent.name,
                record_id=current["id"],
            )

    def delete(self, entity: str, record_id: int) -> dict[str, list[int]]:
        """Delete one record and what its links cascade to; refused when a ``restrict`` link
        points at it. Returns the deleted ids by entity. On an entity with ``archive: true``
        the record is archived instead (kept, hidden, links untouched: docs/archive.md) and
        ``{entity: [id]}`` is returned; :meth:`purge` removes it for good."""
        self._ready()
        ent = self._entity(entity)
        if ent.archive:
            from .archive import archive

            with self._writing() as conn:
                return archive(self, conn, ent, record_id)
        return self._remove(ent, record_id)

    def restore(self, entity: str, record_id: int) -> Record:
        """Bring an archived record back (an entity with ``archive: true``): it shows in lists,
        reports and links again. Needs the ``delete`` right on the record; refused when it is
        not archived, or when a ``block`` duplicate rule matches a live record. Returns it."""
        from .archive import restore

        self._ready()
        ent = self._entity(entity)
        with self._writing() as conn:
            return restore(self, conn, ent, record_id)

    def purge(self, entity: str, record_id: int) -> dict[str, list[int]]:
        """Remove a record for good, as a delete without ``archive: true`` does (the links'
        ``on_delete`` rules apply: cascades, restricts, set_null). On an entity with ``archive:
        true`` the record may be archived or live. Needs the ``delete`` right. Returns the
        removed ids by entity."""
        self._ready()
        return self._remove(self._entity(entity), record_id)

    def _remove(self, ent: Entity, record_id) -> dict[str, list[int]]:
        with self._writing() as conn:
            row = self._get_row(conn, ent, record_id, "delete", archived=True)
            return self._remove_rows(conn, ent, [row])

    def purge_archived(self, entity: str) -> dict[str, list[int]]:
        """Purge every archived record of an entity with ``archive: true`` that the acting user
        may delete (``metacrm purge ENTITY --archived``), in one transaction: refused as a
        whole when a ``restrict`` link points at one. Returns the removed ids by entity."""
        self._ready()
        ent = self._entity(entity)
        archived_mode(ent, "only")  # an entity without archive: refused, naming it
        require(self.model, self.actor, ent.name, "delete")
        table = self.storage.table(ent.name)
        query = select(table).where(row_clause(self.storage, ent, self.actor, "delete", archived="only"))
        with self._writing() as conn:
            rows = conn.execute(query.order_by(table.c.id)).mappings().all()
            return self._remove_rows(conn, ent, rows) if rows else {}

    def _remove_rows(self, conn, ent: Entity, rows: Sequence[Mapping]) -> dict[str, list[int]]:
        """Remove stored rows (already checked) for good with what their links cascade to,
        journaled: a delete, a purge."""
        roots = {row["id"]: row for row in rows}
        before = {r["id"]: r for r in rec.rows_to_records(conn, self.storage, ent, rows)}
        cleared: list = []
        removed: dict | None = {} if self._reactors else None  # cascaded records' values, for the reactors
        deleted = delete_records(conn, self.storage, ent.name, set(roots), cleared=cleared, removed=removed)
        now = now_utc()
        origin = f"{ent.name} {rows[0]['id']}" if len(rows) == 1 else f"{len(rows)} archived {ent.name} records"
        cause = f"cascaded from {origin}"

        def values_of(name: str, deleted_id: int) -> dict | None:
            got = (removed or {}).get(name, {}).get(deleted_id)
            return None if got is None else journal.diff(self.model.entities[name], got, None)

        def root_entry(rid: int):
            # an archived record's delete was journaled (and fired `deleted`) when it was archived
            action = "purge" if ent.archive and roots[rid]["archived_at"] is not None else "delete"
            return journal.entry(ent.name, rid, action, now, self.user, journal.diff(ent, before[rid], None))

        entries = [
            root_entry(deleted_id)
            if name == ent.name and deleted_id in roots
            else journal.entry(name, deleted_id, "delete", now, self.user, values_of(name, deleted_id), text=cause)
            for name, ids in deleted.items()
            for deleted_id in sorted(ids)
        ]
        entries += [  # links of surviving records that the delete emptied
            journal.entry(
                source,
                source_id,
                "unlink",
                now,
                self.user,
                {link: [journal.safe(old), None]},
                text=f"by the delete of {origin}",
            )
            for source, source_id, link, old in cleared
        ]
        self._log(conn, entries)
        if cleared:  # surviving records whose link the delete emptied keep their rules and stages
            from .rules import check_emptied

            check_emptied(conn, self.storage, cleared)
        self._removed(conn, deleted)
        return {name: sorted(ids) for name, ids in deleted.items()}

    def _removed(self, conn, removed: Mapping[str, set[int]]) -> None:
        """Called in the transaction of every removal for good (a delete without ``archive:
        true``, a purge, with their cascades: ``{entity: ids}``), after the rows are gone: the
        place for what must follow a record out (its files: marked for ``metacrm prune``).
        Archiving is not a removal and does not come here."""

    def link(self, entity: str, record_id: int, name: str, target: Any, values: Mapping | None = None) -> Record:
        """Link a record to a target through a link or an inverse link (a client's ``deals``).
        ``values``: the fields of a many-link that carries them (``{"qty": 3}``), set on the
        new pair, or changed on a pair already linked (the fields not given keep theirs)."""
        return self._relink(entity, record_id, name, target, add=True, values=values)

    def unlink(self, entity: str, record_id: int, name: str, target: Any = None) -> Record:
        """Remove a link (for a many-link or an inverse, the one to ``target``)."""
        return self._relink(entity, record_id, name, target, add=False)

    def _relink(self, entity: str, record_id: int, name: str, target, *, add: bool, values=None) -> dict:
        self._ready()
        ent = self._entity(entity)
        _link_member(ent, name)
        if name in ent.inverses:  # act on the declaring side
            inv = ent.inverses[name]
            if target is None:
                raise ValidationError(f"{ent.name}.{name}: which {inv.source} to unlink? give its id")
            value = (
                {"entity": ent.name, "id": _as_id(ent, record_id)}
                if self.model.entities[inv.source].links[inv.link].polymorphic
                else _as_id(ent, record_id)
            )
            # an unlink checks it points here
            self._relink(inv.source, target, inv.link, value, add=add, values=values)
            return self.get(entity, record_id)
        user_link = ent.fields.get(name)  # a `to: user` link is held as a field
        if user_link is not None and values:
            raise ValidationError(f"{ent.name}.{name}: a link to users carries no values")
        if user_link is not None and user_link.type == "users":
            return self._relink_users(ent, record_id, name, target, add=add)
        link = ent.links.get(name)
        given = linkrows.validate(self.model, ent, link, values) if values and link is not None else {}
        if user_link is not None or not link.many:
            current = self.get(entity, record_id)
            if not add and target is None and current[name] is None:
                raise NotFound(_nothing_linked(ent, record_id, name))
            if target is not None:
                given = self.validators[ent.name].patch({name: target})[name]
                if not add and current[name] != given:
                    raise NotFound(_not_linked(ent, record_id, name, given))
                if add and current[name] == given:
                    with self._reading() as conn:
                        self._get_row(conn, ent, record_id, "update")  # refused as the update would be
                    return current  # already linked there: nothing changes, the version stays
            return self.update(entity, record_id, {name: target if add else None}, _action="link" if add else "unlink")
        from sqlalchemy import delete

        targets = self.validators[ent.name].patch({name: [] if target is None else [target]})[name]
        join = self.storage.join_table(ent.name, name)
        table = self.storage.table(ent.name)
        with self._writing() as conn:
            row = self._get_row(conn, ent, record_id, "update")
            before = rec.rows_to_records(conn, self.storage, ent, [row])[0]
            if add:
                rec.check_links_exist(conn, self.storage, ent, [{name: targets}], actor=self._actor_or_none)
                present = {
                    rec.ref_key(t)
                    for t in rec.linked_targets(
                        conn, join, link, join.c.source_id == row["id"], rec.targets_clause(join, link, targets)
                    )
                }
                missing = [t for t in targets if rec.ref_key(t) not in present]
                changed = 0
                if given and present:  # the pairs already linked take the values given
                    stored = linkrows.fields_of(conn, self.storage, ent, link, [row["id"]])
                    for t in present:
                        if any(stored.get((row["id"], t), {}).get(k) != v for k, v in given.items()):
                            changed += linkrows.set_values(conn, self.storage, ent, link, row["id"], t, given)
                if not missing and not changed:
                    return before  # already linked: nothing changes, the version stays
                if missing and link.polymorphic:
                    conn.execute(insert(join), [rec.join_row(link, row["id"], t) for t in missing])
                elif missing:
                    pairs = linkrows.rows(self.model, ent, link, ((row["id"], t, given) for t in missing))
                    conn.execute(insert(join), pairs)
            else:
                clause = join.c.source_id == row["id"]
                if target is not None:
                    clause = clause & rec.targets_clause(join, link, targets)
                if not conn.execute(delete(join).where(clause)).rowcount:
                    if target is None:
                        raise NotFound(_nothing_linked(ent, row["id"], name))
                    raise NotFound(_not_linked(ent, row["id"], name, targets[0]))
            conn.execute(
                update(table)
                .where(table.c.id == row["id"])
                .values(updated_at=now_utc(), updated_by=self.user, version=table.c.version + 1)
            )
            fresh = self._get_row(conn, ent, row["id"])
            after = rec.rows_to_records(conn, self.storage, ent, [fresh])[0]
            self._journal_change(conn, ent, before, after, "link" if add else "unlink")
            self._check_rules(conn, ent, [row["id"]], row=fresh, touched=[name])
            self._derived_values(conn, ent, [after])
            return after

    def _relink_users(self, ent: Entity, record_id, name: str, target, *, add: bool) -> dict:
        """Link or unlink users (logins) of a ``to: user`` many-link: an update of its list."""
        current = self.get(ent.name, record_id)
        held = list(current[name])
        given = self.validators[ent.name].patch({name: target})[name] or []
        if add:
            if not given:
                raise ValidationError(f"{ent.name}.{name}: which user to link? give a login", entity=ent.name)
            chosen = held + [login for login in given if login not in held]
        elif target is None:
            if not held:
                raise NotFound(_nothing_linked(ent, record_id, name))
            chosen = []
        else:
            absent = [login for login in given if login not in held]
            if absent:
                raise NotFound(_not_linked(ent, record_id, name, absent[0]))
            chosen = [login for login in held if login not in given]
        if chosen == held:
            with self._reading() as conn:
                self._get_row(conn, ent, record_id, "update")  # refused as the update would be
            return current  # already linked: nothing changes, the version stays
        return self.update(ent.name, record_id, {name: chosen or None}, _action="link" if add else "unlink")

    def _check_rules(
        self,
        conn,
        ent: Entity,
        ids: Sequence[int],
        *,
        first: int | None = None,
        created: bool = False,
        row: Mapping | None = None,
        touched: Sequence[str] = (),
    ) -> None:
        """The entity's rules, ``required_if`` fields and, for a stored ``row`` whose ``touched``
        members a write set, the requires of the stage it sits in (metacrm.runtime.rules)."""
        from . import rules

        if row is not None:
            rules.check_stage_keeps(conn, self.storage, ent, row, touched)
        if created:
            rules.check_created(conn, self.storage, ent, ids, first=first)
        else:
            rules.check_stored(conn, self.storage, ent, ids)

    def _check_readonly(self, conn, ent: Entity, current: Mapping, values: Mapping) -> None:
        """``readonly_if``: binds every caller but the model's own automations."""
        if not getattr(self, "_automation_chain", ()) and any(f.readonly_if for f in ent.fields.values()):
            from .rules import check_readonly

            check_readonly(conn, self.storage, ent, current, values)

    def _journal_change(self, conn, ent: Entity, before: Mapping, after: Mapping, action: str) -> None:
        """A journal row with the fields and links that changed (none when nothing did)."""
        changes = journal.diff(ent, before, after)
        if changes:
            self._log(
                conn,
                [journal.entry(ent.name, after["id"], action, after["updated_at"], self.user, changes)],
            )


# the columns of a plain join row and of a stage history row, in the order of the tuples
# _insert_batch builds (see _history_rows for the same row as a mapping)
JOIN_KEYS = (naming.JOIN_SOURCE, naming.JOIN_TARGET)
HISTORY_KEYS = ("entity", "record_id", "pipeline", "from_stage", "to_stage", "at", "by", "note", "seconds_in_stage", "source")


def _not_linked(ent: Entity, record_id, name: str, target) -> str:
    if name in ent.fields:  # a `to: user` link
        shown = f"user '{target}'"
    elif isinstance(target, dict):
        shown = f"{target['entity']} {target['id']}"
    else:
        shown = f"{ent.links[name].target} {target}"
    return f"{ent.name} {record_id} is not linked to {shown} through {name}: nothing to unlink"


def _plain_links(ent: Entity, many: Mapping) -> bool:
    """Whether a new record's many-links are all plain id pairs (what the one-statement create
    of bulk.create_statement writes): none given carries fields or points at several entities."""
    return not any(
        ent.links[name].fields or ent.links[name].polymorphic for name, targets in many.items() if targets
    )


def _nothing_linked(ent: Entity, record_id, name: str) -> str:
    return f"{ent.name} {record_id} is not linked to anything through {name}: nothing to unlink"


def _chosen_by_pipeline(entity: Entity, batch: list) -> list:
    """The records of a batch, those given a ``pipeline`` and no value for the entity's
    ``pipeline_field`` with the pipeline's name in that field (before validation, so a
    required field is filled, as the docs say)."""
    chooser = entity.fields.get(entity.pipeline_field or "") if entity.has_stages else None
    if chooser is None:
        return batch
    out = []
    for data in batch:
        name = data.get("pipeline") if isinstance(data, Mapping) else None
        if isinstance(name, str) and name.strip() in chooser.option_values and data.get(chooser.name) in (None, ""):
            data = {**data, chooser.name: name.strip()}
        out.append(data)
    return out


def _pipeline_of(entity: Entity, values: Mapping) -> str:
    """The pipeline a new record joins: ``pipeline`` when given, else the value of the
    entity's ``pipeline_field``, else the first declared. (On raw input the name may be
    unknown; validation reports it.)"""
    name = values.get("pipeline")
    if name in (None, "") and entity.pipeline_field:
        name = values.get(entity.pipeline_field)
    if name in (None, ""):
        return next(iter(entity.pipelines))
    return name.strip() if isinstance(name, str) else str(name)


@contextmanager
def _savepoint(conn):
    with driver_errors(conn.engine), conn.begin_nested():
        yield conn


@contextmanager
def _joined(conn):
    """The open transaction's connection, left for its owner to commit or roll back."""
    with driver_errors(conn.engine):
        yield conn


def _batches(records: Iterable, size: int):
    batch: list = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Undone(Exception):
    """Raised to roll back a savepoint whose writes only served to check something."""


def _good(values: list[dict], positions: list[int], issues: Issues) -> tuple[list[dict], list[int]]:
    """The values (and their positions in the batch) of the records with no issue."""
    bad = issues.bad
    kept = [(v, n) for v, n in zip(values, positions, strict=True) if n not in bad]
    return [v for v, _ in kept], [n for _, n in kept]


def _shift(issue: FieldIssue, offset: int | None) -> FieldIssue:
    """The issue with its index moved from batch to whole-input numbering (None: unindexed)."""
    from dataclasses import replace

    if offset is None:
        return replace(issue, index=None)
    return replace(issue, index=(issue.index or 0) + offset)
