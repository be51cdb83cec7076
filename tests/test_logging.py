"""Logging for operators under the "metacrm" logger: migrations, slow queries (never their
parameters), silent by default, printed on stderr by the command line's --log-level."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.logs import SLOW_ENV, STATEMENT_CHARS, short_statement, slow_query_ms

V1 = """\
metacrm: 1
name: logged
entities:
  client:
    fields:
      name: {type: string, required: true}
      email: {type: email}
      notes: {type: text}
"""
V2 = V1.replace("notes:", "remarks:")  # a possible rename: refused, or notes dropped with data loss allowed


@pytest.fixture
def models(tmp_path):
    paths = []
    for i, text in enumerate((V1, V2), 1):
        path = tmp_path / f"v{i}.yaml"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def logged(caplog, name: str) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == name]


def test_migrations_are_logged(db_url, models, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="metacrm.migrate")
    v1, v2 = (metacrm.load_model(p) for p in models)
    dialect = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    with metacrm.connect(v1, db_url) as crm:
        crm.migrate()
        crm.migrate()  # nothing to do
        crm.create("client", {"name": "Анна", "notes": "keep"})
    records = logged(caplog, "metacrm.migrate")
    applied = [text for level, text in records if level == "INFO"]
    assert len(applied) == 1, records
    assert applied[0].startswith(
        f"migration applied: model logged new database -> {v1.sha256[:12]} on {dialect}: "
        "3 steps (add entity, add system tables, record model) in "
    )
    steps = [text for level, text in records if level == "DEBUG" and text.startswith("step ")]
    assert steps == ["step 1/2: add entity client", "step 2/2: add system tables"]  # record model: no action
    assert records[-1] == ("DEBUG", f"nothing to migrate: the database holds model logged ({v1.sha256[:12]})")

    caplog.clear()
    with metacrm.connect(v2, db_url) as crm:
        with pytest.raises(metacrm.MigrationError):
            crm.migrate()
        assert logged(caplog, "metacrm.migrate")[-1] == (
            "WARNING",
            "migration not applied: migration refused (1 step): client.notes: possible rename: client.notes removed "
            "and client.remarks of the same type (text) added; if it is a rename declare `renamed_from: notes` on "
            "remarks, else pass --allow-data-loss to drop notes",
        )
        caplog.clear()
        crm.migrate(allow_data_loss=True)
    ((level, text),) = [r for r in logged(caplog, "metacrm.migrate") if r[0] != "DEBUG"]
    assert level == "INFO" and f"{v1.sha256[:12]} -> {v2.sha256[:12]} on {dialect}: " in text
    assert "add field" in text and "remove field" in text and ", 1 destructive (data loss allowed) in " in text


def test_a_failed_migration_is_logged_as_an_error(db_url, models, caplog, monkeypatch) -> None:
    caplog.set_level(logging.INFO, logger="metacrm")

    def broken(actions, ex, before):
        before(0, actions[0])
        raise RuntimeError("disk full\nmore detail")

    monkeypatch.setattr("metacrm.migrate.apply.run_actions", broken)
    with metacrm.connect(models[0], db_url) as crm:
        with pytest.raises(metacrm.MigrationError, match="migration failed at step"):
            crm.migrate()
    assert logged(caplog, "metacrm.migrate") == [
        (
            "ERROR",
            "migration not applied: migration failed at step 1 (add entity client): disk full; nothing was changed",
        )
    ]


def test_slow_queries_are_logged_without_their_values(db_url, models, caplog, monkeypatch) -> None:
    monkeypatch.setenv(SLOW_ENV, "0")  # every statement is "slow"
    caplog.set_level(logging.WARNING, logger="metacrm")
    with metacrm.connect(models[0], db_url) as crm:
        crm.migrate()
        caplog.clear()
        crm.create("client", {"name": "Zyxwvut Secretname", "email": "zyx.secret@example.org"})
        crm.find("client", where="name = :n", params={"n": "Qwertyuiop Private"})
        crm.create_many("client", [{"name": f"Many{i} Hidden"} for i in range(3)])
    records = [r for r in caplog.records if r.name == "metacrm.sql"]
    assert records and all(r.levelname == "WARNING" for r in records)
    texts = [r.getMessage() for r in records]
    dialect = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    assert any(
        t.startswith("slow query: ") and f" ms on {dialect} (threshold 0 ms): " in t and "INSERT INTO client" in t
        for t in texts
    )
    assert any("SELECT" in t and "FROM client" in t for t in texts)
    for record, text in zip(records, texts, strict=True):
        assert "\n" not in text and len(record.statement) <= STATEMENT_CHARS and record.duration_ms >= 0
        for value in ("Zyxwvut", "zyx.secret", "Qwertyuiop", "Hidden"):
            assert value not in text, text


def test_the_slow_query_threshold_setting(monkeypatch, models) -> None:
    monkeypatch.delenv(SLOW_ENV, raising=False)
    assert slow_query_ms() == 1000
    monkeypatch.setenv(SLOW_ENV, "250.5")
    assert slow_query_ms() == 250.5
    for bad in ("abc", "-1", "nan", "inf"):
        monkeypatch.setenv(SLOW_ENV, bad)
        with pytest.raises(metacrm.SetupError, match=f"^{SLOW_ENV} must be a number of milliseconds >= 0"):
            metacrm.connect(models[0], "sqlite://")
    result = CliRunner().invoke(app, ["list", "client", "--model", str(models[0]), "--db", "sqlite://"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert (
        result.stderr
        == f"error: {SLOW_ENV} must be a number of milliseconds >= 0 (0 logs every statement), not 'inf'\n"
    )


def test_short_statement_is_one_line_and_cut() -> None:
    assert short_statement("SELECT a,\n       b\n  FROM t\n") == "SELECT a, b FROM t"
    long = short_statement("SELECT " + ", ".join(f"column_{i}" for i in range(100)) + " FROM t")
    assert len(long) == STATEMENT_CHARS and long.endswith("…")


def test_silent_by_default(tmp_path, models) -> None:
    """Without logging configured, nothing reaches stderr: not even WARNINGs (no lastResort)."""
    script = textwrap.dedent(
        f"""
        import os
        os.environ[{SLOW_ENV!r}] = "0"
        import metacrm
        with metacrm.connect({str(models[0])!r}, "sqlite:///{(tmp_path / "crm.db").as_posix()}") as crm:
            crm.migrate()
            crm.create("client", {{"name": "Анна"}})
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_cli_log_level_prints_on_stderr(tmp_path, models) -> None:
    db = f"sqlite:///{tmp_path / 'crm.db'}"
    runner = CliRunner()
    result = runner.invoke(app, ["--log-level", "info", "migrate", "--model", str(models[0]), "--db", db])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert len([line for line in lines if " INFO metacrm.migrate: migration applied: model logged " in line]) == 1
    assert "INFO metacrm" not in result.stdout  # the log goes to stderr only
    logger = logging.getLogger("metacrm")
    assert [type(h) for h in logger.handlers] == [logging.NullHandler] and logger.level == logging.NOTSET
    result = runner.invoke(app, ["migrate", "--model", str(models[0]), "--db", db], env={"METACRM_LOG": "loud"})
    assert (result.exit_code, result.stderr) == (
        2,
        "error: unknown log level 'loud': use debug, info, warning, error\n",
    )


def test_waiting_for_the_migration_lock_is_logged(db_url, models, caplog) -> None:
    from metacrm.migrate.lock import pg_lock, sqlite_lock
    from metacrm.runtime.engine import make_engine

    caplog.set_level(logging.INFO, logger="metacrm.migrate")
    holder = "alice@elsewhere pid 4242"
    engine = make_engine(db_url)
    try:
        with metacrm.connect(models[0], db_url) as crm:
            if engine.dialect.name == "sqlite":
                held = sqlite_lock(engine, holder, wait=1)
                held.__enter__()
            else:
                conn = engine.connect()
                tx = conn.begin()
                pg_lock(conn, holder, wait=1)
            try:
                with pytest.raises(metacrm.MigrationError, match="another migration is running"):
                    crm.migrate(lock_wait=0.3)
            finally:
                if engine.dialect.name == "sqlite":
                    held.__exit__(None, None, None)
                else:
                    tx.rollback()
                    conn.close()
    finally:
        engine.dispose()
    (waiting, refused) = logged(caplog, "metacrm.migrate")
    if db_url.startswith("sqlite"):
        assert waiting == ("INFO", f"waiting up to 0.3s for the migration lock held by {holder}")
    else:
        assert waiting == (
            "INFO",
            "waiting up to 0.3s for the migration lock: another migration of this schema is running",
        )
    assert refused[0] == "WARNING" and refused[1].startswith("migration not applied: another migration is running")
