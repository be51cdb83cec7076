"""Migrations are safe: a dry run changes nothing, a failure half-way leaves everything as it
was, two migrations never run at once, and the command line says what it does."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from test_migrate_support import assert_schema_like_fresh, base, dump, edit, migrate, schema, start, write_model
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.migrate import apply as apply_module
from metacrm.runtime.engine import make_engine


def big_change(doc=None) -> dict:
    """A change touching every phase: a table rename, a column rename, a new required field
    with a fill (a rebuild on SQLite), a new unique, a new index, a new link, a stage rename."""
    doc = edit(doc or base())
    entities = doc["entities"]
    entities["customer"] = {**entities.pop("client"), "renamed_from": "client"}
    entities["deal"]["links"]["client"]["to"] = "customer"
    entities["task"]["links"]["subject"]["to"] = ["deal", "customer"]
    fields = entities["customer"]["fields"]
    fields["town"] = {**fields.pop("city"), "renamed_from": "city", "index": True}
    fields["tier"] = {"type": "choice", "options": ["a", "b"], "required": True, "fill": "b"}
    entities["product"]["fields"]["name"]["unique"] = True
    entities["product"].setdefault("links", {})["maker"] = {"to": "customer"}
    stages = entities["deal"]["stages"]
    stages["states"] = {("offer" if k == "proposal" else k): v for k, v in stages["states"].items()}
    stages["states"]["offer"] = {"renamed_from": "proposal"}
    stages["transitions"] = {"new": ["offer", "lost"], "offer": ["won", "lost"]}
    return doc


def test_dry_run_changes_nothing(db_url, tmp_path) -> None:
    start(db_url, tmp_path)
    before_schema, before = schema(db_url), dump(db_url)
    crm, plan = migrate(db_url, tmp_path, big_change(), dry_run=True)
    assert schema(db_url) == before_schema and dump(db_url) == before
    assert plan and plan.counted and not plan.refusals
    assert any("RENAME" in s.upper() for s in plan.statements)
    assert all(s.count is not None for s in plan if s.kind != "record_model")
    with pytest.raises(metacrm.MigrationError, match="metacrm migrate"):
        crm.find("deal")  # still the old model in the database
    crm.close()


def _normal(statement: str, with_params: bool) -> str:
    words = " ".join(statement.split())
    if with_params:
        return words.split(" ", 1)[0]
    if words.startswith("CREATE TABLE"):  # batch mode lists reflected constraints in no set order
        body = words[words.index("(") + 1 : words.rindex(")")]
        return words[: words.index("(")] + "|".join(sorted(part.strip() for part in body.split(",")))
    return words


def _shown(statement: str) -> bool:
    head = statement.lstrip().upper()
    if head.startswith(("SELECT", "BEGIN", "COMMIT", "ROLLBACK", "SHOW")) or "METACRM_LOCK" in head:
        return False
    if head.startswith("PRAGMA"):
        return head.startswith("PRAGMA IGNORE_CHECK_CONSTRAINTS")
    return not head.startswith("INSERT INTO METACRM_MODEL")


def test_dry_run_sql_is_what_runs(db_url, tmp_path) -> None:
    start(db_url, tmp_path)
    model, _ = write_model(tmp_path, big_change())
    crm = metacrm.connect(model, db_url)
    plan = crm.migrate(dry_run=True)
    data = ("UPDATE", "INSERT INTO metacrm_history", "DELETE")
    planned = [_normal(s, s.startswith(data)) for s in plan.statements if _shown(s)]
    ran: list[str] = []

    @event.listens_for(crm.engine, "before_cursor_execute")
    def capture(conn, cursor, statement, parameters, context, many):
        if _shown(statement):
            ran.append(_normal(statement, statement.lstrip().startswith(data)))

    crm.migrate()
    event.remove(crm.engine, "before_cursor_execute", capture)
    assert ran == planned
    assert any(s.startswith("ALTER TABLE client RENAME") for s in ran)
    crm.close()


def _inject(monkeypatch, at: int) -> None:
    """Make the migration fail when it reaches its ``at``-th action (-1: the last one)."""
    original = apply_module.run_actions
    from metacrm.migrate.execute import ordered_actions

    def failing(steps, ex, *, before=None):
        total = len(ordered_actions(steps))
        stop = total if at == -1 else at
        seen = [0]

        def check(index, step):
            seen[0] += 1
            if seen[0] == stop:
                raise RuntimeError(f"injected failure at action {stop} of {total}")
            if before:
                before(index, step)

        return original(steps, ex, before=check)

    monkeypatch.setattr(apply_module, "run_actions", failing)


@pytest.mark.parametrize("at", [3, -1], ids=["early", "last action"])
def test_failure_half_way_leaves_everything_as_it_was(db_url, tmp_path, monkeypatch, at) -> None:
    old = start(db_url, tmp_path)
    before_schema, before = schema(db_url), dump(db_url)
    _inject(monkeypatch, at)
    with pytest.raises(
        metacrm.MigrationError, match="migration failed at step .*injected failure.*nothing was changed"
    ):
        migrate(db_url, tmp_path, big_change())
    assert schema(db_url) == before_schema
    assert dump(db_url) == before  # every row, and the old recorded model
    with metacrm.connect(old, db_url) as crm:  # the old model still works
        assert crm.count("deal") == 4
        crm.create("client", {"name": "After"})
    assert not list(Path(tmp_path).glob("*.pre-migrate"))


def test_failure_inside_a_table_rebuild(tmp_path, monkeypatch) -> None:
    db_url = f"sqlite:///{tmp_path / 'crm.db'}"  # PostgreSQL alters in place: no rebuild
    start(db_url, tmp_path)
    before_schema, before = schema(db_url), dump(db_url)
    from alembic.operations import batch

    original = batch.ApplyBatchImpl._create

    def create_then_fail(self, op_impl):
        original(self, op_impl)  # the table is rebuilt: new table, rows copied, old one dropped
        if op_impl.connection.engine.url.database:  # the real database, not the dry-run rehearsal
            raise RuntimeError("injected failure after the rebuild")

    monkeypatch.setattr(batch.ApplyBatchImpl, "_create", create_then_fail)
    doc = edit(base())
    doc["entities"]["client"]["fields"]["city"].update(required=True, fill="Unknown")
    doc["entities"]["deal"]["fields"]["title"]["unique"] = True
    with pytest.raises(metacrm.MigrationError, match="injected failure|nothing was changed"):
        migrate(db_url, tmp_path, doc)
    assert schema(db_url) == before_schema and dump(db_url) == before


def test_sqlite_backup_restored_when_rollback_is_not_enough(tmp_path, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    start(url, tmp_path)
    before_schema, before = schema(url), dump(url)
    _inject(monkeypatch, -1)
    restored = []
    monkeypatch.setattr(apply_module, "rolled_back", lambda engine, fingerprint: restored.append(1) and False)
    doc = edit(base())
    doc["entities"]["client"]["fields"]["city"].update(required=True, fill="Unknown")
    with pytest.raises(metacrm.MigrationError):
        migrate(url, tmp_path, doc)
    assert restored == [1]  # the copy was put back
    assert schema(url) == before_schema and dump(url) == before
    assert not (tmp_path / "crm.db.pre-migrate").exists()


def test_backup_removed_after_success(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    start(url, tmp_path)
    doc = edit(base())
    doc["entities"]["client"]["fields"]["city"].update(required=True, fill="Unknown")
    crm, plan = migrate(url, tmp_path, doc)
    assert "rebuild_table" in [s.kind for s in plan]
    assert not (tmp_path / "crm.db.pre-migrate").exists()
    crm.close()


def test_foreign_keys_and_indexes_survive_a_rebuild(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    start(url, tmp_path)
    doc = edit(base())
    doc["entities"]["client"]["fields"]["city"].update(required=True, fill="Unknown")  # client is rebuilt
    crm, plan = migrate(url, tmp_path, doc)
    assert step_kinds(plan).count("rebuild_table") == 1
    with pytest.raises(metacrm.ValidationError):
        crm.delete("client", 1)  # deals still restrict the delete: nothing cascaded during the rebuild
    assert crm.count("deal") == 4
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE tbl_name = 'client'")}
    engine.dispose()
    assert {"ix_client_owner", "client"} <= names
    crm.close()


def step_kinds(plan) -> list[str]:
    return [s.kind for s in plan]


# -- the lock -----------------------------------------------------------------------------------


def test_held_lock_makes_a_second_migration_fail_naming_the_holder(db_url, tmp_path) -> None:
    start(db_url, tmp_path)
    holder = "alice@elsewhere pid 4242"
    engine = make_engine(db_url)
    try:
        with _hold(engine, holder):
            before = dump(db_url)
            started = time.monotonic()
            with pytest.raises(metacrm.MigrationError, match="alice@elsewhere pid 4242") as info:
                migrate(db_url, tmp_path, big_change(), lock_wait=0.5)
            waited = time.monotonic() - started
            assert 0.5 <= waited < 10
            assert "another migration is running" in str(info.value)
        crm, plan = migrate(db_url, tmp_path, big_change(), lock_wait=0.5)  # released: it runs
        assert plan
        crm.close()
        assert dump(db_url) != before
    finally:
        engine.dispose()


class _hold:
    """Hold the migration lock as another process would."""

    def __init__(self, engine, holder: str):
        self.engine, self.holder = engine, holder

    def __enter__(self):
        from metacrm.migrate.lock import pg_lock, sqlite_lock

        if self.engine.dialect.name == "sqlite":
            self.cm = sqlite_lock(self.engine, self.holder, wait=1)
            self.cm.__enter__()
        else:
            self.conn = self.engine.connect()
            self.tx = self.conn.begin()
            pg_lock(self.conn, self.holder, wait=1)
        return self

    def __exit__(self, *exc):
        if self.engine.dialect.name == "sqlite":
            self.cm.__exit__(*exc)
        else:
            self.tx.rollback()
            self.conn.close()


def test_stale_sqlite_lock_is_taken_over(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    start(url, tmp_path)
    from metacrm.migrate.lock import _lock_table
    from metacrm.storage.types import now_utc

    engine = make_engine(url)
    with engine.begin() as conn:  # a process of this host that died holding the lock
        conn.execute(
            _lock_table()
            .insert()
            .values(name="migrate", holder=f"bob@{socket.gethostname()} pid 999999999", since=now_utc())
        )
    engine.dispose()
    stale = f"bob@{socket.gethostname()} pid 999999999"
    seen: list[tuple[str, object]] = []

    def lock_statements(conn, cursor, statement, parameters, context, executemany) -> None:
        if "metacrm_lock" in statement and statement.lstrip().upper().startswith(("INSERT", "DELETE")):
            seen.append((statement.lstrip().split()[0].upper(), parameters))

    before = schema(url)
    event.listen(Engine, "before_cursor_execute", lock_statements)
    try:
        crm, plan = migrate(url, tmp_path, big_change(), lock_wait=0.2)
    finally:
        event.remove(Engine, "before_cursor_execute", lock_statements)
    assert plan and not plan.refusals
    ours = f"@{socket.gethostname()} pid {os.getpid()}"
    # the stale row is deleted, ours inserted (the migration ran under it), and ours deleted at the end
    assert [verb for verb, _ in seen] == ["DELETE", "INSERT", "DELETE"]
    assert stale in seen[0][1] and any(ours in str(p) for p in seen[1][1]) and any(ours in str(p) for p in seen[2][1])
    after = schema(url)
    assert "client" in before and "customer" not in before and "customer" in after and "client" not in after
    assert_schema_like_fresh(url, tmp_path, crm)  # the whole big change was applied
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.execute(_lock_table().select()).all() == []  # released
    engine.dispose()
    assert crm.count("customer") > 0
    crm.close()


# -- the command line ---------------------------------------------------------------------------


def test_cli_diff_table_and_json(tmp_path) -> None:
    _, old = write_model(tmp_path, base(), "old")
    _, new = write_model(tmp_path, big_change(), "new")
    result = CliRunner().invoke(app, ["diff", str(old), str(new)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("plan for shop: ") and "(sqlite)" in lines[0]
    assert "rows" not in lines[1] and "rename entity" in result.stdout and "rename stage" in result.stdout
    doc = json.loads(CliRunner().invoke(app, ["diff", str(old), str(new), "--format", "json"]).stdout)
    assert doc["counted"] is False and doc["refused"] == []
    kinds = [s["kind"] for s in doc["steps"]]
    assert {"rename_entity", "rename_field", "add_field", "add_unique", "add_link", "rename_stage"} <= set(kinds)
    assert all(s["count"] is None for s in doc["steps"])
    pg = CliRunner().invoke(app, ["diff", str(old), str(new), "--sql", "--dialect", "postgresql"])
    assert "ALTER TABLE client RENAME TO customer;" in pg.stdout


def test_cli_migrate_dry_run_then_apply(db_url, tmp_path) -> None:
    start(db_url, tmp_path)
    _, new = write_model(tmp_path, big_change(), "new")
    opts = ["--model", str(new), "--db", db_url]
    before = dump(db_url)
    dry = CliRunner().invoke(app, ["migrate", "--dry-run", *opts])
    assert dry.exit_code == 0, dry.output
    assert "rows" in dry.stdout.splitlines()[1] and "-- 1. rename entity customer" in dry.stdout
    assert "ALTER TABLE client RENAME TO customer;" in dry.stdout
    assert dump(db_url) == before
    done = CliRunner().invoke(app, ["migrate", *opts])
    assert done.exit_code == 0, done.output
    assert done.stdout.strip().splitlines()[-1].startswith("migrated shop to ")
    again = CliRunner().invoke(app, ["migrate", *opts])
    assert "nothing to do" in again.stdout


def test_cli_migrate_refused_exits_1_with_one_line(db_url, tmp_path) -> None:
    start(db_url, tmp_path)
    doc = edit(base())
    doc["entities"]["client"]["fields"]["town"] = doc["entities"]["client"]["fields"].pop("city")
    _, new = write_model(tmp_path, doc, "new")
    before = dump(db_url)
    result = CliRunner().invoke(app, ["migrate", "--model", str(new), "--db", db_url])
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "possible rename" in result.stderr and "renamed_from: city" in result.stderr
    dry = CliRunner().invoke(app, ["migrate", "--dry-run", "--model", str(new), "--db", db_url])
    assert dry.exit_code == 1 and "REFUSED" in dry.stdout and len(dry.stderr.strip().splitlines()) == 1
    forced = CliRunner().invoke(app, ["migrate", "--allow-data-loss", "--model", str(new), "--db", db_url])
    assert forced.exit_code == 0, forced.output
    assert dump(db_url) != before


def test_migrating_twice_in_a_row_from_recorded_models(db_url, tmp_path) -> None:
    """Each migration starts from the model the database records (rebuilt from its JSON)."""
    start(db_url, tmp_path)
    first = big_change()
    crm, _ = migrate(db_url, tmp_path, first)
    crm.close()
    second = edit(first)
    second["entities"]["customer"]["fields"]["vip"] = {"type": "boolean"}
    crm, plan = migrate(db_url, tmp_path, second)
    assert [s.kind for s in plan] == ["add_field", "record_model"]
    assert crm.get("customer", 1)["town"] == "Moscow" and crm.get("customer", 1)["vip"] is None
    assert len(dump(db_url)["metacrm_model"]) == 3
    crm.close()


@pytest.fixture(autouse=True)
def _no_leftover_env(monkeypatch):
    monkeypatch.delenv("METACRM_DB", raising=False)
    monkeypatch.delenv("METACRM_MODEL", raising=False)
    yield
    assert "METACRM_DB" not in os.environ
