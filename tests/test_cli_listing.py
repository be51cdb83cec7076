"""Readable listings on SQLite and PostgreSQL: `--columns` (and an entity's `list:`) on
list, get, board and export; links by title in tables (ids in json and csv unless
`--expand`), hidden targets as the hidden marker, one title query per link column; tables
that fit the terminal (`--wide` never cuts); numbers at their type's scale in every command."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import event
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app

MODEL = """\
metacrm: 1
name: listing
entities:
  client:
    owner: true
    fields:
      name: {type: string, required: true}
      city: {type: string}
  product:
    fields:
      name: {type: string, required: true}
  deal:
    owner: true
    list: [title, client, amount, stage]
    fields:
      title:  {type: string, required: true}
      amount: {type: money}
      rate:   {type: decimal}
      share:  {type: percent}
      notes:  {type: text}
    links:
      client:   {to: client, inverse: deals}
      products: {to: product, many: true}
    stages:
      initial: new
      states: {new: {}, won: {kind: won}}
      transitions: {new: [won]}
roles:
  manager:
    client: {read: own, create: all, update: own}
    deal: {read: own, create: all, update: own, move: own, export: own}
    product: {read: all}
"""

LONG = "очень длинное описание сделки " * 8


@pytest.fixture
def world(db_url, tmp_path: Path):
    model = tmp_path / "model.yaml"
    model.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(model, db_url)
    crm.migrate()
    crm.add_user("anna", roles=["manager"])
    crm.add_user("boris", roles=["manager"])
    mine = crm.create("client", {"name": "ООО Ромашка", "owner": "anna"})
    other = crm.create("client", {"name": "Secret Corp", "owner": "boris"})
    p1, p2 = crm.create("product", {"name": "Сервер"}), crm.create("product", {"name": "Ноутбук"})
    d1 = crm.create(
        "deal",
        {
            "title": "Поставка",
            "amount": "54.3",
            "rate": "54.3",
            "share": "12",
            "client": mine["id"],
            "products": [p1["id"], p2["id"]],
            "notes": LONG,
            "owner": "anna",
        },
    )
    d2 = crm.create("deal", {"title": "Чужой клиент", "client": other["id"], "owner": "anna"})
    ids = {"mine": mine["id"], "other": other["id"], "d1": d1["id"], "d2": d2["id"], "p1": p1["id"], "p2": p2["id"]}
    yield crm, ids, str(model)
    crm.close()


def run(model: str, url: str, *args: str, code: int = 0):
    result = CliRunner().invoke(app, [*args, "--model", model, "--db", url])
    assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output
    return result


def test_tables_show_link_titles_and_json_csv_keep_ids_unless_expanded(world, db_url) -> None:
    crm, ids, model = world
    table = run(model, db_url, "list", "deal", "--columns", "id,title,client,products", "--order-by", "id").stdout
    first = table.splitlines()[2]
    assert "ООО Ромашка" in first and "Сервер, Ноутбук" in first
    assert table.splitlines()[0].split() == ["id", "title", "client", "products"]

    rows = json.loads(run(model, db_url, "list", "deal", "--columns", "id,client,products", "-f", "json").stdout)
    assert rows[0] == {"id": ids["d1"], "client": ids["mine"], "products": [ids["p1"], ids["p2"]]}
    expanded = json.loads(
        run(model, db_url, "list", "deal", "--columns", "client", "--expand", "-f", "json", "-o", "id").stdout
    )
    assert expanded[0]["client"] == {"entity": "client", "id": ids["mine"], "title": "ООО Ромашка", "hidden": False}

    plain = list(csv.DictReader(io.StringIO(run(model, db_url, "list", "deal", "-c", "id,client", "-f", "csv").stdout)))
    assert plain[0]["client"] == str(ids["mine"])
    titled = run(model, db_url, "list", "deal", "-c", "id,client,products", "-f", "csv", "--expand", "-o", "id").stdout
    assert list(csv.DictReader(io.StringIO(titled)))[0] == {
        "id": str(ids["d1"]),
        "client": "ООО Ромашка",
        "products": "Сервер, Ноутбук",
    }


def test_a_hidden_target_shows_as_hidden_in_every_listing(world, db_url) -> None:
    crm, ids, model = world
    anna = ("--as", "anna")
    table = run(model, db_url, "list", "deal", "-c", "id,title,client", "-o", "id", *anna).stdout
    assert "Secret Corp" not in table
    line = next(row for row in table.splitlines() if "Чужой клиент" in row)
    assert line.split()[-1] == metacrm.HIDDEN
    expanded = json.loads(run(model, db_url, "list", "deal", "-c", "client", "--expand", "-f", "json", *anna).stdout)
    assert {"entity": "client", "id": ids["other"], "title": None, "hidden": True} in [r["client"] for r in expanded]
    exported = run(model, db_url, "export", "deal", "--expand", "-c", "title,client", *anna).stdout
    assert "Secret Corp" not in exported and metacrm.HIDDEN in exported


def test_one_title_query_per_link_column_whatever_the_rows(world, db_url) -> None:
    from metacrm.cli.listing import shown_rows

    crm, ids, _ = world
    ent = crm.model.entity("deal")
    for i in range(30):
        crm.create("deal", {"title": f"d{i}", "client": ids["mine"], "products": [ids["p1"]]})
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    event.listen(crm.engine, "before_cursor_execute", count)
    try:
        few = crm.find("deal", limit=2)
        many = crm.find("deal")
        statements.clear()
        shown_rows(crm, ent, few, ["title", "client", "products"], titles=True)
        for_few = len(statements)
        statements.clear()
        shown = shown_rows(crm, ent, many, ["title", "client", "products"], titles=True)
        assert len(statements) == for_few
        assert all(r["client"] == "ООО Ромашка" or r["title"] == "Чужой клиент" for r in shown)
    finally:
        event.remove(crm.engine, "before_cursor_execute", count)


def test_the_entity_list_is_the_default_table_and_json_keeps_every_column(world, db_url) -> None:
    crm, ids, model = world
    table = run(model, db_url, "list", "deal").stdout
    assert table.splitlines()[0].split() == ["title", "client", "amount", "stage"]
    rows = json.loads(run(model, db_url, "list", "deal", "-f", "json").stdout)
    assert {"id", "rate", "notes", "products", "owner", "version"} <= set(rows[0])
    assert crm.model.entity("deal").list == ("title", "client", "amount", "stage")
    assert crm.model.entity("client").list is None


def test_an_unknown_list_name_is_a_model_error_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MODEL.replace("list: [title, client, amount, stage]", "list: [title, clent]"), encoding="utf-8")
    result = CliRunner().invoke(app, ["check", str(bad)])
    assert result.exit_code == 2
    assert "bad.yaml:14:19: error: entity 'deal': list names unknown column 'clent'" in result.stdout
    assert "did you mean 'client'" in result.stdout and "invalid (1 error)" in result.stdout


@pytest.mark.parametrize("command", [["list", "deal"], ["get", "deal", "1"], ["board", "deal"], ["export", "deal"]])
def test_an_unknown_column_is_bad_usage_naming_the_columns(world, db_url, command) -> None:
    _, _, model = world
    result = run(model, db_url, *command, "--columns", "title,clent", code=2)
    assert "deal has no column 'clent'" in result.stderr and "did you mean 'client'" in result.stderr


def test_tables_fit_the_terminal_and_wide_never_cuts(world, db_url, monkeypatch) -> None:
    _, _, model = world
    whole = run(model, db_url, "list", "deal", "-c", "id,title,notes,client", "-o", "id").stdout
    assert LONG.strip() in whole  # not a terminal: nothing is cut
    monkeypatch.setattr("metacrm.cli.output.table_width", lambda: 60)
    fitted = run(model, db_url, "list", "deal", "-c", "id,title,notes,client", "-o", "id").stdout
    assert all(len(line) <= 60 for line in fitted.splitlines()), fitted
    assert "…" in fitted and "ООО Ромашка" in fitted  # the long notes are cut, the short client is not
    wide = run(model, db_url, "list", "deal", "-c", "id,title,notes,client", "-o", "id", "--wide").stdout
    assert wide == whole
    short = run(model, db_url, "list", "deal", "-c", "id,title", "-o", "id").stdout
    assert "…" not in short  # what fits is never cut
    card = run(model, db_url, "get", "deal", "1").stdout
    assert all(len(line) <= 60 for line in card.splitlines() if line.startswith("notes"))


def test_get_board_and_export_take_columns(world, db_url) -> None:
    _, ids, model = world
    card = run(model, db_url, "get", "deal", str(ids["d1"]), "--columns", "title,amount,client").stdout
    assert card.splitlines()[:2] == ["title   Поставка", "amount  54.30"]
    assert "-> client: client" in card and "rate" not in card and "products" not in card
    board = run(model, db_url, "board", "deal", "--columns", "title,client,amount").stdout
    assert "ООО Ромашка" in board and metacrm.HIDDEN not in board  # the system user reads every client
    out = run(model, db_url, "board", "deal", "-c", "id,client", "-f", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows, out
    assert rows[0].keys() == {"stage", "id", "client"} and rows[0]["client"] in {str(ids["mine"]), str(ids["other"])}
    exported = run(model, db_url, "export", "deal", "--columns", "title,client", "--order-by", "title").stdout
    assert exported.splitlines()[0] == "title,client" and f"Поставка,{ids['mine']}" in exported


def test_numbers_print_at_their_scale_in_every_command(world, db_url) -> None:
    _, ids, model = world
    d = str(ids["d1"])
    outputs = {
        "create": run(model, db_url, "create", "deal", "title=x", "rate=54.30", "amount=54.3").stdout,
        "get": run(model, db_url, "get", "deal", d).stdout,
        "list": run(model, db_url, "list", "deal", "-c", "amount,rate,share").stdout,
        "list json": run(model, db_url, "list", "deal", "-f", "json").stdout,
        "list csv": run(model, db_url, "list", "deal", "-f", "csv").stdout,
        "export": run(model, db_url, "export", "deal").stdout,
        "update": run(model, db_url, "update", "deal", d, "title=y").stdout,
    }
    for name, text in outputs.items():
        assert "54.3000" not in text and "12.0000" not in text, (name, text)
        assert "54.30" in text, name  # money keeps its two decimals
    rows = json.loads(outputs["list json"])
    assert [(r["amount"], r["rate"], r["share"]) for r in rows if r["id"] == ids["d1"]] == [("54.30", "54.3", "12")]
    assert "rate        54.3\n" in outputs["get"] and "share       12\n" in outputs["get"]


def test_version_flag() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"metacrm {metacrm.__version__}\n"
