"""The journal on SQLite and PostgreSQL: each change kind with the exact diff recorded,
activities, the timeline (newest first, merging moves and linked records), the CLI, and
refusals that journal nothing."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app

MODEL = """\
metacrm: 1
name: journal
entities:
  client:
    owner: true
    fields:
      name: {type: string, required: true}
      city: {type: string}
  product:
    fields:
      name: {type: string, required: true}
  deal:
    owner: true
    fields:
      title:  {type: string, required: true}
      amount: {type: money}
      due:    {type: date}
    links:
      client:   {to: client, required: true, inverse: deals, on_delete: cascade}
      products: {to: product, many: true, inverse: deals}
    stages:
      initial: new
      states:
        new: {}
        qualified: {}
        won: {kind: won}
      transitions:
        new: [qualified]
        qualified: [won]
  task:
    fields:
      title: {type: string, required: true}
    links:
      subject: {to: [deal, client], inverse: tasks, on_delete: cascade}
roles:
  manager:
    client: {read: own, create: all, update: own, delete: own}
    deal: {read: own, create: all, update: own, delete: own, move: own}
    product: all
    task: all
"""


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "journal.yaml"
    path.write_text(MODEL, encoding="utf-8")
    return path


@pytest.fixture
def crm(db_url, model_path):
    crm = metacrm.connect(model_path, db_url)
    crm.migrate()
    crm.add_user("anna", roles=["manager"])
    yield crm
    crm.close()


def journal(crm, entity=None, record_id=None) -> list[dict]:
    table = crm.storage.journal_table
    query = select(table).order_by(table.c.id)
    if entity is not None:
        query = query.where(table.c.entity == entity)
    if record_id is not None:
        query = query.where(table.c.record_id == record_id)
    with crm.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def diffs(rows) -> list[tuple]:
    return [(r["entity"], r["record_id"], r["action"], r["changes"]) for r in rows]


@pytest.fixture
def base(crm):
    client = crm.create("client", {"name": "Ромашка", "city": "Москва", "owner": "anna"})
    p1, p2 = crm.create("product", {"name": "Сервер"}), crm.create("product", {"name": "Ноутбук"})
    return {"client": client["id"], "p1": p1["id"], "p2": p2["id"]}


def test_create_records_every_set_field(crm, base) -> None:
    anna = crm.as_user("anna")
    d = anna.create(
        "deal",
        {
            "title": "Поставка",
            "amount": "1200.50",
            "due": "2026-03-01",
            "client": base["client"],
            "products": [base["p2"], base["p1"]],
        },
    )
    [row] = journal(crm, "deal", d["id"])
    assert row["action"] == "create" and row["by"] == "anna" and row["at"] == d["created_at"]
    assert row["changes"] == {
        "title": [None, "Поставка"],
        "amount": [None, "1200.50"],
        "due": [None, "2026-03-01"],
        "client": [None, base["client"]],
        "products": [None, sorted([base["p1"], base["p2"]])],
        "owner": [None, "anna"],
        "stage": [None, "new"],
    }
    assert diffs(journal(crm, "client")) == [
        (
            "client",
            base["client"],
            "create",
            {"name": [None, "Ромашка"], "city": [None, "Москва"], "owner": [None, "anna"]},
        )
    ]


def test_create_many_one_row_per_record(crm, base) -> None:
    count = crm.create_many("product", [{"name": f"P{i}"} for i in range(5)], returning=False)
    assert count == 5
    rows = journal(crm, "product")[2:]
    assert [r["changes"] for r in rows] == [{"name": [None, f"P{i}"]} for i in range(5)]
    assert all(r["action"] == "create" and r["by"] is None for r in rows)


def test_update_records_only_changed_fields(crm, base) -> None:
    d = crm.create("deal", {"title": "Поставка", "amount": "100", "client": base["client"]})
    updated = crm.update("deal", d["id"], {"title": "Поставка", "amount": "250.00", "due": "2026-01-02"})
    rows = journal(crm, "deal", d["id"])
    assert [r["action"] for r in rows] == ["create", "update"]
    assert rows[1]["changes"] == {"amount": ["100.00", "250.00"], "due": [None, "2026-01-02"]}
    assert rows[1]["at"] == updated["updated_at"]
    crm.update("deal", d["id"], {"title": "Поставка"})  # nothing changed: nothing journaled
    assert len(journal(crm, "deal", d["id"])) == 2


def test_update_many_link_as_sorted_lists(crm, base) -> None:
    d = crm.create("deal", {"title": "Поставка", "client": base["client"], "products": [base["p1"]]})
    crm.update("deal", d["id"], {"products": [base["p2"], base["p1"]]})
    assert journal(crm, "deal", d["id"])[-1]["changes"] == {
        "products": [[base["p1"]], sorted([base["p1"], base["p2"]])]
    }


def test_link_and_unlink(crm, base) -> None:
    d = crm.create("deal", {"title": "Поставка", "client": base["client"]})
    crm.link("deal", d["id"], "products", base["p1"])
    crm.link("product", base["p2"], "deals", d["id"])  # through the inverse: journaled on the deal
    crm.unlink("deal", d["id"], "products", base["p1"])
    other = crm.create("client", {"name": "Василёк"})
    crm.link("deal", d["id"], "client", other["id"])
    t = crm.create("task", {"title": "Позвонить"})
    crm.link("task", t["id"], "subject", {"entity": "deal", "id": d["id"]})
    crm.unlink("task", t["id"], "subject")
    assert diffs(journal(crm, "deal", d["id"]))[1:] == [
        ("deal", d["id"], "link", {"products": [[], [base["p1"]]]}),
        ("deal", d["id"], "link", {"products": [[base["p1"]], sorted([base["p1"], base["p2"]])]}),
        ("deal", d["id"], "unlink", {"products": [sorted([base["p1"], base["p2"]]), [base["p2"]]]}),
        ("deal", d["id"], "link", {"client": [base["client"], other["id"]]}),
    ]
    assert diffs(journal(crm, "task", t["id"]))[1:] == [
        ("task", t["id"], "link", {"subject": [None, {"entity": "deal", "id": d["id"]}]}),
        ("task", t["id"], "unlink", {"subject": [{"entity": "deal", "id": d["id"]}, None]}),
    ]


def test_move_records_stage_and_note(crm, base) -> None:
    d = crm.as_user("anna").create("deal", {"title": "Поставка", "client": base["client"]})
    moved = crm.as_user("anna").move("deal", d["id"], "qualified", note="звонок")
    # a move is recorded once, in the stage history; the journal holds no copy of it
    assert [r["action"] for r in journal(crm, "deal", d["id"])] == ["create"]
    row = crm.timeline("deal", d["id"])[0]
    assert (row["action"], row["by"], row["changes"], row["text"]) == (
        "move",
        "anna",
        {"stage": ["new", "qualified"]},
        "звонок",
    )
    assert row["at"] == moved["updated_at"]
    # and the client's timeline shows the move of its deal, through the link
    seen = [(e["action"], e["via"]) for e in crm.timeline("client", base["client"]) if e["record_id"] == d["id"]]
    assert ("move", "deals") in seen


def test_delete_records_cascade(crm, base) -> None:
    client = crm.create("client", {"name": "Василёк"})
    d = crm.create("deal", {"title": "Поставка", "amount": "5", "client": client["id"], "products": [base["p1"]]})
    t = crm.create("task", {"title": "Позвонить", "subject": {"entity": "deal", "id": d["id"]}})
    deleted = crm.delete("client", client["id"])
    assert deleted == {"client": [client["id"]], "deal": [d["id"]], "task": [t["id"]]}
    rows = [r for r in journal(crm) if r["action"] == "delete"]
    assert sorted(diffs(rows)) == sorted(
        [
            ("client", client["id"], "delete", {"name": ["Василёк", None]}),
            ("deal", d["id"], "delete", {}),
            ("task", t["id"], "delete", {}),
        ]
    )
    assert {r["text"] for r in rows if r["entity"] != "client"} == {f"cascaded from client {client['id']}"}
    assert len({r["at"] for r in rows}) == 1


def test_note_and_kinds(crm, base) -> None:
    added = crm.as_user("anna").note("product", base["p1"], "  обсудили цену ", kind="call")
    assert (added["action"], added["kind"], added["text"], added["by"]) == ("note", "call", "обсудили цену", "anna")
    row = journal(crm, "product", base["p1"])[-1]
    assert (row["action"], row["kind"], row["text"], row["changes"]) == ("note", "call", "обсудили цену", {})
    with pytest.raises(metacrm.ValidationError, match="unknown activity kind 'cal'.*did you mean 'call'"):
        crm.note("product", base["p1"], "x", kind="cal")
    with pytest.raises(metacrm.ValidationError, match="needs a text"):
        crm.note("product", base["p1"], " ")
    with pytest.raises(metacrm.NotFound):
        crm.note("product", 999, "x")


def test_refusals_journal_nothing(crm, base) -> None:
    d = crm.create("deal", {"title": "Поставка", "client": base["client"]})  # owned by nobody: anna may not touch it
    before = journal(crm)
    anna = crm.as_user("anna")
    with pytest.raises(metacrm.PermissionDenied):
        anna.update("deal", d["id"], {"title": "x"})
    with pytest.raises(metacrm.PermissionDenied):
        anna.note("deal", d["id"], "x")
    with pytest.raises(metacrm.PermissionDenied):
        anna.delete("deal", d["id"])
    with pytest.raises(metacrm.TransitionError):
        crm.move("deal", d["id"], "won")
    with pytest.raises(metacrm.ValidationError):
        crm.create_many("product", [{"name": "ok"}, {"name": None}])
    with pytest.raises(metacrm.ValidationError):
        crm.update("deal", d["id"], {"amount": "-x"})
    with pytest.raises(metacrm.ValidationError):
        crm.link("deal", d["id"], "products", 999)
    assert journal(crm) == before


def test_timeline_newest_first_with_linked_records(crm, base) -> None:
    d = crm.create("deal", {"title": "Поставка", "client": base["client"]})
    crm.update("deal", d["id"], {"amount": "10"})
    t = crm.create("task", {"title": "Позвонить", "subject": {"entity": "deal", "id": d["id"]}})
    crm.move("deal", d["id"], "qualified", note="звонок")
    crm.note("deal", d["id"], "договорились", kind="meeting")
    crm.update("task", t["id"], {"title": "Перезвонить"})
    timeline = crm.timeline("deal", d["id"])
    assert [(e["entity"], e["action"], e["changes"], e["text"]) for e in timeline] == [
        ("task", "update", {"title": ["Позвонить", "Перезвонить"]}, None),
        ("deal", "note", {}, "договорились"),
        ("deal", "move", {"stage": ["new", "qualified"]}, "звонок"),  # once: the history row is in the journal
        ("task", "create", {"title": [None, "Позвонить"], "subject": [None, {"entity": "deal", "id": d["id"]}]}, None),
        ("deal", "update", {"amount": [None, "10.00"]}, None),
        (
            "deal",
            "create",
            {"title": [None, "Поставка"], "client": [None, base["client"]], "stage": [None, "new"]},
            None,
        ),
    ]
    assert [e["record_id"] for e in timeline if e["entity"] == "task"] == [t["id"], t["id"]]
    assert {e["via"] for e in timeline if e["entity"] == "task"} == {"tasks"}
    assert [e["at"] for e in timeline] == sorted((e["at"] for e in timeline), reverse=True)
    assert len(crm.timeline("deal", d["id"], limit=2)) == 2
    # the client sees its deal's journal too (an inverse link)
    assert [(e["entity"], e["action"]) for e in crm.timeline("client", base["client"])][:2] == [
        ("deal", "note"),
        ("deal", "move"),
    ]
    # stage history the journal does not hold (written before it, or by a migration) shows too
    with crm.engine.begin() as conn:
        conn.execute(crm.storage.journal_table.delete().where(crm.storage.journal_table.c.action == "move"))
    moves = [e for e in crm.timeline("deal", d["id"]) if e["action"] == "move"]
    assert [(e["changes"], e["text"], e["source"]) for e in moves] == [
        ({"stage": ["new", "qualified"]}, "звонок", "history:move")
    ]


def test_timeline_hides_linked_records_the_user_cannot_read(crm, base) -> None:
    anna = crm.as_user("anna")
    client = anna.create("client", {"name": "Свой"})
    anna.create("deal", {"title": "Моя", "client": client["id"]})
    crm.add_user("boss", roles=["manager"])  # an owner must be a user
    crm.create("deal", {"title": "Чужая", "client": client["id"], "owner": "boss"})
    mine = [(e["entity"], e["action"]) for e in anna.timeline("client", client["id"])]
    assert mine.count(("deal", "create")) == 1
    assert [(e["entity"], e["action"]) for e in crm.timeline("client", client["id"])].count(("deal", "create")) == 2
    other = crm.create("client", {"name": "Чужой"})
    with pytest.raises(metacrm.PermissionDenied):
        anna.timeline("client", other["id"])


def test_cli_note_and_history(crm, base, db_url, model_path) -> None:
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(app, [*args, "--model", str(model_path), "--db", db_url])
        assert result.exit_code == 0, result.output
        return result.stdout

    d = crm.create("deal", {"title": "Поставка", "client": base["client"]})
    crm.move("deal", d["id"], "qualified")
    out = json.loads(cli("note", "deal", str(d["id"]), "обсудили скидку", "--kind", "call", "--format", "json"))
    assert (out["kind"], out["text"], out["action"]) == ("call", "обсудили скидку", "note")
    doc = json.loads(cli("history", "deal", str(d["id"]), "--format", "json"))
    assert [(e["action"], e["kind"]) for e in doc] == [("note", "call"), ("move", None), ("create", None)]
    table = cli("history", "deal", str(d["id"]))
    lines = table.splitlines()
    assert "action" in lines[0] and "changes" in lines[0]
    assert "call" in lines[2] and "обсудили скидку" in lines[2]
    assert "stage: new -> qualified" in lines[3]
    stages = json.loads(cli("history", "deal", str(d["id"]), "--stages", "--format", "json"))
    assert [(h["from_stage"], h["to_stage"]) for h in stages] == [(None, "new"), ("new", "qualified")]
    result = runner.invoke(
        app, ["note", "deal", str(d["id"]), "x", "--kind", "fax", "--model", str(model_path), "--db", db_url]
    )
    assert result.exit_code != 0
