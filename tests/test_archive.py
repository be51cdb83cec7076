"""Soft delete on SQLite and PostgreSQL (``archive: true``, docs/archive.md): delete archives,
restore brings back, purge removes for good; archived records are hidden from lists, counts,
reports, the board, search, duplicate checks, inverse lists, roll-ups and link targets unless
asked for; writes to them are refused; the library, the CLI, the HTTP API and the web list
agree; migrations switch it on (columns added, counted) and off (refused while records are
archived)."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_sysfields
from conftest import dump_database

import metacrm
from metacrm.errors import ConflictError, NotFound, PermissionDenied, ValidationError

MODEL = """\
metacrm: 1
name: archiving
entities:
  client:
    archive: true
    owner: true
    fields:
      name: {type: string, required: true}
      email: {type: email, unique: true}
      city: {type: string}
      total: {type: money, rollup: "sum(deals.amount)"}
    search: [name]
    duplicates:
      - {field: name, match: name, action: block}
  deal:
    archive: true
    owner: true
    fields:
      title: {type: string, required: true}
      amount: {type: money}
      due: {type: datetime}
    links:
      client: {to: client, inverse: deals}
    stages:
      initial: new
      states:
        new: {}
        won: {kind: won}
      transitions:
        new: [won]
  call:
    fields:
      topic: {type: string, required: true}
    links:
      deal: {to: deal, inverse: calls, on_delete: cascade}
  log:
    fields:
      text: {type: string}
automations:
  gone:
    when: {entity: client, deleted: true}
    do:
      - create: log
        values: {text: "client gone"}
  late:
    when: {entity: deal, overdue: due}
    do:
      - create: log
        values: {text: "deal late"}
roles:
  manager:
    client: {read: own, create: all, update: own, delete: own}
    deal: {read: own, create: all, update: own, delete: own, move: own}
    call: all
    log: all
  viewer:
    client: {read: all, delete: none}
    deal: {read: all}
"""


def write_model(tmp_path: Path, text: str = MODEL, name: str = "model.yaml") -> Path:
    return test_sysfields.write_model(tmp_path, text, name)


@pytest.fixture
def crm(db_url, tmp_path):
    crm = metacrm.connect(write_model(tmp_path), db_url)
    crm.migrate()
    crm.add_user("anna", roles=["manager"])
    crm.add_user("boris", roles=["manager"])
    crm.add_user("vera", roles=["viewer"])
    yield crm
    crm.close()


def _entries(crm, entity: str, rid: int) -> list[str]:
    return [e["action"] for e in reversed(crm.timeline(entity, rid)) if e["source"] == "journal"]


# -- the library ---------------------------------------------------------------------------------


def test_delete_archives_and_restore_brings_back(crm) -> None:
    anna = crm.as_user("anna")
    c = anna.create("client", {"name": "Ромашка", "email": "a@romashka.ru"})
    other = anna.create("client", {"name": "Лютик"})
    assert anna.delete("client", c["id"]) == {"client": [c["id"]]}
    got = anna.get("client", c["id"])  # get still answers, the record marked archived
    assert got["archived_at"] is not None and got["archived_by"] == "anna" and got["version"] == 2
    assert [r["id"] for r in anna.find("client")] == [other["id"]]
    assert anna.count("client") == 1
    assert [r["id"] for r in anna.find("client", archived="only")] == [c["id"]]
    assert [r["id"] for r in anna.find("client", archived="include")] == [c["id"], other["id"]]
    assert anna.count("client", archived="include") == 2
    assert anna.count("client", "archived_at is not null", archived="include") == 1
    back = anna.restore("client", c["id"])
    assert back["archived_at"] is None and back["archived_by"] is None and back["version"] == 3
    assert anna.count("client") == 2
    assert _entries(crm, "client", c["id"]) == ["create", "archive", "restore"]


def test_archived_records_are_hidden_from_reads(crm) -> None:
    c = crm.create("client", {"name": "Ромашка", "city": "Тула"})
    keep = crm.create("client", {"name": "Лютик", "city": "Тула"})
    d1 = crm.create("deal", {"title": "Поставка", "amount": "100.00", "client": c["id"]})
    d2 = crm.create("deal", {"title": "Монтаж", "amount": "50.00", "client": c["id"]})
    assert crm.get("client", c["id"])["total"] == 150
    crm.delete("deal", d2["id"])
    assert crm.get("client", c["id"])["total"] == 100  # archived children leave the roll-up
    assert [r["id"] for r in crm.related("client", c["id"], "deals")] == [d1["id"]]
    assert [r["id"] for r in crm.card("client", c["id"])["related"]["deals"]] == [d1["id"]]
    funnel = crm.funnel("deal")
    assert funnel["stages"][0]["now"] == 1 and funnel["stages"][0]["amount"] == 100
    assert [row["count"] for row in crm.report_group("deal", "stage")["rows"]] == [1]
    assert crm.board("deal")["columns"][0]["count"] == 1
    crm.delete("client", c["id"])
    assert [h["id"] for h in crm.search("Ромашка")] == []
    assert [r["id"] for r in crm.find("deal", "client.city = 'Тула'")] == []  # a path never reaches it
    assert [r["id"] for r in crm.find("deal", "client = :c", {"c": c["id"]})] == [d1["id"]]  # its own value
    # the deal still names its archived client, by title
    assert crm.card("deal", d1["id"])["links"]["client"]["title"] == "Ромашка"
    assert [r["id"] for r in crm.related("deal", d1["id"], "client")] == [c["id"]]
    assert crm.report_group("client", "city")["rows"][0]["count"] == 1
    crm.restore("deal", d2["id"])
    assert crm.get("client", c["id"])["total"] == 150
    assert [h["id"] for h in crm.search("Лютик")] == [keep["id"]]


def test_writes_to_an_archived_record_are_refused(crm, db_url) -> None:
    c = crm.create("client", {"name": "Ромашка"})
    d = crm.create("deal", {"title": "Поставка", "client": c["id"]})
    crm.delete("deal", d["id"])
    before = dump_database(crm.engine)
    attempts = [
        (lambda: crm.update("deal", d["id"], {"title": "x"}), "deal 1 is archived: it cannot update; restore it first"),
        (lambda: crm.move("deal", d["id"], "won"), "restore it first"),
        (lambda: crm.unlink("deal", d["id"], "client"), "restore it first"),
        (lambda: crm.delete("deal", d["id"]), "deal 1 is already archived: purge removes it for good"),
    ]
    for attempt, message in attempts:
        with pytest.raises(ConflictError, match=message):
            attempt()
    with pytest.raises(ConflictError, match="client 1 is not archived: nothing to restore"):
        crm.restore("client", c["id"])
    with pytest.raises(ValidationError, match="call has no archive"):
        crm.restore("call", 1)
    assert dump_database(crm.engine) == before


def test_linking_to_an_archived_record_is_refused(crm) -> None:
    anna, boris = crm.as_user("anna"), crm.as_user("boris")
    c = anna.create("client", {"name": "Ромашка"})
    anna.delete("client", c["id"])
    with pytest.raises(ValidationError, match="deal.client: client 1 is archived: restore it before linking to it"):
        anna.create("deal", {"title": "x", "client": c["id"]})
    with pytest.raises(ValidationError, match="client 1 is archived"):
        crm.create_many("deal", [{"title": "y"}, {"title": "x", "client": c["id"]}])  # the system too
    d = anna.create("deal", {"title": "z"})
    with pytest.raises(ValidationError, match="client 1 is archived"):
        anna.link("deal", d["id"], "client", c["id"])
    # who may not read it learns no more than from a wrong id
    for guess in (c["id"], 999):
        with pytest.raises(ValidationError) as refused:
            boris.create("deal", {"title": "x", "client": guess})
        assert str(refused.value) == f"deal.client: no client with id {guess} that user 'boris' may read"
    assert crm.count("deal") == 1


def test_a_guessed_archived_id_reveals_nothing_through_filters(crm) -> None:
    anna, boris = crm.as_user("anna"), crm.as_user("boris")
    c = anna.create("client", {"name": "Ромашка", "city": "Тула"})
    anna.delete("client", c["id"])
    for who in (anna, boris):
        for guess in (c["id"], 999):
            assert who.find("client", "id = :g", {"g": guess}) == []
            assert who.count("client", "id = :g and city = 'Тула'", {"g": guess}) == 0
            assert who.find("deal", "client.id = :g", {"g": guess}) == []
    assert boris.find("client", "id = :g", {"g": c["id"]}, archived="include") == []  # not boris's to read
    with pytest.raises(NotFound):
        boris.get("client", 999)
    with pytest.raises(PermissionDenied):
        boris.get("client", c["id"])  # as for a live record boris may not read


def test_unique_values_and_duplicate_rules(crm) -> None:
    c = crm.create("client", {"name": "Ромашка", "email": "a@romashka.ru"})
    crm.delete("client", c["id"])
    # an archived record keeps its unique value...
    with pytest.raises(ValidationError, match="'a@romashka.ru' is already used by archived client 1 .restore or purge it."):
        crm.create("client", {"name": "Другая", "email": "a@romashka.ru"})
    # ...but is no duplicate: a new record of the same name is accepted
    assert crm.find_duplicates("client", {"name": "Ромашка"}) == []
    twin = crm.create("client", {"name": "Ромашка"})
    assert crm.duplicates("client") == []
    with pytest.raises(ValidationError, match=f"duplicate of client {twin['id']}"):
        crm.restore("client", c["id"])  # a live record took its place: merge or purge
    assert crm.get("client", c["id"])["archived_at"] is not None
    crm.purge("client", twin["id"])
    assert crm.restore("client", c["id"])["archived_at"] is None


def test_purge_removes_for_good_with_the_links_rules(crm) -> None:
    c = crm.create("client", {"name": "Ромашка"})
    d = crm.create("deal", {"title": "Поставка", "client": c["id"]})
    call = crm.create("call", {"topic": "звонок", "deal": d["id"]})
    crm.delete("client", c["id"])
    with pytest.raises(ValidationError, match="cannot delete: client 1 is linked from deal 1 through deal.client"):
        crm.purge("client", c["id"])  # restrict: the deal (live or archived) still points at it
    crm.delete("deal", d["id"])
    assert crm.get("call", call["id"])["deal"] == d["id"]  # archiving touches no link
    assert crm.purge("deal", d["id"]) == {"deal": [d["id"]], "call": [call["id"]]}  # cascade
    assert crm.purge("client", c["id"]) == {"client": [c["id"]]}
    with pytest.raises(NotFound):
        crm.get("client", c["id"])
    live = crm.create("client", {"name": "Лютик"})
    assert crm.purge("client", live["id"]) == {"client": [live["id"]]}  # a live record may be purged too
    actions = [(e["entity"], e["record_id"], e["action"]) for e in _journal(crm)]
    assert ("deal", d["id"], "purge") in actions and ("call", call["id"], "delete") in actions
    assert ("client", live["id"], "delete") in actions  # a live record's purge is its delete


def _journal(crm):
    from sqlalchemy import select

    table = crm.storage.journal_table
    with crm.engine.connect() as conn:
        return conn.execute(select(table).order_by(table.c.id)).mappings().all()


def test_purge_archived_and_rights(crm) -> None:
    anna, boris, vera = crm.as_user("anna"), crm.as_user("boris"), crm.as_user("vera")
    mine = [anna.create("client", {"name": n}) for n in ("А", "Б", "В")]
    theirs = boris.create("client", {"name": "Г"})
    for rec in mine[:2]:
        anna.delete("client", rec["id"])
    boris.delete("client", theirs["id"])
    with pytest.raises(PermissionDenied, match="user 'boris' may not delete client 1"):
        boris.restore("client", mine[0]["id"])  # restore needs the delete right on the record
    with pytest.raises(PermissionDenied, match="may not delete client records"):
        vera.purge_archived("client")
    with pytest.raises(PermissionDenied):
        vera.restore("client", mine[0]["id"])
    assert anna.purge_archived("client") == {"client": [mine[0]["id"], mine[1]["id"]]}  # only hers
    assert [r["id"] for r in crm.find("client", archived="only")] == [theirs["id"]]
    with pytest.raises(ValidationError, match="deal has no archive|call has no archive"):
        crm.purge_archived("call")


def test_archived_option_is_checked(crm) -> None:
    with pytest.raises(ValidationError, match="client: archived must be one of exclude, only, include, not 'yes'"):
        crm.find("client", archived="yes")
    with pytest.raises(ValidationError, match="call has no archive .the entity does not declare archive: true."):
        crm.find("call", archived="only")
    assert crm.find("call", archived="exclude") == []


def test_automations_see_the_archive_as_the_delete(crm) -> None:
    c = crm.create("client", {"name": "Ромашка"})
    crm.delete("client", c["id"])
    assert crm.count("log") == 1  # `deleted` fired once, with the record still readable
    crm.restore("client", c["id"])
    crm.delete("client", c["id"])
    assert crm.count("log") == 2
    crm.purge("client", c["id"])
    assert crm.count("log") == 2  # the purge of an archived record fires nothing more
    late = crm.create("deal", {"title": "late", "due": "2020-01-01T10:00:00Z"})
    crm.create("deal", {"title": "later", "due": "2020-01-02T10:00:00Z"})
    crm.delete("deal", late["id"])
    crm.tick()
    assert crm.count("log", "text = 'deal late'") == 1  # the archived deal is overdue no more


# -- migrations ------------------------------------------------------------------------------------

PLAIN = MODEL.replace("    archive: true\n", "")


def test_migrations_switch_archive_on_and_off(db_url, tmp_path) -> None:
    plain = metacrm.connect(write_model(tmp_path, PLAIN, "plain.yaml"), db_url)
    plain.migrate()
    a = plain.create("client", {"name": "Ромашка"})
    plain.create("client", {"name": "Лютик"})
    plain.create("deal", {"title": "Поставка", "amount": "10.00", "client": a["id"]})
    on = metacrm.connect(write_model(tmp_path), db_url)
    plan = on.migrate(dry_run=True)
    added = {s.entity: s for s in plan if s.kind == "add_archive"}
    assert {e: (s.count, s.klass) for e, s in added.items()} == {"client": (2, "safe"), "deal": (1, "safe")}
    assert "add columns archived_at, archived_by" in added["client"].description
    assert any(s.kind == "add_index" and s.entity == "deal" and "archived_at" in s.target for s in plan)
    on.migrate()
    assert on.funnel("deal")["stages"][0]["now"] == 1
    assert [r["archived_at"] for r in on.find("client")] == [None, None]  # existing records stay live
    on.delete("client", a["id"])
    off = metacrm.connect(write_model(tmp_path, PLAIN, "plain.yaml"), db_url)
    step = next(s for s in off.migrate(dry_run=True) if s.kind == "remove_archive")
    assert (step.count, step.klass) == (1, "needs data")
    before = dump_database(on.engine)
    with pytest.raises(metacrm.MigrationError, match="client.archive: 1 record is archived; turning archive off"):
        off.migrate()
    assert dump_database(on.engine) == before
    on.restore("client", a["id"])
    off.migrate()
    assert [r["name"] for r in off.find("client")] == ["Ромашка", "Лютик"]
    assert off.funnel("deal")["stages"][0]["amount"] == 10
    assert "archived_at" not in off.get("client", a["id"])
    for crm in (plain, on, off):
        crm.close()


# -- the command line ----------------------------------------------------------------------------


def test_cli(crm, db_url, tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from metacrm.cli.main import app

    runner = CliRunner()
    common = ["--model", str(tmp_path / "model.yaml"), "--db", db_url]

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [*args, *common])
        assert result.exit_code == code, result.output
        return result.output

    c = crm.create("client", {"name": "Ромашка"})
    crm.create("client", {"name": "Лютик"})
    assert run("delete", "client", str(c["id"])).strip() == f"archived client {c['id']}"
    assert "Ромашка" not in run("list", "client")
    assert json.loads(run("list", "client", "--archived", "-f", "json"))[0]["id"] == c["id"]
    assert len(json.loads(run("list", "client", "--with-archived", "-f", "json"))) == 2
    assert "give one" in run("list", "client", "--archived", "--with-archived", code=2)
    assert "already archived" in run("delete", "client", str(c["id"]), code=1)
    assert json.loads(run("restore", "client", str(c["id"]), "-f", "json"))["archived_at"] is None
    assert "is not archived" in run("restore", "client", str(c["id"]), code=1)
    run("delete", "client", str(c["id"]))
    assert json.loads(run("purge", "client", "--archived", "-f", "json")) == {"purged": {"client": [c["id"]]}}
    assert "give a record ID, or --archived" in run("purge", "client", code=2)
    assert "call has no archive" in run("list", "call", "--archived", code=1)


# -- HTTP and the web list -----------------------------------------------------------------------


def test_http(crm) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from metacrm.runtime.tokens import create_token
    from metacrm.web import create_app

    client = TestClient(create_app(crm))
    anna = {"Authorization": f"Bearer {create_token(crm, 'anna')['token']}"}
    boris = {"Authorization": f"Bearer {create_token(crm, 'boris')['token']}"}
    c = crm.as_user("anna").create("client", {"name": "Ромашка"})
    url = f"/api/v1/client/{c['id']}"
    assert client.delete(url, headers=boris).status_code == 404  # not boris's: as if absent
    r = client.delete(url, headers=anna)
    assert r.status_code == 200 and r.json() == {"archived": {"client": [c["id"]]}}
    assert client.get("/api/v1/client", headers=anna).json()["items"] == []
    listed = client.get("/api/v1/client?archived=only&count=true", headers=anna).json()
    assert [i["id"] for i in listed["items"]] == [c["id"]] and listed["count"] == 1
    r = client.get("/api/v1/client?archived=maybe", headers=anna)
    assert r.status_code == 400 and "archived must be one of exclude, only, include" in r.text
    assert client.get(url, headers=anna).json()["archived_by"] == "anna"
    r = client.patch(url, json={"name": "x"}, headers=anna)
    assert r.status_code == 409 and "restore it first" in r.json()["detail"]
    assert client.post(f"{url}/restore", headers=boris).status_code == 404
    r = client.post(f"{url}/restore", headers=anna)
    assert r.status_code == 200 and r.json()["archived_at"] is None and r.headers["ETag"] == '"3"'
    assert client.post(f"{url}/restore", headers=anna).status_code == 409
    r = client.post(f"{url}/purge", headers=anna)
    assert r.status_code == 200 and r.json() == {"purged": {"client": [c["id"]]}}
    assert client.get(url, headers=anna).status_code == 404
    doc = client.get("/api/v1/openapi.json", headers=anna).json()
    assert "post" in doc["paths"]["/api/v1/client/{record_id}/restore"]
    assert "archived_at" in doc["components"]["schemas"]["client.read"]["properties"]
    assert "/api/v1/call/{record_id}/restore" not in doc["paths"]


def test_web_list_hides_archived_records(crm) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from test_web_pages import csrf_of

    from metacrm.runtime.passwords import set_password
    from metacrm.web import create_app

    set_password(crm, "anna", "correct horse battery")
    anna = crm.as_user("anna")
    gone = anna.create("client", {"name": "Ромашка"})
    anna.create("client", {"name": "Лютик"})
    anna.delete("client", gone["id"])
    client = TestClient(create_app(crm))
    token = csrf_of(client.get("/login").text)
    client.post("/login", data={"login": "anna", "password": "correct horse battery", "csrf": token, "next": "/"})
    page = client.get("/client").text
    assert "Лютик" in page and "Ромашка" not in page and 'id="archive-link"' in page
    archived = client.get("/client?archived=only").text
    assert "Ромашка" in archived and "Лютик" not in archived
    card = client.get(f"/client/{gone['id']}").text
    assert 'id="archived"' in card and 'id="restore"' in card
    r = client.post(f"/client/{gone['id']}/restore", data={"csrf": csrf_of(card)}, follow_redirects=False)
    assert r.status_code == 303
    assert crm.get("client", gone["id"])["archived_at"] is None
    assert "Ромашка" in client.get("/client").text
    deal = anna.create("deal", {"title": "Поставка"})
    assert 'data-stage="won"' in client.get(f"/deal/{deal['id']}").text
    anna.delete("deal", deal["id"])
    card = client.get(f"/deal/{deal['id']}").text
    assert 'id="archived"' in card and 'data-stage="won"' not in card  # no move offered


def test_csv_export_leaves_archived_records_out_and_import_names_the_system_columns(crm, tmp_path) -> None:
    import io

    from metacrm.io.csv_io import export_csv, import_csv

    crm.create("client", {"name": "Ромашка"})
    gone = crm.create("client", {"name": "Лютик"})
    crm.delete("client", gone["id"])
    out = io.StringIO()
    assert export_csv(crm, "client", out) == 1
    text = out.getvalue()
    assert "Ромашка" in text and "Лютик" not in text
    path = tmp_path / "clients.csv"
    path.write_text("name,archived_at\nВасилёк,2026-01-01\n", encoding="utf-8")
    with pytest.raises(ValidationError, match="column 'archived_at' is set by the system"):
        import_csv(crm, "client", path)
    assert crm.count("client") == 1


def test_a_concurrent_delete_is_refused_not_archived_twice(crm, monkeypatch) -> None:
    c = crm.create("client", {"name": "Ромашка"})
    crm.delete("client", c["id"])
    real = crm._get_row

    def read_before_the_other_committed(conn, ent, record_id, action="read", *, archived=False):
        return {**real(conn, ent, record_id), "archived_at": None}  # the row as it was

    monkeypatch.setattr(crm, "_get_row", read_before_the_other_committed)
    with pytest.raises(ConflictError, match="client 1 was archived .or removed. by someone else meanwhile"):
        crm.delete("client", c["id"])
    monkeypatch.undo()
    assert _entries(crm, "client", c["id"]) == ["create", "archive"]
    assert crm.get("client", c["id"])["version"] == 2
