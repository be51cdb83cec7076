"""The import page in-process (metacrm/web/pages_import.py, docs/web.md): upload, mapping and
first rows, dry run, import, on SQLite and PostgreSQL; nothing written before the last step; the
report the CLI gives; roles, row-level access, CSRF, bad files and the body limit.
tests/test_web_browser_import.py drives the same page in Chromium."""

from __future__ import annotations

import html
import json
import re

import pytest
from typer.testing import CliRunner

from tests.conftest import require_module

require_module("fastapi", why="the browser app is the [web] extra")
require_module("argon2", why="passwords are hashed with argon2-cffi ([web] extra)")
require_module("jinja2", why="pages are Jinja2 templates ([web] extra)")

from tests.test_web_pages import TRADE, Site, csrf_of  # noqa: E402

CLIENTS = "Название,city,phone\nАльфа,Москва,+7 495 123-45-67\nБета,Тверь,не телефон\nГамма,Сочи,\n"


def upload(site: Site, entity: str, data: bytes, token: str | None = None, filename="clients.csv", **options):
    form = {"csrf": site.csrf(f"/{entity}/import") if token is None else token}
    form.update({k: "1" for k, v in options.items() if v})
    return site.client.post(f"/{entity}/import", data=form, files={"file": (filename, data, "text/csv")})


def step(site: Site, entity: str, which: str, page: str, token: str | None = None, **options):
    key = re.search(r'name="upload" value="([^"]+)"', page).group(1)
    form = {"csrf": csrf_of(page) if token is None else token, "upload": key}
    form.update({k: v if k.startswith("map.") else "1" for k, v in options.items() if v})
    return site.client.post(f"/{entity}/import/{which}", data=form)


def summary(page: str) -> str:
    return html.unescape(re.search(r'id="import-summary"[^>]*>([^<]*)<', page).group(1))


def problems(page: str) -> str:
    found = re.search(r'id="import-problems">(.*?)</div>', page, re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", found.group(1))) if found else ""


def issue_rows(page: str) -> list[tuple[str, ...]]:
    rows = re.findall(r'<tr class="issue-[^"]*">(.*?)</tr>', page, re.S)
    return [tuple(html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)) for row in rows]


def names(site: Site, entity: str = "client") -> list[str]:
    return sorted(r["name"] for r in site.crm.find(entity, limit=100))


@pytest.fixture
def site(db_url):
    s = Site(db_url)
    yield s
    s.close()


def test_the_list_links_to_the_import_page_and_its_form_needs_the_import_action(site):
    site.sign_in("dir")
    assert 'href="/client/import"' in site.client.get("/client").text
    form = site.client.get("/client/import")
    assert form.status_code == 200 and 'enctype="multipart/form-data"' in form.text
    assert "<code>inn</code> (ИНН)" in form.text  # the fields a column may fill
    other = site.browser()
    site.sign_in("ann", client=other)  # a manager: no import on client
    assert "/client/import" not in other.get("/client").text  # no link to a page refusing them
    refused = other.get("/client/import")
    assert refused.status_code == 403 and "ann may not import client records" in refused.text
    before = site.dump()
    token = csrf_of(other.get("/client").text)
    posted = other.post("/client/import", data={"csrf": token}, files={"file": ("c.csv", CLIENTS.encode(), "text/csv")})
    assert posted.status_code == 403
    assert site.dump() == before
    other.close()


def test_preview_then_dry_run_write_nothing_then_the_import_writes(site):
    site.sign_in("dir")
    before = site.dump()
    preview = upload(site, "client", CLIENTS.encode())
    assert preview.status_code == 200
    assert "clients.csv: 3 rows" in preview.text
    mapping = re.findall(r"<td>→ <code>(\w+)</code>", preview.text)
    assert mapping == ["name", "city", "phone"]  # "Название" is the label of name
    assert "Альфа" in preview.text and "Гамма" in preview.text
    assert site.dump() == before

    check = step(site, "client", "check", preview.text)
    assert check.status_code == 200
    assert summary(check.text) == "nothing would be imported: 1 row rejected"
    assert [(r[0], r[1], r[2], r[3]) for r in issue_rows(check.text)] == [("3", "rejected", "phone", "не телефон")]
    assert site.dump() == before
    lenient = step(site, "client", "check", preview.text, skip_invalid=True)
    assert summary(lenient.text) == "dry run: would have imported 2 client records; 1 rejected; nothing was written"
    assert site.dump() == before

    strict = step(site, "client", "run", lenient.text)  # all or nothing: refused
    assert strict.status_code == 422 and summary(strict.text) == "nothing was imported: 1 row rejected"
    assert site.dump() == before
    done = step(site, "client", "run", lenient.text, skip_invalid=True)
    assert done.status_code == 200
    assert summary(done.text) == "imported 2 client records; 1 rejected"
    assert names(site) == ["Альфа", "Гамма", "Лютик", "Ромашка"]
    created = [int(i) for i in re.findall(r'<a href="/client/(\d+)">', done.text)]
    assert sorted(site.crm.get("client", i)["name"] for i in created) == ["Альфа", "Гамма"]
    again = step(site, "client", "run", lenient.text, skip_invalid=True)  # the upload is gone once imported
    assert again.status_code == 410 and "upload it again" in problems(again.text)
    assert names(site) == ["Альфа", "Гамма", "Лютик", "Ромашка"]


def test_the_report_is_the_clis(site, tmp_path):
    from metacrm.cli.main import app as cli

    site.sign_in("dir")
    page = step(site, "client", "run", upload(site, "client", CLIENTS.encode()).text, skip_invalid=True).text
    path = tmp_path / "clients.csv"
    path.write_text(CLIENTS, encoding="utf-8")
    args = ["import", "client", str(path), "--skip-invalid", "--as", "dir", "--format", "json"]
    out = CliRunner().invoke(cli, [*args, "--model", str(TRADE), "--db", site.url])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert summary(page) == f"imported {report['created']} client records; {len(report['rejected_rows'])} rejected"
    expected = [(str(i["row"]), i["kind"], i["column"] or "", i["value"] or "", i["reason"]) for i in report["issues"]]
    assert issue_rows(page) == expected and expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("name,city\nАльфа,Москва\n".encode("cp1251"), "clients.csv is not UTF-8 text"),
        (b"", "clients.csv is empty: its first line must name the columns"),
        (b'name,city\n"open,quote\n', "is never closed"),
    ],
)
def test_a_bad_file_gets_the_librarys_message_and_nothing_is_kept(site, data, message):
    site.sign_in("dir")
    before = site.dump()
    page = upload(site, "client", data)
    assert page.status_code == 422
    assert message in problems(page.text) and "Nothing was imported." in problems(page.text)
    assert 'name="upload"' not in page.text and site.app.state.uploads._items == {}
    assert site.dump() == before


def test_unknown_columns_are_named_and_can_be_mapped_or_ignored(site):
    site.sign_in("dir")
    before = site.dump()
    data = "Название,Откуда,stage\nДельта,Казань,new\n".encode()
    preview = upload(site, "client", data)
    assert preview.status_code == 422
    said = problems(preview.text)
    assert "unknown column 'Откуда'; client fields: name" in said and "unknown column 'stage'" in said
    assert re.findall(r'<select name="map\.([^"]+)"', preview.text) == ["Название", "Откуда", "stage"]
    assert preview.text.count("not placed") == 2
    wrong = step(site, "client", "check", preview.text, **{"map.Откуда": "town", "map.stage": "-"})
    assert wrong.status_code == 422
    assert "column 'Откуда' is mapped to 'town', which client does not have" in problems(wrong.text)
    check = step(site, "client", "check", preview.text, **{"map.Откуда": "city", "map.stage": "-"})
    assert summary(check.text) == "dry run: would have imported 1 client record; 0 rejected; nothing was written"
    hidden = dict(re.findall(r'<input type="hidden" name="map\.([^"]+)" value="([^"]*)">', check.text))
    assert hidden == {"Откуда": "city", "stage": "-"}  # the import goes with the same mapping
    assert site.dump() == before
    form = {"csrf": csrf_of(check.text), "upload": re.search(r'name="upload" value="([^"]+)"', check.text).group(1)}
    done = site.client.post("/client/import/run", data={**form, **{f"map.{k}": v for k, v in hidden.items()}})
    assert summary(done.text) == "imported 1 client record; 0 rejected"
    assert [r["city"] for r in site.crm.find("client", "name = 'Дельта'")] == ["Казань"]


def test_no_file_an_oversized_body_and_a_missing_csrf_token(site):
    site.sign_in("dir")
    before = site.dump()
    token = site.csrf("/client/import")
    none = site.client.post("/client/import", data={"csrf": token}, files={"file": ("", b"", "text/csv")})
    assert none.status_code == 422 and "choose a CSV file" in problems(none.text)
    big = b"name\n" + b"x" * (1 << 20) + b"\n"
    too_large = upload(site, "client", big, token=token)
    assert too_large.status_code == 413 and "over 1048576 bytes" in too_large.text
    plain = site.client.post("/client/import", data={"csrf": token})
    assert plain.status_code == 415
    no_token = upload(site, "client", CLIENTS.encode(), token="")
    assert no_token.status_code == 403 and "CSRF" in no_token.text
    preview = upload(site, "client", CLIENTS.encode(), token=token)
    for which in ("check", "run"):
        refused = step(site, "client", which, preview.text, token="forged", skip_invalid=True)
        assert refused.status_code == 403
    assert site.dump() == before


def test_an_upload_belongs_to_its_session_and_expires(site):
    site.sign_in("dir")
    preview = upload(site, "client", CLIENTS.encode())
    other = site.browser()
    site.sign_in("dir", client=other)  # the same user, another session
    key = re.search(r'name="upload" value="([^"]+)"', preview.text).group(1)
    token = csrf_of(other.get("/client/import").text)
    stolen = other.post("/client/import/run", data={"csrf": token, "upload": key, "skip_invalid": "1"})
    assert stolen.status_code == 410 and "upload it again" in stolen.text
    other.close()
    uploads = site.app.state.uploads
    now = uploads.clock()
    uploads.clock = lambda: now + uploads.TTL + 1
    late = step(site, "client", "check", preview.text)
    assert late.status_code == 410 and "no longer here" in problems(late.text)
    assert names(site) == ["Лютик", "Ромашка"]


def test_an_import_sees_only_the_users_records(db_url, tmp_path, monkeypatch):
    """A manager allowed to import deals (read: own) cannot link them to a client hidden from
    them: the library reports the link unresolved, as it would for a missing client."""
    text = TRADE.read_text(encoding="utf-8").replace(
        "deal: {read: own, create: all, update: own, move: own}",
        "deal: {read: own, create: all, update: own, move: own, import: all}",
    )
    assert "import: all" in text
    model = tmp_path / "trade.yaml"
    model.write_text(text, encoding="utf-8")
    site = Site(db_url, model=model)
    try:
        site.sign_in("ann")
        assert site.client.get("/client/import").status_code == 403  # still no import on client
        before = site.dump()
        deals = "title,client,amount\nСвоя,Ромашка,100\nЧужая,Лютик,200\n".encode()
        check = step(site, "deal", "check", upload(site, "deal", deals).text, skip_invalid=True)
        assert summary(check.text).startswith("dry run: would have imported 1 deal record; 1 rejected")
        rows = issue_rows(check.text)
        assert [(r[0], r[1], r[2], r[3]) for r in rows] == [("3", "unresolved", "client", "Лютик")]
        assert "no client titled 'Лютик'" in rows[0][4]
        assert site.dump() == before
        done = step(site, "deal", "run", check.text, skip_invalid=True)
        assert summary(done.text).startswith("imported 1 deal record; 1 rejected")
        mine = site.crm.find("deal", "title = 'Своя'")
        assert [(d["client"], d["owner"]) for d in mine] == [(site.ids["c_ann"], "ann")]
        assert site.crm.find("deal", "title = 'Чужая'") == []
    finally:
        site.close()


def test_the_automations_box_is_the_clis_no_automations(db_url, tmp_path):
    """"Do not run the automations" is `import --no-automations`: a `created` automation sets a
    field on each imported client unless the box is ticked."""
    text = TRADE.read_text(encoding="utf-8").replace(
        "automations:\n",
        "automations:\n  welcome:\n    when: {entity: client, created: true}\n"
        "    do:\n      - update: {values: {city: Автоград}}\n",
        1,
    )
    model = tmp_path / "trade.yaml"
    model.write_text(text, encoding="utf-8")
    s = Site(db_url, model=model)
    try:
        s.sign_in("dir")
        for ticked, name in ((False, "Первый"), (True, "Второй")):
            data = f"name\n{name}\n".encode()
            preview = upload(s, "client", data)
            done = step(s, "client", "run", preview.text, no_automations=ticked)
            assert done.status_code == 200, done.text[:400]
            (record,) = s.crm.find("client", "name = :n", {"n": name})
            assert record["city"] == (None if ticked else "Автоград"), ticked
        assert 'id="opt-no_automations"' in preview.text
    finally:
        s.close()
