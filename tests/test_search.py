"""Full-text search on SQLite (FTS5, prefixes) and PostgreSQL (tsvector, Russian stems): the
index is kept by the database, so it is current after create, update, delete and imports;
results respect row-level access."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.runtime.search import fts5_query, query_words, tsquery
from metacrm.storage.tables import search_index_name

MODEL = """\
metacrm: 1
name: searchy
entities:
  client:
    owner: true
    title: name
    fields:
      name: {type: string, required: true}
      notes: {type: text}
      city: {type: string}
    search: [name, notes]
  product:
    fields:
      name: {type: string, required: true}
roles:
  manager:
    client: {read: own, create: all, update: own}
"""


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "searchy.yaml"
    path.write_text(MODEL, encoding="utf-8")
    return path


@pytest.fixture
def crm(model_path, db_url):
    crm = metacrm.connect(model_path, db_url)
    crm.migrate()
    crm.add_user("anna", roles=["manager"])
    crm.add_user("boris", roles=["manager"])
    yield crm
    crm.close()


def ids(results, entity="client"):
    return sorted(r["id"] for r in results if r["entity"] == entity)


def test_query_words_drop_operators() -> None:
    words = query_words('Поставка "OR" acme* -NEAR(x) a_b')
    assert words == ["поставка", "or", "acme", "near", "x", "a", "b"]
    assert fts5_query(["постав", "or"]) == '"постав"* AND "or"*'
    assert tsquery(["постав", "or"]) == "постав:* & or:*"


def test_cyrillic_forms_and_prefixes(crm) -> None:
    supply = crm.create("client", {"name": "ООО Ромашка", "notes": "Ждём поставки цемента в марте"})
    other = crm.create("client", {"name": "Acme Ltd", "notes": "steel supplies"})
    assert ids(crm.search("постав")) == [supply["id"]]  # a prefix: both dialects
    assert ids(crm.search("ПОСТАВ")) == [supply["id"]]  # case folded for Cyrillic too
    if crm.engine.dialect.name == "postgresql":
        assert ids(crm.search("поставка")) == [supply["id"]]  # another grammatical form
        assert ids(crm.search("цемент")) == [supply["id"]]
        assert ids(crm.search("supply")) == [other["id"]]  # English is stemmed too ('supplies')
    assert ids(crm.search("acm")) == [other["id"]]
    assert ids(crm.search("ромашка цемент")) == [supply["id"]]  # every word must match
    assert crm.search("ромашка steel") == []
    found = crm.search("ромашка")[0]
    assert found["entity"] == "client" and found["title"] == "ООО Ромашка"
    assert "[" in found["snippet"] and isinstance(found["rank"], float)
    assert ids(crm.search("acme", entity="client")) == [other["id"]]


def test_index_follows_update_delete_and_import(crm) -> None:
    rec = crm.create("client", {"name": "Вектор", "notes": "договор поставки"})
    crm.update("client", rec["id"], {"notes": "отгрузка щебня"})
    assert crm.search("договор") == []
    assert ids(crm.search("щебн")) == [rec["id"]]
    crm.update("client", rec["id"], {"city": "Тверь"})  # not a search field: still found
    assert ids(crm.search("щебн")) == [rec["id"]]
    imported = crm.create_many("client", [{"name": f"Импорт {i}", "notes": "складская логистика"} for i in range(5)])
    assert ids(crm.search("логистик", limit=50)) == sorted(r["id"] for r in imported)
    assert len(crm.search("логистик", limit=3)) == 3
    crm.delete("client", rec["id"])
    assert crm.search("щебн") == []


def test_access_applies(crm) -> None:
    mine = crm.create("client", {"name": "Альфа поставки", "owner": "anna"})
    crm.create("client", {"name": "Бета поставки", "owner": "boris"})
    assert ids(crm.as_user("anna").search("постав")) == [mine["id"]]
    assert len(crm.search("постав")) == 2  # the system user sees everything


def test_refusals(crm) -> None:
    with pytest.raises(metacrm.ValidationError, match="nothing to search"):
        crm.search("   ")
    with pytest.raises(metacrm.ValidationError, match="nothing to search"):
        crm.search("*!?")
    with pytest.raises(metacrm.ValidationError, match="product declares no search fields.*client"):
        crm.search("x", entity="product")
    with pytest.raises(metacrm.ValidationError, match="limit"):
        crm.search("x", limit=0)


def test_cli_search_json(crm, model_path, db_url) -> None:
    crm.create("client", {"name": "ООО Ромашка", "notes": "поставки", "owner": "anna"})
    crm.create("client", {"name": "Ромашка-2", "owner": "boris"})
    runner = CliRunner()
    base = ["--model", str(model_path), "--db", db_url]
    result = runner.invoke(app, ["search", "ромашка", "--entity", "client", "--format", "json", *base])
    assert result.exit_code == 0, result.output
    assert sorted(r["title"] for r in json.loads(result.stdout)) == ["ООО Ромашка", "Ромашка-2"]
    result = runner.invoke(app, ["search", "ромашка", "--as", "anna", "--format", "json", *base])
    assert [r["title"] for r in json.loads(result.stdout)] == ["ООО Ромашка"]
    table = runner.invoke(app, ["search", "ромашка", *base])
    assert table.exit_code == 0 and "ООО Ромашка" in table.stdout and "(2 records)" in table.stdout
    bad = runner.invoke(app, ["search", "x", "--entity", "product", *base])
    assert bad.exit_code == 1 and "no search fields" in bad.output


def test_ensure_search_index_repairs_a_lost_index(crm) -> None:
    rec = crm.create("client", {"name": "Ромашка", "notes": "поставки"})
    assert crm.ensure_search_index() == []  # a new database: already in place
    with crm.engine.begin() as conn:  # what a table rebuild on SQLite / an older model leaves
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql('DROP TRIGGER "client__fts_au"')
            conn.exec_driver_sql('DROP TABLE "client__fts"')
        else:
            index = search_index_name("client", ("name", "notes"))
            conn.exec_driver_sql(f'DROP INDEX "{index}"')
    assert crm.ensure_search_index() == ["client"]
    assert crm.ensure_search_index() == []
    assert ids(crm.search("постав")) == [rec["id"]]
    crm.update("client", rec["id"], {"notes": "щебень"})
    assert ids(crm.search("щебен")) == [rec["id"]] and crm.search("постав") == []


def test_search_survives_a_migration_of_an_existing_database(db_url, tmp_path) -> None:
    """Migrating a database that has search indexes (FTS5 shadow tables on SQLite) works, and
    the index covers new search fields afterwards."""
    import metacrm

    old = tmp_path / "old.yaml"
    old.write_text(
        "metacrm: 1\nname: s\nentities:\n  client:\n    fields:\n      name: {type: string}\n"
        "      notes: {type: text}\n    search: [name]\n",
        encoding="utf-8",
    )
    crm = metacrm.connect(old, db_url)
    crm.migrate()
    crm.create("client", {"name": "ООО Поставки", "notes": "склад в Твери"})
    crm.close()
    new = tmp_path / "new.yaml"
    new.write_text(
        old.read_text(encoding="utf-8")
        .replace("search: [name]", "search: [name, notes]")
        .replace("      notes: {type: text}\n", "      notes: {type: text}\n      city: {type: string}\n"),
        encoding="utf-8",
    )
    crm = metacrm.connect(new, db_url)
    assert crm.migrate()
    assert [r["title"] for r in crm.search("твери")] == ["ООО Поставки"]
    assert [r["title"] for r in crm.search("постав")] == ["ООО Поставки"]
    crm.close()
