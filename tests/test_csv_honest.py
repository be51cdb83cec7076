"""Honest imports and bulk creates, on SQLite and PostgreSQL: every bad record of a mixed batch
is reported (values and links, across batches too); a record imported into a stage must fit it
(its ``requires``, the ``when`` of the moves into it); automations fire or not as asked; a
refused import still writes the report --help promises, and its "(and N more)" is exact; the
garbage collector is paused around a bulk write and left as it was found."""

from __future__ import annotations

import csv
import gc
from pathlib import Path

import pytest
from conftest import require_module
from sqlalchemy import func, select
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.io import ImportRefused, import_csv
from metacrm.runtime import records as rec

FIXTURES = Path(__file__).parent / "fixtures" / "valid"
CONTRACT = FIXTURES / "contract.yaml"
MOVES = FIXTURES / "moves.yaml"

AUTOMATED = """\
metacrm: 1
name: automated
entities:
  deal:
    fields:
      title: {type: string, required: true}
      amount: {type: money}
      doubled: {type: money, formula: "amount * 2"}
      note: {type: string}
roles:
  boss: {"*": all}
automations:
  stamp:
    when: {entity: deal, created: true}
    do:
      - update: {values: {note: stamped}}
"""


def connected(model, url):
    crm = metacrm.connect(model, url)
    crm.migrate()
    return crm


@pytest.fixture
def trade(db_url):
    crm = connected(CONTRACT, db_url)
    yield crm
    crm.close()


@pytest.fixture
def moves(db_url):
    crm = connected(MOVES, db_url)
    yield crm
    crm.close()


def count(crm, table_name: str) -> int:
    table = crm.storage.metadata.tables[table_name]
    with crm.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def refused_issues(call) -> list:
    with pytest.raises(metacrm.ValidationError) as info:
        call()
    return info.value.issues


# -- create_many: every bad record ----------------------------------------------------------


def test_a_mixed_batch_reports_a_bad_value_and_a_missing_link_together(trade) -> None:
    client = trade.create("client", {"name": "Ромашка"})
    issues = refused_issues(
        lambda: trade.create_many(
            "deal",
            [
                {"title": "Хорошая", "client": client["id"]},
                {"title": "Плохая сумма", "amount": "много", "client": client["id"]},
                {"title": "Чужой клиент", "client": 999},
                {"title": "Хорошая 2", "client": client["id"]},
            ],
        )
    )
    assert [(i.index, i.field) for i in issues] == [(1, "amount"), (2, "client")]
    assert "999" in issues[1].message
    assert count(trade, "deal") == 0


def test_every_batch_is_checked_after_a_refused_one(trade, monkeypatch) -> None:
    monkeypatch.setattr(rec, "BATCH", 2)
    client = trade.create("client", {"name": "Ромашка"})
    trade.create("client", {"name": "Занято", "email": "taken@example.com"})
    good = {"name": "Хороший"}
    with pytest.raises(metacrm.ValidationError) as info:
        trade.create_many(
            "client",
            [
                good,
                {"name": ""},
                good,
                {"name": "Дубль", "email": "taken@example.com"},
                {"name": "x", "owner": "nobody"},
            ],
        )
    assert [(i.index, i.field) for i in info.value.issues] == [(1, "name"), (3, "email"), (4, "owner")]
    assert "(and 2 more)" in str(info.value)
    issues = refused_issues(
        lambda: trade.create_many(
            "deal",
            [
                {"title": "a", "client": client["id"]},
                {"title": "b", "client": 404},
                {"title": "", "client": client["id"]},
                {"title": "d", "client": client["id"], "products": [77]},
            ],
        )
    )
    assert [(i.index, i.field) for i in issues] == [(1, "client"), (2, "title"), (3, "products")]
    assert count(trade, "deal") == 0 and count(trade, "client") == 2


# -- placement: a record must fit the stage it is imported into ------------------------------


def test_a_placed_record_must_fit_its_stage(moves) -> None:
    p = moves.create("product", {"name": "Сервер"})
    c = moves.create("client", {"name": "Ромашка"})
    issues = refused_issues(
        lambda: moves.create_many(
            "deal",
            [
                {"title": "без товаров", "amount": "5", "stage": "proposal"},  # requires products
                {"title": "мало", "amount": "5", "products": [p["id"]], "stage": "approval"},  # when fails
                {"title": "ок", "amount": "200000", "products": [p["id"]], "stage": "approval"},
                {"title": "без клиента", "stage": "qualified"},  # requires client
                {"title": "без причины", "stage": "lost"},  # requires lost_reason
            ],
            import_stages=True,
        )
    )
    assert [(i.index, i.field) for i in issues] == [(0, "products"), (1, "stage"), (3, "client"), (4, "lost_reason")]
    assert "is required to be in stage 'proposal'" in issues[0].message
    assert issues[1].message == "cannot be placed in stage 'approval': condition not met: amount > 100000"
    assert count(moves, "deal") == 0 and count(moves, moves.storage.history_table.name) == 0
    done = moves.create_many(
        "deal",
        [
            {"title": "ок", "amount": "200000", "products": [p["id"]], "stage": "approval"},
            {"title": "квал", "client": c["id"], "stage": "Qualified".lower()},
            {"title": "выиграна", "stage": "won"},  # won has a way in without `when`: nothing to check
        ],
        import_stages=True,
    )
    assert [d["stage"] for d in done] == ["approval", "qualified", "won"]


def test_placement_is_reported_with_the_value_errors_of_other_records(moves, monkeypatch) -> None:
    monkeypatch.setattr(rec, "BATCH", 2)
    records = [
        {"title": "", "stage": "new"},
        {"title": "мало", "amount": "7", "stage": "approval"},
        {"title": "тоже мало", "amount": "8", "stage": "approval"},
        {"title": "хорошо", "amount": "300000", "stage": "approval"},
    ]
    issues = refused_issues(lambda: moves.create_many("deal", records, import_stages=True))
    assert [(i.index, i.field) for i in issues] == [(0, "title"), (1, "stage"), (2, "stage")]
    assert count(moves, "deal") == 0


def test_automations_fire_by_default_and_not_when_asked(db_url, tmp_path) -> None:
    path = tmp_path / "automated.yaml"
    path.write_text(AUTOMATED, encoding="utf-8")
    crm = connected(path, db_url)
    try:
        fired = crm.create_many("deal", [{"title": "a", "amount": "2"}])
        quiet = crm.create_many("deal", [{"title": "b", "amount": "3"}], automations=False)
        assert crm.get("deal", fired[0]["id"])["note"] == "stamped"
        stored = crm.get("deal", quiet[0]["id"])
        assert stored["note"] is None
        assert str(stored["doubled"]) in ("6", "6.00")  # derived fields are computed all the same
        later = crm.create("deal", {"title": "c"})  # the switch lasts for the one call
        assert crm.get("deal", later["id"])["note"] == "stamped"
        csv_path = tmp_path / "deals.csv"
        csv_path.write_text("title,amount\nd,1\n", encoding="utf-8")
        result = import_csv(crm, "deal", csv_path, automations=False)
        assert crm.get("deal", result.ids[0])["note"] is None
        runner = CliRunner()
        out = runner.invoke(
            app, ["import", "deal", str(csv_path), "--no-automations", "--model", str(path), "--db", db_url]
        )
        assert out.exit_code == 0, out.output
        out = runner.invoke(app, ["import", "deal", str(csv_path), "--model", str(path), "--db", db_url])
        assert out.exit_code == 0, out.output
        notes = [d["note"] for d in crm.find("deal", order_by="id")]
        assert notes == ["stamped", None, "stamped", None, None, "stamped"]
    finally:
        crm.close()


def test_the_api_import_takes_the_automations_switch(db_url, tmp_path) -> None:
    require_module("fastapi", why="the HTTP API is the [web] extra")
    from fastapi.testclient import TestClient

    from metacrm.runtime.tokens import create_token
    from metacrm.web import create_app

    path = tmp_path / "automated.yaml"
    path.write_text(AUTOMATED, encoding="utf-8")
    crm = connected(path, db_url)
    try:
        crm.add_user("boss", roles=["boss"])
        headers = {"Authorization": f"Bearer {create_token(crm, 'boss')['token']}", "Content-Type": "text/csv"}
        with TestClient(create_app(crm)) as client:
            for query in ("?automations=false", ""):
                r = client.post(f"/api/v1/deal/import{query}", content=b"title\nx\n", headers=headers)
                assert r.status_code == 200, r.text
        assert [d["note"] for d in crm.find("deal", order_by="id")] == [None, "stamped"]
    finally:
        crm.close()


def test_the_garbage_collector_is_left_as_it_was(trade) -> None:
    client = trade.create("client", {"name": "Ромашка"})
    assert gc.isenabled()
    trade.create_many("deal", [{"title": "a", "client": client["id"]}])
    assert gc.isenabled()
    with pytest.raises(metacrm.ValidationError):
        trade.create_many("deal", [{"title": ""}])
    assert gc.isenabled()
    gc.disable()
    try:
        trade.create_many("deal", [{"title": "b", "client": client["id"]}])
        assert not gc.isenabled()
    finally:
        gc.enable()


# -- CSV: placement, the report of a refused import, the exact count -------------------------


def test_csv_rows_that_do_not_fit_their_stage_are_rejected(moves, tmp_path) -> None:
    moves.create("product", {"name": "Сервер"})
    path = tmp_path / "deals.csv"
    path.write_text(
        "title,amount,products,stage,lost_reason\n"
        "ok,200000,Сервер,approval,\n"
        "small,5,Сервер,approval,\n"
        ",abc,Сервер,proposal,\n"
        "nothing,,,proposal,\n"
        "gone,,,lost,\n",
        encoding="utf-8",
    )
    with pytest.raises(ImportRefused) as info:
        import_csv(moves, "deal", path, import_stages=True)
    found = [(r.row, r.column, r.reason) for r in info.value.result.rejected]
    assert found == [
        (3, "stage", "cannot be placed in stage 'approval': condition not met: amount > 100000"),
        (4, "title", "is required"),
        (4, "amount", "'abc' is not a number"),
        (5, "amount", "is required to be in stage 'proposal'"),
        (5, "products", "is required to be in stage 'proposal'"),
        (6, "lost_reason", "is required to be in stage 'lost'"),
    ]
    assert str(info.value).endswith("(and 5 more); nothing was imported")
    assert count(moves, "deal") == 0
    result = import_csv(moves, "deal", path, import_stages=True, skip_invalid=True)
    assert result.created == 1 and result.rejected_rows == [3, 4, 5, 6]
    assert moves.get("deal", result.ids[0])["stage"] == "approval"


def test_a_refused_cli_import_writes_the_report_and_counts_exactly(trade, db_url, tmp_path) -> None:
    trade.create("client", {"name": "Ромашка"})
    path = tmp_path / "deals.csv"
    path.write_text(
        "title,amount,client,stage\na,-5,Ромашка,proposal\nb,abc,Nobody,won\n,,Ромашка,lost\nd,10,Ромашка,invoice\n",
        encoding="utf-8",
    )
    runner = CliRunner()
    args = ["--model", str(CONTRACT), "--db", db_url]
    out = runner.invoke(app, ["import", "deal", str(path), "--with-stages", *args])
    assert out.exit_code == 1
    report = tmp_path / "deals.report.csv"
    with report.open(encoding="utf-8") as f:
        rows = list(csv.reader(f))
    problems = rows[1:]
    assert [(r[0], r[2]) for r in problems] == [
        ("2", "amount"),
        ("3", "amount"),
        ("3", "client"),
        ("4", "title"),
        ("4", "lost_reason"),
    ]
    message = out.output.strip().splitlines()[-1]
    assert f"(and {len(problems) - 1} more); nothing was imported (report: {report})" in message
    assert "Traceback" not in out.output
    assert count(trade, "deal") == 0
    chosen = tmp_path / "chosen.csv"
    out = runner.invoke(app, ["import", "deal", str(path), "--with-stages", "--report", str(chosen), *args])
    assert out.exit_code == 1 and f"(report: {chosen})" in out.output
    assert chosen.read_text(encoding="utf-8") == report.read_text(encoding="utf-8")


def test_import_help_names_the_options_and_the_report() -> None:
    out = CliRunner().invoke(app, ["import", "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0
    for text in ("--no-automations", "--with-stages", "report.csv", "also when the import is refused"):
        assert text in out.output
