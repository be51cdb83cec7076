"""An ``owner`` must be a stored user: create, update, create_many and CSV import with an
unknown login are refused with a ValidationError naming the field and the login, nothing
written; a batch checks its owners in one query. Both dialects."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.io.csv_io import import_csv

CONTRACT = Path(__file__).parent / "fixtures" / "valid" / "contract.yaml"


@pytest.fixture
def crm(db_url):
    crm = metacrm.connect(CONTRACT, db_url)
    crm.migrate()
    crm.add_user("anna", roles=["manager"])
    yield crm
    crm.close()


def test_create_and_update_refuse_an_unknown_owner(crm) -> None:
    with pytest.raises(metacrm.ValidationError) as info:
        crm.create("client", {"name": "ООО Ромашка", "owner": "ghost"})
    assert str(info.value).startswith("client.owner: no user 'ghost'")
    assert [(i.field, i.value) for i in info.value.issues] == [("owner", "ghost")]
    assert crm.count("client") == 0
    client = crm.create("client", {"name": "ООО Ромашка", "owner": "anna"})
    with pytest.raises(metacrm.ValidationError, match="client.owner: no user 'ghost'"):
        crm.update("client", client["id"], {"owner": "ghost", "city": "Казань"})
    assert crm.get("client", client["id"])["owner"] == "anna" and crm.get("client", client["id"])["city"] is None


def test_create_many_checks_every_owner_in_one_query(crm) -> None:
    rows = [{"name": f"Клиент {i}", "owner": "anna" if i % 3 else f"ghost{i % 2}"} for i in range(12)]
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        if "metacrm_user" in statement:
            statements.append(statement)

    event.listen(crm.engine, "before_cursor_execute", count)
    try:
        with pytest.raises(metacrm.ValidationError) as info:
            crm.create_many("client", rows)
    finally:
        event.remove(crm.engine, "before_cursor_execute", count)
    assert len(statements) == 1
    assert [(i.index, i.field, i.value) for i in info.value.issues] == [
        (0, "owner", "ghost0"),
        (3, "owner", "ghost1"),
        (6, "owner", "ghost0"),
        (9, "owner", "ghost1"),
    ]
    assert str(info.value).startswith("record 0: client.owner: no user 'ghost0'") and "(and 3 more)" in str(info.value)
    assert crm.count("client") == 0
    ok = crm.create_many("client", [{"name": "А", "owner": "anna"}, {"name": "Б"}])
    assert [r["owner"] for r in ok] == ["anna", None]


def test_import_and_cli_refuse_an_unknown_owner(crm, db_url, tmp_path) -> None:
    path = tmp_path / "clients.csv"
    path.write_text("name,owner\nООО Ромашка,anna\nИП Лютик,nobody\n", encoding="utf-8")
    with pytest.raises(metacrm.ValidationError, match="nobody"):
        import_csv(crm, "client", path)
    assert crm.count("client") == 0
    result = CliRunner().invoke(
        app, ["create", "client", "name=Ромашка", "owner=nobody", "--model", str(CONTRACT), "--db", db_url]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "owner" in result.output and "nobody" in result.output
    assert crm.count("client") == 0


def test_the_acting_user_owns_what_they_create(crm) -> None:
    anna = crm.as_user("anna")
    assert anna.create("client", {"name": "Свой"})["owner"] == "anna"
