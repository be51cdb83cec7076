"""The browser app in a real browser: Playwright for Python driving Debian's Chromium against a
real uvicorn server, on SQLite and PostgreSQL (docs/web.md). Playwright's own browser download
is not used: the tests launch /usr/bin/chromium (``apt-get install chromium``)."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import in_ci, require_module

require_module("playwright", why="the browser tests drive Chromium with Playwright ([test] extra)")
require_module("uvicorn", why="the browser tests run the app on uvicorn ([web] extra)")

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    if in_ci():
        pytest.fail(f"CI requires Chromium at {CHROMIUM} (apt-get install chromium)", pytrace=False)
    pytest.skip(f"Chromium is not at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from tests.test_web_pages import PASSWORD, Site  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The site's app on uvicorn in a thread, on a free port of 127.0.0.1."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def chromium():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def world(db_url):
    site = Site(db_url)
    server = Server(site.app)
    yield site, server.url
    server.stop()
    site.close()


def sign_in(page, url: str, login: str = "ann"):
    page.goto(url + "/")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.fill("#login", login)
    page.fill("#password", PASSWORD)
    page.click("form.login button[type=submit]")
    expect(page).to_have_url(url + "/")


def card_in(page, stage: str, record_id: int):
    return page.locator(f'ul.cards[data-stage="{stage}"] li.card[data-id="{record_id}"]')


def test_a_manager_works_in_the_browser(world, chromium):
    site, url = world
    crm = site.crm
    context = chromium.new_context()
    page = context.new_page()
    sign_in(page, url)

    # a client with a bad e-mail: the message by the field, nothing saved
    page.goto(url + "/client/new")
    page.fill("#f-name", "Василёк")
    page.fill("#f-email", "not-an-email")
    page.click("form.record button[type=submit]")
    expect(page.locator("#err-email")).to_contain_text("is not a valid e-mail address")
    assert crm.count("client", "name = 'Василёк'") == 0
    # then a good one
    page.fill("#f-email", "vasilek@example.ru")
    page.click("form.record button[type=submit]")
    expect(page).to_have_url(re.compile(r"/client/\d+$"))
    client_id = int(page.url.rsplit("/", 1)[1])
    assert crm.get("client", client_id)["email"] == "vasilek@example.ru"

    # a deal from its card
    page.click("#rel-deals ~ p a.button")
    expect(page).to_have_url(re.compile(rf"/deal/new\?client={client_id}$"))
    expect(page.locator("#f-client option")).to_have_count(3)  # none, Ромашка, Василёк
    page.fill("#find-client", "Ромашка")  # the link's search (htmx) offers the matches, the choice kept first
    expect(page.locator("#f-client option", has_text="Ромашка")).to_have_count(1)
    page.fill("#find-client", "nothing like it")
    expect(page.locator("#f-client option")).to_have_count(2)  # none, and the chosen Василёк
    expect(page.locator("#f-client")).to_have_value(str(client_id))
    page.fill("#f-title", "Поставка из браузера")
    page.click("form.record button[type=submit]")
    expect(page).to_have_url(re.compile(r"/deal/\d+$"))
    deal_id = int(page.url.rsplit("/", 1)[1])
    assert crm.get("deal", deal_id)["client"] == client_id

    # the kanban: an allowed move by drag and drop
    page.goto(url + f"/deal/board?pipeline={crm.model.entities['deal'].default_pipeline.name}")
    expect(card_in(page, "new", deal_id)).to_be_visible()
    with page.expect_navigation():  # the board reloads after a move
        with page.expect_response(re.compile(r"/move$")) as moved:
            card_in(page, "new", deal_id).drag_to(page.locator('ul.cards[data-stage="qualified"]'))
    assert moved.value.status == 200
    expect(card_in(page, "qualified", deal_id)).to_be_visible()
    assert crm.get("deal", deal_id)["stage"] == "qualified"
    assert [h["to_stage"] for h in crm.history("deal", deal_id)][-1] == "qualified"

    # a refused one: it snaps back, the reason is shown, nothing is written
    expect(card_in(page, "qualified", deal_id)).to_be_visible()
    before = site.dump()
    with page.expect_response(re.compile(r"/move$")) as refused:
        card_in(page, "qualified", deal_id).drag_to(page.locator('ul.cards[data-stage="proposal"]'))
    assert refused.value.status == 409
    expect(page.locator("#board-status")).to_contain_text("amount is required")
    expect(card_in(page, "qualified", deal_id)).to_be_visible()
    expect(card_in(page, "proposal", deal_id)).to_have_count(0)
    assert site.dump() == before

    # the keyboard path: the card's move menu does the same without a mouse
    page.select_option(f"#mv-{deal_id}", "lost")
    page.locator(f'li.card[data-id="{deal_id}"] .move-menu button').press("Enter")
    expect(page.locator("p.alert")).to_contain_text("lost_reason is required")
    assert crm.get("deal", deal_id)["stage"] == "qualified"

    # a POST without the CSRF token (the session cookie alone) is refused
    response = context.request.post(url + "/client/new", form={"name": "Подделка"})
    assert response.status == 403
    assert crm.count("client", "name = 'Подделка'") == 0
    context.close()


def test_a_manager_with_own_scope_sees_only_their_deals(world, chromium):
    site, url = world
    context = chromium.new_context()
    page = context.new_page()
    sign_in(page, url, "bob")
    page.goto(url + "/deal")
    expect(page.locator("#list")).to_contain_text("Сделка Лютик")
    expect(page.locator("#list")).not_to_contain_text("Сделка Ромашка")
    # quick search as you type (htmx swaps the records in): only bob's deals are found
    page.fill("#q", "Сделка")
    expect(page).to_have_url(re.compile(r"/deal\?q=%D0%A1"))
    expect(page.locator("#count")).to_have_text("1 record")
    expect(page.locator("#list")).to_contain_text("Сделка Лютик")
    page.fill("#q", "Ромашка")
    expect(page.locator("#count")).to_have_text("0 records")
    page.goto(url + "/deal/board")
    expect(page.locator(f'li.card[data-id="{site.ids["d_bob"]}"]')).to_be_visible()
    expect(page.locator(f'li.card[data-id="{site.ids["d_ann"]}"]')).to_have_count(0)
    page.goto(url + f"/deal/{site.ids['d_ann']}")
    expect(page.locator("#error-message")).to_contain_text("not found")
    context.close()
