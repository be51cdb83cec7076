"""The interface's language and time zone in Chromium (docs/web.md, "Language and time zone"):
a Russian browser gets Russian words; the settings page switches to English and Moscow time,
and a date-and-time typed in a form comes back as typed. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re

from tests.test_web_browser import chromium, expect, sign_in, world  # noqa: F401  (fixtures)


def test_a_russian_browser_and_the_settings_page(world, chromium):  # noqa: F811
    site, url = world
    context = chromium.new_context(locale="ru-RU")
    page = context.new_page()
    page.goto(url + "/login")
    expect(page.locator("html")).to_have_attribute("lang", "ru")
    expect(page.locator("form.login button[type=submit]")).to_have_text("Войти")
    sign_in(page, url)
    expect(page.locator("header .logout button")).to_have_text("Выйти")
    expect(page.locator("#tasks-h")).to_have_text("Мои открытые задачи")

    page.click("a.settings-link")
    expect(page).to_have_url(url + "/settings")
    page.select_option("#s-locale", "en")
    page.select_option("#s-timezone", "Europe/Moscow")
    page.click("#settings button[type=submit]")
    expect(page).to_have_url(url + "/settings?saved=1")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#settings-saved")).to_have_text("Saved.")

    # a date and time typed in Moscow is stored as UTC and shown again as typed
    page.goto(url + f"/deal/{site.ids['d_ann']}/edit")
    page.fill("#f-paid_at", "2026-12-06T09:30")
    page.click("form.record button[type=submit]")
    expect(page).to_have_url(url + f"/deal/{site.ids['d_ann']}")
    assert site.crm.get("deal", site.ids["d_ann"])["paid_at"] == dt.datetime(2026, 12, 6, 6, 30, tzinfo=dt.UTC)
    shown = page.locator('dd[data-field="paid_at"]').inner_text().replace("\u202f", " ")
    assert re.fullmatch(r"Dec 6, 2026, 9:30 AM MSK", shown), shown
    context.close()
