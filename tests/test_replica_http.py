"""Reads from a replica over HTTP (issue 17, item 3) on SQLite and PostgreSQL: a GET reads the
replica, a request that may write reads the primary, a request that wrote answers with the
cookie that sends the same browser's next reads to the primary. As in tests/test_replica.py
the "replica" is a second database set up like the primary."""

from __future__ import annotations

import re
import warnings

import pytest
from conftest import require_module
from test_replica import model, set_up, urls  # noqa: F401 - fixtures

import metacrm
from metacrm.runtime.passwords import set_password
from metacrm.runtime.tokens import create_token

require_module("fastapi", why="the HTTP API is the [web] extra")
require_module("httpx", why="the API tests drive the app through httpx")
require_module("argon2", why="the pages' sign-in hashes passwords with argon2-cffi ([web] extra)")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from metacrm.web import create_app  # noqa: E402
from metacrm.web.app import WROTE_COOKIE  # noqa: E402

PASSWORD = "correct horse battery"
WROTE = {"Cookie": f"{WROTE_COOKIE}=1"}


@pytest.fixture
def api(model, urls):  # noqa: F811
    crm = metacrm.connect(model, urls[0], read_url=urls[1])
    token = create_token(crm, "ann")["token"]  # on the primary only: authentication reads it there
    client = TestClient(create_app(crm), raise_server_exceptions=False, follow_redirects=False)
    client.headers["Authorization"] = f"Bearer {token}"
    yield crm, client
    client.close()
    crm.close()


def test_gets_read_the_replica_and_writes_the_primary(api) -> None:
    crm, client = api
    made = client.post("/api/v1/ticket", json={"subject": "Printer on fire", "kind": "bug", "amount": "3"})
    assert made.status_code == 201, made.text
    new = made.json()["id"]
    assert f"{WROTE_COOKIE}=1" in made.headers["set-cookie"] and "Max-Age=" in made.headers["set-cookie"]
    client.cookies.clear()  # a client that keeps no cookies (most API clients)
    assert client.get(f"/api/v1/ticket/{new}").status_code == 404  # the replica has not seen it
    listed = client.get("/api/v1/ticket", params={"count": "true"}).json()
    assert listed["count"] == 2 and [t["id"] for t in listed["items"]] == [1, 2]
    assert client.get("/api/v1/reports/funnel/ticket").json()["stages"][0]["now"] == 2
    assert client.get(f"/api/v1/ticket/{new}", headers=WROTE).json()["subject"] == "Printer on fire"
    assert client.get("/api/v1/reports/funnel/ticket", headers=WROTE).json()["stages"][0]["now"] == 3
    assert "set-cookie" not in client.get("/api/v1/ticket").headers  # a read sets nothing


def test_a_request_that_may_write_reads_the_primary(api) -> None:
    """PATCH, DELETE and moves of a record the replica has not seen: what they read first
    (the record, the version If-Match names) is the primary's."""
    crm, client = api
    new = client.post("/api/v1/ticket", json={"subject": "Scanner"}).json()["id"]
    client.cookies.clear()
    changed = client.patch(f"/api/v1/ticket/{new}", json={"amount": "8"}, headers={"If-Match": '"1"'})
    assert changed.status_code == 200 and changed.headers["ETag"] == '"2"', changed.text
    stale = client.patch(f"/api/v1/ticket/{new}", json={"amount": "9"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    moved = client.post(f"/api/v1/ticket/{new}/move", json={"stage": "done", "version": 2})
    assert moved.status_code == 200 and moved.json()["stage"] == "done"
    assert client.delete(f"/api/v1/ticket/{new}", headers={"If-Match": '"2"'}).status_code == 412
    assert client.delete(f"/api/v1/ticket/{new}", headers={"If-Match": '"3"'}).status_code == 200
    with crm.primary():
        assert crm.count("ticket") == 2


def test_without_a_replica_nothing_changes(model, urls) -> None:  # noqa: F811
    with metacrm.connect(model, urls[0]) as crm:
        client = TestClient(create_app(crm), raise_server_exceptions=False)
        client.headers["Authorization"] = f"Bearer {create_token(crm, 'ann')['token']}"
        made = client.post("/api/v1/ticket", json={"subject": "Cable"})
        assert made.status_code == 201 and "set-cookie" not in made.headers
        assert client.get(f"/api/v1/ticket/{made.json()['id']}").status_code == 200


def test_a_replica_that_is_down_answers_503_naming_it(model, urls, tmp_path) -> None:  # noqa: F811
    down = (
        f"sqlite:///{tmp_path / 'missing' / 'r.db'}"
        if urls[0].startswith("sqlite")
        else "postgresql+psycopg://postgres@127.0.0.1:1/test"
    )
    with metacrm.connect(model, urls[0], read_url=down) as crm:
        client = TestClient(create_app(crm), raise_server_exceptions=False)
        client.headers["Authorization"] = f"Bearer {create_token(crm, 'ann')['token']}"
        failed = client.get("/api/v1/ticket")
        assert failed.status_code == 503 and "read replica" in failed.json()["detail"]
        assert client.post("/api/v1/ticket", json={"subject": "Written all the same"}).status_code == 201


def test_the_page_a_form_redirects_to_shows_what_it_saved(model, urls) -> None:  # noqa: F811
    crm = metacrm.connect(model, urls[0], read_url=urls[1])
    set_password(crm, "ann", PASSWORD)  # on the primary only: the sign-in reads it there
    browser = TestClient(create_app(crm), follow_redirects=False)
    try:
        page = browser.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        signed = browser.post("/login", data={"login": "ann", "password": PASSWORD, "csrf": token, "next": "/"})
        assert signed.status_code == 303, signed.text
        form = browser.get("/ticket/new")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        saved = browser.post("/ticket/new", data={"csrf": token, "subject": "Broken chair"})
        assert saved.status_code == 303 and f"{WROTE_COOKIE}=1" in saved.headers["set-cookie"]
        card = saved.headers["location"]
        browser.cookies.delete(WROTE_COOKIE)
        browser.cookies.set(WROTE_COOKIE, "1")  # as the browser holds it for a few seconds (never timed here)
        assert "Broken chair" in browser.get(card).text  # the cookie: the primary
        browser.cookies.delete(WROTE_COOKIE)
        assert browser.get(card).status_code == 404  # without it: the replica, which lags
    finally:
        browser.close()
        crm.close()


def test_each_serve_worker_opens_the_replica_from_the_environment(model, urls, monkeypatch) -> None:  # noqa: F811
    """`metacrm serve --read-db URL` hands the replica to its workers as $METACRM_READ_DB:
    each worker's app (metacrm.web.server.from_env) reads from it."""
    from metacrm.web.server import from_env

    with metacrm.connect(model, urls[0]) as crm:
        crm.create("ticket", {"subject": "Only on the primary"})
        token = create_token(crm, "ann")["token"]
    for name in ("METACRM_POOL_SIZE", "METACRM_BUSY_TIMEOUT", "METACRM_TENANT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("METACRM_MODEL", str(model))
    monkeypatch.setenv("METACRM_DB", urls[0])
    monkeypatch.setenv("METACRM_READ_DB", urls[1])
    app = from_env()
    crm = app.state.crm
    try:
        assert crm.read_engine is not None and crm.read_engine.url.render_as_string(False) == urls[1]
        client = TestClient(app)
        listed = client.get("/api/v1/ticket", headers={"Authorization": f"Bearer {token}"})
        assert listed.status_code == 200 and len(listed.json()["items"]) == 2
    finally:
        crm.close()
