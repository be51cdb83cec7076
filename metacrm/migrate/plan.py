"""``plan_migration(old, new, conn=None)``: the plan that takes a database from one model
version to another: typed steps, classed, counted on the live database when ``conn`` is
given, with the SQL each will run, compiled for the dialect."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.exc import SQLAlchemyError

from ..errors import MigrationError
from ..model.metamodel import Model
from ..runtime.earlier import reusing_tables
from ..storage.types import now_utc
from .audit import missing_audit_columns
from .context import Live
from .diff import diff_models
from .execute import render
from .steps import Plan

DIALECTS = ("sqlite", "postgresql")


def plan_migration(
    old: Model | None,
    new: Model,
    conn=None,
    *,
    allow_data_loss: bool = False,
    dialect: str | None = None,
    user: str | None = None,
    now: dt.datetime | None = None,
    sql: bool = True,
    count_all: bool = True,
) -> Plan:
    """The steps from ``old`` (None: an empty database) to ``new``.

    With ``conn`` (a connection to the database holding ``old``) every step is counted on the
    live data (rows affected, duplicates, NULLs...) and refused where the data does not allow
    it; without it the plan is the model diff alone, for ``dialect`` (default sqlite).
    The same model on a database that can still reuse ids (``ids.py``) gets the rebuilds
    that stop it. Nothing is written. ``sql=False`` skips compiling the SQL; ``count_all=False`` skips the
    counts that decide nothing (a step's ``informational`` measure), which keeps applying an
    optional new field O(1) whatever the size of its table.
    """
    if conn is not None:
        dialect = conn.dialect.name
    dialect = dialect or "sqlite"
    if dialect not in DIALECTS:
        raise MigrationError(f"unsupported dialect '{dialect}': use {' or '.join(DIALECTS)}")
    if (
        old is not None
        and old.sha256 == new.sha256
        and (conn is None or not (reusing_tables(conn, new) or missing_audit_columns(conn, new)))
    ):
        return Plan(
            model=new.name,
            old_sha256=old.sha256,
            new_sha256=new.sha256,
            dialect=dialect,
            allow_data_loss=allow_data_loss,
            counted=conn is not None,
        )
    live = Live.from_connection(conn) if conn is not None else None
    now = now or now_utc()
    steps = diff_models(old, new, dialect=dialect, allow_data_loss=allow_data_loss, live=live, user=user, now=now)
    plan = Plan(
        steps,
        model=new.name,
        old_sha256=old.sha256 if old is not None else None,
        new_sha256=new.sha256,
        dialect=dialect,
        allow_data_loss=allow_data_loss,
        counted=conn is not None,
    )
    if conn is not None:
        for step in plan:
            if step.measure is not None and (count_all or not step.informational):
                try:
                    step.measure(conn, step)
                except SQLAlchemyError as exc:
                    raise MigrationError(
                        f"cannot measure step '{step.kind} {step.where}' on the database "
                        f"(does it hold the recorded model?): {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
                    ) from exc
    if sql:
        from .context import old_storage

        try:
            render(plan, conn=conn, old_metadata=old_storage(old).metadata if old is not None else None)
        except MigrationError:
            raise
        except Exception as exc:  # the rehearsal (SQLite) runs the steps: any failure means this one would
            raise MigrationError(
                f"the migration would fail on {dialect}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
            ) from exc
    return plan


def diff_files(old_path, new_path, *, dialect: str = "sqlite", allow_data_loss: bool = False) -> Plan:
    """The plan between two model files (no database, no counts): ``metacrm diff``."""
    from ..model.loader import load_model

    return plan_migration(load_model(old_path), load_model(new_path), dialect=dialect, allow_data_loss=allow_data_loss)
