"""The browser app's language, locale formats and time zone (docs/web.md, "Language and time
zone"), in-process on SQLite and PostgreSQL: Accept-Language and the user's setting choose the
interface's words, numbers and money follow the locale, datetimes show and are read in the
user's time zone, /settings stores both, and the Russian catalogue covers every word."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import require_module

require_module("fastapi", why="the browser app is the [web] extra")
require_module("babel", why="the interface's languages are Babel catalogues ([web] extra)")

from babel.messages.extract import extract_from_dir  # noqa: E402
from babel.messages.frontend import parse_mapping_cfg  # noqa: E402
from babel.messages.mofile import read_mo  # noqa: E402
from babel.messages.pofile import read_po  # noqa: E402

from metacrm.runtime.preferences import preference, set_preference  # noqa: E402
from metacrm.web import i18n  # noqa: E402
from tests.test_web_pages import Site, csrf_of  # noqa: E402

ROOT = Path(__file__).parent.parent
LOCALE = ROOT / "metacrm" / "web" / "locale"
RU = {"accept-language": "ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7"}
NBSP = "\xa0"


@pytest.fixture
def site(db_url):
    s = Site(db_url)
    yield s
    s.close()


def words(html: str) -> str:
    """The page's text, tags dropped and spaces folded (non-breaking ones kept)."""
    return re.sub(r"[ \t\r\n]+", " ", re.sub(r"<[^>]+>", " ", html))


def lang_of(html: str) -> str:
    return re.search(r'<html lang="(\w+)"', html).group(1)


# -- the catalogues -------------------------------------------------------------------------------------
def extracted() -> dict:
    """Every interface word in the templates and web/*.py, extracted as babel.cfg says."""
    with open(ROOT / "babel.cfg") as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
    found = {}
    for filename, _lineno, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, options_map, keywords=keywords
    ):
        found[message] = filename
    return found


def test_every_interface_word_has_a_russian_translation():
    messages = extracted()
    assert len(messages) > 100 and "Sign out" in messages and "wrong login or password" in messages
    assert ("%(num)s record", "%(num)s records") in messages  # ngettext's both forms
    with open(LOCALE / "ru" / "LC_MESSAGES" / "messages.po", "rb") as po:
        ru = read_po(po, locale="ru")
    missing = []
    for message, where in messages.items():
        key = message[0] if isinstance(message, tuple) else message
        entry = ru.get(key)
        strings = entry.string if entry is not None else None
        forms = strings if isinstance(strings, tuple | list) else (strings,)
        if entry is None or entry.fuzzy or not all(forms) or len(forms) != (3 if isinstance(message, tuple) else 1):
            missing.append(f"{where}: {message!r}")
    assert not missing, "untranslated in ru (extract, update, translate, compile: docs/web.md):\n" + "\n".join(missing)
    # each translation keeps the placeholders of its message
    for entry in ru:
        if entry.id:
            ids = entry.id if isinstance(entry.id, tuple) else (entry.id,)
            want = set(re.findall(r"%\(\w+\)", ids[-1]))
            for text in entry.string if isinstance(entry.string, tuple | list) else (entry.string,):
                assert set(re.findall(r"%\(\w+\)", text)) == want, (entry.id, text)


@pytest.mark.parametrize("code", i18n.LOCALES)
def test_compiled_catalogues_match_their_sources(code):
    """The committed .mo is the compiled .po (no step at install; a forgotten compile fails here)."""
    folder = LOCALE / code / "LC_MESSAGES"
    with open(folder / "messages.po", "rb") as po, open(folder / "messages.mo", "rb") as mo:
        source, compiled = read_po(po, locale=code), read_mo(mo)

    def same(value):  # an id or a string: one text, or a tuple of plural forms
        return tuple(value) if isinstance(value, tuple | list) else value

    wanted = {same(m.id): same(m.string) for m in source if m.id and m.string and any(m.string) and not m.fuzzy}
    # (babel writes an untranslated plural entry with its ids as its strings: the same as none)
    got = {same(m.id): same(m.string) for m in compiled if m.id and same(m.string) != same(m.id)}
    assert got == wanted


def test_accept_language_is_negotiated():
    assert i18n.negotiate("ru-RU,ru;q=0.9,en;q=0.8") == "ru"
    assert i18n.negotiate("de-DE, en;q=0.5, ru;q=0.7") == "ru"
    assert i18n.negotiate("en-GB,ru;q=0.9") == "en"
    assert i18n.negotiate("ru;q=0, en;q=0.1") == "en"
    assert i18n.negotiate("de, fr") is None and i18n.negotiate("") is None and i18n.negotiate(None) is None
    assert i18n.negotiate("de, *;q=0.1") == "en"
    assert (
        i18n.negotiate("ru;q=abc") is None and i18n.negotiate("ru;q=1.5.2, en") == "en"
    )  # a malformed weight: no vote
    assert i18n.zone("Europe/Moscow").key == "Europe/Moscow"
    for bad in ("Mars/Base", "../etc/passwd", "/etc/localtime", "", "localtime", None, 3, "Europe/Moscow "):
        assert i18n.zone(bad) is None, bad


def test_the_formats_of_a_language():
    ru = i18n.Lang("ru", i18n.zone("Europe/Moscow"))
    en = i18n.Lang("en")
    assert i18n.Lang("de").code == "en"  # a language without a catalogue: English
    assert ru.number(Decimal("1234567.125")) == f"1{NBSP}234{NBSP}567,125"  # every digit kept
    assert en.number(Decimal("1.234567")) == "1.234567" and en.number(None) == ""
    assert en.number(1234.5, 0) == "1,234" and ru.number(0.25, 1) == "0,2"
    assert ru.money(Decimal("1234.5")) == f"1{NBSP}234,50" and en.money(Decimal("-5")) == "-5.00"
    assert ru.money(Decimal("1234.5"), "RUB") == f"1{NBSP}234,50{NBSP}₽" and en.money(Decimal("2"), "USD") == "$2.00"
    assert i18n.Lang("ru", currency="EUR").money(Decimal("3")) == f"3,00{NBSP}€"
    assert (
        ru.date(dt.date(2026, 3, 8)).replace("\u202f", " ") == "8 мар. 2026 г."
        and en.date(dt.date(2026, 3, 8)) == "Mar 8, 2026"
    )
    naive = dt.datetime(2026, 7, 1, 21, 0)  # stored datetimes are UTC
    assert ru.moment(naive).replace("\u202f", " ") == "2 июл. 2026 г., 00:00 MSK"
    assert ru.local_input(naive) == "2026-07-02T00:00" and en.local_input(naive) == "2026-07-01T21:00"
    assert ru.from_local_input("2026-07-02T00:00") == "2026-07-01T21:00:00+00:00"
    assert ru.from_local_input("2026-07-02T00:00+05:00") == "2026-07-02T00:00+05:00"  # a zone given: kept
    assert ru.from_local_input("вчера") == "вчера"  # for the library's message
    assert ru.decimal_input(Decimal("1234.50")) == "1234,50" and en.decimal_input(Decimal("1234.50")) == "1234.50"
    assert ru.ngettext("%(num)s record", "%(num)s records", 21) == "21 запись"
    assert ru.ngettext("%(num)s record", "%(num)s records", 3) == "3 записи"
    assert ru.ngettext("%(num)s record", "%(num)s records", 11) == "11 записей"
    assert en.gettext("no such words") == "no such words" and repr(ru) == "Lang('ru', 'Europe/Moscow')"
    with i18n.using(ru):
        assert i18n.gettext("Save") == "Сохранить" and i18n.ngettext("%(num)s row", "%(num)s rows", 5) == "5 строк"
    assert i18n.current() is i18n.ENGLISH and i18n.gettext("Save") == "Save"


# -- the pages' words ---------------------------------------------------------------------------------
def test_russian_from_accept_language_on_home_list_card_and_form(site):
    site.sign_in("ann")
    deal = site.ids["d_ann"]
    pages = {
        "/": ["Мои открытые задачи", "Записи", "Настройки", "Выйти"],
        "/deal": ["Создать: Сделка", "Поиск", "Фильтр", "Применить", "1 запись", "Стадия", "Ответственный"],
        f"/deal/{deal}": ["Изменить", "Стадия", "Поля", "Хроника", "Добавить"],
        "/deal/new": ["Создать: Сделка", "Сохранить"],
        f"/deal/{deal}/edit": ["Изменить: Сделка", "Сохранить"],
    }
    for path, expected in pages.items():
        page = site.client.get(path, headers=RU)
        assert page.status_code == 200 and lang_of(page.text) == "ru", path
        text = words(page.text)
        for word in expected:
            assert word in text, (path, word)
        assert "Sign out" not in text and "Skip to content" not in text, path
        assert "Сделки" in text  # the model's labels stay
        english = site.client.get(path)  # no header: English
        assert lang_of(english.text) == "en" and "Sign out" in english.text and "Выйти" not in english.text
    board = words(site.client.get("/deal/board", headers=RU).text)
    assert "Перевести в" in board and "Сделки: доска" in board


def test_sign_in_page_and_its_messages_follow_the_browser(site):
    page = site.client.get("/login", headers=RU)
    assert lang_of(page.text) == "ru" and "Пароль" in page.text
    token = csrf_of(page.text)
    wrong = site.client.post("/login", data={"login": "ann", "password": "nope", "csrf": token}, headers=RU)
    assert wrong.status_code == 401 and "неверный логин или пароль" in wrong.text
    stale = site.client.post("/login", data={"login": "ann", "password": "nope", "csrf": "x"}, headers=RU)
    assert stale.status_code == 403 and "форма входа устарела" in stale.text


def test_the_users_setting_wins_over_the_header(site):
    site.sign_in("ann")
    set_preference(site.crm.as_user("ann"), "locale", "en")
    page = site.client.get("/deal", headers=RU)
    assert lang_of(page.text) == "en" and "Sign out" in page.text and "Выйти" not in page.text
    set_preference(site.crm.as_user("ann"), "locale", "ru")
    page = site.client.get("/deal")
    assert lang_of(page.text) == "ru" and "Выйти" in page.text
    other = site.browser()  # bob has no setting: his browser's language
    site.sign_in("bob", client=other)
    assert lang_of(other.get("/deal").text) == "en"
    other.close()


def test_a_refusal_is_in_the_users_language(site):
    site.sign_in("ann")
    missing = site.client.get("/deal/board?pipeline=nope", headers=RU)
    assert missing.status_code == 404 and "нет воронки &#39;nope&#39;" in missing.text
    refused = site.client.post(f"/deal/{site.ids['d_ann']}/note", data={"text": "x"}, headers=RU)
    assert refused.status_code == 403 and "нет верного CSRF-токена" in refused.text
    hidden = site.client.get(f"/deal/{site.ids['d_bob']}", headers=RU)  # another's deal: as a missing one
    absent = site.client.get("/deal/999999", headers=RU)
    assert hidden.status_code == absent.status_code == 404
    assert re.sub(r"\d+", "N", words(hidden.text)) == re.sub(r"\d+", "N", words(absent.text))


# -- numbers, money, dates -------------------------------------------------------------------------------
def test_money_and_numbers_follow_the_locale(site):
    deal = site.crm.create(
        "deal",
        {"title": "Крупная", "client": site.ids["c_ann"], "owner": "ann", "amount": "1234.5", "discount": "12.5"},
    )
    site.sign_in("ann")
    ru = words(site.client.get(f"/deal/{deal['id']}", headers=RU).text)
    en = words(site.client.get(f"/deal/{deal['id']}").text)
    assert f"1{NBSP}234,50" in ru and "1,234.50" not in ru
    assert "1,234.50" in en and f"1{NBSP}234,50" not in en
    assert "12,5" in ru and "12.5" in en
    listed = site.client.get("/deal", headers=RU).text
    assert f"1{NBSP}234,50" in listed
    # the edit form holds the amount as the library reads it, with the locale's decimal sign
    form = site.client.get(f"/deal/{deal['id']}/edit", headers=RU).text
    assert re.search(r'name="amount" inputmode="decimal" value="1234,50"', form)
    token = csrf_of(form)
    version = re.search(r'name="version" value="(\d+)"', form).group(1)
    fields = dict(re.findall(r'<input id="f-(\w+)" name="\w+"[^>]*? value="([^"]*)"', form))
    data = {
        "csrf": token,
        "version": version,
        "title": "Крупная",
        "client": str(site.ids["c_ann"]),
        "amount": f"2{NBSP}345,75",
        "discount": fields.get("discount", ""),
    }
    saved = site.client.post(f"/deal/{deal['id']}/edit", data=data, headers=RU)
    assert saved.status_code == 303, words(saved.text)[-500:]
    assert str(site.crm.get("deal", deal["id"])["amount"]) == "2345.75"


def test_a_datetime_is_shown_and_read_in_the_users_time_zone(site):
    paid = dt.datetime(2026, 12, 5, 10, 5, tzinfo=dt.UTC)
    deal = site.crm.create(
        "deal", {"title": "Оплачена", "client": site.ids["c_ann"], "owner": "ann", "paid_at": paid.isoformat()}
    )
    site.sign_in("ann")

    def plain(path, **kwargs):  # CLDR puts narrow no-break spaces in dates and times
        return words(site.client.get(path, **kwargs).text).replace("\u202f", " ")

    utc = plain(f"/deal/{deal['id']}")
    assert "Dec 5, 2026, 10:05" in utc and "AM UTC" in utc  # no setting, no model zone: UTC
    set_preference(site.crm.as_user("ann"), "timezone", "Europe/Moscow")
    moscow = plain(f"/deal/{deal['id']}", headers=RU)
    assert "5 дек. 2026 г., 13:05 MSK" in moscow
    english = plain(f"/deal/{deal['id']}")
    assert "Dec 5, 2026, 1:05" in english and "PM MSK" in english
    # the form shows the wall-clock time in Moscow and reads it back as Moscow time
    form = site.client.get(f"/deal/{deal['id']}/edit").text
    assert re.search(r'name="paid_at" type="datetime-local" value="2026-12-05T13:05"', form)
    created = site.client.post(
        "/deal/new",
        data={"csrf": csrf_of(form), "title": "Новая", "client": str(site.ids["c_ann"]), "paid_at": "2026-12-06T09:30"},
    )
    assert created.status_code == 303, words(created.text)[-500:]
    new_id = int(created.headers["location"].rsplit("/", 1)[1])
    assert site.crm.get("deal", new_id)["paid_at"] == dt.datetime(2026, 12, 6, 6, 30, tzinfo=dt.UTC)
    # a round trip: the edit form of the new record shows what was typed
    again = site.client.get(f"/deal/{new_id}/edit").text
    assert 'value="2026-12-06T09:30"' in again
    # a value that is no datetime reaches the library, whose message is shown
    bad = site.client.post(
        "/deal/new",
        data={"csrf": csrf_of(form), "title": "Плохая", "client": str(site.ids["c_ann"]), "paid_at": "вчера"},
    )
    assert bad.status_code == 422 and 'id="err-paid_at"' in bad.text


def test_the_models_time_zone_is_the_default(site, monkeypatch):
    monkeypatch.setattr(type(site.crm.model), "timezone", "Asia/Vladivostok", raising=False)
    lang = i18n.choose(site.crm.model, {}, None)
    assert lang.tz_name == "Asia/Vladivostok"
    assert i18n.choose(site.crm.model, {"timezone": "Europe/Moscow"}, None).tz_name == "Europe/Moscow"
    assert i18n.choose(site.crm.model, {"timezone": "Mars/Base"}, None).tz_name == "Asia/Vladivostok"


# -- the settings page ----------------------------------------------------------------------------------
def test_settings_store_language_and_zone(site):
    site.sign_in("ann")
    page = site.client.get("/settings")
    assert page.status_code == 200 and 'href="/settings"' in page.text and 'name="timezone_other"' in page.text
    done = site.client.post(
        "/settings",
        data={"csrf": csrf_of(page.text), "locale": "ru", "timezone": "Europe/Moscow", "timezone_other": ""},
    )
    assert done.status_code == 303 and done.headers["location"] == "/settings?saved=1"
    ann = site.crm.as_user("ann")
    assert preference(ann, "locale") == "ru" and preference(ann, "timezone") == "Europe/Moscow"
    shown = site.client.get("/settings?saved=1").text
    assert lang_of(shown) == "ru" and "Сохранено." in shown
    assert '<option value="Europe/Moscow" selected>' in shown and '<option value="ru" lang="ru" selected>' in shown
    # free entry of another zone, then back to the defaults
    other = site.client.post(
        "/settings", data={"csrf": csrf_of(shown), "locale": "", "timezone": "", "timezone_other": " Asia/Barnaul "}
    )
    assert (
        other.status_code == 303 and preference(ann, "timezone") == "Asia/Barnaul" and preference(ann, "locale") is None
    )
    assert 'id="s-timezone-other" name="timezone_other" value="Asia/Barnaul"' in site.client.get("/settings").text
    site.client.post("/settings", data={"csrf": csrf_of(shown), "locale": "", "timezone": ""})
    assert preference(ann, "timezone") is None


def test_settings_refuse_a_post_without_csrf_and_a_bad_zone(site):
    site.sign_in("ann")
    before = site.dump()
    no_token = site.client.post("/settings", data={"locale": "ru", "timezone": "Europe/Moscow"})
    assert no_token.status_code == 403 and "CSRF" in no_token.text
    token = site.csrf("/settings")
    bad = site.client.post(
        "/settings", data={"csrf": token, "locale": "ru", "timezone": "", "timezone_other": "Mars/Base"}
    )
    assert bad.status_code == 400
    assert re.search(
        r'id="err-timezone" role="alert">time zone &#39;Mars/Base&#39; is not an IANA time zone name '
        r"\(such as Europe/Moscow or UTC\)</p>",
        bad.text,
    )
    wrong_locale = site.client.post("/settings", data={"csrf": token, "locale": "fr", "timezone": "UTC"})
    assert wrong_locale.status_code == 400 and "language &#39;fr&#39;: choose one of en, ru" in wrong_locale.text
    twice = site.client.post("/settings", data={"csrf": token, "locale": ["ru", "en"], "timezone": "UTC"})
    assert twice.status_code == 400
    ru = site.client.post("/settings", data={"csrf": token, "timezone": "Nowhere/At_All"}, headers=RU)
    assert ru.status_code == 400 and "не имя пояса IANA" in ru.text
    assert site.dump() == before  # nothing stored
    assert preference(site.crm.as_user("ann"), "locale") is None


def test_the_command_line_does_not_import_babel(tmp_path):
    """Babel is the web app's: a data command stays free of it (and of the web stack)."""
    db = tmp_path / "crm.db"
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['metacrm', 'list', 'client', '--model', {str(ROOT / 'examples' / 'trade.yaml')!r}, "
        f"'--db', {'sqlite:///' + str(db)!r}]\n"
        "import metacrm\n"
        f"metacrm.connect(sys.argv[4], sys.argv[6]).migrate()\n"
        "try:\n"
        "    runpy.run_module('metacrm', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print('loaded', ','.join(m for m in ('babel', 'jinja2', 'fastapi') if m in sys.modules) or '-')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "loaded -"
