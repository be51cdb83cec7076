"""Reports and the model page in Chromium (docs/web.md): the funnel shows the library's counts
for the signed-in user and draws its chart; /model draws the ER diagram and the stage graphs with
the vendored mermaid under the pages' Content-Security-Policy. On SQLite and PostgreSQL."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.test_web_browser import chromium, sign_in, world  # noqa: F401 - the fixtures

SHOWN_COUNTS = """() => Array.from(document.querySelectorAll("table.funnel-table tbody tr")).map(
    tr => [tr.dataset.stage, Number(tr.querySelector("td.now").textContent),
           Number(tr.querySelector("td.reached").textContent)])"""


def test_funnel_and_model_in_the_browser(world, chromium):  # noqa: F811
    site, url = world
    crm = site.crm
    deal = crm.create("deal", {"title": "Третья", "client": site.ids["c_ann"], "owner": "ann", "amount": "100"})
    crm.move("deal", deal["id"], "qualified")
    context = chromium.new_context()
    errors: list[str] = []
    page = context.new_page()
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, url, "ann")

    page.click("nav >> text=Reports")
    expect(page).to_have_url(url + "/reports/funnel/deal")
    expect(page.locator("#chart")).to_have_attribute("data-rendered", "2")  # Chart.js drew both series
    box = page.locator("#chart").bounding_box()
    assert box and box["width"] > 100 and box["height"] > 100
    expected = crm.as_user("ann").funnel("deal")
    assert page.evaluate(SHOWN_COUNTS) == [[s["stage"], s["now"], s["reached"]] for s in expected["stages"]]
    assert expected["count"] == 2  # ann's two deals, not bob's
    drawn = page.evaluate("() => Chart.getChart('chart').data.datasets.map(d => d.data)")
    assert drawn == [[s["reached"] for s in expected["stages"]], [s["now"] for s in expected["stages"]]]

    page.select_option("#r-by", "owner")
    page.click("form.report-form button[type=submit]")
    expect(page.locator("table.funnel-table")).to_have_count(1)  # ann sees her own group only
    expect(page.locator("#chart")).to_have_attribute("data-rendered", "1")

    page.click("nav >> text=Model")
    expect(page).to_have_url(url + "/model")
    figures = page.locator("figure.diagram")
    count = 1 + sum(len(e.pipelines) for e in crm.model.entities.values())
    expect(figures).to_have_count(count)
    for i in range(count):
        expect(figures.nth(i)).to_have_attribute("data-rendered", "1", timeout=30_000)
        expect(figures.nth(i).locator("svg")).to_have_count(1)
    expect(page.locator("#erd svg")).to_contain_text("deal")
    expect(page.locator("#erd svg")).to_contain_text("Название")  # Cyrillic labels survive the trip
    expect(page.locator("#stages-deal-default svg")).to_contain_text("Квалифицирована")
    assert [m for m in missing if not m.endswith("/favicon.ico")] == []  # every script was served
    errors = [e for e in errors if not e.startswith("Failed to load resource")]  # the favicon
    assert errors == []  # nothing refused by the Content-Security-Policy, no script error
    context.close()


def test_labels_with_quotes_markup_and_line_breaks_are_drawn(db_url, chromium, tmp_path):  # noqa: F811
    """Every diagram of a model whose labels hold quotes, markup, ``;``, ``%``, ``#`` and line
    breaks is drawn (no mermaid syntax error), and no label's markup runs."""
    import metacrm
    from metacrm.runtime.passwords import set_password
    from metacrm.web import create_app
    from tests.test_web_browser import Server
    from tests.test_web_pages import PASSWORD
    from tests.test_web_reports import MODEL

    path = tmp_path / "tricky.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    crm.add_user("root")
    set_password(crm, "root", PASSWORD)
    server = Server(create_app(crm))
    try:
        context = chromium.new_context()
        page = context.new_page()
        alerts: list[str] = []
        page.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))
        sign_in(page, server.url, "root")
        page.goto(server.url + "/model")
        figures = page.locator("figure.diagram")
        expect(figures).to_have_count(2)
        for i in range(2):
            expect(figures.nth(i)).to_have_attribute("data-rendered", "1", timeout=30_000)
        expect(page.locator("#erd svg")).to_contain_text("Бюджет; 100% {a}")
        expect(page.locator("#stages-lead-default svg")).to_contain_text("Отказ; 50% #1")
        expect(page.locator("#stages-lead-default svg")).to_contain_text("Проигран совсем")
        assert page.locator("figure.diagram script").count() == 0 and alerts == []
        context.close()
    finally:
        server.stop()
        crm.close()
