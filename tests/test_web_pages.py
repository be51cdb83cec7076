"""The browser app in-process (docs/web.md): sign-in, sessions, CSRF, throttling, and the pages
acting as the signed-in user, on SQLite and PostgreSQL. tests/test_web_browser.py drives the same
pages in Chromium."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import warnings
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, update
from typer.testing import CliRunner

import metacrm
from tests.conftest import dump_database, require_module

require_module("fastapi", why="the browser app is the [web] extra")
require_module("argon2", why="passwords are hashed with argon2-cffi ([web] extra)")
require_module("jinja2", why="pages are Jinja2 templates ([web] extra)")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from metacrm.runtime.passwords import set_password  # noqa: E402
from metacrm.web import create_app  # noqa: E402
from metacrm.web.pages import LOGIN_CSRF_COOKIE, SESSION_COOKIE, Throttle  # noqa: E402

TRADE = Path(__file__).parent.parent / "examples" / "trade.yaml"
CONTRACT = Path(__file__).parent / "fixtures" / "valid" / "contract.yaml"  # a pipeline summing `amount`
PASSWORD = "correct horse battery"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def field_errors(html: str) -> list[str]:
    return re.findall(r'class="field-error" id="err-(\w+)"', html)


class Site:
    """The app on one database: users with passwords, a client and a deal per manager."""

    def __init__(self, url: str, base_url: str = "http://testserver", model: Path = TRADE):
        self.url = url
        self.crm = crm = metacrm.connect(model, url)
        crm.migrate()
        for login, role in (("ann", "manager"), ("bob", "manager"), ("dir", "director")):
            crm.add_user(login, roles=[role])
            set_password(crm, login, PASSWORD)
        self.ids = {}
        for login, name in (("ann", "Ромашка"), ("bob", "Лютик")):
            client = crm.create("client", {"name": name, "owner": login})
            self.ids[f"c_{login}"] = client["id"]
            deal = crm.create("deal", {"title": f"Сделка {name}", "client": client["id"], "owner": login})
            self.ids[f"d_{login}"] = deal["id"]
        self.app = create_app(crm)
        self.base_url = base_url
        self.client = self.browser()

    def browser(self) -> TestClient:
        return TestClient(self.app, base_url=self.base_url, follow_redirects=False, raise_server_exceptions=True)

    def sign_in(self, login: str = "ann", password: str = PASSWORD, client: TestClient | None = None):
        client = client or self.client
        token = csrf_of(client.get("/login").text)
        return client.post("/login", data={"login": login, "password": password, "csrf": token, "next": "/"})

    def csrf(self, path: str = "/") -> str:
        return csrf_of(self.client.get(path).text)

    def dump(self) -> dict:
        engine = create_engine(self.url)
        try:
            return dump_database(engine)
        finally:
            engine.dispose()

    def close(self):
        self.client.close()
        self.crm.close()


@pytest.fixture
def site(db_url):
    s = Site(db_url)
    yield s
    s.close()


# -- sign-in -------------------------------------------------------------------------------------
def test_passwd_sets_an_argon2id_hash_from_stdin(db_url, tmp_path):
    from metacrm.cli.main import app as cli

    crm = metacrm.connect(TRADE, db_url)
    crm.migrate()
    crm.add_user("ann", roles=["manager"])
    runner = CliRunner()
    args = ["user", "passwd", "ann", "--model", str(TRADE), "--db", db_url]
    short = runner.invoke(cli, args, input="short\n")
    assert short.exit_code == 1 and "at least 8 characters" in short.output
    unknown = runner.invoke(cli, ["user", "passwd", "nobody", *args[3:]], input=PASSWORD + "\n")
    assert unknown.exit_code == 1 and "nobody" in unknown.output
    table = crm.storage.password_table
    with crm.engine.connect() as conn:
        assert conn.execute(select(table)).all() == []
    done = runner.invoke(cli, args, input=PASSWORD + "\n")
    assert done.exit_code == 0, done.output
    with crm.engine.connect() as conn:
        rows = conn.execute(select(table.c.login, table.c.hash)).all()
    assert [r.login for r in rows] == ["ann"]
    assert rows[0].hash.startswith("$argon2id$") and PASSWORD not in rows[0].hash
    from metacrm.runtime.passwords import verify_password

    assert verify_password(crm, "ann", PASSWORD)
    assert not verify_password(crm, "ann", PASSWORD + "x")
    assert not verify_password(crm, "nobody", PASSWORD)
    with pytest.raises(metacrm.PermissionDenied):
        set_password(crm.as_user("ann"), "ann", PASSWORD)
    crm.close()


def test_pages_redirect_to_login_without_a_session(site):
    for path in ("/", "/deal", f"/deal/{site.ids['d_ann']}", "/deal/new", "/deal/board"):
        response = site.client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next=")
    assert site.client.get("/deal", headers={"HX-Request": "true"}).headers["HX-Redirect"] == "/login?next=%2Fdeal"


def test_every_page_without_a_session_goes_to_sign_in_and_changes_nothing(site):
    from fastapi.routing import APIRoute

    from tests.test_http_security import _fill, walk

    before = site.dump()
    walked = 0
    for path, route in walk(site.app.routes):
        if not isinstance(route, APIRoute) or not route.endpoint.__module__.startswith("metacrm.web.pages"):
            continue
        if path == "/login":
            continue
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            data = {"csrf": "x", "stage": "qualified", "name": "x", "text": "x"} if method == "POST" else None
            response = site.client.request(method, _fill(path), data=data)
            assert response.status_code == 303, (method, path, response.status_code)
            assert response.headers["location"].startswith("/login?next="), (method, path)
            walked += 1
    assert walked > 5 * len(site.crm.model.entities)
    assert site.dump() == before


def test_sign_in_sets_a_safe_cookie_and_logout_ends_the_session(site):
    wrong = site.sign_in(password="wrong password")
    assert wrong.status_code == 401 and "wrong login or password" in wrong.text
    assert SESSION_COOKIE not in site.client.cookies
    response = site.sign_in()
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax") and "Secure" not in cookie
    home = site.client.get("/")
    assert home.status_code == 200 and "ann" in home.text
    sessions = site.crm.storage.session_table
    with site.crm.engine.connect() as conn:
        (row,) = conn.execute(select(sessions)).mappings().all()
    assert row["login"] == "ann" and row["hash"] != site.client.cookies[SESSION_COOKIE]  # only a hash is kept
    assert site.client.post("/logout").status_code == 403  # no CSRF token
    out = site.client.post("/logout", data={"csrf": csrf_of(home.text)})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    with site.crm.engine.connect() as conn:
        assert conn.execute(select(sessions)).all() == []
    assert site.client.get("/").status_code == 303


def test_cookie_is_secure_over_https(db_url):
    s = Site(db_url, base_url="https://testserver")
    try:
        response = s.sign_in()
        assert response.status_code == 303 and "Secure" in response.headers["set-cookie"]
    finally:
        s.close()


def test_sign_in_form_needs_its_csrf_token(site):
    site.client.get("/login")
    assert LOGIN_CSRF_COOKIE in site.client.cookies
    response = site.client.post("/login", data={"login": "ann", "password": PASSWORD})
    assert response.status_code == 403 and SESSION_COOKIE not in site.client.cookies


def test_a_session_expires_on_the_server(site):
    site.sign_in()
    assert site.client.get("/deal").status_code == 200
    sessions = site.crm.storage.session_table
    with site.crm.engine.begin() as conn:
        conn.execute(update(sessions).values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    assert site.client.get("/deal").headers["location"] == "/login?next=%2Fdeal"


def test_changing_the_password_ends_sessions(site):
    site.sign_in()
    set_password(site.crm, "ann", PASSWORD + "2")
    assert site.client.get("/").status_code == 303
    assert site.sign_in().status_code == 401
    assert site.sign_in(password=PASSWORD + "2").status_code == 303


def test_failed_sign_ins_lock_the_login_and_the_address_out(site):
    now = [1000.0]
    throttle: Throttle = site.app.state.throttle
    throttle.clock = lambda: now[0]
    for _ in range(throttle.free):
        assert site.sign_in(password="nope nope").status_code == 401
    locked = site.sign_in(password="nope nope")  # the one past the free ones starts the lock-out
    assert locked.status_code == 401
    refused = site.sign_in()  # the right password, but locked out: not even checked
    assert refused.status_code == 429 and "too many failed sign-ins" in refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    other = site.sign_in("bob")  # same address: locked too
    assert other.status_code == 429
    now[0] += throttle.cap + 1
    assert site.sign_in().status_code == 303


def test_throttle_doubles_the_wait():
    now = [0.0]
    t = Throttle(free=2, base=1.0, cap=8.0, clock=lambda: now[0])
    t.failed("k")
    t.failed("k")
    assert t.wait("k") == 0
    waits = []
    for _ in range(5):
        t.failed("k")
        waits.append(t.wait("k"))
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0]
    t.succeeded("k")
    assert t.wait("k") == 0


# -- CSRF and forms ------------------------------------------------------------------------------
def test_a_post_without_the_csrf_token_is_refused_and_writes_nothing(site):
    site.sign_in()
    before = site.dump()
    for data, headers in (
        ({"name": "Без токена"}, {}),
        ({"name": "Чужой токен", "csrf": "forged"}, {}),
        ({"name": "Чужой заголовок"}, {"X-CSRF-Token": "forged"}),
    ):
        response = site.client.post("/client/new", data=data, headers=headers)
        assert response.status_code == 403 and "CSRF" in response.text
    move = site.client.post(
        f"/deal/{site.ids['d_ann']}/move", data={"stage": "qualified"}, headers={"Accept": "application/json"}
    )
    assert move.status_code == 403 and move.json()["ok"] is False
    note = site.client.post(f"/deal/{site.ids['d_ann']}/note", data={"text": "x"})
    assert note.status_code == 403
    assert site.dump() == before


def test_a_bad_value_is_shown_by_its_field_and_nothing_is_saved(site):
    site.sign_in()
    token = site.csrf("/client/new")
    before = site.dump()
    bad = site.client.post("/client/new", data={"csrf": token, "name": "Василёк", "email": "not-an-email"})
    assert bad.status_code == 422
    assert field_errors(bad.text) == ["email"]
    assert "is not a valid e-mail address" in bad.text
    assert 'value="Василёк"' in bad.text  # what was typed stays
    assert site.dump() == before
    missing = site.client.post("/client/new", data={"csrf": token, "name": ""})
    assert missing.status_code == 422 and field_errors(missing.text) == ["name"]
    good = site.client.post("/client/new", data={"csrf": token, "name": "Василёк", "email": "v@example.ru"})
    assert good.status_code == 303
    new_id = int(good.headers["location"].rsplit("/", 1)[1])
    record = site.crm.get("client", new_id)
    assert record["name"] == "Василёк" and record["owner"] == "ann"
    card = site.client.get(good.headers["location"])
    assert card.status_code == 200 and "v@example.ru" in card.text
    assert f'href="/deal/new?client={new_id}"' in card.text


def test_edit_changes_and_validates(site):
    site.sign_in()
    path = f"/client/{site.ids['c_ann']}/edit"
    page = site.client.get(path)
    assert page.status_code == 200 and 'value="Ромашка"' in page.text
    token = csrf_of(page.text)
    bad = site.client.post(path, data={"csrf": token, "name": "Ромашка", "inn": "12"})
    assert bad.status_code == 422 and field_errors(bad.text) == ["inn"]
    assert site.crm.get("client", site.ids["c_ann"])["inn"] is None
    good = site.client.post(path, data={"csrf": token, "name": "Ромашка-2", "city": "Казань"})
    assert good.status_code == 303
    record = site.crm.get("client", site.ids["c_ann"])
    assert (record["name"], record["city"]) == ("Ромашка-2", "Казань")


def test_a_deal_created_from_its_client_and_moved(site):
    site.sign_in()
    cid = site.ids["c_ann"]
    form = site.client.get(f"/deal/new?client={cid}")
    assert form.status_code == 200 and f'<option value="{cid}" selected>' in form.text
    token = csrf_of(form.text)
    created = site.client.post("/deal/new", data={"csrf": token, "title": "Новая", "client": str(cid)})
    assert created.status_code == 303
    did = int(created.headers["location"].rsplit("/", 1)[1])
    card = site.client.get(f"/deal/{did}").text
    assert re.search(r'data-stage="qualified"\s*>', card)  # allowed: enabled
    assert re.search(r'data-stage="lost" disabled', card) and "lost_reason is required" in card
    before = site.dump()
    refused = site.client.post(
        f"/deal/{did}/move", data={"stage": "won"}, headers={"X-CSRF-Token": token, "Accept": "application/json"}
    )
    assert refused.status_code == 409 and "no move from 'new' to 'won'" in refused.json()["reason"]
    assert site.dump() == before
    moved = site.client.post(f"/deal/{did}/move", data={"stage": "qualified", "csrf": token})
    assert moved.status_code == 303 and moved.headers["location"] == f"/deal/{did}"
    assert [h["to_stage"] for h in site.crm.history("deal", did)][-1] == "qualified"
    noted = site.client.post(f"/deal/{did}/note", data={"csrf": token, "text": "Позвонить <завтра>"})
    assert noted.status_code == 303
    card = site.client.get(f"/deal/{did}").text
    assert "Позвонить &lt;завтра&gt;" in card and "<завтра>" not in card


# -- access --------------------------------------------------------------------------------------
def test_a_manager_sees_only_their_own_deals(site):
    site.sign_in("ann")
    listing = site.client.get("/deal").text
    assert "Сделка Ромашка" in listing and "Сделка Лютик" not in listing
    assert re.search(r'id="count">1 record<', listing)
    board = site.client.get("/deal/board").text
    assert f'data-id="{site.ids["d_ann"]}"' in board and f'data-id="{site.ids["d_bob"]}"' not in board
    hidden = site.client.get(f"/deal/{site.ids['d_bob']}")
    assert hidden.status_code == 404 and "not found" in hidden.text
    assert site.client.get(f"/deal/{site.ids['d_bob']}/edit").status_code == 404
    boss = site.browser()
    site.sign_in("dir", client=boss)
    everything = boss.get("/deal").text
    assert "Сделка Ромашка" in everything and "Сделка Лютик" in everything
    boss.close()


def test_list_filter_search_sort_and_errors(site):
    site.sign_in("dir")
    bad = site.client.get("/deal", params={"where": "amount >> 3"})
    assert bad.status_code == 200 and "at column 9" in bad.text and 'aria-invalid="true"' in bad.text
    found = site.client.get("/client", params={"q": "Лютик"}).text
    assert "Лютик" in found and "Ромашка" not in found
    by_name = site.client.get("/client", params={"order_by": "name"}).text
    assert by_name.index("Лютик") < by_name.index("Ромашка")
    titles = site.client.get("/deal").text
    assert f'<a href="/client/{site.ids["c_bob"]}">Лютик</a>' in titles  # a link shows its target's title
    assert site.client.get("/deal", params={"after": "garbage"}).status_code == 200


def test_keyset_paging(site):
    site.crm.create_many("supplier", [{"name": f"Поставщик {i:03}"} for i in range(60)])
    site.sign_in("dir")
    first = site.client.get("/supplier").text
    assert "Поставщик 049" in first and "Поставщик 050" not in first
    nxt = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    second = site.client.get(nxt).text
    assert "Поставщик 050" in second and "Поставщик 059" in second and "Поставщик 049" not in second
    assert 'rel="next"' not in second


def test_a_list_counts_up_to_the_cap_and_says_so_beyond(site, monkeypatch):
    from metacrm.web import pages

    site.crm.create_many("supplier", [{"name": f"Поставщик {i:03}"} for i in range(12)])
    site.sign_in("dir")
    assert re.search(r'id="count">12 records<', site.client.get("/supplier").text)  # under the cap: exact
    monkeypatch.setattr(pages, "COUNT_CAP", 12)
    assert re.search(r'id="count">12 records<', site.client.get("/supplier").text)  # at the cap: exact
    monkeypatch.setattr(pages, "COUNT_CAP", 10)
    capped = site.client.get("/supplier").text
    assert re.search(r'id="count">10\+ records <small>\(counted up to 10\)</small><', capped)
    filtered = site.client.get("/supplier", params={"where": "name > 'Поставщик 005'"}).text
    assert re.search(r'id="count">6 records<', filtered)  # the cap counts what the filter keeps
    monkeypatch.setattr(pages, "COUNT_CAP", 1_000)
    site.crm.create_many("supplier", [{"name": f"Ещё {i:04}"} for i in range(1_000)], returning=False)
    assert re.search(r'id="count">1,000\+ records <small>\(counted up to 1,000\)', site.client.get("/supplier").text)
    site.sign_in("ann")  # a manager's count is of the records they may read, capped the same way
    own = site.client.get("/deal").text
    assert re.search(r'id="count">1 record<', own)


def test_list_and_board_queries_do_not_grow_with_rows_and_the_board_sums_are_the_librarys(db_url):
    site = Site(db_url, model=CONTRACT)
    try:
        _queries_and_sums(site)
    finally:
        site.close()


def _queries_and_sums(site: Site) -> None:
    from decimal import Decimal

    from sqlalchemy import event

    from metacrm.web.pages import shown

    statements: list[str] = []
    event.listen(site.crm.engine, "before_cursor_execute", lambda _c, _cur, sql, *_: statements.append(sql))

    def queries(path: str) -> int:
        statements.clear()
        assert site.client.get(path).status_code == 200
        return len([s for s in statements if s.strip().upper() != "BEGIN"])

    def add(n: int, start: int) -> None:
        rows = [
            {
                "title": f"Сделка {i}",
                "client": site.ids["c_ann"],
                "amount": f"{i * 37 % 1000}.{i % 100:02d}",
                "owner": "ann",
            }
            for i in range(start, start + n)
        ]
        made = site.crm.create_many("deal", rows)
        for row in made[::3]:
            site.crm.move("deal", row["id"], "qualified")

    site.sign_in("dir")
    add(6, 0)
    few = {path: queries(path) for path in ("/deal", "/deal?order_by=-amount", "/deal/board")}
    add(120, 6)
    many = {path: queries(path) for path in few}
    assert many == few  # no query per row or per card

    board = site.crm.board("deal", limit_per_stage=50)
    assert [c["count"] > 0 and c["amount"] > 0 for c in board["columns"]][:2] == [True, True]  # new, qualified
    page = site.client.get("/deal/board").text
    for column in board["columns"]:
        deals = site.crm.find("deal", where=f"stage = '{column['stage']}'")
        assert column["count"] == len(deals)
        assert column["amount"] == sum((d["amount"] or Decimal(0) for d in deals), Decimal("0.00"))
        shown_sum = shown(column["amount"], site.crm.model.entities["deal"].fields["amount"])
        assert re.search(
            rf'data-stage="{column["stage"]}">\s*<h2[^>]*>[^<]*</h2>\s*<p class="sum"><span class="n" '
            rf'data-count="{column["count"]}">{column["count"]}</span> · {re.escape(shown_sum)}',
            page,
        ), column["stage"]


def test_everything_is_escaped_and_static_files_are_served(site):
    site.crm.update("client", site.ids["c_ann"], {"city": "<script>alert(1)</script>"})
    site.sign_in()
    page = site.client.get(f"/client/{site.ids['c_ann']}")
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for path in ("/static/vendor/htmx.min.js", "/static/vendor/Sortable.min.js", "/static/board.js"):
        response = site.client.get(path)
        assert response.status_code == 200 and "javascript" in response.headers["content-type"], path
    assert "cdn" not in page.text.lower()


def test_vendored_files_carry_their_licences_and_are_listed():
    vendor = Path(__file__).parent.parent / "metacrm" / "web" / "static" / "vendor"
    readme = (vendor / "README.md").read_text(encoding="utf-8")
    scripts = sorted(p.name for p in vendor.glob("*.js"))
    assert scripts == ["Sortable.min.js", "chart.umd.min.js", "htmx.min.js", "mermaid.min.js"]
    for name in scripts:
        licence = vendor / f"{name.split('.')[0]}.LICENSE"
        assert licence.stat().st_size > 100, licence
        assert f"`{name}`" in readme and f"`{licence.name}`" in readme
        digest = hashlib.sha256((vendor / name).read_bytes()).hexdigest()
        assert f"`{name}`: {digest}" in readme, name
    # axe-core, for the tests only: listed with its licence and checksum, never under static/
    axe = Path(__file__).parent / "vendor" / "axe.min.js"
    assert "`tests/vendor/axe.min.js`" in readme and "`tests/vendor/axe.LICENSE`" in readme
    assert (axe.parent / "axe.LICENSE").read_text(encoding="utf-8").startswith("Mozilla Public License")
    assert hashlib.sha256(axe.read_bytes()).hexdigest() in readme
    templates = Path(__file__).parent.parent / "metacrm" / "web" / "templates"
    for page in templates.glob("*.html"):
        assert "://" not in re.sub(r"https?://(htmx\.org|sortablejs)", "", page.read_text(encoding="utf-8")), page


def test_a_database_older_than_passwords_gets_their_tables(db_url):
    """A database migrated before passwords existed (the same model: `migrate` has nothing to
    do): nobody can sign in, nothing fails, and the first password creates the two tables."""
    from sqlalchemy import inspect

    from metacrm.runtime.passwords import find_session, start_session, verify_password

    crm = metacrm.connect(TRADE, db_url)
    crm.migrate()
    crm.add_user("ann", roles=["manager"])
    client = crm.create("client", {"name": "Ромашка", "owner": "ann"})
    names = {crm.storage.password_table.name, crm.storage.session_table.name}
    with crm.engine.begin() as conn:
        for table in (crm.storage.session_table, crm.storage.password_table):
            table.drop(conn)
    assert not names & set(inspect(crm.engine).get_table_names())
    assert list(crm.migrate()) == []
    assert not verify_password(crm, "ann", PASSWORD)
    assert find_session(crm, "anything") is None
    set_password(crm, "ann", PASSWORD)
    assert names <= set(inspect(crm.engine).get_table_names())
    assert verify_password(crm, "ann", PASSWORD)
    session = start_session(crm, "ann")
    assert find_session(crm, session["secret"])["login"] == "ann"
    assert crm.get("client", client["id"])["name"] == "Ромашка"
    crm.close()


def test_link_options_follow_the_search_and_the_users_access(site):
    site.sign_in("ann")
    form = site.client.get("/deal/new").text
    assert 'hx-get="/client/options"' in form
    found = site.client.get("/client/options", params={"q": "Ромашка", "field": "client", "empty": "1"}).text
    assert f'<option value="{site.ids["c_ann"]}">Ромашка</option>' in found and found.startswith('<option value="">')
    hidden = site.client.get("/client/options", params={"q": "Лютик"}).text  # bob's client: not offered
    assert "Лютик" not in hidden and "<option" not in hidden
    kept = site.client.get("/client/options", params={"q": "zzz", "field": "client", "client": str(site.ids["c_ann"])})
    assert f'<option value="{site.ids["c_ann"]}" selected>Ромашка</option>' in kept.text
    everyone = site.client.get("/client/options").text
    assert "Ромашка" in everyone and "Лютик" not in everyone
