"""Operating the HTTP API (issue 11, item 7): the engine's busy timeout and pool options
(through ``metacrm.connect``), a full pool answering 503 with Retry-After, and the token cache
(a revoked token stops working within ``token_ttl``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from conftest import require_module
from sqlalchemy import event, text

import metacrm
from metacrm.runtime.engine import make_engine, reading
from metacrm.runtime.tokens import create_token, revoke_token

require_module("fastapi", why="the HTTP API is the [web] extra")
require_module("httpx", why="the API tests drive the app through httpx")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice that httpx2 will replace httpx
    from fastapi.testclient import TestClient

import metacrm.web.app as web_app  # noqa: E402
from metacrm.web import create_app  # noqa: E402

TRADE = Path(__file__).parent.parent / "examples" / "trade.yaml"


def sqlite_busy_ms(engine) -> int:
    with reading(engine) as conn:
        return conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()


def test_busy_timeout_overrides_the_url(tmp_path):
    for url, keyword, expected in (
        (f"sqlite:///{tmp_path}/a.db", None, 30_000),
        (f"sqlite:///{tmp_path}/a.db?timeout=5", None, 5_000),
        (f"sqlite:///{tmp_path}/a.db?timeout=5", 0.25, 250),
        (f"sqlite:///{tmp_path}/a.db", 0, 0),
    ):
        engine = make_engine(url, busy_timeout=keyword)
        try:
            assert sqlite_busy_ms(engine) == expected, (url, keyword)
        finally:
            engine.dispose()
    with metacrm.connect(TRADE, f"sqlite:///{tmp_path}/b.db", busy_timeout=1.5) as crm:
        assert sqlite_busy_ms(crm.engine) == 1500


def pg_url(db_url: str) -> str:
    if not db_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL pool")
    return db_url


def test_postgresql_pool_options(db_url):
    url = pg_url(db_url)
    for options, size, overflow in (
        ({}, 5, 10),  # SQLAlchemy's default
        ({"pool_size": 3}, 3, 0),  # a size without overflow: exactly N connections per process
        ({"pool_size": 3, "max_overflow": 2}, 3, 2),
        ({"max_overflow": 1}, 5, 1),
    ):
        with metacrm.connect(TRADE, url, **options) as crm:
            assert (crm.engine.pool.size(), crm.engine.pool._max_overflow) == (size, overflow), options


class Api:
    def __init__(self, url: str, **settings):
        self.crm = metacrm.connect(TRADE, url)
        self.crm.migrate()
        self.crm.add_user("ann", roles=["director"])
        self.made = create_token(self.crm, "ann")
        self.client = TestClient(create_app(self.crm, **settings), raise_server_exceptions=False)

    def me(self):
        return self.client.get("/api/v1/me", headers={"Authorization": f"Bearer {self.made['token']}"})

    def close(self):
        self.client.close()
        self.crm.close()


@pytest.fixture
def api_factory(db_url):
    made: list[Api] = []

    def make(**settings) -> Api:
        made.append(Api(db_url, **settings))
        return made[-1]

    yield make
    for api in made:
        api.close()


def test_a_revoked_token_works_at_most_token_ttl_seconds(api_factory, monkeypatch):
    api = api_factory(token_ttl=60)
    now = web_app.clock()
    monkeypatch.setattr(web_app, "clock", lambda: now)
    assert api.me().status_code == 200
    revoke_token(api.crm, api.made["id"])
    assert api.me().status_code == 200  # trusted from the cache: the documented window
    monkeypatch.setattr(web_app, "clock", lambda: now + 59.9)
    assert api.me().status_code == 200
    monkeypatch.setattr(web_app, "clock", lambda: now + 60)
    r = api.me()
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    monkeypatch.setattr(web_app, "clock", lambda: now)  # a refusal is not cached as a success
    assert api.me().status_code == 401


def test_token_ttl_zero_looks_every_request_up(api_factory):
    api = api_factory(token_ttl=0)
    assert api.me().status_code == 200
    revoke_token(api.crm, api.made["id"])
    assert api.me().status_code == 401


def test_a_cached_token_costs_no_query(api_factory):
    api = api_factory()
    statements: list[str] = []
    event.listen(api.crm.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    auth = {"Authorization": f"Bearer {api.made['token']}"}
    assert api.client.get("/api/v1/model", headers=auth).status_code == 200
    first = [s for s in statements if "metacrm_token" in s]
    statements.clear()
    assert api.client.get("/api/v1/model", headers=auth).status_code == 200
    assert first and statements == []  # neither the token nor its user looked up again


def test_a_full_pool_answers_503_with_retry_after(api_factory, db_url):
    pg_url(db_url)
    api = api_factory(token_ttl=0)
    engine = make_engine(db_url, pool_size=1)
    api.crm.engine.dispose()
    api.crm.engine = engine  # the app's CRM on a pool of one connection
    engine.pool._timeout = 0.2  # seconds a checkout waits (SQLAlchemy's default is 30)
    assert api.me().status_code == 200
    with engine.connect() as held:  # another request holds the only connection
        held.execute(text("SELECT 1"))
        r = api.me()
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["retry-after"] and r.json()["type"] == "/problems/database-unavailable"
    assert "pool is full" in r.json()["detail"]
    assert api.me().status_code == 200


def test_sqlite_writers_of_one_process_queue_and_time_out_as_locked(tmp_path):
    """Writers of one process wait in turn (not in SQLite's busy polling); one that waits past
    the busy timeout is refused as "locked" (503 over HTTP), writing nothing."""
    import threading

    from metacrm.runtime.engine import writing

    with metacrm.connect(TRADE, f"sqlite:///{tmp_path}/q.db", busy_timeout=0.2) as crm:
        crm.migrate()
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            with writing(crm.engine):
                holding.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert holding.wait(30)
            with pytest.raises(metacrm.ConflictError, match="locked by another writer"):
                crm.create("client", {"name": "Ждёт"})
        finally:
            release.set()
            holder.join()
        assert crm.find("client") == []
    with metacrm.connect(TRADE, f"sqlite:///{tmp_path}/q.db") as crm:  # the default 30 s: all of them pass
        done: list[int] = []
        threads = [
            threading.Thread(target=lambda i=i: done.append(crm.create("client", {"name": f"К{i}"})["id"]))
            for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(done) == [c["id"] for c in crm.find("client", order_by="id")] and len(done) == 8
