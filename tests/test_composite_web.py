"""Composite field types through the HTTP API, the OpenAPI document, the web form and card, and
CSV import/export, on SQLite and PostgreSQL (docs/types.md)."""

from __future__ import annotations

import io
import warnings

import pytest
from conftest import require_module

import metacrm
from metacrm.errors import ValidationError
from metacrm.io.csv_io import export_csv, import_csv
from metacrm.runtime.passwords import set_password
from metacrm.runtime.tokens import create_token

require_module("fastapi", why="the web app is the [web] extra")
require_module("httpx", why="the tests drive the app through httpx")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from metacrm.web import create_app  # noqa: E402

MODEL = """\
metacrm: 1
name: composite_web
region: RU
entities:
  client:
    owner: true
    fields:
      name:   {type: string, required: true}
      emails: {type: emails, label: E-mails}
      phones: {type: phones}
    search: [name, emails, phones]
roles:
  manager:
    client: {read: own, create: all, update: own, delete: own}
"""
PASSWORD = "correct horse battery"


@pytest.fixture
def app(db_url, tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(metacrm.load_model(path), db_url)
    crm.migrate()
    crm.add_user("ann", roles=["manager"])
    set_password(crm, "ann", PASSWORD)
    token = create_token(crm, "ann")["token"]
    client = TestClient(create_app(crm), follow_redirects=False)
    client.headers_for_api = {"Authorization": f"Bearer {token}"}  # type: ignore[attr-defined]
    yield crm, client
    client.close()
    crm.close()


def _api(client, method: str, path: str, **kw):
    return client.request(method, f"/api/v1{path}", headers=client.headers_for_api, **kw)


def test_api_reads_and_writes_lists_and_refuses_bad_values_naming_the_field(app) -> None:
    crm, client = app
    made = _api(client, "POST", "/client", json={"name": "A", "emails": ["a@x.org", "B@y.org"], "phones": "8 916 123-45-67"})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["emails"] == ["a@x.org", "B@y.org"] and body["phones"] == ["+79161234567"]
    bad = _api(client, "POST", "/client", json={"name": "B", "emails": ["a@x.org", "nope"]})
    assert bad.status_code == 422
    assert [e["loc"][-1] for e in bad.json()["errors"]] == ["emails"]
    assert "'nope' is not a valid e-mail address" in str(bad.json()["errors"][0])
    assert crm.count("client") == 1
    found = _api(client, "GET", "/client", params={"where": "emails contains 'b@y.org'"})
    assert [r["id"] for r in found.json()["items"]] == [body["id"]]
    schema = client.get("/api/v1/openapi.json").json()["components"]["schemas"]
    read = next(s for n, s in schema.items() if n.startswith("client") and "emails" in s.get("properties", {}))
    emails = read["properties"]["emails"]
    assert "array" in str(emails) and "email" in str(emails)


def _sign_in(client) -> str:
    import re

    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"login": "ann", "password": PASSWORD, "csrf": token, "next": "/"})
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/client/new").text).group(1)


def test_the_web_form_edits_one_value_a_line_and_the_card_shows_them(app) -> None:
    crm, client = app
    csrf = _sign_in(client)
    form = client.get("/client/new").text
    assert '<textarea id="f-emails" name="emails"' in form and "the first is the primary" in form
    posted = client.post("/client/new", data={"csrf": csrf, "name": "A", "emails": "a@x.org\r\nb@y.org", "phones": ""})
    assert posted.status_code == 303, posted.text
    rid = int(posted.headers["location"].rsplit("/", 1)[1])
    assert crm.get("client", rid)["emails"] == ["a@x.org", "b@y.org"]
    edit = client.get(f"/client/{rid}/edit").text
    assert ">a@x.org\nb@y.org</textarea>" in edit
    assert "a@x.org, b@y.org" in client.get(f"/client/{rid}").text
    refused = client.post(f"/client/{rid}/edit", data={"csrf": csrf, "name": "A", "emails": "a@x.org\nbad", "phones": ""})
    assert refused.status_code == 422 and 'id="err-emails"' in refused.text
    assert crm.get("client", rid)["emails"] == ["a@x.org", "b@y.org"]


def test_csv_round_trip_keeps_every_value_in_order(app, tmp_path) -> None:
    crm, _client = app
    source = tmp_path / "in.csv"
    source.write_text('name,emails,phones\nA,"a@x.org, B@y.org","+7 916 123-45-67;8 495 000 00 02"\nB,,\n', encoding="utf-8")
    assert import_csv(crm, "client", source).created == 2
    out = io.StringIO()
    export_csv(crm, "client", out, columns=["name", "emails", "phones"])
    # a cell starting with + gets a quote against spreadsheet formulas (io/csv_cells.py), read back
    assert out.getvalue().splitlines() == ["name,emails,phones", 'A,"a@x.org,B@y.org","\'+79161234567,+74950000002"', "B,,"]
    for r in crm.find("client"):
        crm.delete("client", r["id"])
    again = tmp_path / "again.csv"
    again.write_text(out.getvalue(), encoding="utf-8")
    assert import_csv(crm, "client", again).created == 2
    assert [(r["emails"], r["phones"]) for r in crm.find("client", order_by="id")] == [
        (["a@x.org", "B@y.org"], ["+79161234567", "+74950000002"]),
        (None, None),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,emails\nC,not-an-address\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"client: line 2, emails: 'not-an-address' is not a valid e-mail address"):
        import_csv(crm, "client", bad)
    assert crm.count("client") == 2
