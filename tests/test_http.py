"""The HTTP API (issue 11): every resource driven in-process through the ASGI app on SQLite and
PostgreSQL, each refusal checked as a problem document with the database unchanged."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from conftest import dump_database, require_module
from sqlalchemy import create_engine

import metacrm
from metacrm.runtime.tokens import create_token, digest, list_tokens, revoke_token

require_module("fastapi", why="the HTTP API is the [web] extra")
require_module("httpx", why="the API tests drive the app through httpx")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice that httpx2 will replace httpx
    from fastapi.testclient import TestClient

from metacrm.web import create_app  # noqa: E402

TRADE = Path(__file__).parent.parent / "examples" / "trade.yaml"
PROBLEM = "application/problem+json"


class Api:
    """The app on one database, with a token per user."""

    def __init__(self, url: str):
        self.url = url
        self.crm = metacrm.connect(TRADE, url)
        self.crm.migrate()
        crm = self.crm
        for login, role in (("ann", "manager"), ("bob", "manager"), ("law", "lawyer"), ("dir", "director")):
            crm.add_user(login, roles=[role])
        self.ids = {
            "c_ann": crm.create("client", {"name": "Ромашка", "owner": "ann", "inn": "7701234567"})["id"],
            "c_bob": crm.create("client", {"name": "Лютик", "owner": "bob"})["id"],
        }
        self.ids["d_ann"] = crm.create(
            "deal", {"title": "Трубы", "client": self.ids["c_ann"], "owner": "ann", "amount": "1000.50"}
        )["id"]
        self.ids["d_bob"] = crm.create(
            "deal", {"title": "Кабель", "client": self.ids["c_bob"], "owner": "bob", "amount": "77"}
        )["id"]
        self.tokens = {login: create_token(crm, login)["token"] for login in ("ann", "bob", "law", "dir")}
        self.client = TestClient(create_app(crm), raise_server_exceptions=False)

    def call(self, method: str, path: str, user: str | None = "ann", **kwargs):
        headers = dict(kwargs.pop("headers", {}))
        if user is not None:
            headers["Authorization"] = f"Bearer {self.tokens[user]}"
        return self.client.request(method, f"/api/v1{path}", headers=headers, **kwargs)

    def snapshot(self, *, tokens: bool = False):
        """Every row; the tokens' only with ``tokens`` (a request may stamp a token's
        last_used_at, once a minute: whether it does depends on which test ran before)."""
        engine = create_engine(self.url)
        try:
            dump = dump_database(engine)
        finally:
            engine.dispose()
        if not tokens:
            dump.pop(self.crm.storage.token_table.name)
        return dump

    def close(self):
        self.client.close()
        self.crm.close()


@pytest.fixture
def api(db_url):
    api = Api(db_url)
    yield api
    api.close()


def problem_of(response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    doc = response.json()
    assert doc["status"] == status and doc["type"] == f"/problems/{kind}", doc
    assert doc["detail"] and "Traceback" not in doc["detail"]
    return doc


# -- tokens -----------------------------------------------------------------------------------------
def test_no_bad_revoked_or_expired_token_is_401(api, monkeypatch):
    for headers in ({}, {"Authorization": "Bearer mcrm_nope"}, {"Authorization": "Basic eDp5"}):
        r = api.call("GET", "/deal", user=None, headers=headers)
        problem_of(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
    revoked = create_token(api.crm, "ann")
    assert api.call("GET", "/me", user=None, headers={"Authorization": f"Bearer {revoked['token']}"}).status_code == 200
    revoke_token(api.crm, revoked["id"])
    # a token seen in the last token_ttl seconds (5) is trusted without a lookup: past them, refused
    import metacrm.web.app as web_app

    now = web_app.clock()
    monkeypatch.setattr(web_app, "clock", lambda: now + 5.01)
    r = api.call("GET", "/me", user=None, headers={"Authorization": f"Bearer {revoked['token']}"})
    problem_of(r, 401, "unauthorized")
    expired = create_token(api.crm, "ann", expires="1m")
    import datetime as dt

    from metacrm.runtime import tokens

    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
    assert tokens.authenticate(api.crm, expired["token"]) == "ann"
    assert tokens.authenticate(api.crm, expired["token"], now=later) is None


def test_tokens_keep_only_a_hash(api):
    made = create_token(api.crm, "bob", name="site")
    dump = json.dumps(api.snapshot(tokens=True), ensure_ascii=False)
    assert made["token"] not in dump and digest(made["token"]) in dump
    listed = [t for t in list_tokens(api.crm) if t["id"] == made["id"]]
    assert listed[0]["name"] == "site" and "token" not in listed[0] and "hash" not in listed[0]


def test_me_and_model(api):
    me = api.call("GET", "/me").json()
    assert me["login"] == "ann" and me["roles"] == ["manager"]
    model = api.call("GET", "/model").json()
    deal = next(e for e in model["entities"] if e["name"] == "deal")
    assert {"client", "products"} <= {link["name"] for link in deal["links"]}
    stages = deal["pipelines"][0]["stages"]
    assert stages[0]["name"] == "new" and {s["kind"] for s in stages} == {"open", "won", "lost"}
    client = next(e for e in model["entities"] if e["name"] == "client")
    assert "deals" in {inv["name"] for inv in client["inverses"]}


# -- records ----------------------------------------------------------------------------------------
def test_create_get_patch_delete_with_etags(api):
    r = api.call("POST", "/client", json={"name": "Василёк", "owner": "ann"})
    assert r.status_code == 201, r.text
    client = r.json()
    assert r.headers["location"] == f"/api/v1/client/{client['id']}" and r.headers["etag"] == '"1"'
    got = api.call("GET", f"/client/{client['id']}")
    assert got.json()["name"] == "Василёк" and got.headers["etag"] == '"1"'
    patched = api.call("PATCH", f"/client/{client['id']}", json={"city": "Тула"}, headers={"If-Match": '"1"'})
    assert patched.status_code == 200 and patched.json()["city"] == "Тула" and patched.headers["etag"] == '"2"'
    before = api.snapshot()
    stale = api.call("PATCH", f"/client/{client['id']}", json={"city": "Орёл"}, headers={"If-Match": '"1"'})
    problem_of(stale, 412, "precondition-failed")
    assert api.snapshot() == before
    problem_of(api.call("DELETE", f"/client/{client['id']}", headers={"If-Match": '"1"'}), 412, "precondition-failed")
    assert api.snapshot() == before
    deleted = api.call("DELETE", f"/client/{client['id']}", user="dir")  # managers may not delete clients
    assert deleted.status_code == 200, deleted.text
    problem_of(api.call("GET", f"/client/{client['id']}"), 404, "not-found")


def test_money_is_exact_both_ways(api):
    raw = f'{{"title": "t", "client": {api.ids["c_ann"]}, "amount": 0.1}}'.encode()
    r = api.call("POST", "/deal", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 201 and r.json()["amount"] in ("0.10", "0.1")
    assert api.call("GET", f"/deal/{api.ids['d_ann']}").json()["amount"] == "1000.50"


def test_bulk_create_is_all_or_none_with_every_bad_row(api):
    before = api.snapshot()
    rows = [
        {"name": "Ок", "owner": "ann"},
        {"name": "Плохой", "email": "не почта", "owner": "ann"},
        {"owner": "ann"},
    ]
    doc = problem_of(api.call("POST", "/client", json=rows), 422, "validation-error")
    assert {e["loc"][0] for e in doc["errors"]} == {1, 2}
    assert api.snapshot() == before
    good = api.call("POST", "/client", json=[{"name": "А", "owner": "ann"}, {"name": "Б", "owner": "ann"}])
    assert good.status_code == 201 and [r["name"] for r in good.json()["items"]] == ["А", "Б"]


def test_bad_inputs_are_problems_and_change_nothing(api):
    before = api.snapshot()
    d = api.ids["d_ann"]
    problem_of(
        api.call("POST", "/client", content=b'{"name": ', headers={"Content-Type": "application/json"}), 400, "bad-json"
    )
    problem_of(
        api.call("POST", "/client", content=b"name=x", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported-media-type",
    )
    doc = problem_of(api.call("POST", "/client", json={"name": "x", "colour": "red"}), 422, "validation-error")
    assert "colour" in doc["detail"]
    problem_of(
        api.call("POST", "/deal", json={"title": "x", "client": api.ids["c_ann"], "amount": "много"}),
        422,
        "validation-error",
    )
    problem_of(api.call("GET", "/nosuch"), 404, "not-found")
    doc = problem_of(api.call("GET", "/deal", params={"where": "amount >"}), 400, "expression-error")
    assert doc["position"] == 9
    problem_of(
        api.call("POST", "/client", json={"name": "Дубль", "inn": "7701234567", "owner": "ann"}),
        409,
        "unique-conflict",
    )
    big = {"name": "x" * (2 << 20)}
    problem_of(api.call("POST", "/client", json=big), 413, "content-too-large")
    refused = problem_of(api.call("POST", f"/deal/{d}/move", json={"stage": "won"}), 409, "transition-error")
    assert refused["allowed"]
    problem_of(api.call("GET", "/deal", params={"limit": 501}), 400, "bad-request")
    problem_of(api.call("GET", "/deal", params={"after": "garbage!"}), 400, "bad-cursor")
    problem_of(api.call("GET", "/deal", params={"fields": "title,nope"}), 400, "bad-request")
    assert api.snapshot() == before


# -- lists --------------------------------------------------------------------------------------------
def test_list_filters_pages_counts_and_expands(api):
    for i in range(5):
        api.crm.create("deal", {"title": f"d{i}", "client": api.ids["c_ann"], "owner": "ann", "amount": str(i * 100)})
    first = api.call("GET", "/deal", params={"where": "amount >= :min", "p.min": "100", "limit": 2, "count": "true"})
    body = first.json()
    assert body["count"] == 5 and len(body["items"]) == 2 and body["next"]
    assert 'rel="next"' in first.headers["link"]
    seen = [r["id"] for r in body["items"]]
    while body["next"]:
        body = api.client.get(body["next"], headers={"Authorization": f"Bearer {api.tokens['ann']}"}).json()
        seen += [r["id"] for r in body["items"]]
    assert len(seen) == len(set(seen)) == 5
    ordered = api.call("GET", "/deal", params={"order_by": "-amount", "limit": 3, "fields": "amount"}).json()
    assert set(ordered["items"][0]) == {"id", "amount"}
    rest = api.client.get(ordered["next"], headers={"Authorization": f"Bearer {api.tokens['ann']}"}).json()
    amounts = [r["amount"] for r in ordered["items"] + rest["items"]]
    assert [float(a) for a in amounts] == sorted((float(a) for a in amounts), reverse=True)
    expanded = api.call("GET", "/deal", params={"expand": "client", "limit": 1}).json()["items"][0]
    assert expanded["client"] == {"entity": "client", "id": api.ids["c_ann"], "title": "Ромашка"}


def test_hidden_records_answer_as_absent_ones(api):
    """ann may not read bob's deal: every record path answers exactly as for a missing id."""
    hidden, missing = api.ids["d_bob"], 10**9
    for method, suffix, body in (
        ("GET", "", None),
        ("PATCH", "", {"title": "x"}),
        ("DELETE", "", None),
        ("GET", "/moves", None),
        ("GET", "/history", None),
        ("GET", "/products", None),
        ("POST", "/move", {"stage": "qualified"}),
        ("POST", "/notes", {"text": "hi"}),
        ("PUT", "/products/1", None),
    ):
        answers = []
        for rid in (hidden, missing):
            r = api.call(method, f"/deal/{rid}{suffix}", json=body)
            doc = r.json()
            answers.append((r.status_code, doc["type"], doc["detail"].replace(str(rid), "ID"), sorted(r.headers)))
        assert answers[0] == answers[1], (method, suffix, answers)
        assert answers[0][0] == 404
    listed = api.call("GET", "/deal", params={"where": "client.name = 'Лютик'", "count": "true"}).json()
    assert listed["count"] == 0
    # an action the role lacks on a readable record is 403
    problem_of(api.call("DELETE", f"/deal/{api.ids['d_ann']}"), 403, "permission-denied")


def test_links_moves_history_notes(api):
    d, c = api.ids["d_ann"], api.ids["c_ann"]
    product = api.crm.create("product", {"name": "Труба", "sku": "T-1", "price": "10"})["id"]
    linked = api.call("PUT", f"/deal/{d}/products/{product}")
    assert linked.status_code == 200 and product in linked.json()["products"]
    assert [r["id"] for r in api.call("GET", f"/deal/{d}/products").json()["items"]] == [product]
    assert d in [r["id"] for r in api.call("GET", f"/client/{c}/deals").json()["items"]]
    assert api.call("DELETE", f"/deal/{d}/products/{product}").json()["products"] == []
    moves = api.call("GET", f"/deal/{d}/moves").json()
    target = next(m["stage"] for m in moves if m["possible"])
    moved = api.call("POST", f"/deal/{d}/move", json={"stage": target, "note": "звонок"})
    assert moved.status_code == 200 and moved.json()["stage"] == target
    note = api.call("POST", f"/deal/{d}/notes", json={"text": "обсудили цену", "kind": "call"})
    assert note.status_code == 201
    history = api.call("GET", f"/deal/{d}/history").json()
    assert {"move", "note"} <= {h["action"] for h in history}


def test_reports_board_search_tasks_csv(api):
    funnel = api.call("GET", "/reports/funnel/deal").json()
    assert funnel["count"] == 1  # ann sees her deal only
    assert api.call("GET", "/reports/funnel/deal", user="dir").json()["count"] == 2
    group = api.call("GET", "/reports/group/deal", params={"by": "owner"}, user="dir").json()
    assert group
    problem_of(api.call("GET", "/reports/group/deal", params={"by": "nope"}), 400, "bad-report-option")
    board = api.call("GET", "/deal/board").json()
    assert sum(col["count"] for col in board["columns"]) == 1
    hits = api.call("GET", "/search", params={"q": "Ромашка"}).json()
    assert [h["id"] for h in hits if h["entity"] == "client"] == [api.ids["c_ann"]]
    assert api.call("GET", "/search", params={"q": "Лютик"}).json() == []
    assert isinstance(api.call("GET", "/tasks").json(), list)
    exported = api.call("GET", "/client/export")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    lines = exported.text.splitlines()
    assert len(lines) == 2 and "Ромашка" in lines[1]  # ann's client only
    csv_body = "name,owner\nИмпорт,ann\n".encode()
    refused = api.call("POST", "/client/import", content=csv_body, headers={"Content-Type": "text/csv"})
    problem_of(refused, 403, "permission-denied")  # managers have no import right on clients
    imported = api.call("POST", "/client/import", user="dir", content=csv_body, headers={"Content-Type": "text/csv"})
    assert imported.status_code == 200, imported.text
    assert api.crm.count("client", "name = 'Импорт'") == 1
    before = api.snapshot()
    bad = api.call(
        "POST", "/client/import", user="dir", content=b"name,colour\nx,y\n", headers={"Content-Type": "text/csv"}
    )
    assert bad.status_code == 422
    assert api.snapshot() == before


def test_healthz_and_other_model_versions(api, tmp_path):
    assert api.client.get("/healthz").json()["status"] == "ok"
    changed = tmp_path / "trade2.yaml"
    changed.write_text(TRADE.read_text(encoding="utf-8").replace("max_length: 200", "max_length: 201", 1), "utf-8")
    other = metacrm.connect(changed, api.url)
    try:
        client = TestClient(create_app(other), raise_server_exceptions=False)
        problem_of(client.get("/healthz"), 503, "migration-needed")
        r = client.get("/api/v1/deal", headers={"Authorization": f"Bearer {api.tokens['ann']}"})
        doc = problem_of(r, 503, "migration-needed")
        assert "metacrm migrate" in doc["detail"]
    finally:
        other.close()


def test_unexpected_errors_are_500_with_a_request_id_only(api, caplog):
    app = api.client.app

    @app.get("/api/boom")
    def boom():
        raise RuntimeError("secret internals")

    r = api.client.get("/api/boom")
    doc = problem_of(r, 500, "internal-error")
    assert "secret" not in r.text and doc["request_id"] == r.headers["x-request-id"]
    assert any(doc["request_id"] in rec.getMessage() for rec in caplog.records)


def test_a_bad_query_parameter_is_400_and_a_bad_body_422(api):
    """A GET has no body: values the library refuses there came from the query string (400);
    the same refusal of a body's values stays 422."""
    doc = problem_of(api.call("GET", "/deal", params={"order_by": "nope"}), 400, "validation-error")
    assert "nope" in doc["detail"] and doc["errors"][0]["field"] == "nope"
    problem_of(api.call("GET", "/client/export", params={"order_by": "-nope"}), 400, "validation-error")
    problem_of(api.call("GET", "/supplier", user="dir", params={"q": "*"}), 400, "validation-error")
    problem_of(api.call("POST", "/client", json={"name": "x", "email": "нет"}), 422, "validation-error")


def test_a_delete_the_links_forbid_is_a_conflict(api):
    """A DELETE has no body: the model's rules refusing it (on_delete: restrict) are a 409."""
    before = api.snapshot()
    doc = problem_of(api.call("DELETE", f"/client/{api.ids['c_ann']}", user="dir"), 409, "validation-error")
    assert "restrict" in doc["detail"] and doc["errors"]
    assert api.snapshot() == before
