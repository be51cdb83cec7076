"""Ids are never given twice (issue 15, item 3): a record created after a delete, even of the
record with the highest id, never gets the deleted record's id, nor its journal, notes, stage
history or tasks; on SQLite and PostgreSQL, after table rebuilds, after an entity is dropped
and added again, and on a SQLite database made by an earlier metacrm (tables without
AUTOINCREMENT) once it is migrated."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine
from test_migrate_support import base, dump, edit, migrate, schema, seed, start, write_model
from typer.testing import CliRunner

import metacrm


def past_of(crm, entity: str, record_id: int, linked=()) -> list:
    """What the record's timeline holds besides its own creation and that of ``linked``
    ((entity, id) of records created since, linked to it)."""
    mine = {(entity, record_id), *linked}
    return [
        e
        for e in crm.timeline(entity, record_id)
        if not (e["action"] == "create" and (e["entity"], e["record_id"]) in mine)
    ]


def assert_fresh(crm, entity: str, record_id: int, linked=()) -> None:
    assert past_of(crm, entity, record_id, linked) == []
    if crm.model.entities[entity].has_stages:
        assert [(h["from_stage"], h["to_stage"]) for h in crm.history(entity, record_id)] == [(None, "new")]


def with_search(doc: dict) -> dict:
    doc = edit(doc)
    doc["entities"]["client"]["search"] = ["name"]
    return doc


def test_deleted_highest_id_is_never_given_again(db_url, tmp_path) -> None:
    model = start(db_url, tmp_path)
    with metacrm.connect(model, db_url) as crm:
        client = crm.create("client", {"name": "Last"})
        deal = crm.create("deal", {"title": "Last deal", "client": client["id"]})
        crm.move("deal", deal["id"], "proposal")
        crm.note("deal", deal["id"], "a secret about the last deal")
        crm.note("client", client["id"], "a secret about the last client")
        task = crm.create("task", {"title": "Follow up", "subject": {"entity": "deal", "id": deal["id"]}})
        assert deal["id"] == max(r["id"] for r in crm.find("deal"))
        crm.delete("task", task["id"])  # (the link restricts the deal's delete)
        crm.delete("deal", deal["id"])
        crm.delete("client", client["id"])
    with metacrm.connect(model, db_url) as crm:  # a new connection: nothing kept in memory
        new_client = crm.create("client", {"name": "Next"})
        new_deal = crm.create("deal", {"title": "Next deal", "client": new_client["id"]})
        assert new_client["id"] == client["id"] + 1
        assert new_deal["id"] == deal["id"] + 1
        assert_fresh(crm, "deal", new_deal["id"])
        assert_fresh(crm, "client", new_client["id"], [("deal", new_deal["id"])])
        crm.delete("deal", new_deal["id"])
        again = crm.create("deal", {"title": "Again", "client": new_client["id"]})
        assert again["id"] == new_deal["id"] + 1
        assert_fresh(crm, "deal", again["id"])


def test_a_rebuilt_table_keeps_its_highest_id(db_url, tmp_path) -> None:
    model = start(db_url, tmp_path)
    with metacrm.connect(model, db_url) as crm:
        deal = crm.create("deal", {"title": "Deleted", "client": 1})
        crm.note("deal", deal["id"], "not for the next deal")
        crm.delete("deal", deal["id"])
    doc = edit(base())
    doc["entities"]["deal"]["links"]["client"]["required"] = False  # NOT NULL dropped: a rebuild on SQLite
    crm, plan = migrate(db_url, tmp_path, doc)
    if db_url.startswith("sqlite"):
        assert "rebuild_table" in [s.kind for s in plan]
    new = crm.create("deal", {"title": "After the rebuild"})
    assert new["id"] == deal["id"] + 1
    assert_fresh(crm, "deal", new["id"])
    crm.close()


def test_an_entity_dropped_and_added_again_starts_after_its_past(db_url, tmp_path) -> None:
    model = start(db_url, tmp_path)
    with metacrm.connect(model, db_url) as crm:
        tasks = crm.find("task", order_by="id")
        last = tasks[-1]["id"]
        crm.note("task", last, "about the old task")
    without = edit(base())
    del without["entities"]["task"]
    crm, _ = migrate(db_url, tmp_path, without, allow_data_loss=True)
    crm.close()
    model_again, _ = write_model(tmp_path, base(), "again")
    with metacrm.connect(model_again, db_url) as crm:
        plan = crm.migrate(dry_run=True)
        (added,) = [s for s in plan if s.kind == "add_entity"]
        assert any(("sqlite_sequence" in sql or "setval" in sql) and str(last) in sql for sql in added.sql)
        crm.migrate()
        new = crm.create("task", {"title": "A new task"})
        assert new["id"] == last + 1
        assert_fresh(crm, "task", new["id"])


# -- a SQLite database made by an earlier metacrm -------------------------------------------------


def old_style(tmp_path, monkeypatch, doc: dict) -> tuple[str, metacrm.Model, dict]:
    """A SQLite database made the way metacrm made them before AUTOINCREMENT, with the seed
    data, then the deal and the client with the highest ids deleted (after a note each)."""
    from metacrm.runtime.crm import CRM
    from metacrm.storage import tables

    db_url = f"sqlite:///{tmp_path / 'crm.db'}"
    plain_table = tables.Table

    def table(*args, **kw):
        kw.pop("sqlite_autoincrement", None)
        return plain_table(*args, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(tables, "Table", table)
        patch.setattr(tables, "_CACHE", {})
        patch.setattr(CRM, "_earlier_metacrm", lambda self: None)
        model, _ = write_model(tmp_path, doc, "old")
        with metacrm.connect(model, db_url) as crm:
            crm.migrate()
            seed(crm)
            deals, clients = crm.find("deal", order_by="-id"), crm.find("client", order_by="-id")
            gone = {"deal": deals[0]["id"], "client": clients[0]["id"]}
            crm.note("deal", gone["deal"], "a note on the deleted deal")
            crm.note("client", gone["client"], "a note on the deleted client")
            crm.delete("deal", gone["deal"])
            crm.delete("client", gone["client"])
    engine = create_engine(db_url)
    with engine.connect() as conn:
        sql = dict(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'").all())
    engine.dispose()
    assert "AUTOINCREMENT" not in sql["deal"] and "sqlite_sequence" not in sql  # really the old way
    return db_url, model, gone


def table_sql(db_url: str) -> dict[str, str]:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'").all()
        sequences = (
            dict(conn.exec_driver_sql("SELECT name, seq FROM sqlite_sequence").all())
            if any(name == "sqlite_sequence" for name, _ in rows)
            else {}
        )
    engine.dispose()
    return {"sql": dict(rows), "seq": sequences}


@pytest.mark.parametrize("changed", [False, True], ids=["same-model", "changed-model"])
def test_old_style_sqlite_database_is_migrated(tmp_path, monkeypatch, changed) -> None:
    from metacrm.cli.main import app

    doc = with_search(base())
    db_url, model, gone = old_style(tmp_path, monkeypatch, doc)
    before, before_schema = dump(db_url), schema(db_url)

    with metacrm.connect(model, db_url) as crm:  # data operations refused until migrated
        with pytest.raises(metacrm.MigrationError, match=r"earlier metacrm: its tables client, product, deal, task"):
            crm.find("deal")
    model_path = tmp_path / "old.yaml"
    result = CliRunner().invoke(
        app, ["create", "deal", "title=x", "client=1", "--model", str(model_path), "--db", db_url]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "metacrm migrate" in result.stderr

    new_doc = edit(doc)
    if changed:  # the rebuild also carries the model's changes
        new_doc["entities"]["deal"]["fields"]["region"] = {"type": "string"}
        new_doc["entities"]["client"]["fields"]["name"]["required"] = False
    new_model, new_path = write_model(tmp_path, new_doc, "new")
    dry = CliRunner().invoke(app, ["migrate", "--dry-run", "--model", str(new_path), "--db", db_url])
    assert dry.exit_code == 0, dry.output
    assert "never reuse ids" in dry.stdout and "AUTOINCREMENT" in dry.stdout
    assert "INSERT INTO sqlite_sequence" in dry.stdout
    assert dump(db_url) == before  # the dry run changed nothing

    with metacrm.connect(new_model, db_url) as crm:
        plan = crm.migrate()
        kinds = [(s.kind, s.entity) for s in plan]
        for entity in ("client", "product", "deal", "task"):
            assert ("never_reuse_ids", entity) in kinds and ("rebuild_table", entity) in kinds
        assert crm.migrate() == []  # done once
        after = dump(db_url)
        if changed:
            assert [r.pop("region") for r in after["deal"]] == [None] * len(before["deal"])
        assert {t: rows for t, rows in after.items() if t != "metacrm_model"} == {
            t: rows for t, rows in before.items() if t != "metacrm_model"
        }  # every row
        after_schema = schema(db_url)
        if changed:
            assert after_schema["deal"]["columns"].pop("region") == ("TEXT", True)
            assert after_schema["client"]["columns"]["name"] == ("VARCHAR(100)", True)
            after_schema["client"]["columns"]["name"] = before_schema["client"]["columns"]["name"]
        assert after_schema == before_schema  # columns, indexes, unique constraints, foreign keys
        stored = table_sql(db_url)
        for entity in ("client", "product", "deal", "task"):
            assert "AUTOINCREMENT" in stored["sql"][entity]
        assert stored["seq"]["deal"] == gone["deal"] and stored["seq"]["client"] == gone["client"]

        client = crm.create("client", {"name": "Delta"})
        deal = crm.create("deal", {"title": "Next", "client": client["id"]})
        assert (client["id"], deal["id"]) == (gone["client"] + 1, gone["deal"] + 1)
        assert_fresh(crm, "client", client["id"], [("deal", deal["id"])])
        assert_fresh(crm, "deal", deal["id"])
        assert [(r["entity"], r["id"]) for r in crm.search("Delta")] == [("client", client["id"])]  # triggers kept
        assert [r["entity"] for r in crm.search("Alpha")] == ["client"]  # and the index
