"""`metacrm dump` / `metacrm restore` (metacrm.io.dump): a consistent snapshot of every table, restored
into an empty database of either dialect with the same rows and id sequences; damaged dumps and
non-empty targets refused with one line, nothing changed."""

from __future__ import annotations

import datetime as dt
import json
import random
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import pg_reason, pg_schema_url
from sqlalchemy import create_engine, inspect, select
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.io.demo import fill_logistics
from metacrm.io.dump import derived_table, dump, dumped_tables, restore
from metacrm.storage.tables import build_storage

ROOT = Path(__file__).parent.parent
LOGISTICS = ROOT / "examples" / "logistics.yaml"
MAVEN = ROOT / "examples" / "maven.yaml"
NOW = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.UTC)


def populate(url: str) -> dict:
    """The logistics demo data plus notes, users with e-mail (so automations write the outbox),
    ticks (fired rows) and a deleted record with the highest id (sequence ahead of max id)."""
    crm = metacrm.connect(LOGISTICS, url)
    crm.migrate()
    fill_logistics(crm, random.Random(7), dt.date(2026, 12, 1))
    crm.add_user("boss", roles=["head_of_logistics"], email="boss@example.ru", name="Босс")
    shipments = crm.find("shipment")
    crm.note("shipment", shipments[0]["id"], "созвонились", kind="call")
    crm.tick(NOW)
    last = max(r["id"] for r in crm.find("service_task"))
    crm.delete("service_task", last)
    crm.close()
    return {"service_task": last}


def rows(url: str) -> dict[str, list]:
    """Every row of every table metacrm holds, read through the recorded model's types (so
    Decimal, aware datetimes, JSON values compare as values), in primary key order."""
    from metacrm.migrate.history import model_from_record, recorded_row

    engine = create_engine(url) if not url.startswith("postgresql") else metacrm_engine(url)
    out = {}
    with engine.connect() as conn:
        storage = build_storage(model_from_record(recorded_row(conn)))
        for table in dumped_tables(storage):
            keys = list(table.primary_key.columns)
            got = [dict(r) for r in conn.execute(select(table)).mappings()]
            out[table.name] = sorted(got, key=lambda r, keys=keys: tuple(r[k.name] for k in keys))
    engine.dispose()
    return out


def metacrm_engine(url: str):
    from metacrm.runtime.engine import make_engine

    return make_engine(url)


def database_tables(url: str) -> set[str]:
    engine = metacrm_engine(url)
    with engine.connect() as conn:
        names = {n for n in inspect(conn).get_table_names() if not derived_table(conn.dialect.name, n)}
    engine.dispose()
    return names


def next_id_is_new(url: str, entity: str, deleted: int) -> None:
    crm = metacrm.connect(LOGISTICS, url)
    shipment = crm.find("shipment")[0]["id"]
    created = crm.create("service_task", {"title": "после восстановления", "service": "customs", "shipment": shipment})
    assert created["id"] > deleted
    crm.close()


@pytest.mark.skipif(pg_reason() is not None, reason=str(pg_reason()))
def test_sqlite_to_postgresql_to_sqlite_keeps_every_row_and_sequence(tmp_path) -> None:
    first = f"sqlite:///{tmp_path / 'pilot.db'}"
    deleted = populate(first)["service_task"]
    before = rows(first)
    assert before["metacrm_outbox"] and before["metacrm_fired"] and before["metacrm_history"]
    assert any(r["kind"] == "call" for r in before["metacrm_journal"])
    assert len(before["metacrm_user"]) > 1 and any(r["email"] for r in before["metacrm_user"])
    assert max(r["id"] for r in before["service_task"]) < deleted  # the sequence is ahead of max(id)
    m1 = dump(first, tmp_path / "d1")
    assert set(m1["tables"]) == database_tables(first)  # every table the database holds is dumped
    assert m1["tables"]["service_task"]["sequence"] == deleted
    assert m1["dialect"] == "sqlite" and m1["model"]["name"] and m1["left_out"] == []
    with pg_schema_url() as pg:
        restore(tmp_path / "d1", pg)
        assert rows(pg) == before
        assert set(m1["tables"]) == database_tables(pg)
        m2 = dump(pg, tmp_path / "d2")
        for name, info in m1["tables"].items():  # byte-identical files: the format is dialect-free
            assert m2["tables"][name] == info, name
        next_id_is_new(pg, "service_task", deleted)
    last = f"sqlite:///{tmp_path / 'again.db'}"
    restore(tmp_path / "d2", last)
    assert rows(last) == before
    next_id_is_new(last, "service_task", deleted)


def test_values_are_exact_in_the_files(db_url, tmp_path) -> None:
    """Money as a string, datetimes with their zone, JSON columns as JSON; links pointing at a
    later row of the same table (inserted NULL, then set) come back."""
    crm = metacrm.connect(MAVEN, db_url)
    crm.migrate()
    a = crm.create("account", {"name": "Дочерняя", "sector": "retail"})
    b = crm.create("account", {"name": "Головная", "sector": "retail"})
    crm.update("account", a["id"], {"parent": b["id"]})
    product = crm.create("product", {"name": "GTX Pro", "series": "GTX", "sales_price": Decimal("4821.50")})
    crm.close()
    before = rows(db_url)
    dump(db_url, tmp_path / "d")
    line = json.loads((tmp_path / "d" / "product.jsonl").read_text().splitlines()[0])
    assert line["id"] == product["id"] and line["sales_price"] == "4821.50"
    assert line["created_at"].endswith("+00:00")
    journal = [json.loads(x) for x in (tmp_path / "d" / "metacrm_journal.jsonl").read_text().splitlines()]
    assert any(isinstance(j["changes"], dict) for j in journal)
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    restore(tmp_path / "d", target)
    assert rows(target) == before
    assert metacrm.connect(MAVEN, target).get("account", a["id"])["parent"] == b["id"]


def test_restore_refuses_a_database_that_is_not_empty(db_url, tmp_path) -> None:
    crm = metacrm.connect(MAVEN, db_url)
    crm.migrate()
    crm.create("account", {"name": "Одна", "sector": "retail"})
    crm.close()
    dump(db_url, tmp_path / "d")
    before = rows(db_url)
    result = CliRunner().invoke(app, ["restore", str(tmp_path / "d"), "--db", db_url])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "is not empty" in result.stderr and "account" in result.stderr
    assert rows(db_url) == before


@pytest.fixture
def maven_dump(tmp_path) -> Path:
    url = f"sqlite:///{tmp_path / 'src.db'}"
    crm = metacrm.connect(MAVEN, url)
    crm.migrate()
    crm.create("account", {"name": "Одна", "sector": "retail"})
    crm.close()
    dump(url, tmp_path / "d")
    return tmp_path / "d"


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda d: (d / "account.jsonl").write_text('{"id": 99}\n'), "differs from the manifest"),
        (lambda d: (d / "metacrm_journal.jsonl").unlink(), "metacrm_journal.jsonl: missing"),
        (lambda d: (d / "manifest.json").write_text("{"), "manifest.json: not valid JSON"),
        (lambda d: (d / "manifest.json").unlink(), "not a metacrm dump"),
    ],
)
def test_a_damaged_dump_is_refused_and_the_target_stays_empty(maven_dump, db_url, damage, said) -> None:
    damage(maven_dump)
    result = CliRunner().invoke(app, ["restore", str(maven_dump), "--db", db_url])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and said in result.stderr
    if db_url.startswith("sqlite"):
        assert not Path(db_url.removeprefix("sqlite:///")).exists()  # not even created
    else:
        assert database_tables(db_url) == set()


def test_a_failure_half_way_leaves_the_target_empty(maven_dump, db_url) -> None:
    """Rows the schema refuses (a unique value twice, consistent checksums): rolled back whole."""
    import hashlib

    manifest = json.loads((maven_dump / "manifest.json").read_text())
    data = (maven_dump / "account.jsonl").read_text()
    twice = data + data  # the same id twice: the primary key refuses the second
    (maven_dump / "account.jsonl").write_text(twice)
    manifest["tables"]["account"].update(rows=2, sha256=hashlib.sha256(twice.encode()).hexdigest())
    (maven_dump / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(app, ["restore", str(maven_dump), "--db", db_url])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "restore failed" in result.stderr and "left empty" in result.stderr
    assert database_tables(db_url) == set()


def test_cli_dump_and_restore(db_url, tmp_path) -> None:
    runner = CliRunner()
    source = f"sqlite:///{tmp_path / 'src.db'}"
    crm = metacrm.connect(MAVEN, source)
    crm.migrate()
    crm.create("account", {"name": "Одна", "sector": "retail"})
    crm.close()
    done = runner.invoke(app, ["dump", str(tmp_path / "d"), "--db", source])
    assert done.exit_code == 0 and done.stdout.startswith("dumped ") and "rows to" in done.stdout
    again = runner.invoke(app, ["dump", str(tmp_path / "d"), "--db", source])
    assert again.exit_code == 1 and again.stderr.count("\n") == 1 and "not an empty directory" in again.stderr
    missing = runner.invoke(app, ["dump", str(tmp_path / "e"), "--db", f"sqlite:///{tmp_path / 'typo.db'}"])
    assert missing.exit_code == 1 and "no database at" in missing.stderr
    assert not (tmp_path / "typo.db").exists() and not (tmp_path / "e").exists()
    back = runner.invoke(app, ["restore", str(tmp_path / "d"), "--db", db_url])
    assert back.exit_code == 0 and back.stdout.startswith("restored ")
    assert rows(db_url) == rows(source)


def test_links_in_a_cycle_between_entities_are_restored(db_url, tmp_path) -> None:
    """company.main_contact -> person and person.employer -> company: one of the two tables is
    inserted first with its link empty, set once the other is in."""
    import warnings

    from test_csv_roundtrip import MODEL
    from test_csv_roundtrip import populate as populate_cycles

    source = f"sqlite:///{tmp_path / 'src.db'}"
    crm = metacrm.connect(MODEL, source)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no SQLAlchemy warning about the cycle either
        crm.migrate()
    populate_cycles(crm)
    crm.close()
    before = rows(source)
    assert any(r["main_contact_id"] for r in before["company"]) and any(r["parent_id"] for r in before["company"])
    dump(source, tmp_path / "d")
    restore(tmp_path / "d", db_url)
    assert rows(db_url) == before


def test_what_the_model_no_longer_has_is_named_and_left_out(tmp_path) -> None:
    """A table or column the database holds beyond the recorded model (kept by a migration that
    removed it without --allow-data-loss) is listed in the manifest and warned about."""
    source = f"sqlite:///{tmp_path / 'src.db'}"
    crm = metacrm.connect(MAVEN, source)
    crm.migrate()
    crm.close()
    engine = metacrm_engine(source)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE stray (x INTEGER)")
        conn.exec_driver_sql("ALTER TABLE account ADD COLUMN old_note TEXT")
    engine.dispose()
    result = CliRunner().invoke(app, ["dump", str(tmp_path / "d"), "--db", source])
    assert result.exit_code == 0, result.output
    assert "warning: left out" in result.stderr and "account.old_note" in result.stderr and "stray" in result.stderr
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["left_out"] == ["account.old_note", "stray"]
    assert "stray" not in manifest["tables"]
