"""Composite field types through the HTTP API, the OpenAPI document, the web form and card, and
CSV import/export, on SQLite and PostgreSQL (docs/types.md)."""

from __future__ import annotations

import io
import warnings

import pytest
from conftest import require_module
from test_composite_types import migrated

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
      tags:   {type: tags}
      notes:  {type: rich_text, label: Notes}
    search: [name, emails, phones]
roles:
  manager:
    client: {read: own, create: all, update: own, delete: own}
"""
PASSWORD = "correct horse battery"


@pytest.fixture
def app(db_url, tmp_path):
    crm = migrated(db_url, tmp_path, MODEL)
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


def _sign_in(client, page: str = "/client/new") -> str:
    import re

    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"login": "ann", "password": PASSWORD, "csrf": token, "next": "/"})
    return re.search(r'name="csrf" value="([^"]+)"', client.get(page).text).group(1)


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


PEOPLE = """\
metacrm: 1
name: people_web
entities:
  contact:
    owner: true
    fields:
      name:    {type: person_name, required: true, label: Name}
      address: {type: address, label: Address}
roles:
  manager:
    contact: {read: own, create: all, update: own, delete: own}
"""


@pytest.fixture
def people(db_url, tmp_path):
    crm = migrated(db_url, tmp_path, PEOPLE, "people")
    crm.add_user("ann", roles=["manager"])
    set_password(crm, "ann", PASSWORD)
    client = TestClient(create_app(crm), follow_redirects=False)
    yield crm, client, tmp_path / "people.yaml"
    client.close()
    crm.close()


def test_composites_are_one_line_on_card_list_and_cli_and_parts_in_the_form(people, db_url) -> None:
    from typer.testing import CliRunner

    from metacrm.cli.main import app as cli

    crm, client, path = people
    rid = crm.create(
        "contact", {"owner": "ann", "name": {"first": "Ann", "last": "Lee"}, "address": {"street": "Karl Johans gate 1", "city": "Oslo", "country": "no"}}
    )["id"]
    csrf = _sign_in(client, "/contact/new")
    card = client.get(f"/contact/{rid}").text
    assert '<dt>Address</dt><dd data-field="address">Karl Johans gate 1, Oslo, NO</dd>' in card
    assert '<dt>Name</dt><dd data-field="name">Ann Lee</dd>' in card
    listed = client.get("/contact").text
    assert "<td>Karl Johans gate 1, Oslo, NO</td>" in listed
    form = client.get("/contact/new").text
    assert 'name="address.city"' in form and 'name="name.last"' in form and 'name="name.full"' not in form
    posted = client.post(
        "/contact/new", data={"csrf": csrf, "name.first": "Bo", "name.last": "Ek", "address.city": "Umeå", "address.country": "Sweden"}
    )
    assert posted.status_code == 303, posted.text
    made = crm.get("contact", int(posted.headers["location"].rsplit("/", 1)[1]))
    assert (made["name.full"], made["address.country"]) == ("Bo Ek", "SE")
    refused = client.post("/contact/new", data={"csrf": csrf, "name.last": "X", "address.country": "Atlantis"})
    assert refused.status_code == 422 and "&#39;Atlantis&#39; is not a country" in refused.text
    out = CliRunner().invoke(cli, ["list", "contact", "--model", str(path), "--db", db_url, "--format", "csv"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[0].startswith("id,name.full,name.first,name.middle,name.last,address.street")
    table = CliRunner().invoke(cli, ["list", "contact", "--model", str(path), "--db", db_url, "--wide"])
    assert "Karl Johans gate 1, Oslo, NO" in table.output and "address.city" not in table.output


def test_api_takes_a_composite_as_a_mapping_and_documents_it(people) -> None:
    crm, client, _path = people
    token = create_token(crm, "ann")["token"]
    auth = {"Authorization": f"Bearer {token}"}
    made = client.post("/api/v1/contact", headers=auth, json={"name": {"first": "Ann", "last": "Lee"}, "address": {"city": "Oslo"}})
    assert made.status_code == 201, made.text
    assert (made.json()["name.full"], made.json()["address.city"]) == ("Ann Lee", "Oslo")
    bad = client.post("/api/v1/contact", headers=auth, json={"name": {"last": "X"}, "address": {"town": "Oslo"}})
    assert bad.status_code == 422 and "unknown part 'town'" in bad.text
    spec = client.get("/api/v1/openapi.json").json()
    validate_spec = pytest.importorskip("openapi_spec_validator").validate
    validate_spec(spec)  # a valid OpenAPI document with the composite's and the parts' schemas
    schemas = spec["components"]["schemas"]
    create = next(s for s in schemas.values() if s.get("title", "").endswith("a new record") and "address" in s["properties"])
    assert set(create["properties"]["address"]["properties"]) == {"street", "city", "region", "postcode", "country"}
    assert "name.last" not in create.get("required", [])


def test_tags_are_edited_in_one_input_with_the_vocabulary_suggested(app) -> None:
    crm, client = app
    crm.create("client", {"name": "Old", "owner": "ann", "tags": ["vip", "опт"]})
    csrf = _sign_in(client)
    form = client.get("/client/new").text
    assert '<input id="f-tags" name="tags" type="text" value=""' in form
    assert '<datalist id="tags-tags"><option value="vip"><option value="опт"></datalist>' in form
    posted = client.post("/client/new", data={"csrf": csrf, "name": "A", "emails": "", "phones": "", "tags": "VIP, Новый"})
    assert posted.status_code == 303, posted.text
    rid = int(posted.headers["location"].rsplit("/", 1)[1])
    assert crm.get("client", rid)["tags"] == ["vip", "новый"]
    assert 'value="vip, новый"' in client.get(f"/client/{rid}/edit").text
    assert "vip, новый" in client.get(f"/client/{rid}").text
    listed = client.get("/client", params={"where": "tags contains 'НОВЫЙ'"}).text
    assert f'href="/client/{rid}"' in listed


def test_rich_text_is_shown_sanitised_on_the_card_no_script_runs(app) -> None:
    crm, client = app
    payload = '<p onmouseover="steal()">Поставка <b>труб</b></p><script>alert("x")</script><a href="javascript:alert(1)">ссылка</a>'
    csrf = _sign_in(client)
    posted = client.post("/client/new", data={"csrf": csrf, "name": "A", "emails": "", "phones": "", "tags": "", "notes": payload})
    assert posted.status_code == 303, posted.text
    rid = int(posted.headers["location"].rsplit("/", 1)[1])
    # a value written by a path that did not sanitise (a restore of an old dump, raw SQL) is cleaned when shown too
    table = crm.storage.table("client")
    with crm.engine.begin() as conn:
        conn.execute(table.update().where(table.c.id == rid).values(notes=payload))
    card = client.get(f"/client/{rid}").text
    notes = card.split('data-field="notes">', 1)[1].split("</dd>", 1)[0]
    assert "<b>труб</b>" in notes and "<script" not in notes and "alert" not in notes
    assert "onmouseover" not in notes and "javascript:" not in notes
    assert 'data-field="notes.text"' not in card  # the plain text is not shown twice
    edit = client.get(f"/client/{rid}/edit").text
    assert '<textarea id="f-notes" name="notes"' in edit and "&lt;script&gt;" in edit  # source, escaped


def test_cli_lists_the_tag_vocabulary(app, db_url, tmp_path) -> None:
    from typer.testing import CliRunner

    from metacrm.cli.main import app as cli

    crm, _client = app
    crm.create("client", {"name": "A", "tags": "vip, опт"})
    crm.create("client", {"name": "B", "tags": "VIP"})
    model = str(tmp_path / "model.yaml")
    out = CliRunner().invoke(cli, ["tags", "client", "--model", model, "--db", db_url, "--format", "csv"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines() == ["tag,count", "vip,2", "опт,1"]
    refused = CliRunner().invoke(cli, ["tags", "client", "--field", "name", "--model", model, "--db", db_url])
    assert refused.exit_code == 1 and "client.name is not a tags field; tags fields: tags" in refused.output
