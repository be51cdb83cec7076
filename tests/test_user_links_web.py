"""`to: user` links over HTTP and in the browser app (issue 13 item 6): the API's link routes by
login, the OpenAPI description, a hidden record answering as a missing one, the form's
pick-list of users; on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import warnings

import pytest
from conftest import require_module

import metacrm
from metacrm.runtime.tokens import create_token

require_module("fastapi", why="the HTTP API is the [web] extra")
require_module("jinja2", why="pages are Jinja2 templates ([web] extra)")
require_module("argon2", why="passwords are hashed with argon2-cffi ([web] extra)")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from metacrm.runtime.passwords import set_password  # noqa: E402
from metacrm.web import create_app  # noqa: E402

MODEL = """\
metacrm: 1
name: users
entities:
  deal:
    owner: true
    fields:
      title: {type: string, required: true}
    links:
      manager: {to: user, help: Who answers for the deal}
      assignees: {to: user, many: true}
roles:
  rep:
    deal: {read: assigned, update: assigned, create: all}
"""
PASSWORD = "correct horse battery"


@pytest.fixture
def site(tmp_path, db_url):
    path = tmp_path / "users.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    for login, name in (("alice", "Alice A."), ("bob", None), ("carol", None)):
        crm.add_user(login, roles=["rep"], name=name)
        set_password(crm, login, PASSWORD)
    tokens = {login: create_token(crm, login)["token"] for login in ("alice", "bob")}
    client = TestClient(create_app(crm), follow_redirects=False, raise_server_exceptions=False)
    yield crm, client, tokens
    crm.close()


def test_api_links_users_by_login(site):
    crm, client, tokens = site

    def call(method, path, user="alice", **kw):
        r = client.request(method, f"/api/v1{path}", headers={"Authorization": f"Bearer {tokens[user]}"}, **kw)
        return r.status_code, r.json() if r.content else None

    status, body = call("POST", "/deal", json={"title": "x", "manager": "alice", "assignees": ["alice"]})
    assert status == 201 and (body["manager"], body["assignees"]) == ("alice", ["alice"])
    hidden = crm.create("deal", {"title": "secret", "manager": "carol"})["id"]
    status, body = call("PUT", f"/deal/{body['id']}/assignees/bob")
    assert status == 200 and body["assignees"] == ["alice", "bob"]
    status, body = call("GET", "/deal?where=assignees contains :me", "bob")
    assert [d["title"] for d in body["items"]] == ["x"]
    status, body = call("POST", "/deal", json={"title": "y", "manager": "nobody"})
    assert status == 422 and body["errors"][0]["field"] == "manager"
    # a hidden record answers as a missing one, on every path and for any login
    for method, path in (("GET", "/deal/{}"), ("PUT", "/deal/{}/manager/bob"), ("DELETE", "/deal/{}/assignees/carol")):
        right = call(method, path.format(hidden), "bob")
        wrong = call(method, path.format(hidden + 100), "bob")
        assert right[0] == wrong[0] == 404
        assert right[1]["detail"].replace(str(hidden), "N") == wrong[1]["detail"].replace(str(hidden + 100), "N")
    assert call("GET", "/deal?where=manager = 'carol'", "bob")[1]["items"] == []


def test_openapi_describes_the_links(site):
    _, client, _ = site
    spec = client.get("/api/v1/openapi.json").json()
    created = spec["components"]["schemas"]["deal.create"]["properties"]
    assert created["manager"]["type"] == ["string", "null"] and created["manager"]["description"] == (
        "Who answers for the deal"
    )
    assert created["assignees"]["items"]["type"] == "string"
    assert "logins of the CRM's users" in created["assignees"]["description"]
    assert "/api/v1/deal/{record_id}/assignees/{login}" in spec["paths"]
    model = client.get("/api/v1/model", headers={"Authorization": f"Bearer {site[2]['alice']}"}).json()
    (deal,) = model["entities"]
    assert [f["name"] for f in deal["fields"]] == ["title"]
    assert [(link["name"], link["to"], link["many"]) for link in deal["links"]] == [
        ("manager", ["user"], False),
        ("assignees", ["user"], True),
    ]


def test_form_picks_users(site):
    crm, client, _ = site
    hidden = crm.create("deal", {"title": "secret", "manager": "carol"})["id"]
    crm.disable_user("carol")
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"login": "alice", "password": PASSWORD, "csrf": token, "next": "/"})
    page = client.get("/deal/new").text
    picker = re.search(r'<select id="f-assignees" name="assignees" multiple>(.*?)</select>', page, re.S).group(1)
    assert re.findall(r'<option value="(\w+)"', picker) == ["alice", "bob"]  # carol is disabled
    assert "Alice A. (alice)" in picker
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = client.post("/deal/new", data={"csrf": csrf, "title": "web", "manager": "bob", "assignees": ["alice", "bob"]})
    assert r.status_code == 303, r.text
    record = crm.find("deal", where="title = 'web'")[0]
    assert (record["manager"], record["assignees"]) == ("bob", ["alice", "bob"])
    card = client.get(r.headers["location"]).text
    assert '<dd data-field="assignees">Alice A., bob</dd>' in card
    # a page of a record alice may not read answers as a missing one
    assert client.get(f"/deal/{hidden}").status_code == client.get(f"/deal/{hidden + 100}").status_code == 404
    assert "secret" not in client.get("/deal?where=manager = 'carol'").text
    # "my records": owned, or named by a link to users
    listing = client.get("/deal").text
    mine = re.search(r'<a href="([^"]+)" id="mine-link">My records</a>', listing).group(1)
    assert mine == "/deal?where=owner+%3D+%3Ame+or+manager+%3D+%3Ame+or+assignees+contains+%3Ame"
    assert '<a href="/deal/' in client.get(mine).text  # the filter runs (alice's deal "web")
