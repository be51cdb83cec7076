"""The kanban board on SQLite and PostgreSQL: columns in graph order with counts and sums over
every record, the first records per stage in order (records without the order value last),
filters, several pipelines, an entity without money or owner, and the CLI's formats."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.runtime.reports import BadReportOption

CONTRACT = Path(__file__).parent / "fixtures" / "valid" / "contract.yaml"

TICKETS = """
metacrm: 1
name: desk
entities:
  ticket:
    label: Заявка
    fields:
      subject: {type: string, required: true}
    stages:
      initial: open
      states:
        open: {label: Открыта}
        done: {label: Решена, kind: won}
        dropped: {label: Отклонена, kind: lost}
      transitions:
        open: [done, dropped]
"""


@pytest.fixture
def crm(db_url):
    crm = metacrm.connect(CONTRACT, db_url)
    crm.migrate()
    for login in ("anna", "boris"):  # an owner must be a user
        crm.add_user(login, roles=["manager"])
    client = crm.create("client", {"name": "ООО Ромашка"})["id"]
    amounts = ["100", "250.50", None, "250.50", "90", "1000", "5", None]
    for i, amount in enumerate(amounts, start=1):
        crm.create(
            "deal",
            {"title": f"Сделка {i}", "amount": amount, "client": client, "owner": "anna" if i % 2 else "boris"},
        )
    for i in (6, 7):
        crm.move("deal", i, "qualified")
    crm.move("deal", 6, "proposal")
    crm.update("deal", 8, {"lost_reason": "дорого"})
    crm.move("deal", 8, "lost")
    yield crm
    crm.close()


def summary(board: dict) -> list[tuple]:
    return [(c["stage"], c["count"], c["amount"], [r["id"] for r in c["records"]], c["more"]) for c in board["columns"]]


def test_board_columns_counts_sums_and_order(crm) -> None:
    board = crm.board("deal", limit_per_stage=3)
    assert summary(board) == [
        ("new", 5, Decimal("691.00"), [4, 2, 1], 2),  # 250.50 (ids 4, 2: ties by id, the same way), 100; 90, None
        ("qualified", 1, Decimal("5.00"), [7], 0),
        ("proposal", 1, Decimal("1000.00"), [6], 0),
        ("invoice", 0, Decimal("0.00"), [], 0),
        ("won", 0, Decimal("0.00"), [], 0),
        ("lost", 1, Decimal("0.00"), [8], 0),
    ]
    assert (board["entity"], board["pipeline"], board["count"], board["amount"]) == (
        "deal",
        "default",
        8,
        Decimal("1696.00"),
    )
    first = board["columns"][0]["records"][0]
    assert {k: first[k] for k in ("id", "title", "amount", "owner")} == {
        "id": 4,
        "title": "Сделка 4",
        "amount": Decimal("250.50"),
        "owner": "boris",
    }
    assert [c["label"] for c in board["columns"]] == ["new", "qualified", "proposal", "invoice", "won", "lost"]
    assert [c["kind"] for c in board["columns"]][-2:] == ["won", "lost"]
    new = crm.board("deal", limit_per_stage=None)["columns"][0]
    assert [r["id"] for r in new["records"]] == [4, 2, 1, 5, 3] and new["more"] == 0
    assert [r["amount"] for r in new["records"]][-1] is None  # no amount: last


def test_board_order_filter_and_limits(crm) -> None:
    new = crm.board("deal", order_by="title", limit_per_stage=2)["columns"][0]
    assert [r["title"] for r in new["records"]] == ["Сделка 1", "Сделка 2"] and new["more"] == 3
    new = crm.board("deal", order_by="amount", limit_per_stage=10)["columns"][0]
    assert [r["id"] for r in new["records"]] == [5, 1, 2, 4, 3]
    assert [r["id"] for r in crm.board("deal", order_by="-id")["columns"][0]["records"]] == [5, 4, 3, 2, 1]
    empty = crm.board("deal", limit_per_stage=0)
    assert [c["count"] for c in empty["columns"]] == [5, 1, 1, 0, 0, 1]
    assert all(c["records"] == [] for c in empty["columns"])
    anna = crm.board("deal", where="owner = 'anna'")
    assert [(c["stage"], c["count"], c["amount"]) for c in anna["columns"] if c["count"]] == [
        ("new", 3, Decimal("190.00")),
        ("qualified", 1, Decimal("5.00")),
    ]
    with pytest.raises(BadReportOption, match="cannot order the board by 'amout'.*did you mean 'amount'"):
        crm.board("deal", order_by="-amout")
    with pytest.raises(BadReportOption, match="unknown pipeline 'x'"):
        crm.board("deal", "x")
    with pytest.raises(BadReportOption, match="client has no stages"):
        crm.board("client")


def test_board_without_money_or_owner(db_url, tmp_path) -> None:
    path = tmp_path / "desk.yaml"
    path.write_text(TICKETS, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    for subject in ("Принтер", "Почта", "VPN"):
        crm.create("ticket", {"subject": subject})
    crm.move("ticket", 2, "done")
    board = crm.board("ticket")
    assert board["amount"] is None and board["amount_field"] is None
    assert [(c["label"], c["count"], c["amount"]) for c in board["columns"]] == [
        ("Открыта", 2, None),
        ("Решена", 1, None),
        ("Отклонена", 0, None),
    ]
    assert board["columns"][0]["records"] == [
        {"id": 3, "title": "VPN", "amount": None, "since": board["columns"][0]["records"][0]["since"]},
        {"id": 1, "title": "Принтер", "amount": None, "since": board["columns"][0]["records"][1]["since"]},
    ]  # newest in the stage first; no owner key without owners
    runner = CliRunner()
    text = runner.invoke(app, ["board", "ticket", "--model", str(path), "--db", db_url]).stdout
    assert "Открыта (open) · 2 " in text and "#3" in text
    crm.close()


@pytest.fixture
def cli(crm, db_url):
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        result = runner.invoke(app, [*args, "--model", str(CONTRACT), "--db", db_url])
        assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}"
        assert "Traceback" not in result.output
        return result

    return invoke


def test_cli_board(cli) -> None:
    text = cli("board", "deal", "--limit", "2").stdout
    lines = text.splitlines()
    assert lines[0] == "deal · pipeline default · 8 records · 1 696.00"
    assert max(len(line) for line in lines) <= 100
    assert any(line.startswith("── new · 5 · 691.00 ") for line in lines)
    assert "  … and 3 more" in lines
    assert lines[lines.index(next(line for line in lines if line.startswith("── invoice"))) + 1] == "  (empty)"
    doc = json.loads(cli("board", "deal", "--format", "json").stdout)
    assert doc["columns"][0]["amount"] == "691.00" and doc["columns"][0]["records"][0]["amount"] == "250.50"
    csv_lines = cli("board", "deal", "--format", "csv", "--limit", "1").stdout.splitlines()
    assert csv_lines[0] == "stage,id,title,amount,owner,since"
    assert [line.split(",")[:5] for line in csv_lines[1:]] == [
        ["new", "4", "Сделка 4", "250.50", "boris"],
        ["qualified", "7", "Сделка 7", "5.00", "anna"],
        ["proposal", "6", "Сделка 6", "1000.00", "boris"],
        ["lost", "8", "Сделка 8", "", "boris"],
    ]
    assert "anna" in cli("board", "deal", "--where", "owner = 'anna'").stdout
    assert "unknown pipeline 'x'" in cli("board", "deal", "--pipeline", "x", code=2).stderr
    assert "cannot order" in cli("board", "deal", "--order-by", "nope", code=2).stderr
    assert "unknown entity" in cli("board", "dael", code=1).stderr
