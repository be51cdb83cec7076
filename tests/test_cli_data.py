"""The record commands of the CLI on SQLite and PostgreSQL: output formats, exit codes, and
bad input refused with one line naming entity and field, the database unchanged."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metacrm.cli.main import app

CONTRACT = str(Path(__file__).parent / "fixtures" / "valid" / "contract.yaml")


@pytest.fixture
def run(db_url):
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        result = runner.invoke(app, [*args, "--model", CONTRACT, "--db", db_url])
        assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}"
        assert "Traceback" not in result.output
        return result

    invoke("migrate")
    return invoke


def _json(result):
    return json.loads(result.stdout)


def test_contract_cli_walkthrough(run) -> None:
    c = _json(run("create", "client", "name=ООО Ромашка", "email=info@romashka.ru", "city=Москва", "--format", "json"))
    assert c["id"] == 1 and c["name"] == "ООО Ромашка"
    run("create", "product", "name=Сервер", "price=150000")
    run("create", "product", "name=Ноутбук", "price=80 000,00")
    d = _json(
        run(
            "create",
            "deal",
            "title=Поставка",
            "amount=120000.00",
            f"client={c['id']}",
            "products=1,2",
            "--format",
            "json",
        )
    )
    assert d["amount"] == "120000.00" and d["products"] == [1, 2] and d["stage"] == "new"
    run("create", "task", "title=Позвонить", "subject=deal:1")
    card = run("get", "client", "1").stdout
    assert "ООО Ромашка" in card and "<- deals (1):" in card and "deal 1 «Поставка» [new]" in card
    card_json = _json(run("get", "deal", "1", "--format", "json"))
    assert card_json["links"]["client"]["title"] == "ООО Ромашка"
    assert [p["title"] for p in card_json["links"]["products"]] == ["Сервер", "Ноутбук"]
    rows = _json(
        run(
            "list",
            "deal",
            "--where",
            "amount > 1000 and client.city = 'Москва'",
            "--order-by",
            "-amount",
            "--limit",
            "5",
            "--format",
            "json",
        )
    )
    assert [r["id"] for r in rows] == [1]
    listing = run("list", "product", "--order-by", "-price").stdout
    assert listing.splitlines()[2].startswith("1 ") and "(2 records)" in listing
    out = run("list", "product", "--format", "csv").stdout
    assert list(csv.DictReader(io.StringIO(out)))[1]["price"] == "80000.00"
    updated = _json(run("update", "deal", "1", "amount=130000", "--format", "json"))
    assert updated["amount"] == "130000.00" and updated["version"] == 2
    assert _json(run("update", "deal", "1", "products=", "--format", "json"))["products"] == []
    run("delete", "task", "1")
    run("get", "task", "1", code=1)


def test_empty_list_formats(run) -> None:
    assert _json(run("list", "client", "--format", "json")) == []
    assert run("list", "client", "--format", "csv").stdout.startswith("id,name,email")


BAD = [
    (["create", "client", "email=a@b.ru"], "client.name"),
    (["create", "deal", "title=x", "amount=abc", "client=1"], "deal.amount"),
    (["create", "client", "name=x", "email=not-an-email"], "client.email"),
    (["create", "deal", "title=x", "amount=-5", "client=1"], "deal.amount"),
    (["create", "client", "name=x", "source=web"], "client.source"),
    (["create", "client", "name=x", "email=info@romashka.ru"], "client.email"),
    (["create", "deal", "title=x", "client=99"], "deal.client"),
    (["create", "client", "name=x", "nmae=y"], "nmae"),
    (["list", "deal", "--where", "amount >> 5"], "deal"),
    (["list", "deal", "--where", "amout > 5"], "amout"),
    (["update", "client", "1", "email=bad@"], "client.email"),
    (["update", "deal", "1", "stage=won"], "deal.stage"),
    (["delete", "client", "1"], "client"),
    (["get", "client", "42"], "client 42"),
]


@pytest.mark.parametrize(("args", "named"), BAD, ids=[f"{a[0]}-{n}" for a, n in BAD])
def test_bad_input_exit_1_one_line_nothing_written(run, args, named) -> None:
    run("create", "client", "name=ООО Ромашка", "email=info@romashka.ru")
    run("create", "deal", "title=Поставка", "amount=10", "client=1")
    before = (run("list", "client", "--format", "json").stdout, run("list", "deal", "--format", "json").stdout)
    result = run(*args, code=1)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert named in lines[0]
    after = (run("list", "client", "--format", "json").stdout, run("list", "deal", "--format", "json").stdout)
    assert after == before


def test_usage_errors_exit_2(run) -> None:
    run("create", "client", "justtext", code=2)
    run("update", "client", "1", code=2)


def test_unmigrated_database_says_to_migrate(tmp_path) -> None:
    result = CliRunner().invoke(
        app, ["list", "client", "--model", CONTRACT, "--db", f"sqlite:///{tmp_path / 'new.db'}"]
    )
    assert result.exit_code == 1
    assert "metacrm migrate" in result.stderr


def test_migrate_dry_run_prints_sql(tmp_path) -> None:
    result = CliRunner().invoke(
        app, ["migrate", "--dry-run", "--model", CONTRACT, "--db", f"sqlite:///{tmp_path / 'new.db'}"]
    )
    assert result.exit_code == 0
    assert "CREATE TABLE deal" in result.stdout and "CREATE TABLE deal__products" in result.stdout
    after = CliRunner().invoke(app, ["list", "client", "--model", CONTRACT, "--db", f"sqlite:///{tmp_path / 'new.db'}"])
    assert after.exit_code == 1 and "metacrm migrate" in after.stderr  # the dry run created nothing
