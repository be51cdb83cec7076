"""The Maven Analytics CRM data set (tests/data/maven-crm, a copy of the public sample) imported into
examples/maven.yaml with the commands its header documents, on SQLite and PostgreSQL: every row
arrives, and every flaw of the data is in the import report (see the comment in maven.yaml)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import MAVEN_DATA, require_path
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.io import ImportRefused, import_csv

ROOT = Path(__file__).parent.parent
MODEL = ROOT / "examples" / "maven.yaml"
DATA = require_path(MAVEN_DATA, what="the Maven CRM data set")
FILES = {  # entity -> (file, extra import options), as the header of maven.yaml documents
    "account": ("accounts.csv", ["--near-matches"]),
    "product": ("products.csv", []),
    "sales_agent": ("sales_teams.csv", []),
    "opportunity": ("sales_pipeline.csv", ["--map", "deal_stage=stage", "--with-stages", "--near-matches"]),
}


def rows(name: str) -> list[dict]:
    with open(DATA / name, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def report(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def import_all(db_url: str, tmp_path: Path) -> dict[str, dict]:
    opts = ["--model", str(MODEL), "--db", db_url]
    runner = CliRunner()
    assert runner.invoke(app, ["migrate", *opts]).exit_code == 0
    results = {}
    for entity, (name, extra) in FILES.items():
        args = ["import", entity, str(DATA / name), *extra, "--report", str(tmp_path / f"{entity}.report.csv")]
        result = runner.invoke(app, [*args, "--format", "json", *opts])
        assert result.exit_code == 0, result.output
        results[entity] = json.loads(result.stdout)
    return results


def test_every_row_arrives_and_every_flaw_is_reported(db_url, tmp_path) -> None:
    results = import_all(db_url, tmp_path)
    crm = metacrm.connect(MODEL, db_url)
    csvs = {entity: rows(name) for entity, (name, _) in FILES.items()}
    for entity, data in csvs.items():
        assert results[entity]["created"] == len(data) == crm.count(entity), entity
        assert results[entity]["rejected_rows"] == [], entity
    assert [len(csvs[e]) for e in FILES] == [85, 7, 35, 8800]

    # accounts: the misspelled sector is a reported near match; subsidiaries link to their parents
    notes = report(tmp_path / "account.report.csv")
    technolgy = {int(r["row"]) for r in notes if r["kind"] == "near_match"}
    assert technolgy == {line for line, r in enumerate(csvs["account"], 2) if r["sector"] == "technolgy"}
    assert len(technolgy) == 12 and all(r["column"] == "sector" for r in notes if r["kind"] == "near_match")
    accounts = {r["id"]: r for r in crm.find("account")}
    names = {i: r["name"] for i, r in accounts.items()}
    assert {r["name"]: names.get(r["parent"]) for r in accounts.values()} == {
        r["account"]: r["subsidiary_of"] or None for r in csvs["account"]
    }
    assert Counter(r["sector"] for r in accounts.values())["technology"] == 12
    assert sum(1 for r in notes if r["kind"] == "empty_link") == 70  # accounts without a parent

    # opportunities: GTXPro is a reported near match of GTX Pro; open deals without an account are reported
    notes = report(tmp_path / "opportunity.report.csv")
    by_kind = Counter((r["kind"], r["column"], r["value"]) for r in notes)
    assert by_kind == {("near_match", "product", "GTXPro"): 1480, ("empty_link", "account", ""): 1425}
    pipeline = csvs["opportunity"]
    near_lines = {int(r["row"]) for r in notes if r["kind"] == "near_match"}
    assert near_lines == {line for line, r in enumerate(pipeline, 2) if r["product"] == "GTXPro"}
    empty_lines = {int(r["row"]) for r in notes if r["kind"] == "empty_link"}
    assert empty_lines == {line for line, r in enumerate(pipeline, 2) if not r["account"]}
    assert {r["deal_stage"] for r in pipeline if not r["account"]} == {"Prospecting", "Engaging"}  # open deals
    assert notes[0]["opportunity_id"] == pipeline[int(notes[0]["row"]) - 2]["opportunity_id"]  # original cells

    # nothing lost: every opportunity holds what its row says (GTXPro read as GTX Pro)
    products = {r["id"]: r["name"] for r in crm.find("product")}
    agents = {r["id"]: r["name"] for r in crm.find("sales_agent")}
    stored = {r["opportunity_id"]: r for r in crm.find("opportunity")}
    for row in pipeline:
        record = stored[row["opportunity_id"]]
        assert names.get(record["account"], "") == row["account"]
        assert products[record["product"]] == ("GTX Pro" if row["product"] == "GTXPro" else row["product"])
        assert agents[record["sales_agent"]] == row["sales_agent"]
        assert record["stage"] == row["deal_stage"].lower()
        assert str(record["engage_date"] or "") == row["engage_date"]
        assert str(record["close_date"] or "") == row["close_date"]
        assert record["close_value"] == (Decimal(row["close_value"]) if row["close_value"] else None)
    assert Counter(r["stage"] for r in stored.values()) == {
        "won": 4238,
        "lost": 2473,
        "engaging": 1589,
        "prospecting": 500,
    }
    crm.close()


def test_without_near_matches_the_flaws_refuse_the_import(db_url, tmp_path) -> None:
    crm = metacrm.connect(MODEL, db_url)
    crm.migrate()
    with pytest.raises(ImportRefused) as info:
        import_csv(crm, "account", DATA / "accounts.csv")
    rejected = info.value.result.rejected
    assert {i.value for i in rejected if i.column == "sector"} == {"technolgy"}
    assert len([i for i in rejected if i.column == "sector"]) == 12 and crm.count("account") == 0
    assert all("which is rejected" in i.reason for i in rejected if i.column != "sector")  # their subsidiaries
    assert "'technolgy' is not an option" in str(info.value)
    import_csv(crm, "account", DATA / "accounts.csv", near_matches=True)
    import_csv(crm, "product", DATA / "products.csv")
    import_csv(crm, "sales_agent", DATA / "sales_teams.csv")
    with pytest.raises(ImportRefused) as info:
        import_csv(crm, "opportunity", DATA / "sales_pipeline.csv", mapping={"deal_stage": "stage"}, import_stages=True)
    result = info.value.result
    assert result.unresolved == {"product": {"GTXPro": 1480}} and crm.count("opportunity") == 0
    assert str(info.value).startswith("opportunity: line 3, product: no product titled 'GTXPro' (and 1479 more)")
    crm.close()
