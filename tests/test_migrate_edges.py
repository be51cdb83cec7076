"""Migrations at their edges (killed survivors of tools/mutation.py on migrate/lock.py and
migrate/apply.py): a SQLite database kept busy by another writer while the migration lock is
being taken is refused with the one-line lock error, not a driver error, and left as it was; a
lock held by a live process of this host is kept and named with its start (SQLite only: these
are the SQLite lock's paths; PostgreSQL's advisory lock is tested in test_migrate_safety.py); and
(migrate/plan.py) a plan on a database counts what only informs, records the model at the time
given, and says in one line that a database does not hold the recorded model; on SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import socket
import sqlite3

import pytest
from sqlalchemy import event, inspect

import metacrm

MODEL = """\
metacrm: 1
name: edges
entities:
  deal:
    fields:
      title: {type: string, required: true}
"""


def test_a_database_busy_while_the_lock_is_taken_refuses_with_the_lock_error(tmp_path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(MODEL, encoding="utf-8")
    db = tmp_path / "crm.db"
    crm = metacrm.connect(path, f"sqlite:///{db}")
    blocker = sqlite3.connect(db, isolation_level=None)

    @event.listens_for(crm.engine, "before_cursor_execute")
    def _busy(conn, cursor, statement, parameters, context, executemany) -> None:
        # another process starts writing just before the lock row goes in, and keeps on
        if statement.lstrip().upper().startswith("INSERT INTO METACRM_LOCK") and not blocker.in_transaction:
            blocker.execute("BEGIN IMMEDIATE")

    try:
        with pytest.raises(metacrm.MigrationError) as info:
            crm.migrate(lock_wait=0.5)
        assert str(info.value) == (
            "another migration is running: the migration lock is held by another process; waited 0.5s"
        )
    finally:
        blocker.rollback()
        blocker.close()
    event.remove(crm.engine, "before_cursor_execute", _busy)
    assert "deal" not in inspect(crm.engine).get_table_names()  # nothing was migrated
    crm.migrate()  # and the database is usable once the writer is gone
    assert "deal" in inspect(crm.engine).get_table_names()
    crm.close()


def test_a_live_holder_on_this_host_keeps_the_lock_and_is_named_with_its_start(tmp_path) -> None:
    from metacrm.migrate.lock import _lock_table

    path = tmp_path / "model.yaml"
    path.write_text(MODEL, encoding="utf-8")
    db = tmp_path / "crm.db"
    crm = metacrm.connect(path, f"sqlite:///{db}")
    holder = f"alice@{socket.gethostname()} pid {os.getpid()}"  # this very process: alive
    since = dt.datetime(2026, 3, 1, 9, 30, 5)
    with crm.engine.begin() as conn:
        _lock_table().create(conn, checkfirst=True)
        conn.execute(_lock_table().insert().values(name="migrate", holder=holder, since=since))
    with pytest.raises(metacrm.MigrationError) as info:
        crm.migrate(lock_wait=0.2)
    assert str(info.value) == (
        f"another migration is running: the migration lock is held by {holder} since 2026-03-01 09:30:05 UTC; "
        "waited 0.2s"
    )
    assert "deal" not in inspect(crm.engine).get_table_names()
    with crm.engine.connect() as conn:  # not taken over: its process is alive
        assert [r.holder for r in conn.execute(_lock_table().select())] == [holder]
    crm.close()


def test_a_plan_on_a_database_counts_what_an_optional_new_field_meets(db_url, tmp_path) -> None:
    # plan_migration counts every step by default, also the counts that only inform (`metacrm
    # plan` shows them); applying skips those with count_all=False
    from metacrm.migrate.plan import plan_migration
    from metacrm.model.loader import load_model

    path = tmp_path / "model.yaml"
    path.write_text(MODEL, encoding="utf-8")
    new = tmp_path / "new.yaml"
    new.write_text(MODEL + "      note: {type: string}\n", encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    for title in ("A", "B", "C"):
        crm.create("deal", {"title": title})
    with crm.engine.connect() as conn:
        counted = {s.where: s.count for s in plan_migration(crm.model, load_model(new), conn)}
        skipped = {s.where: s.count for s in plan_migration(crm.model, load_model(new), conn, count_all=False)}
    assert counted["deal.note"] == 3
    assert skipped["deal.note"] is None
    with crm.engine.connect() as conn:  # a plan says whether it was counted, also an empty one
        assert plan_migration(crm.model, load_model(new), conn).counted is True
        assert plan_migration(crm.model, crm.model, conn).counted is True
    assert plan_migration(crm.model, load_model(new), dialect=crm.engine.dialect.name).counted is False
    assert plan_migration(crm.model, crm.model, dialect=crm.engine.dialect.name).counted is False
    crm.close()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"], ids=["sqlite-sql", "pg-sql"])  # no server needed
def test_a_plan_records_the_model_at_the_time_it_is_given(dialect, tmp_path) -> None:
    from metacrm.migrate.plan import plan_migration
    from metacrm.model.loader import load_model

    path = tmp_path / "model.yaml"
    path.write_text(MODEL, encoding="utf-8")
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    plan = plan_migration(None, load_model(path), dialect=dialect, now=when, user="alice")
    assert plan.dialect == dialect
    [record] = [s for s in plan if s.kind == "record_model"]
    assert "'2026-01-02T03:04:05+00:00', 'alice'" in record.sql[0]


def test_a_plan_on_a_database_without_the_recorded_model_says_so_in_one_line(db_url, tmp_path) -> None:
    from sqlalchemy import create_engine

    from metacrm.migrate.plan import plan_migration
    from metacrm.model.loader import load_model

    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(MODEL, encoding="utf-8")
    new.write_text(MODEL + "      note: {type: string}\n", encoding="utf-8")
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn, pytest.raises(metacrm.MigrationError) as info:
            plan_migration(load_model(old), load_model(new), conn)  # the database is empty: no deal table
    finally:
        engine.dispose()
    missing = "no such table: deal" if db_url.startswith("sqlite") else 'relation "deal" does not exist'
    message = str(info.value)
    assert message.startswith(
        "cannot measure step 'add_field deal.note' on the database (does it hold the recorded model?): "
    )
    assert "\n" not in message and message.endswith(missing)


def test_a_plan_allows_no_data_loss_unless_asked(tmp_path) -> None:
    from metacrm.migrate.plan import diff_files, plan_migration
    from metacrm.model.loader import load_model

    with_note, without = tmp_path / "with.yaml", tmp_path / "without.yaml"
    with_note.write_text(MODEL + "      note: {type: string}\n", encoding="utf-8")
    without.write_text(MODEL, encoding="utf-8")
    plans = {
        "plan": plan_migration(load_model(with_note), load_model(without)),
        "diff": diff_files(with_note, without),
        "diff, allowed": diff_files(with_note, without, allow_data_loss=True),
    }
    shown = {name: (plan.allow_data_loss, [s.kind for s in plan]) for name, plan in plans.items()}
    assert shown == {
        "plan": (False, ["remove_field", "record_model"]),
        "diff": (False, ["remove_field", "record_model"]),
        "diff, allowed": (True, ["remove_field", "rebuild_table", "record_model"]),
    }
