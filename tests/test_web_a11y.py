"""Accessibility of the browser app (docs/web.md): axe-core run in Chromium on every main page
(no violation of impact serious or critical), keyboard focus visible, and no horizontal page
scroll on a 375 px wide phone screen; on SQLite and PostgreSQL.

axe-core is vendored for the tests only (tests/vendor/, listed in
metacrm/web/static/vendor/README.md) and injected by the test: it is never served to users."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.test_web_browser import chromium, sign_in, world  # noqa: F401  (fixtures)

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
SEVERE = ("serious", "critical")


def pages(site) -> dict[str, str]:
    deal = site.ids["d_ann"]
    return {
        "home": "/",
        "list": "/deal",
        "client list": "/client",
        "card": f"/deal/{deal}",
        "client card": f"/client/{site.ids['c_ann']}",
        "create form": "/deal/new",
        "edit form": f"/deal/{deal}/edit",
        "board": "/deal/board",
        "list with a filter error": "/deal?where=amount%20%3E",
        "list with the filter builder open": "/deal?bf=amount&bo=%3E&bv=x&error=Сумма%20(amount)%20takes%20a%20number",
        "error page": "/deal/999999",
        "card with a link refused": f"/deal/{deal}?link=client&link_error=refused#links-client",
        "card after a search without JavaScript": f"/deal/{deal}?find=products&q=x",
        "task card (a polymorphic link)": f"/task/{site.crm.find('task', limit=1)[0]['id']}",
        "task form (a polymorphic picker)": "/task/new",
    }


def axe_violations(page) -> list[dict]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [v for v in result["violations"] if v["impact"] in SEVERE]


def describe(name: str, violations: list[dict]) -> str:
    lines = []
    for v in violations:
        targets = ", ".join(" ".join(map(str, node["target"])) for node in v["nodes"][:8])
        lines.append(f"{name}: {v['id']} ({v['impact']}): {v['help']} -- {targets}")
    return "\n".join(lines)


@pytest.fixture
def signed_in(world, chromium):  # noqa: F811
    site, url = world
    crm = site.crm
    # a task on the home page, overdue (its row is marked), and a note in the deal's timeline
    crm.as_user("ann").create(
        "task",
        {"title": "Позвонить", "due": dt.date.today() - dt.timedelta(days=2), "subject": f"deal:{site.ids['d_ann']}"},
    )
    # the app's Content-Security-Policy forbids inline scripts: Playwright's injection of axe needs
    # the browser to bypass it (the pages' own scripts are still files from /static)
    context = chromium.new_context(bypass_csp=True)
    page = context.new_page()
    sign_in(page, url)
    yield site, url, page
    context.close()


def test_axe_finds_no_serious_violation(signed_in, chromium):  # noqa: F811
    site, url, page = signed_in
    found = []
    for name, path in pages(site).items():
        page.goto(url + path)
        found.append(describe(name, axe_violations(page)))
    # the sign-in page, with a refused password shown
    anonymous = chromium.new_context(bypass_csp=True)
    login = anonymous.new_page()
    login.goto(url + "/login")
    found.append(describe("login", axe_violations(login)))
    login.fill("#login", "ann")
    login.fill("#password", "wrong password")
    login.click("form.login button[type=submit]")
    login.wait_for_selector(".alert")
    found.append(describe("login refused", axe_violations(login)))
    anonymous.close()
    # a form with the library's refusals shown by their fields
    page.goto(url + "/client/new")
    page.fill("#f-name", "Тест")
    page.fill("#f-email", "not-an-email")
    page.click("form.record button[type=submit]")
    page.wait_for_selector("#err-email")
    found.append(describe("form with errors", axe_violations(page)))
    # the list's column picker open, then a bulk move's report
    page.goto(url + "/deal")
    page.click("details.picker summary")
    found.append(describe("list with the column picker open", axe_violations(page)))
    page.check("#select-all")
    page.select_option("#bulk-stage", "won")
    page.click("#bulk-move")
    page.wait_for_selector("#bulk-results")
    found.append(describe("bulk report", axe_violations(page)))
    report = "\n".join(line for line in found if line)
    assert not report, "axe-core violations:\n" + report
    # the check itself can fail: an unlabelled input and an image without text are caught
    page.evaluate(
        "document.querySelector('main').insertAdjacentHTML('beforeend', '<input id=bare><img src=/static/none.png>')"
    )
    caught = {v["id"] for v in axe_violations(page)}
    assert {"label", "image-alt"} <= caught, caught


def test_keyboard_focus_is_visible(signed_in):
    """Tabbing reaches the skip link first, then every control shows an outline when focused."""
    site, url, page = signed_in
    for path in ("/deal", f"/deal/{site.ids['d_ann']}", "/deal/board", "/deal/new"):
        page.goto(url + path)
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip", path
        assert page.evaluate("document.activeElement.getBoundingClientRect().left") >= 0, path
        for _ in range(12):
            page.keyboard.press("Tab")
            style = page.evaluate(
                "(() => { const e = document.activeElement, s = getComputedStyle(e);"
                " return [e.tagName, e.id || e.textContent.trim().slice(0, 30), s.outlineStyle, s.outlineWidth]; })()"
            )
            assert style[2] != "none" and style[3] != "0px", f"{path}: no visible focus on {style[:2]}"


@pytest.mark.parametrize("path", ["/", "/deal", "card", "/deal/board", "/deal/new"])
def test_a_phone_screen_needs_no_horizontal_scroll(world, chromium, path):  # noqa: F811
    site, url = world
    site.crm.create(
        "deal",
        {
            "title": "Очень длинное название сделки " * 4,
            "client": site.ids["c_ann"],
            "owner": "ann",
            "amount": "123456789.00",
        },
    )
    context = chromium.new_context(viewport={"width": 375, "height": 800})
    page = context.new_page()
    sign_in(page, url)
    page.goto(url + (f"/deal/{site.ids['d_ann']}" if path == "card" else path))
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"{path} is {width} px wide on a 375 px screen"
    if path == "/deal/board":  # the board scrolls inside its own container
        board = page.evaluate(
            "(() => { const b = document.querySelector('.board'); "
            "return [b.scrollWidth, b.clientWidth, getComputedStyle(b).overflowX]; })()"
        )
        assert board[0] > board[1] and board[2] == "auto", board
    context.close()
