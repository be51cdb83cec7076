"""Duplicate control on SQLite and PostgreSQL: rules on normalised e-mail, phone and fuzzy
name within a city; block refuses on create and reports per row on import, warn lets through;
a fixed set of clients gives the expected groups; merge keeps every link and history entry."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.errors import ValidationError

pytestmark = pytest.mark.filterwarnings("error::metacrm.DuplicateWarning")  # every expected warning is asserted

MODEL = """\
metacrm: 1
name: dupes
region: RU
entities:
  client:
    fields:
      name:  {type: string, required: true}
      email: {type: email}
      phone: {type: phone}
      city:  {type: string}
      note:  {type: text}
    links:
      partner: {to: client, inverse: partners_of, on_delete: set_null}
    duplicates:
      - {match: email, field: email, action: block}
      - {match: phone, field: phone, action: warn}
      - {match: name, field: name, within: city, threshold: 85, action: warn}
  lead:
    owner: true
    fields:
      name:  {type: string, required: true}
      email: {type: email}
    duplicates:
      - {match: email, field: email}
  product:
    fields:
      name: {type: string, required: true}
  deal:
    fields:
      title: {type: string, required: true}
    links:
      client:   {to: client, required: true, inverse: deals, on_delete: restrict}
      products: {to: product, many: true, inverse: deals}
    stages:
      initial: new
      states: {new: {}, won: {kind: won}}
      transitions: {new: [won]}
  tag:
    fields:
      name: {type: string, required: true}
    links:
      clients: {to: client, many: true, inverse: tags}
  task:
    fields:
      title: {type: string, required: true}
    links:
      subject: {to: [deal, client], inverse: tasks, on_delete: cascade}
roles:
  manager:
    lead: {read: own, create: all, update: own, delete: own}
"""

CLIENTS = [
    {"name": "ООО Ромашка", "email": "info@romashka.ru", "phone": "+7 495 123-45-67", "city": "Москва"},  # 1
    {"name": "Ромашка ООО", "phone": "8 (495) 123 45 67", "city": "Москва"},  # 2: phone of 1, name of 1
    {"name": "ООО Ромашка", "city": "Казань"},  # 3: same name, other city
    {"name": "Acme Trading", "email": "sales@acme.com", "city": "Berlin"},  # 4
    {"name": "ACME  trading", "city": "Berlin", "note": "from the fair"},  # 5: name of 4
    {"name": "Globex", "phone": "+7 812 000-00-01", "city": "Berlin"},  # 6
    {"name": "Initech", "city": None},  # 7: no city, never a name duplicate
    {"name": "Initech", "city": None},  # 8
]


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "dupes.yaml"
    path.write_text(MODEL, encoding="utf-8")
    return path


@pytest.fixture
def crm(db_url, model_path):
    crm = metacrm.connect(model_path, db_url)
    crm.migrate()
    with pytest.warns(metacrm.DuplicateWarning) as caught:  # the data has duplicates on purpose
        crm.create_many("client", CLIENTS)
    assert len(caught) == 1  # one warning for the whole call, however many records matched
    assert sorted((m.index, m.field, m.existing) for m in caught[0].message.matches) == [
        (1, "name", None),  # record 2 of the list: name of record 1
        (1, "phone", None),  # and its phone
        (4, "name", None),  # record 5: name of record 4
    ]
    yield crm
    crm.close()


def test_model_rules(crm):
    rules = crm.model.entity("client").duplicates
    assert [(r.match, r.field, r.within, r.threshold, r.action) for r in rules] == [
        ("email", "email", None, 90, "block"),
        ("phone", "phone", None, 90, "warn"),
        ("name", "name", "city", 85, "warn"),
    ]


def test_expected_groups(crm):
    groups = [(g["match"], g["action"], g["records"]) for g in crm.duplicates("client")]
    assert groups == [("phone", "warn", [1, 2]), ("name", "warn", [1, 2]), ("name", "warn", [4, 5])]


def test_block_refuses_create_naming_rule_field_and_record(crm):
    with pytest.raises(ValidationError) as info:
        crm.create("client", {"name": "Другая", "email": "INFO@romashka.ru"})
    message = str(info.value)
    assert "client.email" in message and "client 1" in message and "email on email" in message
    assert crm.count("client") == len(CLIENTS)


def test_warn_lets_through_and_is_listed(crm):
    with pytest.warns(metacrm.DuplicateWarning, match=r"client: duplicate of client 6 \(rule: name on name"):
        record = crm.create("client", {"name": "Globex", "city": "Berlin"})
    assert record["id"] == 9
    found = crm.find_duplicates("client", {"name": "globex", "city": "Berlin"})
    assert {(f["match"], f["action"], f["id"]) for f in found} == {("name", "warn", 6)}
    assert ("name", "warn", [6, 9]) in [(g["match"], g["action"], g["records"]) for g in crm.duplicates("client")]


def test_import_reports_per_row(crm):
    rows = [
        {"name": "Новый", "email": "new@example.com"},
        {"name": "Копия", "email": "sales@ACME.com"},  # stored client 4
        {"name": "Ещё", "email": "new@example.com"},  # record 0 of this batch
    ]
    with pytest.raises(ValidationError) as info:
        crm.create_many("client", rows)
    issues = [(i.index, i.field) for i in info.value.issues]
    assert issues == [(1, "email"), (2, "email")]
    assert "client 4" in info.value.issues[0].message
    assert "record 0 of this batch" in info.value.issues[1].message
    assert crm.count("client") == len(CLIENTS)


def test_merge_keeps_links_history_and_activities(crm):
    product = crm.create("product", {"name": "Чай"})
    deal = crm.create("deal", {"title": "Поставка", "client": 2, "products": [product["id"]]})
    crm.move("deal", deal["id"], "won")
    both = crm.create("tag", {"name": "vip", "clients": [1, 2]})
    only_other = crm.create("tag", {"name": "new", "clients": [2]})
    task = crm.create("task", {"title": "Позвонить", "subject": "client:2"})
    crm.update("client", 3, {"partner": 2})
    crm.note("client", 2, "звонили", kind="call")
    crm.update("client", 2, {"note": "важный"})

    merged = crm.merge("client", 1, 2)

    assert merged["id"] == 1 and merged["note"] == "важный" and merged["email"] == "info@romashka.ru"
    assert crm.get("deal", deal["id"])["client"] == 1
    assert crm.get("deal", deal["id"])["stage"] == "won"
    assert crm.get("tag", both["id"])["clients"] == [1]
    assert crm.get("tag", only_other["id"])["clients"] == [1]
    assert crm.get("task", task["id"])["subject"] == {"entity": "client", "id": 1}
    assert crm.get("client", 3)["partner"] == 1
    assert crm.find("client", "id = 2") == []
    table = crm.storage.journal_table
    with crm.engine.connect() as conn:
        rows = conn.execute(select(table).where(table.c.entity == "client").order_by(table.c.id)).mappings().all()
    assert not [r for r in rows if r["record_id"] == 2]
    mine = [(r["action"], r["kind"]) for r in rows if r["record_id"] == 1]
    assert ("note", "call") in mine and ("create", None) in mine
    last = rows[-1]
    assert (last["record_id"], last["action"]) == (1, "merge")
    assert last["changes"] == {"note": [None, "важный"]}
    assert "merged client 2" in last["text"]
    assert [g for g in crm.duplicates("client") if g["records"] == [1, 2]] == []
    timeline = crm.timeline("client", 1)
    assert (timeline[0]["action"], timeline[0]["record_id"]) == ("merge", 1)
    assert any(e["action"] == "move" for e in timeline)  # the moved deal's stage history shows through its link


def test_merge_refusals(crm):
    with pytest.raises(ValidationError):
        crm.merge("client", 1, 1)
    with pytest.raises(metacrm.NotFound):
        crm.merge("client", 1, 99)


def test_cli(crm, model_path, db_url):
    runner = CliRunner()
    common = ["--model", str(model_path), "--db", db_url]
    result = runner.invoke(app, ["duplicates", "client", *common])
    assert result.exit_code == 0, result.output
    assert "1, 2" in result.output and "4, 5" in result.output
    result = runner.invoke(app, ["create", "client", "name=X", "email=info@romashka.ru", *common])
    assert result.exit_code == 1, result.output
    assert "client 1" in result.output
    result = runner.invoke(app, ["merge", "client", "4", "5", "--format", "json", *common])
    assert result.exit_code == 0, result.output
    assert '"from the fair"' in result.output
    result = runner.invoke(app, ["duplicates", "client", "--format", "json", *common])
    assert "[4, 5]" not in result.output.replace("\n", "").replace("  ", "")


def test_merge_moves_stage_history_of_the_merged_record(crm):
    first = crm.create("deal", {"title": "A", "client": 1})
    second = crm.create("deal", {"title": "B", "client": 1})
    crm.move("deal", second["id"], "won", note="closed")
    crm.merge("deal", first["id"], second["id"])
    history = crm.history("deal", first["id"])
    assert [(h["to_stage"], h.get("note")) for h in history][-1] == ("won", "closed")
    assert len([h for h in history if h["to_stage"] == "new"]) == 2
    assert crm.get("deal", first["id"])["stage"] == "new"  # the kept record stays where it is


def test_block_names_only_records_the_user_may_read(crm):
    crm.add_user("anna", roles=["manager"])
    crm.add_user("boris", roles=["manager"])
    anna, boris = crm.as_user("anna"), crm.as_user("boris")
    mine = anna.create("lead", {"name": "A", "email": "a@example.com"})
    with pytest.raises(ValidationError) as info:
        boris.create("lead", {"name": "B", "email": "a@example.com"})
    assert f"lead {mine['id']}" not in str(info.value) and "an existing lead" in str(info.value)
    with pytest.raises(ValidationError) as info:
        anna.create("lead", {"name": "A2", "email": "a@example.com"})
    assert f"lead {mine['id']}" in str(info.value)
    assert boris.duplicates("lead") == [] and crm.duplicates("lead") == []


def test_warn_rule_warns_on_create_and_reports_on_import(crm, tmp_path, model_path, db_url):
    with pytest.warns(metacrm.DuplicateWarning, match=r"duplicate of client 6 .*warn") as caught:
        crm.create("client", {"name": "Globex", "city": "Berlin"})
    assert caught[0].message.field == "name" and caught[0].message.existing == 6
    from metacrm.io import import_csv

    csv_file = tmp_path / "clients.csv"
    csv_file.write_text("name,city\nglobex,Berlin\nСовсем новый,Тверь\n", encoding="utf-8")
    result = import_csv(crm, "client", csv_file)
    assert result.created == 2
    dupes = [(n.row, n.kind) for n in result.notes if n.kind == "duplicate"]
    assert dupes == [(2, "duplicate")]  # line 2 of the file: the first data row
    assert "possible duplicate" in result.summary()
    out = CliRunner().invoke(
        app, ["create", "client", "name=Globex", "city=Berlin", "--model", str(model_path), "--db", db_url]
    )
    assert out.exit_code == 0 and "warning: client: duplicate of client" in out.stderr


def test_block_refuses_an_update_that_makes_a_duplicate(crm):
    before = crm.get("client", 4)
    with pytest.raises(ValidationError) as info:
        crm.update("client", 4, {"email": "Info@Romashka.ru"})
    assert "client.email" in str(info.value) and "client 1" in str(info.value)
    assert crm.get("client", 4) == before  # nothing written
    # a record keeps its own value, and a change elsewhere is not checked against old duplicates
    with pytest.warns(metacrm.DuplicateWarning) as caught:
        # the patch names a rule's field, so every rule is checked: client 1's phone and name are client 2's
        assert crm.update("client", 1, {"email": "info@romashka.ru", "note": "x"})["note"] == "x"
    assert sorted((w.message.field, w.message.existing) for w in caught) == [("name", 2), ("phone", 2)]
    assert crm.update("client", 2, {"note": "same phone as 1, as before"})["note"].startswith("same")
    with pytest.warns(metacrm.DuplicateWarning):  # a warn rule warns on update too
        crm.update("client", 6, {"phone": "+7 495 123 45 67"})
