"""Links that carry data (``fields:`` on a many-link), one-to-one links (``unique: true``) and
polymorphic links in composite unique rules, on SQLite and PostgreSQL (docs/links.md)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import dump_database

import metacrm
from metacrm.errors import ModelError, ValidationError

MODEL = """\
metacrm: 1
name: orders
entities:
  product:
    fields:
      name: {type: string, required: true}
      price: {type: money}
  deal:
    fields:
      title: {type: string, required: true}
    links:
      products:
        to: product
        many: true
        inverse: deals
        fields:
          qty: {type: integer, min: 1, default: 1}
          price: {type: money, min: 0}
          note: {type: string, max_length: 20}
      client: {to: client}
  client:
    fields:
      name: {type: string, required: true}
  contract:
    fields:
      number: {type: string, required: true}
    links:
      deal: {to: deal, unique: true, inverse: contract}
  task:
    fields:
      title: {type: string, required: true}
      kind: {type: choice, options: [call, visit]}
    links:
      subject: {to: [deal, client]}
      primary: {to: [deal, client], unique: true}
    unique:
      - [subject, kind]
roles:
  boss:
    "*": all
"""


def write(tmp_path: Path, text: str = MODEL, name: str = "model.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def crm(db_url, tmp_path):
    crm = metacrm.connect(write(tmp_path), db_url)
    crm.migrate()
    for name, price in (("Сервер", "1000"), ("Диск", "50"), ("Кабель", "5")):
        crm.create("product", {"name": name, "price": price})
    yield crm
    crm.close()


def rows(record: dict) -> dict:
    return {r["id"]: {k: v for k, v in r.items() if k != "id"} for r in record["products.link"]}


# -- values on create, link, update, get ----------------------------------------------------------
def test_create_with_values_defaults_and_get(crm):
    d = crm.create("deal", {"title": "A", "products": [{"id": 1, "qty": 3, "price": "900.50"}, 2]})
    assert d["products"] == [1, 2]
    assert rows(d) == {
        1: {"qty": 3, "price": Decimal("900.50"), "note": None},
        2: {"qty": 1, "price": None, "note": None},  # the default
    }
    assert crm.get("deal", d["id"])["products.link"] == d["products.link"]
    found = crm.find("deal")
    assert found[0]["products.link"] == d["products.link"]


def test_link_sets_and_updates_values(crm):
    d = crm.create("deal", {"title": "A"})
    after = crm.link("deal", d["id"], "products", 4 - 1, values={"qty": 3})
    assert rows(after) == {3: {"qty": 3, "price": None, "note": None}}
    assert after["version"] == 2
    again = crm.link("deal", d["id"], "products", 3, values={"price": "5.00"})  # qty kept
    assert rows(again) == {3: {"qty": 3, "price": Decimal("5.00"), "note": None}}
    assert again["version"] == 3
    same = crm.link("deal", d["id"], "products", 3, values={"qty": 3})  # nothing changes
    assert same["version"] == 3
    journal = [e for e in crm.timeline("deal", d["id"]) if e.get("action") == "link"]
    assert journal and "products.link" in journal[0]["changes"]


def test_link_values_through_the_inverse(crm):
    d = crm.create("deal", {"title": "A"})
    crm.link("product", 2, "deals", d["id"], values={"qty": 7})
    assert rows(crm.get("deal", d["id"])) == {2: {"qty": 7, "price": None, "note": None}}


def test_update_keeps_values_of_targets_listed_again(crm):
    d = crm.create("deal", {"title": "A", "products": [{"id": 1, "qty": 5}, 2]})
    after = crm.update("deal", d["id"], {"products": [1, {"id": 3, "qty": 2}]})
    assert rows(after) == {
        1: {"qty": 5, "price": None, "note": None},
        3: {"qty": 2, "price": None, "note": None},
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"qty": 0}, "deal.products.qty: 0 is less than the minimum 1"),
        ({"qty": "many"}, "deal.products.qty: 'many' is not a whole number"),
        ({"price": "-1"}, "deal.products.price:"),
        ({"note": "x" * 30}, "deal.products.note:"),
        ({"qtty": 2}, "deal.products: unknown field 'qtty' of link products (did you mean 'qty'?)"),
    ],
)
def test_bad_values_refused_naming_the_field_nothing_written(crm, values, message):
    d = crm.create("deal", {"title": "A", "products": [1]})
    before = dump_database(crm.engine)
    with pytest.raises(ValidationError) as exc:
        crm.link("deal", d["id"], "products", 2, values=values)
    assert str(exc.value).startswith(message)
    with pytest.raises(ValidationError) as exc:
        crm.link("deal", d["id"], "products", 1, values=values)  # on a pair already linked
    assert str(exc.value).startswith(message)
    with pytest.raises(ValidationError) as exc:
        crm.create("deal", {"title": "B", "products": [{"id": 2, **values}]})
    assert str(exc.value).startswith(message)
    assert dump_database(crm.engine) == before


def test_values_on_a_link_without_fields_refused(crm):
    d = crm.create("deal", {"title": "A"})
    c = crm.create("client", {"name": "C"})
    with pytest.raises(ValidationError, match="deal.client: this link carries no fields"):
        crm.link("deal", d["id"], "client", c["id"], values={"qty": 1})


def test_required_link_field(db_url, tmp_path):
    text = MODEL.replace("note: {type: string, max_length: 20}", "note: {type: string, required: true}")
    crm = metacrm.connect(write(tmp_path, text), db_url)
    crm.migrate()
    crm.create("product", {"name": "P"})
    d = crm.create("deal", {"title": "A"})
    before = dump_database(crm.engine)
    with pytest.raises(ValidationError, match=r"deal.products.note: is required for each linked product"):
        crm.link("deal", d["id"], "products", 1)
    with pytest.raises(ValidationError, match=r"record 1: deal.products.note: is required"):
        crm.create_many(
            "deal", [{"title": "B", "products": [{"id": 1, "note": "ok"}]}, {"title": "C", "products": [1]}]
        )
    assert dump_database(crm.engine) == before
    assert rows(crm.link("deal", d["id"], "products", 1, values={"note": "ok"}))[1]["note"] == "ok"
    crm.close()


def test_bulk_create_with_values(crm):
    made = crm.create_many(
        "deal",
        [{"title": f"D{i}", "products": [{"id": 1, "qty": i + 1}, {"id": 2, "price": "1.5"}, 3]} for i in range(5)],
    )
    assert [rows(d)[1]["qty"] for d in made] == [1, 2, 3, 4, 5]
    assert crm.count("deal", where="products.link.qty > 2") == 3


# -- one-to-one and polymorphic unique -------------------------------------------------------------
def test_one_to_one_link_names_the_holder(crm):
    d1 = crm.create("deal", {"title": "A"})
    d2 = crm.create("deal", {"title": "B"})
    c1 = crm.create("contract", {"number": "1", "deal": d1["id"]})
    before = dump_database(crm.engine)
    with pytest.raises(
        ValidationError, match=rf"contract.deal: deal {d1['id']} is already linked from contract {c1['id']}"
    ):
        crm.create("contract", {"number": "2", "deal": d1["id"]})
    with pytest.raises(ValidationError, match=r"record 1: contract.deal: deal .* record 0 of this batch"):
        crm.create_many("contract", [{"number": "3", "deal": d2["id"]}, {"number": "4", "deal": d2["id"]}])
    c2 = crm.create("contract", {"number": "2", "deal": d2["id"]})
    with pytest.raises(ValidationError, match=rf"already linked from contract {c1['id']}"):
        crm.update("contract", c2["id"], {"deal": d1["id"]})
    with pytest.raises(ValidationError, match=rf"already linked from contract {c2['id']}"):
        crm.link("deal", d2["id"], "contract", c1["id"])
    crm.update("contract", c1["id"], {"deal": d1["id"]})  # its own target: fine
    assert crm.related("deal", d1["id"], "contract")[0]["id"] == c1["id"]
    assert len(dump_database(crm.engine)["contract"]) == len(before["contract"]) + 1


def test_polymorphic_link_in_composite_unique(crm):
    d = crm.create("deal", {"title": "A"})
    c = crm.create("client", {"name": "C", "id": None} if False else {"name": "C"})
    crm.create("task", {"title": "t1", "subject": f"deal:{d['id']}", "kind": "call"})
    crm.create("task", {"title": "t2", "subject": f"client:{c['id']}", "kind": "call"})  # another entity
    crm.create("task", {"title": "t3", "subject": f"deal:{d['id']}", "kind": "visit"})
    with pytest.raises(ValidationError, match=r"task.subject\+kind: .* is already used by another task"):
        crm.create("task", {"title": "t4", "subject": {"entity": "deal", "id": d["id"]}, "kind": "call"})


# -- filters ----------------------------------------------------------------------------------------
def test_filters_on_link_fields(crm):
    a = crm.create("deal", {"title": "A", "products": [{"id": 1, "qty": 3}, {"id": 2, "qty": 1}]})
    b = crm.create("deal", {"title": "B", "products": [{"id": 2, "qty": 2, "price": "7"}]})
    crm.create("deal", {"title": "C"})
    ids = lambda where: [r["id"] for r in crm.find("deal", where=where)]  # noqa: E731
    assert ids("products.link.qty > 2") == [a["id"]]
    assert ids("products.link.qty >= 2") == [a["id"], b["id"]]
    assert ids("products.link.price is not null") == [b["id"]]
    assert ids("not (products.link.qty > 2)") == [b["id"], b["id"] + 1]
    assert [r["id"] for r in crm.find("product", where="deals.link.qty = 3")] == [1]


def test_bad_filter_on_link_fields(crm):
    with pytest.raises(metacrm.MetaCRMError, match=r"unknown field 'qtty' of link products"):
        crm.find("deal", where="products.link.qtty > 2")
    with pytest.raises(metacrm.MetaCRMError, match=r"client.*carries no fields|'link'"):
        crm.find("deal", where="client.link.qty > 2")


# -- the command line ---------------------------------------------------------------------------------
def test_cli_link_with_values(crm, tmp_path, db_url):
    from typer.testing import CliRunner

    from metacrm.cli.main import app

    d = crm.create("deal", {"title": "A"})
    model = str(tmp_path / "model.yaml")
    runner = CliRunner()
    args = ["--model", model, "--db", db_url]
    result = runner.invoke(app, ["link", "deal", str(d["id"]), "products", "2", "qty=3", "price=2.5", *args])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["get", "deal", str(d["id"]), *args])
    assert "-> products: product 2 «Диск» [qty=3 price=2.50]" in result.output
    result = runner.invoke(app, ["get", "deal", str(d["id"]), "--format", "json", *args])
    doc = json.loads(result.output)
    assert doc["record"]["products.link"] == [{"id": 2, "qty": 3, "price": "2.50", "note": None}]
    assert doc["links"]["products"][0]["link"] == {"qty": 3, "price": "2.50", "note": None}
    result = runner.invoke(app, ["link", "deal", str(d["id"]), "products", "2", "qty=0", *args])
    assert result.exit_code == 1
    assert "deal.products.qty: '0' is less than the minimum 1" in result.output
    result = runner.invoke(app, ["link", "deal", str(d["id"]), "products", "2", "qty", *args])
    assert result.exit_code == 2


# -- model checks ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("client: {to: client}", "client: {to: client, fields: {a: {type: integer}}}", "link.fields_single"),
        ("client: {to: client}", "client: {to: client, many: true, unique: true}", "link.unique_many"),
        ("qty: {type: integer, min: 1, default: 1}", "qty: {type: integer, unique: true}", "link.field_option"),
        ("qty: {type: integer, min: 1, default: 1}", "qty: {type: integer, formula: '1'}", "link.field_option"),
        ("qty: {type: integer, min: 1, default: 1}", "qty: {type: integer, default: x}", "field.default_invalid"),
        ("qty: {type: integer, min: 1, default: 1}", "target_id: {type: integer}", "name.system"),
        ("qty: {type: integer, min: 1, default: 1}", "qty: {type: integr}", "schema"),
        ("qty: {type: integer, min: 1, default: 1}", "qty: {type: file}", "link.field_type"),
    ],
)
def test_model_checks(tmp_path, old, new, message):
    assert old in MODEL
    with pytest.raises(ModelError) as exc:
        metacrm.load_model(write(tmp_path, MODEL.replace(old, new)))
    problems = exc.value.problems
    assert any(message in (p.type or "") or message == "schema" for p in problems), problems
    first = problems[0]
    assert first.line > 0 and "model.yaml" in first.file


# -- roll-ups over link fields ---------------------------------------------------------------------
ROLLUPS = """\
metacrm: 1
name: rollups
entities:
  product:
    fields:
      name: {type: string, required: true}
      price: {type: money}
      sold: {type: integer, rollup: "sum(deals.link.qty)"}
  deal:
    fields:
      title: {type: string, required: true}
      total: {type: money, rollup: "sum(products.link.qty * products.link.price)"}
      list_total: {type: money, rollup: "sum(products.link.qty * products.price)"}
    links:
      products:
        to: product
        many: true
        inverse: deals
        fields: {qty: {type: integer, min: 1, default: 1}, price: {type: money}}
"""


def test_rollups_over_link_fields_stay_current(db_url, tmp_path):
    crm = metacrm.connect(write(tmp_path, ROLLUPS), db_url)
    crm.migrate()
    crm.create("product", {"name": "a", "price": "10"})
    crm.create("product", {"name": "b", "price": "3"})
    d = crm.create("deal", {"title": "x", "products": [{"id": 1, "qty": 2, "price": "9.5"}, 2]})
    assert (d["total"], d["list_total"]) == (Decimal("19.00"), Decimal("23.00"))
    d = crm.link("deal", d["id"], "products", 2, values={"qty": 4, "price": "1"})
    assert (d["total"], d["list_total"]) == (Decimal("23.00"), Decimal("32.00"))
    assert {p["id"]: p["sold"] for p in crm.find("product")} == {1: 2, 2: 4}
    crm.link("product", 1, "deals", d["id"], values={"qty": 5})  # through the inverse
    assert crm.get("deal", d["id"])["total"] == Decimal("51.50")
    assert crm.get("product", 1)["sold"] == 5
    crm.update("deal", d["id"], {"products": [2]})
    assert crm.get("deal", d["id"])["total"] == Decimal("4.00")
    assert {p["id"]: p["sold"] for p in crm.find("product")} == {1: 0, 2: 4}
    crm.delete("deal", d["id"])
    assert crm.get("product", 2)["sold"] == 0
    crm.close()


def test_rollup_over_fields_of_a_link_without_them(tmp_path):
    text = ROLLUPS.replace("sum(products.link.qty * products.link.price)", "sum(products.link.qtty)")
    with pytest.raises(ModelError, match=r"unknown field 'qtty' of link products"):
        metacrm.load_model(write(tmp_path, text))


# -- CSV of link rows -------------------------------------------------------------------------------
def test_csv_export_and_import_of_link_rows(crm, tmp_path):
    from metacrm.io.link_csv import export_link_rows, import_link_rows

    crm.create("deal", {"title": "A", "products": [{"id": 1, "qty": 3, "price": "900.50"}, 2]})
    crm.create("deal", {"title": "B", "products": [{"id": 3, "note": "=cmd"}]})
    out = tmp_path / "rows.csv"
    assert export_link_rows(crm, "deal", "products", out) == 3
    assert out.read_text(encoding="utf-8").splitlines() == [
        "deal,product,qty,price,note",
        "1,1,3,900.50,",
        "1,2,1,,",
        "2,3,1,,'=cmd",  # a formula is never written as one
    ]
    source = tmp_path / "in.csv"
    source.write_text("deal;product;qty\n2;1;4\n1;1;5\n", encoding="utf-8")
    assert import_link_rows(crm, "deal", "products", source) == 2
    assert rows(crm.get("deal", 2))[1]["qty"] == 4
    assert rows(crm.get("deal", 1))[1] == {"qty": 5, "price": Decimal("900.50"), "note": None}
    before = dump_database(crm.engine)
    source.write_text("deal,product,qty\n2,2,4\n1,2,0\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"in.csv:3: deal.products.qty: '0' is less than the minimum 1"):
        import_link_rows(crm, "deal", "products", source)
    source.write_text("deal,product,qty\n2,9,4\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"in.csv:2: deal.products: no product with id 9"):
        import_link_rows(crm, "deal", "products", source)
    source.write_text("deal,item,qty\n2,2,4\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"in.csv:1: missing column product; the columns of deal.products rows"):
        import_link_rows(crm, "deal", "products", source)
    assert dump_database(crm.engine) == before
    with pytest.raises(ValidationError, match=r"deal: 'client' is not a many-link; many-links: products"):
        export_link_rows(crm, "deal", "client", out)


# -- the HTTP API ---------------------------------------------------------------------------------------
def test_http_link_values(crm):
    from conftest import require_module

    require_module("fastapi", why="the HTTP API is the [web] extra")
    require_module("httpx", why="the API tests drive the app through httpx")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from metacrm.runtime.tokens import create_token
    from metacrm.web import create_app

    crm.add_user("boss", roles=["boss"])
    token = create_token(crm, "boss")["token"]
    client = TestClient(create_app(crm), raise_server_exceptions=False)
    auth = {"Authorization": f"Bearer {token}"}
    try:
        made = client.post(
            "/api/v1/deal", json={"title": "A", "products": [{"id": 1, "qty": 2, "price": "3.50"}, 2]}, headers=auth
        )
        assert made.status_code in (200, 201), made.text
        rid = made.json()["id"]
        assert made.json()["products.link"][0] == {"id": 1, "qty": 2, "price": "3.50", "note": None}
        put = client.put(f"/api/v1/deal/{rid}/products/2", json={"qty": 5}, headers=auth)
        assert put.status_code == 200, put.text
        assert put.json()["products.link"][1]["qty"] == 5
        plain = client.put(f"/api/v1/deal/{rid}/products/3", headers=auth)  # no body: defaults
        assert plain.json()["products.link"][2] == {"id": 3, "qty": 1, "price": None, "note": None}
        bad = client.put(f"/api/v1/deal/{rid}/products/2", json={"qty": 0}, headers=auth)
        assert bad.status_code == 422
        assert "deal.products.qty" in bad.text
        got = client.get(f"/api/v1/deal/{rid}", headers=auth).json()
        assert got["products.link"][1]["qty"] == 5
        assert (
            client.get("/api/v1/deal", params={"where": "products.link.qty > 4"}, headers=auth).json()["items"][0]["id"]
            == rid
        )
        doc = client.get("/api/v1/openapi.json", headers=auth).json()
        schemas = doc["components"]["schemas"]
        assert "products.link" in schemas["deal.read"]["properties"]
        link_op = doc["paths"]["/api/v1/deal/{record_id}/products/{target}"]["put"]
        assert "qty" in link_op["requestBody"]["content"]["application/json"]["schema"]["properties"]
    finally:
        client.close()


# -- the web card -----------------------------------------------------------------------------------------
def test_web_card_shows_and_sets_link_values(crm):
    from conftest import require_module

    require_module("fastapi", why="the web app is the [web] extra")
    require_module("httpx", why="the pages are driven through httpx")
    from tests.test_web_pages import PASSWORD, TestClient, create_app, csrf_of, set_password

    crm.add_user("boss", roles=["boss"])
    set_password(crm, "boss", PASSWORD)
    d = crm.create("deal", {"title": "A", "products": [{"id": 1, "qty": 2, "price": "3.50"}]})
    client = TestClient(create_app(crm), follow_redirects=False)
    try:
        token = csrf_of(client.get("/login").text)
        client.post("/login", data={"login": "boss", "password": PASSWORD, "csrf": token, "next": "/"})
        card = client.get(f"/deal/{d['id']}").text
        assert 'data-link-values="1"> · qty: 2 · price: 3.50</span>' in card
        assert 'name="link.qty" placeholder="1"' in card
        token = csrf_of(card)
        form = {"csrf": token, "name": "products", "target": "2", "link.qty": "4", "link.note": "срочно"}
        added = client.post(f"/deal/{d['id']}/link", data=form, headers={"HX-Request": "true"})
        assert added.status_code == 200 and 'data-link-values="2"> · qty: 4 · note: срочно</span>' in added.text
        bad = client.post(f"/deal/{d['id']}/link", data={**form, "link.qty": "0"}, headers={"HX-Request": "true"})
        assert "deal.products.qty: &#39;0&#39; is less than the minimum 1" in bad.text
        assert rows(crm.get("deal", d["id"]))[2]["qty"] == 4
    finally:
        client.close()


def test_one_to_one_polymorphic_link(crm):
    d = crm.create("deal", {"title": "A"})
    c = crm.create("client", {"name": "C"})
    t1 = crm.create("task", {"title": "t1", "primary": f"deal:{d['id']}"})
    crm.create("task", {"title": "t2", "primary": f"client:{c['id']}"})  # the same id, another entity
    before = dump_database(crm.engine)
    with pytest.raises(ValidationError, match=rf"task.primary: deal {d['id']} is already linked from task {t1['id']}"):
        crm.create("task", {"title": "t3", "primary": {"entity": "deal", "id": d["id"]}})
    assert dump_database(crm.engine) == before


def test_automation_condition_on_link_fields(db_url, tmp_path):
    text = """\
metacrm: 1
name: a
entities:
  product:
    fields:
      name: {type: string, required: true}
  deal:
    fields:
      title: {type: string, required: true}
      big: {type: boolean}
    links:
      products: {to: product, many: true, fields: {qty: {type: integer, default: 1}}}
automations:
  flag:
    when: {entity: deal, created: true}
    if: "products.link.qty > 5"
    do:
      - update: {values: {big: true}}
"""
    crm = metacrm.connect(write(tmp_path, text), db_url)
    crm.migrate()
    crm.create("product", {"name": "p"})
    crm.create("deal", {"title": "x", "products": [{"id": 1, "qty": 9}]})
    crm.create("deal", {"title": "y", "products": [{"id": 1, "qty": 2}]})
    assert [d["big"] for d in crm.find("deal")] == [True, None]
    crm.close()
