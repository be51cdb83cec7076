"""Tenants A and B of one database, same model, each with records, users, tokens, files, notes,
tags and tasks: nothing of A is reachable from B through the library, the command line or the
HTTP server (``serve --tenants host|path``, metacrm/web/tenants.py), on SQLite and PostgreSQL.

The rule every check follows: for every read and write path, the answer to a value guessed from
A (an id, a name, a token, a session, a file) equals the answer to a wrong guess. And a pooled
connection never carries A's search_path into B's request: the server runs in-process on a
PostgreSQL pool of one connection while A's and B's requests, failing ones included, interleave.
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
import warnings
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app as cli
from metacrm.errors import MetaCRMError
from metacrm.runtime import tenants
from metacrm.runtime.engine import make_engine
from tests.conftest import require_module

require_module("fastapi", why="the HTTP server is the [web] extra")
require_module("argon2", why="passwords are hashed with argon2-cffi ([web] extra)")
require_module("jinja2", why="pages are Jinja2 templates ([web] extra)")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from metacrm.runtime.passwords import set_password  # noqa: E402
from metacrm.runtime.tokens import authenticate, create_token  # noqa: E402
from metacrm.web.pages import SESSION_COOKIE  # noqa: E402
from metacrm.web.tenants import TenantDispatcher  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRADE = ROOT / "examples" / "trade.yaml"
PASSWORD = "correct horse battery"
MADE_UP = "mcrm_" + "x" * 40  # a token of the right shape that nobody was given
GUESS, WRONG = 3, 999  # A's third deal (B has one), and an id no tenant has
LOCAL_URL = re.compile(r'\s(?:href|src|action|hx-get|hx-post)="(/[^"]*)"')


def tagged_trade(tmp_path: Path) -> Path:
    """The trade example with a tags field on clients and attachments on deals (so tags and
    files are checked too)."""
    source = TRADE.read_text(encoding="utf-8")
    anchor = "      city: {type: string, label: Город, index: true, max_length: 100}\n"
    assert anchor in source
    path = tmp_path / "trade_tags.yaml"
    assert "\n  deal:\n" in source
    source = source.replace(anchor, anchor + "      labels: {type: tags, label: Метки}\n")
    path.write_text(source.replace("\n  deal:\n", "\n  deal:\n    attachments: true\n", 1), encoding="utf-8")
    return path


class World:
    """Tenants ``a`` and ``b`` on one engine (PostgreSQL: a pool of one connection). A holds a
    manager ann, three deals, two files, a task, a note and the tag alpha; B a manager bob, one
    deal, one file, a task, a note and the tag beta. Both have a director ``boss`` with a token."""

    def __init__(self, url: str, tmp_path: Path):
        self.url = url
        self.model_path = tagged_trade(tmp_path)
        self.model = metacrm.load_model(self.model_path)
        self.pg = url.startswith("postgresql")
        self.engine = make_engine(url, pool_size=1) if self.pg else make_engine(url)
        tag = uuid.uuid4().hex[:8]
        self.a, self.b = f"iso{tag}_a", f"iso{tag}_b"
        self.crm, self.token, self.file_ids = {}, {}, {}
        for name, manager, word, deals, files in ((self.a, "ann", "alpha", 3, 2), (self.b, "bob", "beta", 1, 1)):
            tenants.create(self.engine, name)
            crm = metacrm.connect(self.model, self.engine, tenant=name)
            crm.migrate()
            crm.add_user(manager, roles=["manager"])
            crm.add_user("boss", roles=["director"])
            for login in (manager, "boss"):
                set_password(crm, login, PASSWORD)
            client = crm.create("client", {"name": f"{word}client", "owner": manager, "labels": [word]})
            for i in range(deals):
                crm.create(
                    "deal",
                    {"title": f"{word}deal {i + 1}", "amount": "10.00", "client": client["id"], "owner": manager},
                )
            crm.move("deal", 1, "qualified")
            crm.create("task", {"title": f"{word}task", "subject": {"entity": "deal", "id": 1}, "owner": manager})
            crm.note("deal", 1, f"{word}note")
            self.file_ids[name] = [
                crm.attach("deal", 1, f"{word} file {i}".encode(), name=f"{word}{i}.txt")["id"] for i in range(files)
            ]
            self.token[name] = create_token(crm, "boss")["token"]
            self.crm[name] = crm

    def close(self) -> None:
        for crm in self.crm.values():
            crm.close()
        self.engine.dispose()
        if self.pg:
            admin = make_engine(self.url)
            with admin.begin() as conn:
                for name in (self.a, self.b):
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
            admin.dispose()


@pytest.fixture
def world(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("METACRM_FILES", str(tmp_path / "files"))  # a store per tenant below it
    made = World(db_url, tmp_path)
    yield made
    made.close()


def outcome(call, *args, **kwargs):
    """What a call answers: ("ok", result) or (error class, message)."""
    try:
        return ("ok", call(*args, **kwargs))
    except MetaCRMError as exc:
        return (type(exc).__name__, str(exc))


def masked(answer, value) -> str:
    """An answer with ``value`` (the id or name asked for) written as N, to compare a guess
    with a wrong guess."""
    return re.sub(rf"\b{re.escape(str(value))}\b", "N", json.dumps(answer, default=str, ensure_ascii=False))


def same(call, guess, wrong, build=lambda v: (v,)) -> str:
    """Assert the call answers a guess as it answers a wrong guess; the answer."""
    got, other = masked(outcome(call, *build(guess)), guess), masked(outcome(call, *build(wrong)), wrong)
    assert got == other, (got, other)
    return got


# -- the library ---------------------------------------------------------------------------------
def test_library_reads_and_writes_of_b_never_reach_a(world):
    a, b = world.crm[world.a], world.crm[world.b]
    bob = b.as_user("boss")
    assert a.get("deal", GUESS)["title"] == "alphadeal 3"  # A has it: the guess is a real one
    for crm in (b, bob):
        assert "not found" in same(crm.get, GUESS, WRONG, lambda v: ("deal", v))
        same(crm.history, GUESS, WRONG, lambda v: ("deal", v))
        same(crm.timeline, GUESS, WRONG, lambda v: ("deal", v))
        same(crm.related, GUESS, WRONG, lambda v: ("deal", v, "tasks"))
        same(crm.files, GUESS, WRONG, lambda v: ("deal", v))
        # A's second file of deal 1 (B's deal 1 holds one file)
        a_file = world.file_ids[world.a][1]
        assert a_file not in world.file_ids[world.b]
        same(crm.file_info, a_file, WRONG, lambda v: ("deal", 1, v))
        same(crm.open_file, a_file, WRONG, lambda v: ("deal", 1, v))
        for where in ("title = :t", "title startswith :t"):
            assert (
                crm.find("deal", where=where, params={"t": "alphadeal 3"})
                == crm.find("deal", where=where, params={"t": "nosuchdeal"})
                == []
            )
            assert crm.count("deal", where=where, params={"t": "alphadeal 3"}) == 0
        assert crm.search("alphadeal") == crm.search("zzzqqq") == []
        assert crm.search("alphaclient") == []
        assert [t["tag"] for t in crm.tags("client")] == ["beta"]
        assert [t["title"] for t in crm.tasks()] == ["betatask"]
        assert "alphanote" not in json.dumps(crm.timeline("deal", 1), default=str, ensure_ascii=False)
        out = io.StringIO()
        from metacrm.io.csv_io import export_csv

        export_csv(crm, "deal", out)
        assert [r["title"] for r in csv.DictReader(io.StringIO(out.getvalue()))] == ["betadeal 1"]
        assert crm.funnel("deal")["count"] == 1
        assert [r["title"] for col in crm.board("deal")["columns"] for r in col["records"]] == ["betadeal 1"]
    # the writes refuse A's ids as they refuse ids nobody has, and change nothing of A's
    before = {k: a.get("deal", GUESS)[k] for k in ("title", "stage", "version")}
    same(b.update, GUESS, WRONG, lambda v: ("deal", v, {"title": "stolen"}))
    same(b.move, GUESS, WRONG, lambda v: ("deal", v, "qualified"))
    same(b.note, GUESS, WRONG, lambda v: ("deal", v, "hello"))
    same(b.attach, GUESS, WRONG, lambda v: ("deal", v, b"x"))
    same(b.link, GUESS, WRONG, lambda v: ("deal", v, "client", 1))
    same(b.delete, GUESS, WRONG, lambda v: ("deal", v))
    same(b.detach, world.file_ids[world.a][1], WRONG, lambda v: ("deal", 1, v))
    assert {k: a.get("deal", GUESS)[k] for k in ("title", "stage", "version")} == before
    assert len(a.files("deal", 1)) == 2 and len(b.files("deal", 1)) == 1


def test_b_s_reports_do_not_move_when_a_writes(world):
    """Funnel, group report, board, tags, tasks and the export of B answer the same before and
    after A adds records, tags, notes and tasks (and A's own answers do change)."""
    from metacrm.io.csv_io import export_csv

    a, b = world.crm[world.a], world.crm[world.b]

    def answers(crm) -> str:
        out = io.StringIO()
        export_csv(crm, "deal", out)
        return json.dumps(
            [
                crm.funnel("deal"),
                crm.report_group("deal", by="stage"),
                crm.board("deal"),
                crm.tags("client"),
                crm.tasks(),
                crm.count("deal"),
                crm.search("deal"),
                out.getvalue(),
            ],
            default=str,
            ensure_ascii=False,
        )

    b_before, a_before = answers(b), answers(a)
    client = a.create("client", {"name": "alpha two", "labels": ["alpha", "gamma"]})
    for i in range(3):
        deal = a.create("deal", {"title": f"alpha more {i}", "amount": "5.00", "client": client["id"]})
        a.move("deal", deal["id"], "qualified")
    a.create("task", {"title": "alpha task two", "subject": {"entity": "client", "id": client["id"]}})
    assert answers(b) == b_before
    assert answers(a) != a_before


def test_a_s_users_and_tokens_are_unknown_in_b(world):
    a, b = world.crm[world.a], world.crm[world.b]
    ann_in_b = outcome(metacrm.connect, world.model, world.engine, tenant=world.b, user="ann")
    nobody_in_b = outcome(metacrm.connect, world.model, world.engine, tenant=world.b, user="nobody")
    assert ann_in_b[0] != "ok"
    assert masked(ann_in_b, "ann") == masked(nobody_in_b, "nobody")
    assert outcome(b.as_user, "ann")[0] == outcome(b.as_user, "nobody")[0] != "ok"
    assert sorted(u["login"] for u in b.users()) == ["bob", "boss"]
    token_a = world.token[world.a]
    assert authenticate(a, token_a) == "boss"
    assert authenticate(b, token_a) is None and authenticate(b, MADE_UP) is None


# -- the command line --------------------------------------------------------------------------
def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_cli_of_b_refuses_a_s_users_and_ids_as_unknown_ones(world):
    common = ["--model", str(world.model_path), "--db", world.url, "--tenant", world.b]
    code, out = _cli("get", "deal", "1", *common, "--as", "ann", "--format", "json")
    other = _cli("get", "deal", "1", *common, "--as", "nobody", "--format", "json")
    assert code == 1 and "ann" in out
    assert masked([code, out], "ann") == masked(list(other), "nobody")
    code, out = _cli("get", "deal", str(GUESS), *common, "--format", "json")
    assert code == 1 and "not found" in out.lower()
    assert masked([code, out], GUESS) == masked(
        list(_cli("get", "deal", str(WRONG), *common, "--format", "json")), WRONG
    )
    code, out = _cli("list", "deal", *common, "--format", "json")
    assert code == 0 and [r["title"] for r in json.loads(out)] == ["betadeal 1"]
    code, out = _cli("history", "deal", str(GUESS), *common)
    assert code == 1 and masked([code, out], GUESS) == masked(list(_cli("history", "deal", str(WRONG), *common)), WRONG)
    # A itself, through the same command: the guess was a real id there
    code, out = _cli("get", "deal", str(GUESS), *common[:-1], world.a, "--format", "json")
    assert code == 0 and json.loads(out)["record"]["title"] == "alphadeal 3"


# -- HTTP ----------------------------------------------------------------------------------------------
class Server:
    """The dispatcher in-process, reached as tenant ``name`` by host or by path."""

    def __init__(self, world: World, mode: str):
        self.world, self.mode = world, mode
        self.app = TenantDispatcher(world.engine, mode, model=str(world.model_path), token_ttl=0)
        self.client = TestClient(self.app, follow_redirects=False)

    def url(self, name: str, path: str) -> str:
        if self.mode == "host":
            return f"http://{name}.crm.example.com{path}"
        return f"http://testserver/t/{name}{path}"

    def call(self, method: str, name: str, path: str, token: str | None = None, **kwargs):
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.request(method, self.url(name, path), headers=headers, **kwargs)

    def sign_in(self, name: str, login: str) -> TestClient:
        browser = TestClient(self.app, follow_redirects=False)
        page = browser.get(self.url(name, "/login"))
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        done = browser.post(
            self.url(name, "/login"), data={"login": login, "password": PASSWORD, "csrf": csrf, "next": "/"}
        )
        assert done.status_code == 303, done.text
        return browser


def answer(response) -> list:
    return [response.status_code, response.headers.get("content-type"), response.text]


@pytest.fixture(params=["host", "path"])
def server(request, world):
    return Server(world, request.param)


def test_http_a_s_token_is_unknown_in_b_and_works_in_a(world, server):
    token_a, token_b = world.token[world.a], world.token[world.b]
    me = server.call("GET", world.a, "/api/v1/me", token_a)
    assert me.status_code == 200 and me.json()["login"] == "boss"
    assert server.call("GET", world.a, f"/api/v1/deal/{GUESS}", token_a).json()["title"] == "alphadeal 3"
    paths = [
        "/api/v1/me",
        "/api/v1/deal",
        "/api/v1/deal/1",
        "/api/v1/deal/board",
        "/api/v1/deal/export",
        "/api/v1/deal/1/files",
        "/api/v1/deal/1/history",
        "/api/v1/tasks",
        "/api/v1/search?q=alpha",
        "/api/v1/reports/funnel/deal",
        "/api/v1/reports/group/deal?by=stage",
    ]
    for path in paths:
        stolen = server.call("GET", world.b, path, token_a)
        assert stolen.status_code == 401, path
        assert answer(stolen) == answer(server.call("GET", world.b, path, MADE_UP)), path
    for method, path, body in (
        ("POST", "/api/v1/deal", {"title": "x", "amount": "1.00"}),
        ("PATCH", "/api/v1/deal/1", {"title": "x"}),
        ("POST", "/api/v1/forms/telephony", {"name": "x", "phone": "+7 900 000-00-00"}),
    ):
        stolen = server.call(method, world.b, path, token_a, json=body)
        assert answer(stolen) == answer(server.call(method, world.b, path, MADE_UP, json=body)), path
    telephony = {"name": "caller", "phone": "+7 900 000-00-00"}
    stolen = server.call("POST", world.b, "/forms/telephony", token_a, json=telephony)
    assert stolen.status_code == 401
    assert answer(stolen) == answer(server.call("POST", world.b, "/forms/telephony", MADE_UP, json=telephony))
    assert server.call("POST", world.b, "/forms/telephony", token_b, json=telephony).status_code in (200, 201)
    assert world.crm[world.a].count("client", where="name = 'caller'") == 0
    assert world.crm[world.b].count("client", where="name = 'caller'") == 1


def test_http_b_answers_a_s_values_as_wrong_guesses(world, server):
    token_b = world.token[world.b]

    def alike(method: str, path: str, guess, wrong, **kwargs) -> list:
        got = server.call(method, world.b, path.format(guess), token_b, **kwargs)
        other = server.call(method, world.b, path.format(wrong), token_b, **kwargs)
        assert masked(answer(got), guess) == masked(answer(other), wrong), (path, got.text, other.text)
        return answer(got)

    assert alike("GET", "/api/v1/deal/{}", GUESS, WRONG)[0] == 404
    for path in ("/api/v1/deal/{}/history", "/api/v1/deal/{}/files", "/api/v1/deal/{}/tasks"):
        alike("GET", path, GUESS, WRONG)
    alike("PATCH", "/api/v1/deal/{}", GUESS, WRONG, json={"title": "stolen"})
    alike("POST", "/api/v1/deal/{}/move", GUESS, WRONG, json={"stage": "qualified"})
    alike("POST", "/api/v1/deal/{}/notes", GUESS, WRONG, json={"text": "hello"})
    alike("DELETE", "/api/v1/deal/{}", GUESS, WRONG)
    a_file = world.file_ids[world.a][1]
    assert alike("GET", "/api/v1/deal/1/files/{}", a_file, WRONG)[0] == 404
    alike("DELETE", "/api/v1/deal/1/files/{}", a_file, WRONG)
    assert alike("GET", "/api/v1/search?q={}", "alphadeal", "zzzqqq")[2] == "[]"
    alike("GET", "/api/v1/deal?q={}", "alphadeal", "zzzqqq")
    alike("GET", "/api/v1/deal?where=title%20%3D%20%27{}%27", "alphadeal", "zzzqqq")
    alike("GET", "/api/v1/deal/export?where=title%20%3D%20%27{}%27", "alphadeal", "zzzqqq")
    funnel = server.call("GET", world.b, "/api/v1/reports/funnel/deal", token_b).json()
    assert funnel["count"] == 1
    board = server.call("GET", world.b, "/api/v1/deal/board", token_b).text
    assert "betadeal" in board and "alphadeal" not in board
    group = server.call("GET", world.b, "/api/v1/reports/group/deal?by=client", token_b).text
    assert "betaclient" in group and "alphaclient" not in group
    tasks = server.call("GET", world.b, "/api/v1/tasks", token_b).text
    assert "betatask" in tasks and "alphatask" not in tasks
    # A's record is untouched by all of it
    assert world.crm[world.a].get("deal", GUESS)["title"] == "alphadeal 3"


def test_http_unknown_dropped_and_malformed_tenants_answer_alike(world, server):
    unknown = answer(server.call("GET", "nosuchtenant", "/api/v1/me", world.token[world.a]))
    assert unknown[0] == 404 and unknown[1] == "application/problem+json"
    for name in ("Bad", "pg_catalog", "public", "x" * 60, "a-b"):
        assert answer(server.call("GET", name, "/api/v1/me", world.token[world.a])) == unknown, name
    # a tenant created while serving is found on its first request; a dropped one is gone
    late = f"{world.a}_late"
    tenants.create(world.engine, late)
    crm = metacrm.connect(world.model, world.engine, tenant=late)
    crm.migrate()
    crm.add_user("boss", roles=["director"])
    token = create_token(crm, "boss")["token"]
    crm.close()
    try:
        assert server.call("GET", late, "/api/v1/deal", token).json()["items"] == []
        assert server.call("GET", late, "/api/v1/deal", world.token[world.a]).status_code == 401
        tenants.drop(world.engine, late, force=True)
        assert answer(server.call("GET", late, "/api/v1/deal", token)) == unknown
    finally:
        if world.pg:
            with world.engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{late}" CASCADE'))
    health = server.client.get("http://testserver/healthz").json()  # global: not a tenant's
    assert health == {"status": "ok", "tenants": 2, "mode": server.mode}
    tenant_health = server.client.get(server.url(world.a, "/healthz")).json()
    if server.mode == "path":  # /t/A/healthz: A's own (its model, 503 while it needs migrating)
        assert tenant_health["model"] == "trade"
    else:  # /healthz on any host is the server's
        assert tenant_health == health


def test_http_a_session_is_no_session_in_b(world, server):
    browser = server.sign_in(world.a, "ann")
    home = browser.get(server.url(world.a, "/"))
    assert home.status_code == 200 and "alphatask" in home.text
    secret = browser.cookies.get(SESSION_COOKIE)
    assert secret
    # the browser keeps A's cookie to A (its host, or its /t/A/ path)...
    assert browser.get(server.url(world.b, "/")).status_code == 303
    # ...and a cookie of A's sent to B on purpose is no session there, as a made-up one is not
    outsider = TestClient(server.app, follow_redirects=False)
    stolen = outsider.get(server.url(world.b, "/deal"), headers={"Cookie": f"{SESSION_COOKIE}={secret}"})
    made_up = outsider.get(server.url(world.b, "/deal"), headers={"Cookie": f"{SESSION_COOKIE}={'y' * 43}"})
    assert stolen.status_code == 303 and "/login" in stolen.headers["location"]
    assert answer(stolen)[:2] == answer(made_up)[:2] and stolen.headers["location"] == made_up.headers["location"]
    # ann signs in to B as she would anywhere she has no account
    page = outsider.get(server.url(world.b, "/login"))
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    refused = outsider.post(server.url(world.b, "/login"), data={"login": "ann", "password": PASSWORD, "csrf": csrf})
    assert refused.status_code == 401


def test_path_mode_pages_link_redirect_and_scope_cookies_under_the_prefix(world):
    server = Server(world, "path")
    prefix = f"/t/{world.a}"
    entry = server.client.get(f"{prefix}")
    assert entry.status_code == 303 and entry.headers["location"].startswith(f"{prefix}/login?next=")
    login = server.client.get(f"{prefix}/login")
    assert f"Path={prefix}/login" in login.headers["set-cookie"]
    browser = server.sign_in(world.a, "ann")
    assert browser.cookies.jar and all(c.path.startswith(f"{prefix}/") for c in browser.cookies.jar)
    seen = set()
    for path in ("/", "/deal", "/deal/1", "/deal/board", "/deal/new", "/deal/1/edit", "/reports/funnel/deal", "/model"):
        page = browser.get(f"{prefix}{path}")
        assert page.status_code == 200, (path, page.text[:300])
        assert f'data-root="{prefix}"' in page.text
        urls = LOCAL_URL.findall(page.text)
        assert urls and all(u.startswith(f"{prefix}/") for u in urls), [u for u in urls if not u.startswith(prefix)]
        seen.update(urls)
    assert f"{prefix}/static/app.css" in seen and f"{prefix}/deal/1" in seen
    assert browser.get(f"{prefix}/static/app.css").status_code == 200
    options = browser.get(f"{prefix}/client/options?q=alpha")
    assert options.status_code == 200 and "alphaclient" in options.text
    # the board's script posts a move to data-root + /deal/{id}/move
    board = browser.get(f"{prefix}/deal/board").text
    token = re.search(r'data-csrf="([^"]+)"', board).group(1)
    moved = browser.post(
        f"{prefix}/deal/2/move",
        data={"stage": "qualified"},
        headers={"X-CSRF-Token": token, "Accept": "application/json"},
    )
    assert moved.status_code == 200, moved.text
    assert world.crm[world.a].get("deal", 2)["stage"] == "qualified" and world.crm[world.b].count("deal") == 1
    # a form posts under the prefix and is sent on under it
    csrf = re.search(r'name="csrf" value="([^"]+)"', browser.get(f"{prefix}/client/new").text).group(1)
    made = browser.post(f"{prefix}/client/new", data={"csrf": csrf, "name": "made on a page"})
    assert made.status_code == 303 and re.fullmatch(rf"{prefix}/client/\d+", made.headers["location"])
    assert world.crm[world.a].count("client", where="name = 'made on a page'") == 1
    assert world.crm[world.b].count("client", where="name = 'made on a page'") == 0
    # the API's own links (pages of a list) name the prefix too
    page = server.call("GET", world.a, "/api/v1/deal?limit=1", world.token[world.a]).json()
    assert page["next"].startswith(f"http://testserver{prefix}/api/v1/deal?")
    # the API under the prefix answers problems, not pages
    missing = server.call("GET", world.a, "/api/v1/nosuch", world.token[world.a])
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    # only /healthz and /t/... exist outside a tenant
    assert server.client.get("/deal").status_code == 404


def test_one_pooled_connection_serves_a_and_b_interleaved_without_carrying_a_tenant(world):
    """Requests of A and B alternate on one engine (PostgreSQL: a pool of one connection),
    some failing inside their transaction (a unique conflict the database raises, a refused
    move, bad values): every request sees its own tenant's data only."""
    server = Server(world, "host")
    token = world.token
    for i in range(3):
        for name, word, other in ((world.a, "alpha", "beta"), (world.b, "beta", "alpha")):
            made = server.call(
                "POST", name, "/api/v1/client", token[name], json={"name": f"{word} {i}", "inn": f"77{i:08d}"}
            )
            assert made.status_code == 201, made.text
            again = server.call("POST", name, "/api/v1/client", token[name], json={"name": "dup", "inn": f"77{i:08d}"})
            assert again.status_code == 409, again.text  # the database refused it mid-transaction
            bad = server.call("POST", name, "/api/v1/deal", token[name], json={"title": "", "amount": "x"})
            assert bad.status_code == 422
            refused = server.call("POST", name, "/api/v1/deal/1/move", token[name], json={"stage": "won"})
            assert refused.status_code in (409, 422), refused.text
            listed = server.call("GET", name, "/api/v1/client?limit=500", token[name]).json()["items"]
            names = {r["name"] for r in listed}
            assert f"{word} {i}" in names and not any(n.startswith(other) for n in names), names
            assert "dup" not in names
            found = server.call("GET", name, f"/api/v1/search?q={other}client", token[name]).json()
            assert found == []
    counts = {name: world.crm[name].count("client") for name in (world.a, world.b)}
    assert counts == {world.a: 4, world.b: 4}  # their first client and three made here
    if world.pg:
        engine = world.engine
        assert engine.pool.size() == 1
        assert {id(app.state.crm.engine.pool) for app in server.app._apps.values()} == {id(engine.pool)}
        with engine.connect() as conn:  # no tenant: the database's own schema (no client table)
            assert conn.execute(text("SELECT to_regclass('client')")).scalar_one() is None
        with tenants.for_tenant(engine, world.b).connect() as conn:
            assert conn.execute(text("SELECT current_schema()")).scalar_one() == world.b


# -- serving -------------------------------------------------------------------------------------
def test_each_tenant_is_served_its_own_model_from_the_tenants_file(world, tmp_path, monkeypatch):
    from metacrm.web import server as web_server

    other = ROOT / "examples" / "logistics.yaml"
    tenants_file = tmp_path / "tenants.yaml"
    tenants_file.write_text(f"default: {world.model_path}\ntenants:\n  {world.b}: {other}\n", encoding="utf-8")
    monkeypatch.setenv("METACRM_DB", world.url)
    monkeypatch.setenv("METACRM_TENANTS", "path")
    monkeypatch.setenv("METACRM_TENANTS_FILE", str(tenants_file))
    monkeypatch.delenv("METACRM_MODEL", raising=False)
    app = web_server.from_env()
    try:
        assert isinstance(app, TenantDispatcher)
        client = TestClient(app, follow_redirects=False)
        assert client.get(f"/t/{world.a}/login").status_code == 200
        b_model = app._apps[world.b].state.crm.model if client.get(f"/t/{world.b}/login") else None
        assert app._apps[world.a].state.crm.model.name == "trade"
        assert b_model is not None and b_model.name == metacrm.load_model(other).name
    finally:
        app.close()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tenants", "everything"], "--tenants: 'everything' is not one of host, path"),
        (["--tenants-file", "t.yaml"], "--tenants-file: give --tenants host|path too"),
        (["--tenants", "host", "--tenant", "acme"], "--tenant and --tenants"),
        (["--tenants", "path"], "no database at"),  # an SQLite file is not created to find no tenants
        (["--tenants", "path", "--tenants-file", "{bad}"], "tenants.yaml:1:1"),
    ],
)
def test_serve_tenants_refuses_bad_usage(args, message, tmp_path):
    """Each a line on stderr and exit 2, before anything listens."""
    bad = tmp_path / "tenants.yaml"
    bad.write_text("nonsense: 1\ntenants: {}\n", encoding="utf-8")
    args = [a.format(bad=bad) for a in args]
    result = CliRunner().invoke(cli, ["serve", "-m", str(TRADE), "--db", f"sqlite:///{tmp_path / 'crm.db'}", *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_replica_serves_every_tenant_s_reads_through_one_pool(world, tmp_path):
    """``serve --tenants --read-db``: a GET of tenant A reads A on the replica, a request that
    wrote and the next reads of the same browser read the primary. SQLite: the "replica" is a
    second file whose tenant files hold other rows, so where a read went is seen. PostgreSQL: the
    tenant schemas are database-wide, so the "replica" (another schema of the same database)
    reaches the same tenant schemas: checked there is that every tenant reads through the one
    engine on the replica and still sees only its own rows."""
    from metacrm.web.app import WROTE_COOKIE

    if world.pg:
        from tests.conftest import pg_schema_url

        context = pg_schema_url()
        replica_url = context.__enter__()
    else:
        context, replica_url = None, f"sqlite:///{tmp_path / 'replica.db'}"
        replica = make_engine(replica_url)
        for name in (world.a, world.b):  # the replica's copy of each tenant, with a row of its own
            tenants.create(replica, name)
            with metacrm.connect(world.model, replica, tenant=name) as crm:
                crm.migrate()
                crm.create("client", {"name": f"replica of {name}"})
        replica.dispose()
    app = TenantDispatcher(world.engine, "path", model=str(world.model_path), read_url=replica_url, token_ttl=0)
    try:
        client = TestClient(app, follow_redirects=False)
        for name, word in ((world.a, "alpha"), (world.b, "beta")):
            auth = {"Authorization": f"Bearer {world.token[name]}"}
            listed = client.get(f"/t/{name}/api/v1/client", headers=auth)
            assert listed.status_code == 200, listed.text
            names = [r["name"] for r in listed.json()["items"]]
            made = client.post(f"/t/{name}/api/v1/client", headers=auth, json={"name": f"{word} new"})
            assert made.status_code == 201 and WROTE_COOKIE in made.headers["set-cookie"]
            assert f"Path=/t/{name}/" in made.headers["set-cookie"]
            after = client.get(f"/t/{name}/api/v1/client", headers={**auth, "Cookie": f"{WROTE_COOKIE}=1"})
            primary = [r["name"] for r in after.json()["items"]]
            assert primary == [f"{word}client", f"{word} new"]
            if world.pg:
                assert names == [f"{word}client"]
                assert app._apps[name].state.crm.read_engine.pool is app.read_engine.pool
            else:
                assert names == [f"replica of {name}"]
                # the browser that wrote reads the primary for a while (its cookie), only in that
                # tenant (the cookie's Path): B's first list above came from the replica; another
                # client reads the replica again
                fresh = TestClient(app).get(f"/t/{name}/api/v1/client", headers=auth)
                assert [r["name"] for r in fresh.json()["items"]] == [f"replica of {name}"]
    finally:
        app.close()
        if context is not None:
            context.__exit__(None, None, None)
