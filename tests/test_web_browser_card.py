"""A card's links and the polymorphic picker in Chromium (metacrm/web/pages_links.py): a manager
adds a product to a deal through the search on its card, removes it, sees a refusal inline, and
picks a task's subject by entity then record; on SQLite and PostgreSQL."""

from __future__ import annotations

import re

from tests.test_web_browser import chromium, expect, sign_in, world  # noqa: F401 - fixtures


def test_links_on_a_card_and_a_polymorphic_pick(world, chromium):  # noqa: F811
    site, url = world
    crm = site.crm
    deal, client = site.ids["d_ann"], site.ids["c_ann"]
    nails = crm.create("product", {"name": "Гвозди", "sku": "NAIL-1"})["id"]
    crm.create("product", {"name": "Шурупы", "sku": "SCREW-1"})
    context = chromium.new_context()
    page = context.new_page()
    sign_in(page, url)

    # add a product through the search on the deal's card (htmx fills the select, then swaps the block)
    page.goto(url + f"/deal/{deal}")
    page.fill("#pick-products-q", "Гвозди")
    expect(page.locator("#pick-products option")).to_have_count(2)  # none, and the one match
    page.select_option("#pick-products", str(nails))
    with page.expect_response(re.compile(r"/link$")):
        page.click("#links-products form.link-add button[type=submit]")
    expect(page.locator("#linked-products a")).to_have_text(["Гвозди"])
    expect(page).to_have_url(url + f"/deal/{deal}")  # swapped in place, no reload
    assert crm.get("deal", deal)["products"] == [nails]

    # a refusal is shown in the block, nothing written
    before = site.dump()
    page.click("#links-client button[data-unlink]")
    expect(page.locator("#link-error-client")).to_contain_text("deal.client: is required")
    assert site.dump() == before

    # remove the product
    with page.expect_response(re.compile(r"/unlink$")):
        page.click(f'#links-products button[data-unlink="{nails}"]')
    expect(page.locator("#linked-products a")).to_have_count(0)
    assert crm.get("deal", deal)["products"] == []

    # a task's subject: choose the entity, then the record found by its search
    page.goto(url + "/task/new")
    page.fill("#f-title", "Позвонить клиенту")
    page.select_option("#f-subject-entity", "client")
    page.fill("#find-subject", "Ромашка")
    expect(page.locator("#f-subject option", has_text="Ромашка")).to_have_count(1)
    expect(page.locator("#f-subject option", has_text="Сделка")).to_have_count(0)
    page.select_option("#f-subject", f"client:{client}")
    page.click("form.record button[type=submit]")
    expect(page).to_have_url(re.compile(r"/task/\d+$"))
    task = int(page.url.rsplit("/", 1)[1])
    assert crm.get("task", task)["subject"] == {"entity": "client", "id": client}
    expect(page.locator("#linked-subject a")).to_have_text(["Ромашка"])
    context.close()
