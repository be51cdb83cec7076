"""The card's files in the web app, in-process on SQLite and PostgreSQL: the file field shows
its file's name as a link, the files section lists them, uploads (multipart, with the session's
CSRF token) and removes them, serves them with their headers; a hidden record's file answers
404 as an absent one; a refused upload comes back to the card with its message."""

from __future__ import annotations

import re

import pytest
from test_files import migrated, png

from tests.test_web_pages import PASSWORD, TestClient, create_app, csrf_of, set_password


@pytest.fixture
def web(db_url, tmp_path):
    crm = migrated(db_url, tmp_path)
    for login in ("anna", "boris"):
        set_password(crm, login, PASSWORD)
    clients = {}
    for login in ("anna", "boris"):
        client = TestClient(create_app(crm), raise_server_exceptions=False, follow_redirects=False)
        token = csrf_of(client.get("/login").text)
        client.post("/login", data={"login": login, "password": PASSWORD, "csrf": token, "next": "/"})
        clients[login] = client
    yield crm, clients
    for client in clients.values():
        client.close()
    crm.close()


def test_the_card_uploads_lists_serves_and_removes_files(web) -> None:
    crm, clients = web
    anna = clients["anna"]
    deal = crm.as_user("anna").create("deal", {"title": "Поставка"})["id"]
    card = anna.get(f"/deal/{deal}").text
    token = csrf_of(card)
    assert 'enctype="multipart/form-data"' in card and '<option value="contract">' in card
    sent = anna.post(
        f"/deal/{deal}/files", data={"csrf": token, "field": "contract"}, files={"file": ("c.pdf", b"%PDF-1")}
    )
    assert sent.status_code == 303 and sent.headers["location"] == f"/deal/{deal}"
    anna.post(f"/deal/{deal}/files", data={"csrf": token, "field": ""}, files={"file": ("p.png", png())})
    (contract, image) = crm.files("deal", deal)
    assert contract["field"] == "contract" and contract["created_by"] == "anna" and image["field"] is None
    card = anna.get(f"/deal/{deal}").text
    field = re.search(r'<dd data-field="contract">(.*?)</dd>', card).group(1)
    assert field == f'<a href="/deal/{deal}/files/{contract["id"]}">c.pdf</a>'
    assert f'<tr data-file="{image["id"]}">' in card and "p.png" in card
    got = anna.get(f"/deal/{deal}/files/{contract['id']}")
    assert got.status_code == 200 and got.content == b"%PDF-1" and got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-disposition"].startswith('attachment; filename="c.pdf"')
    assert anna.get(f"/deal/{deal}/files/{image['id']}").headers["content-disposition"].startswith("inline;")
    removed = anna.post(f"/deal/{deal}/files/{image['id']}/detach", data={"csrf": token})
    assert removed.status_code == 303 and [f["id"] for f in crm.files("deal", deal)] == [contract["id"]]
    edit = anna.get(f"/deal/{deal}/edit").text
    assert 'name="contract"' not in edit  # the form edits no file field: the card's files section does


def test_refusals_come_back_to_the_card_and_hidden_files_are_404(web) -> None:
    crm, clients = web
    anna, boris = clients["anna"], clients["boris"]
    deal = crm.as_user("anna").create("deal", {"title": "A"})["id"]
    token = csrf_of(anna.get(f"/deal/{deal}").text)
    bad = anna.post(f"/deal/{deal}/files", data={"csrf": token}, files={"file": ("x.exe", b"x")})
    assert bad.status_code == 303 and "error=" in bad.headers["location"]
    assert "deal attachments: &#39;x.exe&#39;" in anna.get(bad.headers["location"]).text
    stale = anna.post(f"/deal/{deal}/files", data={"csrf": "wrong"}, files={"file": ("x.txt", b"x")})
    assert stale.status_code == 403 and crm.files("deal", deal) == []
    secret = crm.as_user("anna").attach("deal", deal, b"secret", name="s.txt")
    hidden = boris.get(f"/deal/{deal}/files/{secret['id']}")
    absent = boris.get(f"/deal/{deal}/files/999999")
    assert hidden.status_code == absent.status_code == 404 and b"secret" not in hidden.content
    boris_token = csrf_of(boris.get("/deal").text)
    upload = boris.post(f"/deal/{deal}/files", data={"csrf": boris_token}, files={"file": ("x.txt", b"x")})
    assert upload.status_code == 404
    detach = boris.post(f"/deal/{deal}/files/{secret['id']}/detach", data={"csrf": boris_token})
    assert detach.status_code == 404 and len(crm.files("deal", deal)) == 1


def test_the_card_reads_its_files_in_one_query_however_many(web) -> None:
    from sqlalchemy import event

    crm, clients = web
    anna = clients["anna"]
    counts = []
    for many in (1, 12):
        deal = crm.as_user("anna").create("deal", {"title": f"{many}"})["id"]
        for i in range(many):
            crm.attach("deal", deal, f"{i}".encode(), name=f"{i}.txt")
        anna.get(f"/deal/{deal}")  # warm: the session and the user are cached alike for both
        statements: list[str] = []

        def count(conn, cursor, statement, *args, seen=statements):
            seen.append(statement)

        event.listen(crm.engine, "before_cursor_execute", count)
        try:
            page = anna.get(f"/deal/{deal}")
        finally:
            event.remove(crm.engine, "before_cursor_execute", count)
        assert page.status_code == 200 and page.text.count("<tr data-file=") == many
        counts.append(len(statements))
    assert counts[0] == counts[1]
