"""Migrations of link fields and one-to-one links, planned with counts and applied with the
data kept, on SQLite and PostgreSQL (metacrm/migrate/linkfields.py, docs/migrations.md)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from conftest import dump_database

import metacrm
from metacrm.errors import MigrationError

V1 = """\
metacrm: 1
name: m
entities:
  product:
    fields:
      name: {type: string, required: true}
  deal:
    fields:
      title: {type: string, required: true}
      total: {type: integer, rollup: "count(products)"}
    links:
      products: {to: product, many: true}
  contract:
    fields:
      number: {type: string}
    links:
      deal: {to: deal}
"""
FIELDS = "fields: {qty: {type: integer, required: true, default: 1}, note: {type: string}, price: {type: money, required: true}}"
V2 = V1.replace("products: {to: product, many: true}", "products: {to: product, many: true, " + FIELDS + "}").replace(
    "deal: {to: deal}", "deal: {to: deal, unique: true}"
)


def connect(tmp_path: Path, url: str, text: str, name: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return metacrm.connect(path, url)


@pytest.fixture
def v1(db_url, tmp_path):
    crm = connect(tmp_path, db_url, V1, "v1.yaml")
    crm.migrate()
    crm.create("product", {"name": "a"})
    crm.create("product", {"name": "b"})
    crm.create("deal", {"title": "x", "products": [1, 2]})
    crm.create("deal", {"title": "y", "products": [2]})
    crm.create("contract", {"number": "1", "deal": 1})
    crm.create("contract", {"number": "2", "deal": 1})
    crm.close()
    return db_url


def step(plan, kind, target):
    return next(s for s in plan if s.kind == kind and s.target == target)


def test_plan_counts_and_refuses_until_resolved(v1, tmp_path):
    crm = connect(tmp_path, v1, V2, "v2.yaml")
    plan = crm.migrate(dry_run=True)
    assert step(plan, "add_link_field", "products.qty").count == 3
    assert step(plan, "add_link_field", "products.qty").refusal is None  # the default fills it
    price = step(plan, "add_link_field", "products.price")
    assert price.count == 3
    assert "3 deal.products pairs linked would have no price" in price.refusal
    one = step(plan, "add_unique", "deal")
    assert one.count == 2 and one.examples[0]["records"] == 2
    assert "1 target is linked from more than one contract through deal (2 records), e.g. deal 1 ×2" in one.refusal
    before = dump_database(crm.engine)
    with pytest.raises(MigrationError, match="link each target from one contract only first"):
        crm.migrate()
    assert dump_database(crm.engine) == before
    crm.close()


def test_applied_with_data_kept(v1, tmp_path):
    old = connect(tmp_path, v1, V1, "v1.yaml")
    old.update("contract", 2, {"deal": 2})  # resolve the duplicate target
    old.close()
    crm = connect(
        tmp_path,
        v1,
        V2.replace("price: {type: money, required: true}", "price: {type: money, required: true, fill: '9.90'}"),
        "v2.yaml",
    )
    plan = crm.migrate()
    assert not plan.refusals
    deal = crm.get("deal", 1)
    assert deal["products"] == [1, 2] and deal["total"] == 2
    assert deal["products.link"] == [
        {"id": 1, "qty": 1, "note": None, "price": Decimal("9.90")},
        {"id": 2, "qty": 1, "note": None, "price": Decimal("9.90")},
    ]
    with pytest.raises(metacrm.ValidationError, match=r"contract.deal: deal 2 is already linked from contract 2"):
        crm.create("contract", {"number": "3", "deal": 2})
    crm.link("deal", 2, "products", 2, values={"qty": 4, "note": "n"})
    crm.close()
    # V3: note removed (kept), qty optional; then the note dropped with --allow-data-loss
    v3 = V2.replace("note: {type: string}, ", "").replace(
        "qty: {type: integer, required: true, default: 1}", "qty: {type: integer}"
    )
    v3 = v3.replace("price: {type: money, required: true}", "price: {type: money, required: true, fill: '9.90'}")
    crm = connect(tmp_path, v1, v3, "v3.yaml")
    plan = crm.migrate()
    kept = step(plan, "remove_link_field", "products.note")
    assert kept.klass == "safe" and kept.count == 1 and kept.description.startswith("kept:")
    assert step(plan, "optional_link_field", "products.qty").count == 3
    crm.link("deal", 1, "products", 1, values={"qty": None})
    assert crm.get("deal", 1)["products.link"][0] == {"id": 1, "qty": None, "price": Decimal("9.90")}
    crm.close()


def test_unsupported_change_of_a_link_field_is_refused_with_count(v1, tmp_path):
    old = connect(tmp_path, v1, V1, "v1.yaml")
    old.update("contract", 2, {"deal": 2})
    old.close()
    v2 = V2.replace("price: {type: money, required: true}", "price: {type: money, fill: 1}")
    crm = connect(tmp_path, v1, v2, "v2.yaml")
    crm.migrate()
    crm.close()
    crm = connect(tmp_path, v1, v2.replace("note: {type: string}", "note: {type: integer}"), "v3.yaml")
    plan = crm.migrate(dry_run=True)
    changed = step(plan, "change_link_field", "products.note")
    assert changed.count == 0
    assert "not supported yet: the type of deal.products.note changes" in changed.refusal
    crm.close()


def test_required_link_field_with_fill(v1, tmp_path):
    old = connect(tmp_path, v1, V1, "v1.yaml")
    old.update("contract", 2, {"deal": 2})
    old.close()
    v2 = V2.replace("price: {type: money, required: true}", "price: {type: money}")
    crm = connect(tmp_path, v1, v2, "v2.yaml")
    crm.migrate()
    crm.link("deal", 1, "products", 1, values={"price": "5"})
    crm.close()
    v3 = v2.replace("price: {type: money}", "price: {type: money, required: true}")
    crm = connect(tmp_path, v1, v3, "v3.yaml")
    plan = crm.migrate(dry_run=True)
    required = step(plan, "require_link_field", "products.price")
    assert required.count == 2 and "2 deal.products pairs linked would have no price" in required.refusal
    crm.close()
    crm = connect(tmp_path, v1, v3.replace("required: true}}", "required: true, fill: 0}}"), "v4.yaml")
    plan = crm.migrate()
    assert step(plan, "require_link_field", "products.price").count == 2
    prices = {r["id"]: r["price"] for r in crm.get("deal", 1)["products.link"]}
    assert prices == {1: Decimal("5.00"), 2: Decimal("0.00")}
    crm.close()


POLY = """\
metacrm: 1
name: p
entities:
  client:
    fields:
      name: {type: string, required: true}
  deal:
    fields:
      title: {type: string, required: true}
  task:
    fields:
      title: {type: string, required: true}
      kind: {type: choice, options: [call, visit]}
    links:
      subject: {to: [deal, client]}
"""


def test_polymorphic_unique_rule_and_many_link_added(db_url, tmp_path):
    crm = connect(tmp_path, db_url, POLY, "p1.yaml")
    crm.migrate()
    crm.create("client", {"name": "c"})
    crm.create("deal", {"title": "d"})
    for title, subject in (("a", "deal:1"), ("b", "deal:1"), ("c", "client:1")):
        crm.create("task", {"title": title, "subject": subject, "kind": "call"})
    crm.close()
    v2 = POLY.replace(
        "      subject: {to: [deal, client]}\n",
        "      subject: {to: [deal, client]}\n      about: {to: [deal, client], many: true, inverse: tasks}\n"
        "    unique:\n      - [subject, kind]\n",
    )
    crm = connect(tmp_path, db_url, v2, "p2.yaml")
    plan = crm.migrate(dry_run=True)
    unique = next(s for s in plan if s.kind == "add_unique")
    assert unique.count == 2 and "needs data" in unique.refusal  # deal 1 has two calls; client 1 one
    assert next(s for s in plan if s.kind == "add_link" and s.target == "about").refusal is None
    crm.close()
    old = connect(tmp_path, db_url, POLY, "p1.yaml")
    old.update("task", 2, {"kind": "visit"})
    old.close()
    crm = connect(tmp_path, db_url, v2, "p2.yaml")
    crm.migrate()
    crm.link("task", 1, "about", "client:1")
    assert [t["id"] for t in crm.related("client", 1, "tasks")] == [1]
    with pytest.raises(metacrm.ValidationError, match=r"task.subject\+kind"):
        crm.create("task", {"title": "d", "subject": "deal:1", "kind": "call"})
    crm.close()
