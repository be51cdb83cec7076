"""The import page in Chromium (metacrm/web/pages_import.py): a director uploads a CSV through
the file input, reads the mapping, runs the dry run and imports; on SQLite and PostgreSQL."""

from __future__ import annotations

import re

from tests.test_web_browser import chromium, expect, sign_in, world  # noqa: F401 - fixtures

CLIENTS = "Название,city,phone\nАльфа,Москва,+7 495 123-45-67\nБета,Тверь,не телефон\nГамма,Сочи,\n"


def test_a_director_imports_a_csv_in_the_browser(world, chromium, tmp_path):  # noqa: F811
    site, url = world
    path = tmp_path / "clients.csv"
    path.write_text(CLIENTS, encoding="utf-8")
    context = chromium.new_context()
    page = context.new_page()
    sign_in(page, url, "dir")
    page.goto(url + "/client")
    page.click("#import-link")
    expect(page).to_have_url(url + "/client/import")
    before = site.dump()

    page.set_input_files("#file", str(path))
    page.click("#upload-form button[type=submit]")
    expect(page.locator("#file-summary")).to_have_text("clients.csv: 3 rows.")
    expect(page.locator("#preview tr.mapping code")).to_have_text(["name", "city", "phone"])
    page.check("#check-form #opt-skip_invalid")
    page.click("#check-form button[type=submit]")
    expect(page.locator("#import-summary")).to_have_text(
        "dry run: would have imported 2 client records; 1 rejected; nothing was written"
    )
    expect(page.locator("#issues tbody tr")).to_have_count(1)
    expect(page.locator("#issues tbody tr td").nth(2)).to_have_text("phone")
    assert site.dump() == before

    expect(page.locator("#run-form #opt-skip_invalid")).to_be_checked()
    page.click("#run-form button[type=submit]")
    expect(page.locator("#import-summary")).to_have_text("imported 2 client records; 1 rejected")
    expect(page.locator("#created a")).to_have_count(2)
    assert sorted(r["name"] for r in site.crm.find("client", "city in ('Москва', 'Сочи')")) == ["Альфа", "Гамма"]
    page.locator("#created a").first.click()
    expect(page).to_have_url(re.compile(r"/client/\d+$"))
    expect(page.locator("h1")).to_contain_text("Альфа")
    context.close()
