"""A many-link to several entities (``to: [deal, client], many: true``): stored in a join table
with the target's entity, set, read, filtered, unlinked, deleted, merged and rolled up, on SQLite
and PostgreSQL (docs/links.md#polymorphic-links)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import dump_database

import metacrm
from metacrm.errors import ModelError, ValidationError

MODEL = """\
metacrm: 1
name: notes
entities:
  client:
    fields:
      name: {type: string, required: true}
      notes_count: {type: integer, rollup: "count(notes)"}
    duplicates:
      - {match: name, field: name}
  deal:
    fields:
      title: {type: string, required: true}
      notes_count: {type: integer, rollup: "count(notes)"}
  note:
    fields:
      text: {type: string, required: true}
    links:
      about: {to: [deal, client], many: true, inverse: notes, on_delete: restrict}
roles:
  boss:
    "*": all
"""


@pytest.fixture
def crm(db_url, tmp_path: Path):
    path = tmp_path / "model.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    crm.create("client", {"name": "Ромашка"})
    crm.create("client", {"name": "Лютик"})
    crm.create("deal", {"title": "Поставка"})
    yield crm
    crm.close()


def test_create_read_link_unlink(crm):
    n = crm.create("note", {"text": "a", "about": ["deal:1", {"entity": "client", "id": 2}, "client:2"]})
    assert n["about"] == [{"entity": "client", "id": 2}, {"entity": "deal", "id": 1}]
    assert crm.get("note", n["id"])["about"] == n["about"]
    after = crm.link("note", n["id"], "about", "client:1")
    assert {"entity": "client", "id": 1} in after["about"] and after["version"] == 2
    assert crm.link("note", n["id"], "about", "client:1")["version"] == 2  # already linked
    after = crm.unlink("note", n["id"], "about", {"entity": "deal", "id": 1})
    assert after["about"] == [{"entity": "client", "id": 1}, {"entity": "client", "id": 2}]
    with pytest.raises(metacrm.NotFound, match="not linked to deal 1"):
        crm.unlink("note", n["id"], "about", "deal:1")
    updated = crm.update("note", n["id"], {"about": ["deal:1"]})
    assert updated["about"] == [{"entity": "deal", "id": 1}]
    assert [r["id"] for r in crm.related("deal", 1, "notes")] == [n["id"]]
    assert crm.related("client", 1, "notes") == []
    card = crm.card("note", n["id"])
    assert card["links"]["about"][0]["title"] == "Поставка"
    assert [r["id"] for r in crm.related("note", n["id"], "about")] == [1]


def test_bad_values_refused(crm):
    before = dump_database(crm.engine)
    with pytest.raises(ValidationError, match=r"note.about: 'user:1' links to 'user', which this link cannot reach"):
        crm.create("note", {"text": "a", "about": ["user:1"]})
    with pytest.raises(ValidationError, match=r"note.about: no deal with id 9"):
        crm.create("note", {"text": "a", "about": ["deal:9"]})
    assert dump_database(crm.engine) == before


def test_inverse_link_filters_and_rollups(crm):
    a = crm.create("note", {"text": "a", "about": ["deal:1", "client:1"]})
    crm.create("note", {"text": "b", "about": ["client:1"]})
    crm.link("client", 2, "notes", a["id"])  # through the inverse
    assert crm.get("note", a["id"])["about"] == [
        {"entity": "client", "id": 1},
        {"entity": "client", "id": 2},
        {"entity": "deal", "id": 1},
    ]
    assert [c["notes_count"] for c in crm.find("client")] == [2, 1]
    assert crm.get("deal", 1)["notes_count"] == 1
    assert [r["name"] for r in crm.find("client", where="notes.text = 'b'")] == ["Ромашка"]
    assert [r["title"] for r in crm.find("deal", where="notes.text = 'b'")] == []  # client 1 = deal 1 by id only
    assert crm.count("note", where="about is null") == 0
    crm.unlink("client", 2, "notes", a["id"])
    assert [c["notes_count"] for c in crm.find("client")] == [2, 0]


def test_delete_restrict_and_cascade_of_the_note(crm):
    n = crm.create("note", {"text": "a", "about": ["deal:1"]})
    with pytest.raises(ValidationError, match=r"cannot delete: deal 1 is linked from note .* through note.about"):
        crm.delete("deal", 1)
    crm.delete("client", 1)  # no note points at client 1 (the note's deal 1 has the same id)
    crm.delete("note", n["id"])
    assert crm.get("deal", 1)["notes_count"] == 0
    crm.delete("deal", 1)


def test_merge_moves_the_pairs(crm):
    n = crm.create("note", {"text": "a", "about": ["client:2", "deal:1"]})
    crm.create("note", {"text": "b", "about": ["client:1"]})
    crm.merge("client", 1, 2)
    assert crm.get("note", n["id"])["about"] == [{"entity": "client", "id": 1}, {"entity": "deal", "id": 1}]
    assert crm.get("client", 1)["notes_count"] == 2


def test_model_checks(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MODEL.replace("inverse: notes,", "inverse: notes, fields: {a: {type: integer}},"), encoding="utf-8")
    with pytest.raises(ModelError, match="a many-link to several entities carries no fields yet"):
        metacrm.load_model(path)
    path.write_text(
        MODEL.replace(
            'notes_count: {type: integer, rollup: "count(notes)"}\n  note',
            'notes_count: {type: integer, rollup: "count(notes)"}\n      x: {type: integer}\n  note',
        ).replace(
            "      text: {type: string, required: true}\n",
            '      text: {type: string, required: true}\n      n: {type: integer, rollup: "count(about)"}\n',
        ),
        encoding="utf-8",
    )
    with pytest.raises(
        ModelError, match="'about' links to several entities; a roll-up aggregates over the records of one"
    ):
        metacrm.load_model(path)


def test_cli_and_api(crm, tmp_path, db_url):
    from typer.testing import CliRunner

    from metacrm.cli.main import app

    runner = CliRunner()
    args = ["--model", str(tmp_path / "model.yaml"), "--db", db_url]
    made = runner.invoke(app, ["create", "note", "text=a", "about=deal:1,client:2", "--format", "json", *args])
    assert made.exit_code == 0, made.output
    shown = runner.invoke(app, ["get", "note", "1", *args]).output
    assert "-> about: client 2 «Лютик», deal 1 «Поставка»" in shown
    listed = runner.invoke(app, ["list", "note", "--columns", "id,about", *args]).output
    assert "Лютик, Поставка" in listed
    bad = runner.invoke(app, ["link", "note", "1", "about", "deal:7", *args])
    assert bad.exit_code == 1 and "note.about: no deal with id 7" in bad.output


def test_web_card_links_and_unlinks(crm):
    from conftest import require_module

    require_module("fastapi", why="the web app is the [web] extra")
    require_module("httpx", why="the pages are driven through httpx")
    from tests.test_web_pages import PASSWORD, TestClient, create_app, csrf_of, set_password

    crm.add_user("boss", roles=["boss"])
    set_password(crm, "boss", PASSWORD)
    n = crm.create("note", {"text": "a", "about": ["deal:1"]})
    client = TestClient(create_app(crm), follow_redirects=False)
    try:
        token = csrf_of(client.get("/login").text)
        client.post("/login", data={"login": "boss", "password": PASSWORD, "csrf": token, "next": "/"})
        card = client.get(f"/note/{n['id']}").text
        assert '<a href="/deal/1">Поставка</a>' in card
        token = csrf_of(card)
        hx = {"HX-Request": "true"}
        added = client.post(
            f"/note/{n['id']}/link", data={"csrf": token, "name": "about", "target": "client:2"}, headers=hx
        )
        assert '<a href="/client/2">Лютик</a>' in added.text
        removed = client.post(
            f"/note/{n['id']}/unlink", data={"csrf": token, "name": "about", "target": "deal:1"}, headers=hx
        )
        assert '<a href="/deal/1">' not in removed.text
        assert crm.get("note", n["id"])["about"] == [{"entity": "client", "id": 2}]
        assert client.get(f"/note/{n['id']}/edit").status_code == 200
        assert '<a href="/note/' in client.get("/client/2").text  # the inverse list on the client's card
    finally:
        client.close()
