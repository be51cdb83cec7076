"""Bad input over HTTP (issue 11): each one answers its RFC 9457 problem document
(application/problem+json: type, title, status, detail, and errors [{loc, field, message,
type}] where a value is at fault) and leaves the database exactly as it was. SQLite and
PostgreSQL. (Form honeypot and rate limit: tests/test_forms.py.)
"""

from __future__ import annotations

import base64
import json

import pytest
from test_http import PROBLEM, Api

BODY_LIMIT = 1 << 20  # the app's default max_body


@pytest.fixture
def api(db_url):
    api = Api(db_url)
    yield api
    api.close()


@pytest.fixture
def unchanged(api):
    """Fails the test when the database changed between its start and its end."""
    before = api.snapshot()
    yield
    assert api.snapshot() == before


def problem(response, status: int, kind: str, *, errors: bool = False) -> dict:
    """The problem document, checked: its status and type, the RFC 9457 members, one line of
    detail and no traceback; with ``errors``, a list of {loc, field, message, type}."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    doc = response.json()
    assert doc["type"] == f"/problems/{kind}" and doc["status"] == status, doc
    assert doc["title"] and isinstance(doc["detail"], str) and doc["detail"]
    assert "\n" not in doc["detail"] and "Traceback" not in response.text
    if errors:
        assert doc["errors"], doc
        for error in doc["errors"]:
            assert {"loc", "field", "message", "type"} <= set(error), error
            assert isinstance(error["loc"], list) and error["message"]
    return doc


JSON = {"Content-Type": "application/json"}


@pytest.mark.usefixtures("unchanged")
def test_bad_json(api) -> None:
    d = api.ids["d_ann"]
    for raw, says in (
        (b'{"name": ', "line 1 column 10"),
        (b'{"name": "x",}', "line 1 column 14"),
        (b'{"name": NaN}', "NaN is not a JSON value"),
        (b"{'name': 'x'}", "line 1 column 2"),
        (b'{"name": "\xff"}', "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"", "not JSON"),
    ):
        doc = problem(api.call("POST", "/client", content=raw, headers=JSON), 400, "bad-json")
        assert says in doc["detail"], (raw[:20], doc)
    for method, path in (("PATCH", f"/deal/{d}"), ("POST", f"/deal/{d}/move"), ("POST", f"/deal/{d}/notes")):
        problem(api.call(method, path, content=b"{oops", headers=JSON), 400, "bad-json")
    for method, path, body in (("PATCH", f"/deal/{d}", [1]), ("POST", f"/deal/{d}/move", "won")):
        doc = problem(api.call(method, path, json=body), 400, "bad-json")
        assert "JSON object" in doc["detail"]


@pytest.mark.usefixtures("unchanged")
def test_unknown_field_and_wrong_type(api) -> None:
    doc = problem(
        api.call("POST", "/client", json={"name": "x", "colour": "red"}), 422, "validation-error", errors=True
    )
    assert "unknown field 'colour'" in doc["detail"] and "fields: name" in doc["detail"]
    c = api.ids["c_ann"]
    doc = problem(
        api.call("POST", "/deal", json={"title": "x", "client": c, "amount": "много"}),
        422,
        "validation-error",
        errors=True,
    )
    assert doc["errors"][0]["loc"] == ["amount"] and doc["errors"][0]["field"] == "amount"
    assert "много" in doc["errors"][0]["message"]
    doc = problem(
        api.call("PATCH", f"/deal/{api.ids['d_ann']}", json={"amount": [1], "title": None}),
        422,
        "validation-error",
        errors=True,
    )
    assert {e["field"] for e in doc["errors"]} == {"amount", "title"}  # every bad field, not the first
    problem(api.call("PATCH", f"/client/{c}", json={"email": "не почта"}), 422, "validation-error", errors=True)
    doc = problem(
        api.call("POST", f"/deal/{api.ids['d_ann']}/move", json={"stage": "won", "when": 1}), 422, "validation-error"
    )
    assert "when" in doc["detail"] and "stage, note, version" in doc["detail"]


@pytest.mark.usefixtures("unchanged")
def test_unknown_entity_link_and_resource(api) -> None:
    for method, path in (
        ("GET", "/nosuch"),
        ("POST", "/nosuch"),
        ("GET", "/nosuch/1"),
        ("GET", f"/deal/{api.ids['d_ann']}/nolink"),
        ("PUT", f"/deal/{api.ids['d_ann']}/nolink/1"),
    ):
        doc = problem(api.call(method, path, json={}), 404, "not-found")
        assert "GET /api/v1/model lists the entities" in doc["detail"]
    for path, params in (
        ("/reports/funnel/nosuch", {}),
        ("/reports/group/nosuch", {"by": "owner"}),
        ("/search", {"q": "x", "entity": "nosuch"}),
    ):
        doc = problem(api.call("GET", path, params=params), 404, "not-found")
        assert "unknown entity 'nosuch'; entities: client, deal" in doc["detail"]  # names what is allowed


@pytest.mark.usefixtures("unchanged")
def test_bad_expression_has_its_position(api) -> None:
    for where, position in (("amount >", 9), ("colour = 1", 1), ("title = 'x' and amont > 1", 17)):
        for path in ("/deal", "/deal/export", "/deal/board", f"/client/{api.ids['c_ann']}/deals"):
            doc = problem(api.call("GET", path, "dir", params={"where": where}), 400, "expression-error")
            assert doc["position"] == position, (where, path, doc)
    doc = problem(api.call("GET", "/deal", params={"where": "amount > :min"}), 400, "expression-error")
    assert "min" in doc["detail"]  # a parameter without its p.min value


@pytest.mark.usefixtures("unchanged")
def test_refused_move_lists_the_allowed_stages_and_what_each_lacks(api) -> None:
    d = api.ids["d_ann"]
    doc = problem(api.call("POST", f"/deal/{d}/move", json={"stage": "won"}), 409, "transition-error")
    allowed = {m["stage"]: m for m in doc["allowed"]}
    assert set(allowed) == {"qualified", "lost"}
    assert allowed["qualified"]["possible"] and allowed["qualified"]["reasons"] == []
    assert not allowed["lost"]["possible"] and allowed["lost"]["reasons"] == ["lost_reason is required"]
    assert "lost_reason is required" in doc["detail"]
    doc = problem(api.call("POST", f"/deal/{d}/move", json={"stage": "lost"}), 409, "transition-error")
    assert "lost_reason" in doc["detail"]
    doc = problem(api.call("POST", f"/deal/{d}/move", json={"stage": "nowhere"}), 409, "transition-error")
    assert "qualified" in doc["detail"]


def test_stale_if_match_writes_nothing(api) -> None:
    d = api.ids["d_ann"]
    assert api.call("PATCH", f"/deal/{d}", json={"title": "v2"}, headers={"If-Match": '"1"'}).status_code == 200
    before = api.snapshot()
    for method, path, body in (
        ("PATCH", f"/deal/{d}", {"title": "stale"}),
        ("DELETE", f"/deal/{d}", None),
        ("POST", f"/deal/{d}/move", {"stage": "qualified"}),
    ):
        kwargs = {"json": body} if body is not None else {}
        user = "dir" if method == "DELETE" else "ann"
        doc = problem(api.call(method, path, user, headers={"If-Match": '"1"'}, **kwargs), 412, "precondition-failed")
        assert "version" in doc["detail"]
    problem(api.call("POST", f"/deal/{d}/move", json={"stage": "qualified", "version": 1}), 412, "precondition-failed")
    for header in ('"abc"', "1,2", '"' + "9" * 30 + '"'):
        problem(
            api.call("PATCH", f"/deal/{d}", json={"title": "x"}, headers={"If-Match": header}),
            412,
            "precondition-failed",
        )
    assert api.snapshot() == before
    assert api.call("GET", f"/deal/{d}").json()["title"] == "v2"


def test_unique_conflict_names_the_existing_record_to_who_may_read_it(api) -> None:
    before = api.snapshot()
    c = api.ids["c_ann"]
    taken = {"name": "Дубль", "inn": "7701234567"}
    doc = problem(api.call("POST", "/client", json=taken), 409, "unique-conflict", errors=True)
    assert doc["existing"] == [{"entity": "client", "id": c, "title": "Ромашка"}]
    assert f"is already used by client {c} (Ромашка)" in doc["detail"]
    assert doc["errors"][0]["field"] == "inn" and doc["errors"][0]["type"] == "unique"
    # bob may not read ann's client: told the value is taken, not by which record
    for method, path in (("POST", "/client"), ("PATCH", f"/client/{api.ids['c_bob']}")):
        body = taken if method == "POST" else {"inn": taken["inn"]}
        doc = problem(api.call(method, path, "bob", json=body), 409, "unique-conflict", errors=True)
        assert "existing" not in doc and str(c) not in json.dumps(doc["errors"]) and "Ромашка" not in doc["detail"]
        assert "already used by another client" in doc["detail"]
    # a duplicate inside one batch is a bad batch (422), every row reported
    twice = [{"name": "a", "inn": "5000000001"}, {"name": "b", "inn": "5000000001"}]
    doc = problem(api.call("POST", "/client", json=twice), 422, "validation-error", errors=True)
    assert doc["errors"][0]["loc"] == [1, "inn"]
    assert api.snapshot() == before


@pytest.mark.usefixtures("unchanged")
def test_oversized_body_is_413(api) -> None:
    big = json.dumps({"name": "x" * BODY_LIMIT}).encode()
    doc = problem(api.call("POST", "/client", content=big, headers=JSON), 413, "content-too-large")
    assert str(BODY_LIMIT) in doc["detail"]

    def chunks():  # no Content-Length: the limit holds while reading
        yield b'{"name": "'
        for _ in range(40):
            yield b"x" * (64 << 10)
        yield b'"}'

    problem(api.call("POST", "/client", content=chunks(), headers=JSON), 413, "content-too-large")
    csv = b"name\n" + b"x\n" * BODY_LIMIT
    problem(
        api.call("POST", "/client/import", "dir", content=csv, headers={"Content-Type": "text/csv"}),
        413,
        "content-too-large",
    )


@pytest.mark.usefixtures("unchanged")
def test_wrong_content_type_is_415(api) -> None:
    for method, path, ctype in (
        ("POST", "/client", "text/plain"),
        ("POST", "/client", "application/x-www-form-urlencoded"),
        ("POST", "/client", None),
        ("PATCH", f"/client/{api.ids['c_ann']}", "text/csv"),
        ("POST", f"/deal/{api.ids['d_ann']}/move", "application/xml"),
        ("POST", "/client/import", "application/json"),
    ):
        headers = {"Content-Type": ctype} if ctype else {}
        doc = problem(
            api.call(method, path, "dir", content=b'{"name": "x"}', headers=headers), 415, "unsupported-media-type"
        )
        assert "send " in doc["detail"] and (ctype or "no content type") in doc["detail"]


@pytest.mark.usefixtures("unchanged")
def test_bulk_array_reports_every_bad_row_and_creates_nothing(api) -> None:
    rows = [
        {"name": "ok 0"},
        {"name": "bad email", "email": "не почта"},
        {"name": "ok 2"},
        {"city": "no name"},
        {"name": "x", "colour": "red"},
        {"name": "ok 5"},
    ]
    doc = problem(api.call("POST", "/client", json=rows), 422, "validation-error", errors=True)
    assert {e["loc"][0] for e in doc["errors"]} == {1, 3, 4}
    assert {tuple(e["loc"]) for e in doc["errors"] if e["field"]} >= {(1, "email"), (3, "name")}
    doc = problem(api.call("POST", "/client", json=[{"name": "a"}, "b"]), 400, "bad-json")
    assert "item 1" in doc["detail"]
    problem(api.call("POST", "/client", json=[]), 400, "bad-json")


@pytest.mark.usefixtures("unchanged")
def test_bad_cursor_and_limits(api) -> None:
    forged = base64.urlsafe_b64encode(json.dumps({"a": -1}).encode()).decode()
    for cursor in ("garbage!", "e30", "eyJhIjp0cnVlfQ", forged, "x" * 5000, base64.urlsafe_b64encode(b"[1]").decode()):
        doc = problem(api.call("GET", "/deal", params={"after": cursor}), 400, "bad-cursor")
        assert "next" in doc["detail"]
    for limit in (501, 0, -1, "many"):
        doc = problem(api.call("GET", "/deal", params={"limit": limit}), 400, "bad-request", errors=True)
        assert doc["errors"][0]["loc"] == ["query", "limit"] and doc["errors"][0]["field"] == "limit"
    doc = problem(api.call("GET", "/deal", params={"fields": "title,nope"}), 400, "bad-request")
    assert "nope" in doc["detail"] and "fields: " in doc["detail"]
    doc = problem(api.call("GET", "/deal", params={"expand": "nolink"}), 400, "bad-request")
    assert "unknown link 'nolink'; links: client, supplier" in doc["detail"]
    unordered = api.call("GET", "/deal", params={"order_by": "nope"})  # 400 once GETs answer bad values so
    doc = problem(unordered, 400 if unordered.status_code == 400 else 422, "validation-error")
    assert "nope" in doc["detail"]
