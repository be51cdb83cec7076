"""The list page's tools in-process (docs/web.md, "Lists"): the columns a user chooses,
remembered per user; the filter builder writing the expression language; the CSV export of
the current filter; bulk move, assign and delete through the library as the signed-in user.
On SQLite and PostgreSQL. tests/test_web_browser_list.py drives the same in Chromium."""

from __future__ import annotations

import csv
import html
import io
import re
from contextlib import contextmanager
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import event

from tests import test_web_pages  # skips without the [web] extra
from tests.test_web_pages import csrf_of

site = test_web_pages.site  # the fixture: the app on one database, users ann, bob (managers), dir

from metacrm.runtime.preferences import preference, set_preference  # noqa: E402
from metacrm.web import pages_list  # noqa: E402


def headers(page: str) -> list[str]:
    """The column keys of the list's table, in order."""
    return re.findall(r'<th scope="col" data-column="([^"]+)"', page)


def where_of(response) -> str | None:
    query = parse_qs(urlsplit(response.headers["location"]).query)
    return query.get("where", [None])[0]


def build(site, entity: str, rows: list[tuple[str, str, str]], **extra):
    params = [("bf", f) for f, _, _ in rows] + [("bo", o) for _, o, _ in rows] + [("bv", v) for _, _, v in rows]
    params += list(extra.items())
    # the form sends the rows interleaved; the route reads each name's list in order
    return site.client.get(f"/{entity}/filter", params=params)


@contextmanager
def counting(engine):
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


# -- columns ---------------------------------------------------------------------------------------------
def test_columns_chosen_are_remembered_per_user(site):
    site.sign_in("ann")
    default = headers(site.client.get("/deal").text)
    assert default == [*pages_list.default_keys(site.crm.model.entity("deal"))]
    assert "lost_reason" not in default and "carriers" not in default and "stage" in default
    token = site.csrf("/deal")
    saved = site.client.post(
        "/deal/columns",
        data={"csrf": token, "next": "/deal?order_by=title", "column": ["stage", "title", "carriers", "nope"]},
    )
    assert saved.status_code == 303 and saved.headers["location"] == "/deal?order_by=title"
    # the picker's order, the unknown name dropped
    assert headers(site.client.get("/deal").text) == ["title", "carriers", "stage"]
    assert preference(site.crm.as_user("ann"), "list.deal.columns") == ["title", "carriers", "stage"]
    # another user keeps the default
    other = site.browser()
    site.sign_in("dir", client=other)
    assert headers(other.get("/deal").text) == default
    # nothing ticked: refused, the choice kept
    empty = site.client.post("/deal/columns", data={"csrf": token, "next": "/deal"})
    assert empty.status_code == 303 and "choose+at+least+one+column" in empty.headers["location"]
    assert headers(site.client.get("/deal").text) == ["title", "carriers", "stage"]
    # without the CSRF token: refused, nothing stored
    assert site.client.post("/deal/columns", data={"column": "amount"}).status_code == 403
    assert preference(site.crm.as_user("ann"), "list.deal.columns") == ["title", "carriers", "stage"]
    # back to the default
    site.client.post("/deal/columns", data={"csrf": token, "next": "/deal", "reset": "1"})
    assert headers(site.client.get("/deal").text) == default
    assert preference(site.crm.as_user("ann"), "list.deal.columns") is None


def test_a_stored_column_the_model_lost_is_skipped(site):
    ann = site.crm.as_user("ann")
    set_preference(ann, "list.deal.columns", ["removed_field", "amount", 7, "owner"])
    site.sign_in("ann")
    page = site.client.get("/deal")
    assert page.status_code == 200 and headers(page.text) == ["amount", "owner"]
    set_preference(ann, "list.deal.columns", ["removed_field"])  # nothing left: the default
    assert headers(site.client.get("/deal").text) == pages_list.default_keys(site.crm.model.entity("deal"))
    set_preference(ann, "list.deal.columns", {"not": "a list"})
    assert site.client.get("/deal").status_code == 200


def test_the_entitys_list_is_the_default_when_the_model_gives_one():
    ent = SimpleNamespace(list=("title", "stage"), fields={}, links={}, pipelines={}, owner=False)
    assert pages_list.default_keys(ent) == ["title", "stage"]


def test_link_columns_show_titles_with_one_query_per_target(site):
    crm = site.crm
    carriers = crm.create_many("carrier", [{"name": f"Перевозчик {i}"} for i in range(3)])
    ids = [c["id"] for c in carriers]
    crm.update("deal", site.ids["d_ann"], {"carriers": ids[:2]})
    site.sign_in("dir")
    token = site.csrf("/deal")
    site.client.post("/deal/columns", data={"csrf": token, "column": ["title", "client", "carriers"]})
    page = site.client.get("/deal").text
    assert f'<a href="/carrier/{ids[0]}">Перевозчик 0</a>, <a href="/carrier/{ids[1]}">Перевозчик 1</a>' in page
    assert f'<a href="/client/{site.ids["c_bob"]}">Лютик</a>' in page
    with counting(crm.engine) as few:
        site.client.get("/deal")
    crm.create_many(
        "deal",
        [{"title": f"Ещё {i}", "client": site.ids["c_ann"], "owner": "ann", "carriers": ids} for i in range(30)],
    )
    with counting(crm.engine) as many:
        assert "Ещё 29" in site.client.get("/deal").text
    assert len(many) == len(few)  # no query per row


# -- the filter builder ---------------------------------------------------------------------------------------
def test_the_builder_writes_the_expression_language(site):
    crm = site.crm
    crm.update("deal", site.ids["d_ann"], {"amount": "1500", "title": "O'Brien & Co"})
    site.sign_in("dir")
    went = build(site, "deal", [("title", "contains", "o'brien"), ("amount", ">=", "1 000,5")], q="", order_by="title")
    assert went.status_code == 303
    assert where_of(went) == "title contains 'o''brien' and amount >= 1000.5"
    assert parse_qs(urlsplit(went.headers["location"]).query)["order_by"] == ["title"]
    page = site.client.get(went.headers["location"]).text
    assert 'value="title contains &#39;o&#39;&#39;brien&#39; and amount &gt;= 1000.5"' in page  # in the raw box
    assert "O&#39;Brien &amp; Co" in page and "Сделка Лютик" not in page
    # choices and stages by value or label; "is one of"; any condition
    went = build(site, "deal", [("currency", "=", "Рубль"), ("stage", "in", "new, Квалифицирована")], bj="or")
    assert where_of(went) == "currency = 'rub' or stage in ('new', 'qualified')"
    # added to the filter applied now, parenthesised where needed
    went = build(site, "deal", [("supplier", "empty", ""), ("owner", "=", "ann")], bj="or", where="a = 1 or b = 2")
    assert where_of(went) == "(a = 1 or b = 2) and (supplier is null or owner = 'ann')"
    # an empty builder keeps the filter as it is
    assert where_of(build(site, "deal", [], where="amount > 3")) == "amount > 3"


def test_a_quote_in_a_value_cannot_break_out(site):
    site.sign_in("dir")
    sneaky = "x' or title != 'y"
    went = build(site, "deal", [("title", "=", sneaky)])
    assert where_of(went) == "title = 'x'' or title != ''y'"
    page = site.client.get(went.headers["location"]).text
    assert re.search(r'id="count">0 records<', page)
    assert site.crm.find("deal", where_of(went)) == []  # one literal, not a condition
    assert pages_list.quote("it's ''") == "'it''s '''''"


def test_builder_refusals_name_the_field_and_what_it_takes(site):
    site.sign_in("dir")
    cases = [
        ([("amount", ">", "lots")], "Сумма (amount) takes a number, not 'lots'"),
        ([("amount", "contains", "1")], "Сумма (amount) takes =, !=, >, <, >=, <=, empty, filled; not 'contains'"),
        ([("nope", "=", "1")], "deal has no field 'nope' to filter on"),
        ([("currency", "=", "franc")], "Валюта (currency) has no option 'franc'; options: rub, usd, eur, cny"),
        ([("client", "=", "Ромашка")], "Клиент (client) takes a record number"),
        ([("title", "=", " ")], "give a value"),
    ]
    for rows, message in cases:
        went = build(site, "deal", rows, where="amount > 0")
        assert went.status_code == 303
        query = parse_qs(urlsplit(went.headers["location"]).query)
        assert message in query["error"][0], (rows, query)
        assert query["where"] == ["amount > 0"] and query["bf"] == [rows[0][0]]  # kept, rows given back
        page = site.client.get(went.headers["location"]).text
        assert (
            f'id="bv-1" name="bv" value="{html.escape(rows[0][2])}"' in page
            and '<details class="builder" open>' in page
        )


def test_a_builder_value_the_library_refuses_is_shown_at_its_caret(site):
    site.sign_in("dir")
    went = build(site, "deal", [("expected_close", ">", "soon")])
    assert where_of(went) == "expected_close > 'soon'"
    page = site.client.get(went.headers["location"])
    assert page.status_code == 200 and 'aria-invalid="true"' in page.text and "soon" in page.text


# -- export ----------------------------------------------------------------------------------------------
def rows_of(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_export_streams_the_current_filter_as_the_user(site):
    crm = site.crm
    crm.update("deal", site.ids["d_ann"], {"amount": "10"})
    crm.update("client", site.ids["c_ann"], {"city": "=HYPERLINK(1)"})
    site.sign_in("dir")
    page = site.client.get("/deal", params={"where": "amount > 5", "order_by": "title"}).text
    link = re.search(r'href="([^"]+)" id="export-link"', page).group(1).replace("&amp;", "&")
    assert link == "/deal/export.csv?where=amount+%3E+5&order_by=title"
    got = site.client.get(link)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    assert 'filename="deal.csv"' in got.headers["content-disposition"]
    rows = rows_of(got.text)
    assert [r["id"] for r in rows] == [str(site.ids["d_ann"])] and rows[0]["stage"] == "new"
    assert {"title", "amount", "client", "carriers", "owner", "stage"} <= set(rows[0])  # every column
    # the quick search narrows it too
    both = rows_of(site.client.get("/client/export.csv", params={"q": "Лютик"}).text)
    assert [r["name"] for r in both] == ["Лютик"]
    # formulas are neutralised by the library's export
    cities = {r["name"]: r["city"] for r in rows_of(site.client.get("/client/export.csv").text)}
    assert cities["Ромашка"] == "'=HYPERLINK(1)"
    # a bad filter: the parser's message, no file
    bad = site.client.get("/deal/export.csv", params={"where": "amount >> 1"})
    assert bad.status_code == 400 and "at column" in bad.text


def test_export_is_limited_to_what_the_user_may_export(site):
    site.sign_in("ann")
    mine = rows_of(site.client.get("/client/export.csv").text)  # client export: own
    assert [r["name"] for r in mine] == ["Ромашка"]
    page = site.client.get("/deal").text  # deal export: none
    assert 'id="export-link"' not in page
    refused = site.client.get("/deal/export.csv")
    assert refused.status_code == 403 and "may not export deal" in refused.text


# -- bulk actions ------------------------------------------------------------------------------------------
def bulk(site, entity: str, token: str, **data):
    return site.client.post(f"/{entity}/bulk", data={"csrf": token, "next": f"/{entity}", **data})


def results(page: str) -> dict[str, str]:
    """Record id -> the result cell's text."""
    rows = re.findall(r'<tr data-id="([^"]+)" class="(?:ok|refused)">(.*?)</tr>', page, re.S)
    return {rid: html.unescape(re.sub(r"<[^>]+>", "", body).split("\n")[-2].strip()) for rid, body in rows}


def test_bulk_move_reports_each_refusal_and_does_the_rest(site):
    crm = site.crm
    a, b = site.ids["d_ann"], site.ids["d_bob"]
    crm.update("deal", b, {"amount": "100"})
    site.sign_in("dir")
    token = site.csrf("/deal")
    moved = bulk(site, "deal", token, action="move", stage="qualified", id=[str(a), str(b)])
    assert moved.status_code == 200
    assert crm.get("deal", a)["stage"] == "qualified" and crm.get("deal", b)["stage"] == "qualified"
    assert results(moved.text) == {str(a): "moved to qualified", str(b): "moved to qualified"}
    # to the proposal stage: the one without an amount is refused with the library's reason
    moved = bulk(site, "deal", token, action="move", stage="proposal", id=[str(a), str(b)])
    got = results(moved.text)
    assert got[str(b)] == "moved to proposal" and "amount" in got[str(a)] and f"deal {a}" in got[str(a)]
    assert crm.get("deal", a)["stage"] == "qualified" and crm.get("deal", b)["stage"] == "proposal"
    assert 'id="bulk-summary" role="status">Done: 1; refused: 1' in moved.text
    # "select all on this page" takes the page's ids
    everything = bulk(site, "deal", token, action="move", stage="lost", all="1", page=[str(a), str(b)])
    assert set(results(everything.text)) == {str(a), str(b)}


def test_bulk_assign_and_what_is_offered(site):
    crm = site.crm
    a = site.ids["d_ann"]
    site.sign_in("ann")  # a manager: move own, no reassign, no delete of deals
    page = site.client.get("/deal").text
    assert 'id="bulk-move"' in page and 'id="bulk-assign"' not in page and 'id="bulk-delete"' not in page
    assert 'id="bulk-delete"' in site.client.get("/task").text  # tasks: delete own
    forged = bulk(site, "deal", site.csrf("/deal"), action="assign", owner="bob", id=str(a))
    assert results(forged.text) == {str(a): f"user 'ann' may not reassign deal {a} (scope for reassign: none)"}
    assert crm.get("deal", a)["owner"] == "ann"
    director = site.browser()
    site.sign_in("dir", client=director)
    page = director.get("/deal").text
    assert 'id="bulk-assign"' in page and '<option value="bob">bob</option>' in page
    token = csrf_of(page)
    done = director.post("/deal/bulk", data={"csrf": token, "action": "assign", "owner": "bob", "id": str(a)})
    assert results(done.text) == {str(a): "assigned to bob"} and crm.get("deal", a)["owner"] == "bob"
    unknown = director.post("/deal/bulk", data={"csrf": token, "action": "assign", "owner": "zed", "id": str(a)})
    assert "zed" in results(unknown.text)[str(a)] and crm.get("deal", a)["owner"] == "bob"


def test_bulk_delete_asks_first_and_a_hidden_id_answers_as_a_missing_one(site):
    crm = site.crm
    mine = crm.create("task", {"title": "Моя", "owner": "ann"})["id"]
    theirs = crm.create("task", {"title": "Чужая", "owner": "bob"})["id"]
    missing = theirs + 1000
    site.sign_in("ann")
    token = site.csrf("/task")
    ids = [str(mine), str(theirs), str(missing)]
    before = site.dump()
    asked = bulk(site, "task", token, action="delete", id=ids)
    assert asked.status_code == 200 and 'id="bulk-confirm"' in asked.text and site.dump() == before
    assert "Чужая" not in asked.text  # no title of a hidden record
    done = bulk(site, "task", token, action="delete", confirm="1", id=ids)
    got = results(done.text)
    assert got[str(mine)] == "deleted"
    assert got[str(theirs)] == f"task {theirs} not found" and got[str(missing)] == f"task {missing} not found"
    assert got[str(theirs)].replace(str(theirs), "N") == got[str(missing)].replace(str(missing), "N")
    assert "Чужая" not in done.text
    assert crm.count("task", f"id = {mine}") == 0 and crm.get("task", theirs)["title"] == "Чужая"
    # deals: no delete for a manager; a forged POST is refused by the library, hidden = missing
    forged = bulk(
        site, "deal", token, action="delete", confirm="1", id=[str(site.ids["d_ann"]), str(site.ids["d_bob"])]
    )
    got = results(forged.text)
    assert "may not delete deal" in got[str(site.ids["d_ann"])]
    assert got[str(site.ids["d_bob"])] == f"deal {site.ids['d_bob']} not found"
    assert crm.count("deal") == 2


def test_bulk_needs_the_csrf_token_and_says_what_is_missing(site):
    site.sign_in("dir")
    before = site.dump()
    d = str(site.ids["d_ann"])
    assert site.client.post("/deal/bulk", data={"action": "move", "stage": "lost", "id": d}).status_code == 403
    assert (
        site.client.post("/deal/bulk", data={"csrf": "forged", "action": "delete", "confirm": "1", "id": d}).status_code
        == 403
    )
    token = site.csrf("/deal")
    for data, message in [
        ({"action": "move", "stage": "qualified"}, "tick the records to move first"),
        ({"action": "move", "id": d}, "choose the stage"),
        ({"action": "assign", "id": d}, "choose the user"),
        ({"action": "explode", "id": d}, "choose what to do"),
        ({"action": "delete", "id": [str(i) for i in range(pages_list.MAX_BULK + 1)]}, "at most 500 records"),
    ]:
        went = bulk(site, "deal", token, **data)
        assert went.status_code == 303, data
        assert message in parse_qs(urlsplit(went.headers["location"]).query)["error"][0]
    assert site.dump() == before
    # a next that leaves the site falls back to the list
    went = site.client.post("/deal/bulk", data={"csrf": token, "next": "//evil.example/", "action": "move", "id": d})
    assert went.headers["location"].startswith("/deal?")


@pytest.mark.parametrize("path", ["/deal/columns", "/deal/bulk"])
def test_list_tools_need_a_session(site, path):
    went = site.client.post(path, data={"csrf": "x"})
    assert went.status_code == 303 and went.headers["location"].startswith("/login")
    assert site.client.get("/deal/export.csv").headers["location"].startswith("/login")
    assert site.client.get("/deal/filter", params={"bf": "title"}).headers["location"].startswith("/login")
