"""Applying a plan: under the migration lock, in one transaction, recorded, or not at all.

PostgreSQL: the lock (an advisory transaction lock), the plan (counted inside the same
transaction), every step and the new ``metacrm_model`` row are one transaction; DDL is
transactional there, so a failure anywhere leaves the database as it was.

SQLite: the lock is a row committed before the migration. The migration itself is one
``BEGIN IMMEDIATE`` transaction with foreign keys off (a table rebuild must not fire ON DELETE
actions), checked with ``PRAGMA foreign_key_check`` before the commit; SQLite's DDL is
transactional too, so a failure rolls everything back. Before a plan that rebuilds a table,
the database file is also copied with SQLite's backup API; if, after a failure, the rolled
back database does not look like the old one (integrity check, recorded model, tables), the
copy is put back. The copy is removed once the migration is over.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from sqlalchemy import inspect

from ..errors import MetaCRMError, MigrationError
from ..model.metamodel import Model
from ..runtime.earlier import reusing_tables
from ..runtime.engine import WRITE, reading
from .audit import missing_audit_columns
from .execute import online, run_actions
from .history import model_from_record, record, recorded_row
from .lock import holder_text, pg_lock, sqlite_lock
from .plan import plan_migration
from .steps import DESTRUCTIVE, Plan
from .valueindex import drop_value_triggers, fill_rich_texts, sync_value_indexes

log = logging.getLogger("metacrm.migrate")


def default_user() -> str:
    try:
        who = getpass.getuser()
    except Exception:  # noqa: BLE001
        who = "unknown"
    return f"{who}@{socket.gethostname()}"


def plan_for_database(
    conn, model: Model, *, allow_data_loss: bool = False, user: str | None = None, count_all: bool = True
) -> Plan:
    """The plan from the model the database records to ``model`` (empty when they agree and
    no entity table can reuse ids, see ``ids.py``).
    ``count_all=False`` (applying) skips the counts that only inform (rows of a table that
    gains an optional field) and keeps those that decide a refusal."""
    row = recorded_row(conn)
    if (
        row is not None
        and row["sha256"] == model.sha256
        and not reusing_tables(conn, model)
        and not missing_audit_columns(conn, model)
    ):
        return Plan(
            model=model.name,
            old_sha256=row["sha256"],
            new_sha256=model.sha256,
            dialect=conn.dialect.name,
            allow_data_loss=allow_data_loss,
            counted=True,
        )
    old = model_from_record(row) if row is not None else None
    return plan_migration(old, model, conn, allow_data_loss=allow_data_loss, user=user, count_all=count_all)


def migrate_database(
    engine,
    model: Model,
    *,
    dry_run: bool = False,
    allow_data_loss: bool = False,
    user: str | None = None,
    lock_wait: float = 30.0,
) -> Plan:
    """Bring the database to ``model``; returns the plan (applied unless ``dry_run``).

    Raises MigrationError, writing nothing, when a step is refused (naming each), when the
    lock stays held by another migration for ``lock_wait`` seconds, or when a step fails.
    """
    user = user or default_user()
    if dry_run:
        with reading(engine) as conn:
            return plan_for_database(conn, model, allow_data_loss=allow_data_loss, user=user)
    holder = holder_text()
    started = time.perf_counter()
    try:
        if engine.dialect.name == "sqlite":
            with sqlite_lock(engine, holder, wait=lock_wait):
                plan = _apply_sqlite(engine, model, allow_data_loss=allow_data_loss, user=user)
        else:
            plan = _apply_postgresql(
                engine, model, allow_data_loss=allow_data_loss, user=user, holder=holder, wait=lock_wait
            )
    except MetaCRMError as exc:  # a failed step (raised from the driver's error) or a refusal
        log.log(logging.ERROR if exc.__cause__ is not None else logging.WARNING, "migration not applied: %s", exc)
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        log.error("migration not applied: %s: %s", type(exc).__name__, first)
        raise
    if plan:
        log.info("migration applied: %s in %.2f s by %s", summary(plan), time.perf_counter() - started, user)
    else:
        log.debug("nothing to migrate: the database holds model %s (%s)", model.name, (model.sha256 or "")[:12])
    return plan


def summary(plan: Plan) -> str:
    """One line for the log: model, from -> to, dialect, the steps by kind."""
    kinds = Counter(step.kind.replace("_", " ") for step in plan)
    destructive = sum(step.klass == DESTRUCTIVE for step in plan)
    steps = ", ".join(f"{kind} ×{n}" if n > 1 else kind for kind, n in kinds.items())
    return (
        f"model {plan.model} {(plan.old_sha256 or '')[:12] or 'new database'} -> {plan.new_sha256[:12]} "
        f"on {plan.dialect}: {len(plan)} step{'s' if len(plan) != 1 else ''} ({steps})"
        + (f", {destructive} destructive (data loss allowed)" if destructive else "")
    )


def _refuse(plan: Plan) -> None:
    if plan.refusals:
        raise MigrationError(plan.reason())


# (steps done, steps in all, the step starting or None when all are done): silent unless set
_PROGRESS: ContextVar[Callable[[int, int, object], None] | None] = ContextVar("metacrm_migrate_progress", default=None)


@contextmanager
def reporting(callback: Callable[[int, int, object], None]):
    """Call ``callback(done, total, step)`` as the steps of migrations applied inside the block
    start (``step`` None once they are all done). The command line draws its progress bar with
    it; the Python API stays silent without it."""
    token = _PROGRESS.set(callback)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def fill_derived(conn, model: Model, plan: Plan) -> None:
    """The plan's ``recompute_derived`` steps, after the others: one UPDATE for every record
    per derived field the migration can have made stale (added, changed, or reading something
    the plan changes; see migrate/derived.py), in dependency order (metacrm.runtime.derived).
    Nothing when there are none."""
    fields = [(step.entity, step.target) for step in plan if step.kind == "recompute_derived"]
    if not fields:
        return
    from ..runtime.derived import recompute_statements
    from ..storage.tables import build_storage

    for statement in recompute_statements(model, build_storage(model), fields):
        conn.execute(statement)


def apply_plan(conn, plan: Plan) -> None:
    """Run every step of ``plan`` on ``conn`` (inside the caller's transaction)."""
    current: list = [None]
    progress = _PROGRESS.get()
    steps_run = [s for s in plan if s.actions]
    started: set[int] = set()

    def before(index, step):
        if id(step) not in started:
            where = f" {step.where}" if step.entity or step.target else ""
            log.debug("step %d/%d: %s%s", len(started) + 1, len(steps_run), step.kind.replace("_", " "), where)
            if progress is not None:
                progress(len(started), len(steps_run), step)
            started.add(id(step))
        current[0] = (index, step)

    try:
        with online(conn) as ex:
            run_actions(list(plan), ex, before=before)
        if progress is not None:
            progress(len(steps_run), len(steps_run), None)
    except MetaCRMError:
        raise
    except Exception as exc:
        index, step = current[0] or (0, None)
        where = f"step {index + 1} ({step.kind.replace('_', ' ')} {step.where})" if step else "the first step"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise MigrationError(f"migration failed at {where}: {first}; nothing was changed") from exc


def _apply_postgresql(engine, model: Model, *, allow_data_loss: bool, user: str, holder: str, wait: float) -> Plan:
    with engine.connect() as conn:
        with conn.begin():
            pg_lock(conn, holder, wait=wait)
            plan = plan_for_database(conn, model, allow_data_loss=allow_data_loss, user=user, count_all=False)
            if not plan:
                return plan
            _refuse(plan)
            drop_value_triggers(conn)
            apply_plan(conn, plan)
            fill_derived(conn, model, plan)
            sync_value_indexes(conn, model)
            fill_rich_texts(conn, model)
            record(conn, model, user=user)
    return plan


def _apply_sqlite(engine, model: Model, *, allow_data_loss: bool, user: str) -> Plan:
    path = engine.url.database
    on_file = bool(path) and path != ":memory:"
    backup: Path | None = None
    before: dict | None = None
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        raw.execute("PRAGMA foreign_keys=OFF")  # outside any transaction, or it has no effect
        try:
            conn.execution_options(**{WRITE: True})
            with conn.begin():
                plan = plan_for_database(conn, model, allow_data_loss=allow_data_loss, user=user, count_all=False)
                if not plan:
                    return plan
                _refuse(plan)
                if on_file and any(step.kind == "rebuild_table" for step in plan):
                    before = _fingerprint(conn)
                    backup = _backup(path)
                drop_value_triggers(conn)
                apply_plan(conn, plan)
                fill_derived(conn, model, plan)
                sync_value_indexes(conn, model)
                fill_rich_texts(conn, model)
                if not all(step.kind in LINK_SAFE for step in plan):
                    _foreign_key_check(conn)  # reads every linking row: only when links may have moved
                record(conn, model, user=user)
        except Exception:
            if backup is not None:
                conn.invalidate()  # never hand this connection back to the pool
                _restore_if_needed(engine, path, backup, before)
                backup = None
            raise
        finally:
            if backup is not None:
                backup.unlink(missing_ok=True)
            if not conn.invalidated:
                raw.execute("PRAGMA foreign_keys=ON")
    return plan


# steps that cannot leave a link pointing at nothing (new empty columns or tables, field values,
# indexes): a plan made of these alone skips the foreign key check, which reads every linking row
# (adding an optional field stays O(1) whatever the table's size)
LINK_SAFE = frozenset(
    {
        "add_field",
        "add_entity",
        "add_index",
        "drop_index",
        "add_stage",
        "add_option",
        "add_pipeline",
        "add_system_tables",
        "add_system_columns",
        "widen_system_columns",
        "rename_field",
        "widen_field",
        "optional_field",
        "recompute_derived",
        "record_model",
        "check_rule",
        "check_fill",
    }
)


def _foreign_key_check(conn) -> None:
    rows = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
    if rows:
        shown = ", ".join(f"{table} row {rowid} → {parent}" for table, rowid, parent, _ in rows[:3])
        raise MigrationError(f"the migration would break {len(rows)} links ({shown}); nothing was changed")


# -- the SQLite safety copy ---------------------------------------------------------------------


def backup_path(path: str) -> Path:
    return Path(f"{path}.pre-migrate")


def _backup(path: str) -> Path:
    """Copy the database to ``crm.db.pre-migrate``. The copy is written without a journal and
    without fsync: it only serves a restore by this process after a failed migration (which
    syncs it first); after a crash SQLite's own journal brings the database back."""
    target = backup_path(path)
    target.unlink(missing_ok=True)  # a copy left by a killed migration: start afresh
    source = sqlite3.connect(path)
    copy = sqlite3.connect(target)
    try:
        copy.execute("PRAGMA journal_mode=OFF")
        copy.execute("PRAGMA synchronous=OFF")
        source.backup(copy)
    finally:
        copy.close()
        source.close()
    return target


def _fingerprint(conn) -> dict:
    row = recorded_row(conn)
    return {"tables": sorted(inspect(conn).get_table_names()), "sha256": row["sha256"] if row else None}


def rolled_back(engine, before: dict) -> bool:
    """Whether the database is back to what it was before the migration."""
    try:
        with reading(engine) as conn:
            if conn.exec_driver_sql("PRAGMA quick_check").scalar() != "ok":
                return False
            return _fingerprint(conn) == before
    except Exception:  # noqa: BLE001 - a database that cannot be read is not rolled back
        return False


def _restore_if_needed(engine, path: str, backup: Path, before: dict | None) -> None:
    try:
        if before is not None and rolled_back(engine, before):
            return
        engine.dispose()
        _sync(backup)
        copy = sqlite3.connect(backup)
        target = sqlite3.connect(path)
        try:
            copy.backup(target)
        finally:
            target.close()
            copy.close()
        engine.dispose()
    finally:
        backup.unlink(missing_ok=True)


def _sync(path: Path) -> None:
    """Flush the copy to disk before it is restored (it was written without fsync)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
