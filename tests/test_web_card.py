"""The record card's links both ways (add and remove through the library as the signed-in user),
the polymorphic link picker in forms, HTML error pages outside the API, and the card's query
count; in-process, on SQLite and PostgreSQL (docs/web.md). tests/test_web_browser.py drives the
same controls in Chromium."""

from __future__ import annotations

import re

from sqlalchemy import event

from tests.test_web_pages import csrf_of, field_errors, site  # noqa: F401  (fixture)

HTMX = {"HX-Request": "true"}


def link_error(html: str, name: str) -> str | None:
    found = re.search(rf'id="link-error-{name}">([^<]*)<', html)
    return found.group(1) if found else None


def linked(html: str, name: str) -> list[str]:
    """The titles a link block lists."""
    block = re.search(rf'<ul class="linked" id="linked-{name}">(.*?)</ul>', html, re.S).group(1)
    return re.findall(r'<a href="/\w+/\d+">([^<]*)</a>', block)


def test_links_are_added_and_removed_both_ways(site):  # noqa: F811
    crm = site.crm
    site.sign_in("ann")
    deal, client = site.ids["d_ann"], site.ids["c_ann"]
    nails = crm.create("product", {"name": "Гвозди", "sku": "NAIL-1"})["id"]
    card = site.client.get(f"/deal/{deal}").text
    token = csrf_of(card)
    assert linked(card, "client") == ["Ромашка"] and linked(card, "products") == []
    assert 'hx-get="/product/options"' in card  # the add control searches the target
    # a many-link, without JavaScript: the form posts and the browser goes back to the card
    added = site.client.post(f"/deal/{deal}/link", data={"csrf": token, "name": "products", "target": str(nails)})
    assert added.status_code == 303 and added.headers["location"] == f"/deal/{deal}#links-products"
    assert crm.get("deal", deal)["products"] == [nails]
    assert linked(site.client.get(f"/deal/{deal}").text, "products") == ["Гвозди"]
    assert [e["action"] for e in crm.timeline("deal", deal)][0] == "link"
    # with htmx the answer is the block itself
    removed = site.client.post(
        f"/deal/{deal}/unlink", data={"csrf": token, "name": "products", "target": str(nails)}, headers=HTMX
    )
    assert removed.status_code == 200 and removed.text.startswith('<div class="link-block" id="links-products">')
    assert "<html" not in removed.text and linked(removed.text, "products") == []
    assert crm.get("deal", deal)["products"] == []
    # a single link set from the card; removing a required one is refused with the library's text
    supplier = crm.create("supplier", {"name": "Завод"})["id"]
    site.client.post(f"/deal/{deal}/link", data={"csrf": token, "name": "supplier", "target": str(supplier)})
    assert crm.get("deal", deal)["supplier"] == supplier
    before = site.dump()
    refused = site.client.post(
        f"/deal/{deal}/unlink", data={"csrf": token, "name": "client", "target": str(client)}, headers=HTMX
    )
    assert refused.status_code == 200 and link_error(refused.text, "client") == (
        "deal.client: is required; give the id of a client record"
    )
    plain = site.client.post(f"/deal/{deal}/unlink", data={"csrf": token, "name": "client", "target": str(client)})
    assert plain.status_code == 303 and "link=client" in plain.headers["location"]
    shown = site.client.get(plain.headers["location"]).text
    assert link_error(shown, "client") == "deal.client: is required; give the id of a client record"
    assert site.dump() == before
    # an inverse: on the client's card, adding a deal links that deal to this client
    other = crm.create("client", {"name": "Василёк", "owner": "ann"})["id"]
    moved = crm.create("deal", {"title": "Вторая", "client": other, "owner": "ann"})["id"]
    page = site.client.get(f"/client/{client}").text
    assert linked(page, "deals") == ["Сделка Ромашка"] and f'href="/deal/new?client={client}"' in page
    site.client.post(f"/client/{client}/link", data={"csrf": token, "name": "deals", "target": str(moved)})
    assert crm.get("deal", moved)["client"] == client
    assert linked(site.client.get(f"/client/{client}").text, "deals") == ["Сделка Ромашка", "Вторая"]
    # an inverse of an optional link is removed from this side
    doc = crm.create("document", {"number": "Д-1", "kind": "contract", "owner": "ann"})["id"]
    site.client.post(f"/deal/{deal}/link", data={"csrf": token, "name": "documents", "target": str(doc)})
    assert crm.get("document", doc)["deal"] == deal
    site.client.post(f"/deal/{deal}/unlink", data={"csrf": token, "name": "documents", "target": str(doc)})
    assert crm.get("document", doc)["deal"] is None
    # without JavaScript a search without a chosen record comes back with the matches
    found = site.client.post(f"/deal/{deal}/link", data={"csrf": token, "name": "products", "q": "Гвозди"})
    assert found.status_code == 303 and "find=products" in found.headers["location"]
    choices = site.client.get(found.headers["location"]).text
    assert f'<option value="{nails}">Гвозди</option>' in choices
    assert crm.get("deal", deal)["products"] == []
    # an unknown link name
    unknown = site.client.post(f"/deal/{deal}/link", data={"csrf": token, "name": "nope", "target": "1"})
    assert unknown.status_code == 400 and "deal has no link &#39;nope&#39;" in unknown.text


def test_a_polymorphic_link_on_the_card_and_in_forms(site):  # noqa: F811
    crm = site.crm
    site.sign_in("ann")
    deal, client = site.ids["d_ann"], site.ids["c_ann"]
    form = site.client.get("/task/new").text
    token = csrf_of(form)
    assert re.search(r'<select id="f-subject-entity"[^>]*>\s*<option value="deal" selected>', form)
    assert f'<option value="deal:{deal}">Сделка Ромашка</option>' in form
    assert 'data-entity-from="f-subject-entity"' in form and 'hx-get="/deal/options"' in form
    # from a client's card: the client is chosen, its entity selected
    prefilled = site.client.get(f"/task/new?subject=client:{client}").text
    assert '<option value="client" selected>' in prefilled
    assert f'<option value="client:{client}" selected>Ромашка</option>' in prefilled
    # the options of the other entity come as entity:id, the choice kept
    options = site.client.get(
        "/client/options", params={"poly": "1", "field": "subject", "subject": f"client:{client}", "q": "zzz"}
    ).text
    assert options.strip() == f'<option value="client:{client}" selected>Ромашка</option>'
    # a bad choice: the message by its field, nothing saved
    before = site.dump()
    bad = site.client.post(
        "/task/new", data={"csrf": token, "title": "Позвонить", "subject": f"client:{site.ids['c_bob']}"}
    )
    assert bad.status_code == 422 and field_errors(bad.text) == ["subject"]
    assert "no client with id" in bad.text and site.dump() == before
    created = site.client.post("/task/new", data={"csrf": token, "title": "Позвонить", "subject": f"client:{client}"})
    assert created.status_code == 303
    task = int(created.headers["location"].rsplit("/", 1)[1])
    assert crm.get("task", task)["subject"] == {"entity": "client", "id": client}
    edit = site.client.get(f"/task/{task}/edit").text
    assert f'<option value="client:{client}" selected>Ромашка</option>' in edit
    changed = site.client.post(
        f"/task/{task}/edit", data={"csrf": token, "title": "Позвонить", "subject": f"deal:{deal}"}
    )
    assert changed.status_code == 303 and crm.get("task", task)["subject"] == {"entity": "deal", "id": deal}
    # on the task's card: the subject's block picks an entity, then a record
    card = site.client.get(f"/task/{task}").text
    assert re.search(r'<select id="pick-subject-entity" name="entity"', card)
    assert linked(card, "subject") == ["Сделка Ромашка"]
    site.client.post(f"/task/{task}/link", data={"csrf": token, "name": "subject", "target": f"client:{client}"})
    assert crm.get("task", task)["subject"] == {"entity": "client", "id": client}
    site.client.post(f"/task/{task}/unlink", data={"csrf": token, "name": "subject", "target": f"client:{client}"})
    assert crm.get("task", task)["subject"] is None
    # the client's card lists its tasks (an inverse of a polymorphic link) and adds one
    site.client.post(f"/client/{client}/link", data={"csrf": token, "name": "tasks", "target": str(task)})
    assert crm.get("task", task)["subject"] == {"entity": "client", "id": client}
    found = site.client.post(
        f"/task/{task}/link", data={"csrf": token, "name": "subject", "entity": "client", "q": "Ромашка"}
    )
    assert "entity=client" in found.headers["location"]
    assert f'<option value="client:{client}">Ромашка</option>' in site.client.get(found.headers["location"]).text


def test_link_access_probes(site):  # noqa: F811
    crm = site.crm
    site.sign_in("ann")
    token = site.csrf()
    mine, theirs = site.ids["d_ann"], site.ids["d_bob"]
    nails = crm.create("product", {"name": "Гвозди", "sku": "NAIL-1"})["id"]
    before = site.dump()
    # another manager's deal: not hers to read, so it answers as a missing one, and nothing changes
    for path in (f"/deal/{theirs}/link", f"/deal/{theirs}/unlink"):
        hidden = site.client.post(path, data={"csrf": token, "name": "products", "target": str(nails)})
        missing = site.client.post(
            path.replace(str(theirs), "999999"), data={"csrf": token, "name": "products", "target": str(nails)}
        )
        assert hidden.status_code == missing.status_code == 404
        assert "deal 999999 not found" in missing.text and f"deal {theirs} not found" in hidden.text
    # a hidden target answers exactly as a missing one: through a link ...
    answers = {}
    for target in (site.ids["c_bob"], 999999):
        r = site.client.post(
            f"/deal/{mine}/link", data={"csrf": token, "name": "client", "target": str(target)}, headers=HTMX
        )
        answers[target] = link_error(r.text, "client").replace(str(target), "ID")
    assert answers[site.ids["c_bob"]] == answers[999999] == "deal.client: no client with id ID that user &#39;ann&#39; may read"
    # ... and through an inverse, adding and removing
    for action in ("link", "unlink"):
        answers = {}
        for target in (theirs, 999999):
            r = site.client.post(
                f"/client/{site.ids['c_ann']}/{action}",
                data={"csrf": token, "name": "deals", "target": str(target)},
                headers=HTMX,
            )
            answers[target] = link_error(r.text, "deals").replace(str(target), "ID")
        assert answers[theirs] == answers[999999] == "deal ID not found", action
    # without the CSRF token: refused, nothing written
    forged = site.client.post(f"/deal/{mine}/link", data={"name": "products", "target": str(nails)})
    assert forged.status_code == 403
    assert site.dump() == before
    # a record she may read but not change: the library's refusal, inline
    doc = crm.create("document", {"number": "Д-9", "kind": "act", "owner": "bob"})["id"]
    page = site.client.get(f"/document/{doc}").text
    assert 'action="/document/' not in page.split('id="links-deal"')[1].split("</div>")[0]  # no controls shown
    r = site.client.post(
        f"/document/{doc}/link", data={"csrf": token, "name": "deal", "target": str(mine)}, headers=HTMX
    )
    assert link_error(r.text, "deal") == f"user &#39;ann&#39; may not update document {doc} (scope for update: own)"
    assert crm.get("document", doc)["deal"] is None


def test_bad_addresses_answer_html_pages_outside_the_api(site):  # noqa: F811
    site.sign_in("ann")
    for path, status, text in (
        ("/deal/abc", 404, "deal abc not found"),
        ("/deal/999999", 404, "deal 999999 not found"),
        ("/deal/abc/edit", 404, "deal abc not found"),
        ("/nosuch/page/here", 404, "no page at /nosuch/page/here"),
    ):
        r = site.client.get(path)
        assert r.status_code == status and r.headers["content-type"].startswith("text/html"), path
        assert f'id="error-message">{text}<' in r.text, path
        assert 'class="top"' in r.text  # the signed-in page, with its navigation
    token = site.csrf()
    post = site.client.post("/deal/abc/link", data={"csrf": token, "name": "products", "target": "1"})
    assert post.status_code == 404 and post.headers["content-type"].startswith("text/html")
    assert (
        site.client.delete("/deal").status_code == 405
        and "text/html" in site.client.delete("/deal").headers["content-type"]
    )
    # the API and public forms still answer problem documents
    api = site.client.get("/api/v1/deal/abc")
    assert api.headers["content-type"].startswith("application/problem+json")
    assert site.client.get("/api/v1/nosuch").headers["content-type"].startswith("application/problem+json")
    assert site.client.get("/forms/nope").headers["content-type"].startswith("application/problem+json")


def test_the_card_reads_a_fixed_number_of_queries(site):  # noqa: F811
    """No N+1: the card's queries do not grow with its linked records and history."""
    crm = site.crm
    site.sign_in("dir")
    deal = site.ids["d_ann"]
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        if statement.strip().upper() != "BEGIN":
            statements.append(statement)

    event.listen(crm.engine, "before_cursor_execute", count)
    try:

        def card_queries() -> int:
            statements.clear()
            assert site.client.get(f"/deal/{deal}").status_code == 200
            return list(statements)

        def add(n: int, start: int) -> None:  # n more products, documents, tasks and calls
            ids = [
                p["id"]
                for p in crm.create_many(
                    "product", [{"name": f"Товар {i}", "sku": f"SKU-{i}"} for i in range(start, start + n)]
                )
            ]
            crm.update("deal", deal, {"products": crm.get("deal", deal)["products"] + ids})
            crm.create_many(
                "document", [{"number": f"Д-{i}", "kind": "act", "deal": deal} for i in range(start, start + n)]
            )
            crm.create_many(
                "task",
                [{"title": f"Задача {i}", "subject": {"entity": "deal", "id": deal}} for i in range(start, start + n)],
            )
            for i in range(n):
                crm.note("deal", deal, f"звонок {start + i}", kind="call")

        crm.update("deal", deal, {"amount": "100.00"})
        crm.move("deal", deal, "qualified")
        add(1, 0)  # one of each: every list has a member, as below
        few = card_queries()
        add(11, 1)
        many = card_queries()
        page = site.client.get(f"/deal/{deal}").text
        assert len(linked(page, "products")) == 12 and len(linked(page, "documents")) == 12
        assert len(linked(page, "tasks")) == 12
    finally:
        event.remove(crm.engine, "before_cursor_execute", count)
    assert len(many) == len(few), "\n".join(s[:90] for s in many)
    # the record is read once: one SELECT of the deal's row by id
    deal_reads = [s for s in many if re.match(r"\s*SELECT deal\.id, deal\.created_at", s)]
    assert len(deal_reads) == 1, deal_reads


def test_the_library_card_gives_moves_and_timeline_as_their_own_calls(site):  # noqa: F811
    crm = site.crm
    ann = crm.as_user("ann")
    deal = site.ids["d_ann"]
    ann.note("deal", deal, "позвонить")
    crm.create(
        "task", {"title": "Задача", "subject": {"entity": "deal", "id": deal}, "owner": "bob"}
    )  # hidden from ann
    card = ann.card("deal", deal, moves=True, timeline=10)
    assert card["moves"] == ann.allowed_moves("deal", deal)
    assert card["timeline"] == ann.timeline("deal", deal, limit=10)
    assert card["related"]["tasks"] == [] and card["related"] == crm.as_user("ann").card("deal", deal)["related"]
    assert set(ann.card("deal", deal)) == {"entity", "record", "links", "related"}
    assert "moves" not in ann.card("client", site.ids["c_ann"], moves=True)  # no stages
    # the system user reads the task: its inverse list has it, with its title
    assert [t["title"] for t in crm.card("deal", deal)["related"]["tasks"]] == ["Задача"]
