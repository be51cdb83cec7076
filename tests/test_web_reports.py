"""Reports and the model in the browser app, in-process (docs/web.md): the funnel and group pages
show the library's numbers for the signed-in user (row-level access applies), bad parameters
give the library's message on the page, and /model carries the Mermaid text of the ER diagram
and of every stage graph, escaped. On SQLite and PostgreSQL; tests/test_web_browser_reports.py
draws them in Chromium."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from pathlib import Path

import pytest

import metacrm
from metacrm.model.erd import to_mermaid_erd
from metacrm.stages.diagrams import to_mermaid
from metacrm.web.pages import shown
from tests.conftest import require_module
from tests.test_web_pages import PASSWORD, Site

require_module("fastapi", why="the browser app is the [web] extra")
require_module("jinja2", why="pages are Jinja2 templates ([web] extra)")

ROW = re.compile(
    r'<tr data-stage="(\w+)"[^>]*>.*?<td class="num now">(\d+)</td>\s*<td class="num reached">(\d+)</td>', re.S
)


@pytest.fixture
def site(db_url):
    s = Site(db_url)
    crm = s.crm
    # more deals, moved along: ann 4 (one lost, one at proposal), bob 3 (one lost)
    for login, n in (("ann", 3), ("bob", 2)):
        for i in range(n):
            deal = crm.create(
                "deal",
                {"title": f"{login} {i}", "client": s.ids[f"c_{login}"], "owner": login, "amount": str(100 * (i + 1))},
            )
            crm.move("deal", deal["id"], "qualified")
            if i == 1:
                crm.update("deal", deal["id"], {"lost_reason": "дорого"})
                crm.move("deal", deal["id"], "lost")
            if i == 2:
                crm.move("deal", deal["id"], "proposal")
    yield s
    s.close()


def counts(page: str) -> list[list]:
    """(stage, now, reached) per row of each funnel table on the page."""
    tables = page.split('<table class="grid funnel-table"')[1:]
    return [[(m[0], int(m[1]), int(m[2])) for m in ROW.findall(t)] for t in tables]


def expected(doc) -> list[list]:
    docs = doc if isinstance(doc, list) else [doc]
    return [[(s["stage"], s["now"], s["reached"]) for s in d["stages"]] for d in docs]


def alert(page: str) -> str:
    return html.unescape(re.search(r'id="report-error">([^<]*)<', page).group(1))


def test_funnel_page_shows_the_librarys_numbers_for_the_user(site):
    site.sign_in("dir")
    page = site.client.get("/reports/funnel/deal")
    assert page.status_code == 200
    everything = site.crm.as_user("dir").funnel("deal")
    assert counts(page.text) == expected(everything) and everything["count"] == 7
    assert f'<td class="num total">{everything["count"]}</td>' in page.text
    chart = json.loads(re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', page.text).group(1))
    assert chart["labels"] == [s["label"] for s in everything["stages"]]
    assert chart["datasets"][1]["data"] == [s["now"] for s in everything["stages"]]

    by_owner = site.client.get("/reports/funnel/deal", params={"by": "owner"}).text
    assert counts(by_owner) == expected(site.crm.as_user("dir").funnel("deal", by="owner"))
    assert "owner: ann" in by_owner and "owner: bob" in by_owner

    today = dt.date.today().isoformat()
    params = {"as_of": today, "from": "2000-01-01", "to": today, "pipeline": "default"}
    dated = site.client.get("/reports/funnel/deal", params=params).text
    library = site.crm.as_user("dir").funnel("deal", "default", as_of=today, date_from="2000-01-01", date_to=today)
    assert counts(dated) == expected(library)
    assert f'value="{today}"' in dated  # the form keeps what was asked
    assert counts(site.client.get("/reports/funnel/deal", params={"to": "2000-01-01"}).text) == expected(
        site.crm.as_user("dir").funnel("deal", date_to="2000-01-01")
    )


def test_a_manager_with_own_scope_sees_only_their_deals_counts(site):
    site.sign_in("ann")
    page = site.client.get("/reports/funnel/deal").text
    own = site.crm.as_user("ann").funnel("deal")
    assert counts(page) == expected(own)
    assert own["count"] == 4 and site.crm.funnel("deal")["count"] == 7
    assert '<td class="num total">4</td>' in page
    grouped = site.client.get("/reports/funnel/deal", params={"by": "owner"}).text
    assert "owner: ann" in grouped and "owner: bob" not in grouped
    report = site.client.get("/reports/group/deal", params={"by": "owner"}).text
    assert re.findall(r'class="label">([^<]*)</th><td class="num count">(\d+)<', report) == [("ann", "4")]


def test_group_page_shows_the_librarys_report(site):
    site.sign_in("dir")
    user = site.crm.as_user("dir")
    cases = [
        ({}, dict(by="stage")),
        ({"by": "owner", "sum": "amount"}, dict(by="owner", sum="amount")),
        ({"by": "client", "sum": "amount", "period": "month"}, dict(by="client", sum="amount", period="month")),
        (
            {"by": "stage", "period": "quarter", "date": "updated_at", "from": "2000-01-01"},
            dict(by="stage", period="quarter", date="updated_at", date_from="2000-01-01"),
        ),
    ]
    amount = site.crm.model.entities["deal"].fields["amount"]
    for params, kwargs in cases:
        page = site.client.get("/reports/group/deal", params=params)
        assert page.status_code == 200, params
        doc = user.report_group("deal", kwargs.pop("by"), **kwargs)
        rows = re.findall(
            r'class="label">([^<]*)</th><td class="num count">(\d+)</td>(?:<td class="num sum">([^<]*)<)?', page.text
        )
        want = [
            (r["label"] or "—", str(r["count"]), shown(r["sum"], amount) if doc["sum"] else "") for r in doc["rows"]
        ]
        assert [(html.unescape(a), b, html.unescape(c)) for a, b, c in rows] == want, params
        assert f'<td class="num total">{doc["total"]["count"]}</td>' in page.text
        if doc["period"]:
            chart = json.loads(re.search(r'id="chart-data">(.*?)</script>', page.text).group(1))
            assert chart["labels"] == sorted({r["period"] for r in doc["rows"]})
    assert "Новая" in site.client.get("/reports/group/deal").text  # stages by their labels


def test_bad_parameters_are_shown_on_the_page(site):
    site.sign_in("dir")
    before = site.dump()
    bad = {
        "/reports/funnel/deal?pipeline=nope": "deal: unknown pipeline 'nope'",
        "/reports/funnel/deal?as_of=yesterday": "as of: 'yesterday' is not a date",
        "/reports/funnel/deal?from=2024-13-01": "from: '2024-13-01' is not a date",
        "/reports/funnel/deal?by=stage": "deal: a funnel is already by stage",
        "/reports/funnel/deal?by=nope": "deal: by: unknown field 'nope'",
        "/reports/group/deal?by=nope": "deal: by: unknown field 'nope'",
        "/reports/group/deal?by=owner&sum=title": "deal: sum: cannot sum 'title'",
        "/reports/group/deal?by=owner&period=week": "deal: unknown period 'week'",
        "/reports/group/deal?by=owner&period=month&date=title": "deal: date: 'title' is not a date or datetime",
    }
    for path, message in bad.items():
        page = site.client.get(path)
        assert page.status_code == 400, path
        assert alert(page.text).startswith(message), (path, alert(page.text))
        assert "valid:" in alert(page.text) or "YYYY-MM-DD" in alert(page.text) or "by: owner" in alert(page.text)
        assert 'class="filters report-form"' in page.text  # the form is there to fix it
    for path, message in {
        "/reports/funnel/client": "'client' is not an entity with stages; valid: deal",
        "/reports/funnel/nothing": "'nothing' is not an entity with stages",
        "/reports/group/nothing": "'nothing' is not an entity; valid: client, deal",
    }.items():
        page = site.client.get(path)
        assert page.status_code == 404 and message in html.unescape(page.text), path
    assert site.dump() == before


def test_report_and_model_pages_need_a_session(site):
    for path in ("/reports/funnel/deal", "/reports/group/deal?by=owner", "/model"):
        response = site.client.get(path)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next="), path


def mermaid_blocks(page: str) -> dict[str, str]:
    return {
        m[0]: json.loads(m[1])
        for m in re.findall(r'<script type="application/json" id="([\w-]+)-text">(.*?)</script>', page, re.S)
    }


def test_model_page_has_every_diagram(site):
    site.sign_in("ann")
    page = site.client.get("/model")
    assert page.status_code == 200 and "/static/vendor/mermaid.min.js" in page.text
    model = site.crm.model
    blocks = mermaid_blocks(page.text)
    staged = {f"stages-{e.name}-{p}": to_mermaid(e, p) for e in model.entities.values() for p in e.pipelines}
    assert blocks == {"erd": to_mermaid_erd(model), **staged}
    assert all(f'<figure class="diagram" id="{key}" data-diagram="{key}-text">' in page.text for key in blocks)
    for entity in model.entities:
        assert f"    {entity} {{" in blocks["erd"]
    assert "Квалифицирована" in blocks["stages-deal-default"] and "Оплачена [won]" in blocks["stages-deal-default"]
    sources = [html.unescape(s) for s in re.findall(r'<pre class="mermaid-source">(.*?)</pre>', page.text, re.S)]
    assert sources == list(blocks.values())  # the text alternative of each diagram


MODEL = """
metacrm: 1
name: tricky
label: "Tricky </script><script>alert(1)</script>"
entities:
  lead:
    label: 'Лид "горячий" </script><b>'
    fields:
      name: {type: string, label: "Имя <i>\\"x\\"</i>\\nвторая строка", required: true}
      budget: {type: money, label: "Бюджет; 100% {a}"}
    links:
      partner: {to: partner, label: "Партнёр </script>"}
    stages:
      initial: new
      states:
        new: {label: "Новый \\"лид\\" <script>"}
        won: {label: "Выигран </script>", kind: won}
        lost: {label: "Проигран\\nсовсем", kind: lost}
      transitions:
        - {from: new, to: won, label: "Взять \\"в работу\\" <b>"}
        - {from: new, to: lost, label: "Отказ; 50% #1"}
  partner:
    label: Партнёр
    fields:
      name: {type: string, label: Имя}
"""


def test_model_page_escapes_labels(db_url, tmp_path):
    from fastapi.testclient import TestClient

    from metacrm.runtime.passwords import set_password
    from metacrm.web import create_app
    from tests.test_web_pages import csrf_of

    path = Path(tmp_path) / "tricky.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    crm.add_user("root")
    set_password(crm, "root", PASSWORD)
    client = TestClient(create_app(crm), follow_redirects=False)
    token = csrf_of(client.get("/login").text)
    client.post("/login", data={"login": "root", "password": PASSWORD, "csrf": token, "next": "/"})
    page = client.get("/model").text
    assert "<script>alert(1)" not in page and "</script><b>" not in page and "<i>" not in page
    blocks = mermaid_blocks(page)
    assert blocks["erd"] == to_mermaid_erd(crm.model)
    assert blocks["stages-lead-default"] == to_mermaid(crm.model.entities["lead"], "default")
    for text in blocks.values():  # one statement per line: a label never breaks the diagram's syntax
        for line in text.splitlines():
            assert line.count('"') % 2 == 0, line
    assert "\"Имя <i>'x'</i> вторая строка\"" in blocks["erd"]
    assert "Проигран совсем [lost]" in blocks["stages-lead-default"]
    assert "new --> lost : Отказ#59; 50% #35;1" in blocks["stages-lead-default"]  # drawn as "Отказ; 50% #1"
    client.close()
    crm.close()


def test_group_page_by_stage_keeps_to_one_pipeline(db_url):
    """An entity with two pipelines: the group page by stage counts one pipeline's records (the
    default pipeline unless one is chosen), as `report group --pipeline` does; by another field
    it may count every pipeline together."""
    from fastapi.testclient import TestClient

    from metacrm.runtime.passwords import set_password
    from metacrm.web import create_app
    from tests.test_web_pages import csrf_of

    model = Path(__file__).parent / "fixtures" / "valid" / "defects_left.yaml"
    crm = metacrm.connect(model, db_url)
    try:
        crm.migrate()
        crm.add_user("dir", roles=["boss"])
        set_password(crm, "dir", PASSWORD)
        for title, kind in (("s1", "sales"), ("s2", "sales"), ("r1", "rental")):
            crm.create("deal", {"title": title, "kind": kind, "pipeline": kind})
        client = TestClient(create_app(crm), base_url="http://testserver", follow_redirects=False)
        token = csrf_of(client.get("/login").text)
        client.post("/login", data={"login": "dir", "password": PASSWORD, "csrf": token, "next": "/"})

        def rows(**params) -> dict[str, str]:
            page = client.get("/reports/group/deal", params=params)
            assert page.status_code == 200, (params, page.text[:300])
            found = re.findall(r'class="label">([^<]*)</th><td class="num count">(\d+)</td>', page.text)
            return {html.unescape(label): count for label, count in found}

        assert rows() == {"new": "2"}  # the default pipeline (sales), not the rental deal
        assert rows(by="stage", pipeline="rental") == {"asked": "1"}
        assert rows(by="kind") == {"sales": "2", "rental": "1"}  # every pipeline together
        assert rows(by="kind", pipeline="rental") == {"rental": "1"}
        assert 'id="r-pipeline"' in client.get("/reports/group/deal").text
    finally:
        crm.close()
