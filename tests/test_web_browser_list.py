"""The list page's tools in Chromium (metacrm/web/pages_list.py): a director chooses columns
(remembered after a reload), builds a filter (shown in the raw box as the expression language)
and moves two deals at once with the bulk bar; on SQLite and PostgreSQL."""

from __future__ import annotations

import re

from tests.test_web_browser import chromium, expect, sign_in, world  # noqa: F401 - fixtures


def test_a_director_chooses_columns_filters_and_moves_deals_in_bulk(world, chromium):  # noqa: F811
    site, url = world
    crm = site.crm
    crm.update("deal", site.ids["d_bob"], {"amount": "700"})
    third = crm.create("deal", {"title": "Третья", "client": site.ids["c_ann"], "owner": "ann", "amount": "5"})["id"]
    context = chromium.new_context()
    page = context.new_page()
    sign_in(page, url, "dir")
    page.goto(url + "/deal")

    # columns: untick all but the title and the stage, tick the owner; saved, then a reload keeps them
    page.click("details.picker summary")
    for box in page.locator("#columns input[name=column]").all():
        box.set_checked(box.get_attribute("value") in ("title", "stage", "owner"))
    page.click("#columns button[type=submit]")
    expect(page).to_have_url(url + "/deal")
    heads = page.locator("#list thead th[data-column]")
    expect(heads).to_have_count(3)
    page.reload()
    expect(heads).to_have_text(["Название", "Stage", "Owner"])

    # a filter from the builder, shown in the raw box
    page.click("details.builder summary")
    page.select_option("#bf-1", "amount")
    page.select_option("#bo-1", ">=")
    page.fill("#bv-1", "5")
    page.select_option("#bf-2", "title")
    expect(page.locator("#bo-2 option[value='>']")).to_be_disabled()  # text takes no '>'
    page.select_option("#bo-2", "contains")
    page.fill("#bv-2", "Сделка")
    page.click("#builder button[type=submit]")
    expect(page.locator("#where")).to_have_value("amount >= 5 and title contains 'Сделка'")
    expect(page.locator("#count")).to_have_text("1 record")
    page.fill("#where", "amount >= 5")
    page.click("form.filters button[type=submit]")
    expect(page.locator("#count")).to_have_text("2 records")

    # both deals of the page, moved at once
    page.check("#select-all")
    expect(page.locator("#list input.pick:checked")).to_have_count(2)
    page.select_option("#bulk-stage", "qualified")
    page.click("#bulk-move")
    expect(page.locator("#bulk-summary")).to_have_text("Done: 2")
    assert crm.get("deal", site.ids["d_bob"])["stage"] == "qualified"
    assert crm.get("deal", third)["stage"] == "qualified"
    assert crm.get("deal", site.ids["d_ann"])["stage"] == "new"  # not in the filter
    page.click("#back")
    expect(page).to_have_url(re.compile(r"/deal\?.*where=amount"))
    expect(page.locator("#list tbody tr td:nth-child(4)")).to_have_text(["Квалифицирована", "Квалифицирована"])
    context.close()
