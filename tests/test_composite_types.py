"""Composite field types on SQLite and PostgreSQL (docs/types.md): ``emails`` and ``phones``
(several per record, the first the primary, normalised, in a lookup index the database keeps:
filters, search and duplicate rules find a record by any of them)."""

from __future__ import annotations

import pytest
import yaml
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select

import metacrm
from metacrm.errors import ExpressionError, ValidationError
from metacrm.expr import compile_python
from metacrm.storage.valueindex import index_table

MODEL = """\
metacrm: 1
name: composite
region: RU
entities:
  client:
    fields:
      name:   {type: string, required: true}
      emails: {type: emails}
      phones: {type: phones}
      tags:   {type: tags}
      notes:  {type: rich_text}
    search: [name, emails, phones, tags, notes]
    duplicates:
      - {match: email, field: emails}
      - {match: phone, field: phones, action: warn}
  deal:
    fields:
      title: {type: string, required: true}
    links:
      client: {to: client, inverse: deals}
"""


def migrated(db_url: str, tmp_path, text: str, name: str = "model"):
    """A CRM on the model ``text`` (written to tmp_path), its database migrated."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    crm = metacrm.connect(metacrm.load_model(path), db_url)
    crm.migrate()
    return crm


@pytest.fixture
def crm(db_url, tmp_path):
    crm = migrated(db_url, tmp_path, MODEL)
    yield crm
    crm.engine.dispose()


def _index(crm, field: str) -> list[tuple]:
    table = index_table("client", field)
    with crm.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(table).order_by(table.c.record_id, table.c.position))]


def test_emails_and_phones_are_normalised_in_order_primary_first(crm) -> None:
    c = crm.create(
        "client",
        {
            "name": "Ромашка",
            "emails": "Info@Romashka.RU; sales@ROMASHKA.ru, info@romashka.ru",
            "phones": ["8 916 123-45-67", "+7 (916) 123-45-67", "+44 20 7946 0958"],
        },
    )
    assert c["emails"] == ["info@romashka.ru", "sales@romashka.ru"]  # normalised, the duplicate dropped
    assert c["phones"] == ["+79161234567", "+442079460958"]
    assert crm.get("client", c["id"])["emails"] == ["info@romashka.ru", "sales@romashka.ru"]
    assert _index(crm, "emails") == [(c["id"], 0, "info@romashka.ru"), (c["id"], 1, "sales@romashka.ru")]
    assert _index(crm, "phones") == [(c["id"], 0, "+79161234567"), (c["id"], 1, "+442079460958")]
    crm.update("client", c["id"], {"emails": ["boss@romashka.ru"]})
    assert _index(crm, "emails") == [(c["id"], 0, "boss@romashka.ru")]
    crm.update("client", c["id"], {"emails": None})
    assert _index(crm, "emails") == []
    crm.delete("client", c["id"])
    assert _index(crm, "phones") == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"emails": "info@romashka"}, "client.emails"),
        ({"emails": ["ok@x.org", "not an address"]}, "'not an address' is not a valid e-mail address"),
        ({"emails": 5}, "is not an e-mail address"),
        ({"phones": "12"}, "'12' is not a valid phone number"),
        ({"phones": [True]}, "is not a phone number"),
        ({"emails": [f"a{i}@x.org" for i in range(51)]}, "at most 50"),
    ],
)
def test_bad_values_are_refused_naming_the_field(crm, values, message) -> None:
    with pytest.raises(ValidationError, match="client.emails|client.phones") as info:
        crm.create("client", {"name": "X", **values})
    assert message in str(info.value)
    assert crm.count("client") == 0


def test_search_finds_a_record_by_any_of_its_emails_and_phones(crm) -> None:
    a = crm.create("client", {"name": "Ромашка", "emails": ["info@romashka.ru", "sales@romashka.ru"]})
    b = crm.create("client", {"name": "Лютик", "phones": ["+7 916 123-45-67", "+7 495 000-00-02"]})
    hits = crm.search("SALES@romashka.ru")
    assert [(h["id"], h["snippet"]) for h in hits] == [(a["id"], "[sales@romashka.ru]")]
    assert [h["id"] for h in crm.search("8 (495) 000-00-02")] == [b["id"]]  # the second number
    assert [h["id"] for h in crm.search("Лютик")] == [b["id"]]  # the name, through the text index
    assert crm.search("nobody@romashka.ru") == []


def test_duplicate_rules_match_when_any_address_is_shared(crm) -> None:
    a = crm.create("client", {"name": "A", "emails": ["info@romashka.ru", "sales@romashka.ru"]})
    with pytest.raises(ValidationError, match=rf"duplicate of client {a['id']} \(rule: email on emails"):
        crm.create("client", {"name": "B", "emails": ["boss@x.org", "Sales@Romashka.ru"]})
    with pytest.raises(ValidationError, match="record 1: client.emails: duplicate of record 0 of this batch"):
        crm.create_many("client", [{"name": "C", "emails": "c@x.org"}, {"name": "D", "emails": ["d@x.org", "c@x.org"]}])
    assert crm.count("client") == 1
    assert [m["id"] for m in crm.find_duplicates("client", {"name": "E", "emails": "sales@romashka.ru"})] == [a["id"]]
    b = crm.create("client", {"name": "B", "phones": ["+7 916 123-45-67"]})
    with pytest.warns(metacrm.DuplicateWarning):
        c = crm.create("client", {"name": "C", "phones": ["+7 495 000-00-02", "89161234567"]})
    groups = crm.duplicates("client")
    assert [(g["rule"], g["records"]) for g in groups] == [("phone on phones", [b["id"], c["id"]])]


def test_filters_find_a_record_by_any_value_and_agree_with_python(crm) -> None:
    a = crm.create("client", {"name": "A", "emails": ["info@romashka.ru", "Sales@romashka.ru"], "phones": "+7 916 123-45-67"})
    b = crm.create("client", {"name": "B", "emails": "boss@x.org"})
    c = crm.create("client", {"name": "C"})
    d = crm.create("deal", {"title": "D", "client": a["id"]})
    cases = {
        "emails contains 'SALES@romashka.ru'": [a["id"]],
        "phones contains '8 (916) 123-45-67'": [a["id"]],
        "emails contains 'nobody@x.org'": [],
        "not (emails contains 'boss@x.org')": [a["id"], c["id"]],
        "emails is null": [c["id"]],
        "emails is not null and phones is null": [b["id"]],
    }
    records = crm.find("client", order_by="id")
    for where, ids in cases.items():
        assert [r["id"] for r in crm.find("client", where=where, order_by="id")] == ids, where
        predicate = compile_python(crm.model, "client", where)
        assert [r["id"] for r in records if predicate(r)] == ids, where
    assert [r["id"] for r in crm.find("deal", where="client.emails contains 'info@romashka.ru'")] == [d["id"]]
    assert [r["id"] for r in crm.find("client", where="deals.title = 'D' and emails contains :e", params={"e": "info@romashka.ru"})] == [a["id"]]


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("emails = 'a@b.org'", "client.emails: '=' does not apply to emails values (column 1) (use 'emails contains VALUE'"),
        ("phones > 5", "client.phones: '>' does not apply to phones values"),
        ("emails contains 5", "client.emails: 5 is not an e-mail address"),
    ],
)
def test_bad_filters_name_the_field(crm, where, message) -> None:
    with pytest.raises(ExpressionError) as info:
        crm.find("client", where=where)
    assert message in str(info.value)


# -- migrations ---------------------------------------------------------------------------------

def _doc(fields: dict) -> dict:
    return {"metacrm": 1, "name": "conv", "region": "RU", "entities": {"person": {"fields": {"name": {"type": "string"}, **fields}}}}


def _connect(tmp_path, doc: dict, db_url: str, name: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return metacrm.connect(metacrm.load_model(path), db_url)


def test_email_and_phone_fields_become_emails_and_phones_keeping_the_value_as_primary(db_url, tmp_path) -> None:
    old = _connect(tmp_path, _doc({"email": {"type": "email"}, "phone": {"type": "string"}}), db_url, "old")
    old.migrate()
    ids = [
        old.create("person", {"name": "a", "email": "A@X.org", "phone": "8 916 123-45-67"})["id"],
        old.create("person", {"name": "b", "phone": "+7 495 000-00-02, 8 (916) 000-00-03"})["id"],
        old.create("person", {"name": "c", "phone": ""})["id"],
        old.create("person", {"name": "d", "phone": "not a number"})["id"],
    ]
    old.close()
    doc = _doc({"email": {"type": "emails"}, "phones": {"type": "phones", "renamed_from": "phone"}})
    new = _connect(tmp_path, doc, db_url, "new")
    plan = new.migrate(dry_run=True)
    phones = next(s for s in plan if s.kind == "change_type" and s.target == "phones")
    assert phones.count == 1 and "id 4: 'not a number'" in phones.refusal
    with pytest.raises(metacrm.MigrationError, match="1 value of person.phones would not convert to phones"):
        new.migrate()
    new.close()
    fix = _connect(tmp_path, _doc({"email": {"type": "email"}, "phone": {"type": "string"}}), db_url, "old")
    fix.update("person", ids[3], {"phone": None})
    fix.close()
    new = _connect(tmp_path, doc, db_url, "new")
    new.migrate()
    got = [(r["email"], r["phones"]) for r in new.find("person", order_by="id")]
    assert got == [
        (["A@x.org"], ["+79161234567"]),  # the local part keeps its case; lookups ignore it
        (None, ["+74950000002", "+79160000003"]),
        (None, None),
        (None, None),
    ]
    # the index was filled from the converted rows, and the triggers keep it
    assert [r["id"] for r in new.find("person", where="phones contains '+7 916 000-00-03'")] == [ids[1]]
    assert [r["id"] for r in new.find("person", where="email contains 'a@x.org'")] == [ids[0]]
    new.update("person", ids[2], {"email": "c@x.org"})
    assert [r["id"] for r in new.find("person", where="email contains 'C@x.org'")] == [ids[2]]
    new.close()


def test_an_emails_field_added_to_an_entity_with_rows_and_removed_again(db_url, tmp_path) -> None:
    crm = _connect(tmp_path, _doc({}), db_url, "v1")
    crm.migrate()
    first = crm.create("person", {"name": "a"})["id"]
    crm.close()
    crm = _connect(tmp_path, _doc({"emails": {"type": "emails"}}), db_url, "v2")
    plan = crm.migrate()
    assert [s.kind for s in plan] == ["add_field", "record_model"]
    assert crm.get("person", first)["emails"] is None
    second = crm.create("person", {"name": "b", "emails": "b@x.org"})["id"]
    assert [r["id"] for r in crm.find("person", where="emails contains 'b@x.org'")] == [second]
    crm.close()
    crm = _connect(tmp_path, _doc({}), db_url, "v3")
    crm.migrate(allow_data_loss=True)
    crm.create("person", {"name": "c"})  # no trigger names the dropped column
    with crm.engine.connect() as conn:
        assert not sa_inspect(conn).has_table(index_table("person", "emails").name)
    crm.close()


# -- address and person_name: one column per part -----------------------------------------------

PEOPLE = """\
metacrm: 1
name: people
entities:
  contact:
    fields:
      name:    {type: person_name, required: true, label: Имя}
      address: {type: address}
      note:    {type: string}
    search: [name, address]
    list: [name, address, note]
    duplicates:
      - {match: name, field: name, action: warn}
"""


@pytest.fixture
def people(db_url, tmp_path):
    crm = migrated(db_url, tmp_path, PEOPLE, "people")
    yield crm
    crm.engine.dispose()


def test_parts_are_columns_given_as_a_mapping_or_by_name(people) -> None:
    table = people.storage.table("contact")
    assert {"address.street", "address.city", "address.region", "address.postcode", "address.country"} <= set(table.c.keys())
    assert people.model.entities["contact"].title == "name.full"
    a = people.create(
        "contact",
        {"name": {"first": " Иван ", "middle": "Петрович", "last": "Сидоров"}, "address": {"city": "Paris", "country": "france"}},
    )
    assert (a["name.full"], a["name.first"], a["address.city"], a["address.country"]) == (
        "Иван Петрович Сидоров", "Иван", "Paris", "FR"
    )
    b = people.create("contact", {"name.last": "Smith", "address.country": "DEU"})
    assert b["name.full"] == "Smith" and b["address.country"] == "DE"
    people.update("contact", b["id"], {"name": {"first": "Anna", "last": "Smith"}, "address": None})
    got = people.get("contact", b["id"])
    assert got["name.full"] == "Anna Smith" and got["address.country"] is None
    assert [r["id"] for r in people.find("contact", where="address.city = 'Paris'")] == [a["id"]]
    assert [r["id"] for r in people.find("contact", order_by="name.full")] == [b["id"], a["id"]]
    assert [h["id"] for h in people.search("сидоров")] == [a["id"]]
    assert [h["title"] for h in people.search("paris")] == ["Иван Петрович Сидоров"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"name": {"first": "A"}}, "contact.name.last: is required"),
        ({"name": "Ivan Petrov"}, "contact.name: a person_name is a mapping of its parts (first, middle, last), not text"),
        ({"name": {"last": "P", "surname": "x"}}, "contact.name: unknown part 'surname'"),
        ({"name.last": "P", "address": {"country": "Atlantis"}}, "contact.address.country: 'Atlantis' is not a country"),
        ({"name.last": "P", "address.postcode": "1" * 21}, "contact.address.postcode:"),
        ({"name": {"last": "P"}, "name.full": "x"}, "contact.name.full: is computed"),
    ],
)
def test_bad_parts_are_refused_naming_entity_field_and_part(people, values, message) -> None:
    with pytest.raises(ValidationError) as info:
        people.create("contact", values)
    assert message in str(info.value)
    assert people.count("contact") == 0


def test_filters_name_a_part_not_the_whole(people) -> None:
    with pytest.raises(ExpressionError, match=r"'address' is made of parts; name one of them: address.street"):
        people.find("contact", where="address = 'Paris'")


def test_composites_added_to_an_entity_with_rows_and_renamed(db_url, tmp_path) -> None:
    v1 = "metacrm: 1\nname: people\nentities:\n  contact:\n    fields:\n      note: {type: string}\n"
    crm = migrated(db_url, tmp_path, v1, "v1")
    old = crm.create("contact", {"note": "before"})["id"]
    crm.close()
    v2 = v1 + "      name: {type: person_name}\n      address: {type: address}\n"
    crm = migrated(db_url, tmp_path, v2, "v2")
    got = crm.get("contact", old)
    assert got["note"] == "before" and got["name.full"] is None and got["address.city"] is None
    crm.update("contact", old, {"name": {"first": "Ann", "last": "Lee"}, "address": {"city": "Oslo", "country": "NO"}})
    crm.close()
    v3 = v2.replace("      address: {type: address}\n", "      home: {type: address, renamed_from: address}\n")
    path = tmp_path / "v3.yaml"
    path.write_text(v3, encoding="utf-8")
    crm = metacrm.connect(metacrm.load_model(path), db_url)
    plan = crm.migrate(dry_run=True)
    assert sorted(s.target for s in plan if s.kind == "rename_field") == [f"home.{p}" for p in sorted(["street", "city", "region", "postcode", "country"])]
    crm.migrate()
    got = crm.get("contact", old)
    assert (got["home.city"], got["home.country"], got["name.full"]) == ("Oslo", "NO", "Ann Lee")
    assert [r["id"] for r in crm.find("contact", where="home.country = 'no'")] == [old]
    crm.close()


# -- tags -----------------------------------------------------------------------------------------

def test_tags_are_normalised_listed_filtered_and_searched(crm) -> None:
    a = crm.create("client", {"name": "A", "tags": " VIP ,  Опт  Крупный, vip"})
    b = crm.create("client", {"name": "B", "tags": ["опт крупный", "Новый"]})
    c = crm.create("client", {"name": "C"})
    assert a["tags"] == ["vip", "опт крупный"] and b["tags"] == ["опт крупный", "новый"]
    assert crm.tags("client") == [{"tag": "опт крупный", "count": 2}, {"tag": "vip", "count": 1}, {"tag": "новый", "count": 1}]
    records = crm.find("client", order_by="id")
    cases = {
        "tags contains 'VIP'": [a["id"]],
        "tags contains 'ОПТ   крупный'": [a["id"], b["id"]],
        "not (tags contains 'vip')": [b["id"], c["id"]],
        "tags is null": [c["id"]],
    }
    for where, ids in cases.items():
        assert [r["id"] for r in crm.find("client", where=where, order_by="id")] == ids, where
        predicate = compile_python(crm.model, "client", where)
        assert [r["id"] for r in records if predicate(r)] == ids, where
    assert [h["id"] for h in crm.search("Новый")][:1] == [b["id"]]
    crm.update("client", b["id"], {"tags": None})
    assert crm.tags("client") == [{"tag": "vip", "count": 1}, {"tag": "опт крупный", "count": 1}]
    with pytest.raises(ValidationError, match="client.tags: 'x+…' is longer than 100 characters"):
        crm.create("client", {"name": "D", "tags": ["ok", "x" * 101]})
    with pytest.raises(ValidationError, match="client.tags: 5 is not a tag"):
        crm.create("client", {"name": "D", "tags": [5]})
    with pytest.raises(ValidationError, match="deal has no tags field"):
        crm.tags("deal")
    with pytest.raises(ValidationError, match="client.name is not a tags field; tags fields: tags"):
        crm.tags("client", "name")


# -- rich_text ------------------------------------------------------------------------------------

PAYLOAD = (
    '<p onclick="steal()">Поставка <b>труб</b>&nbsp;и&amp;кабеля</p><script>alert(1)</script>'
    '<a href="javascript:alert(2)">ссылка</a><img src="https://tracker.example/p.gif"><ul><li>один</li><li>два</li></ul>'
)


def test_rich_text_is_sanitised_and_its_plain_text_searched_and_filtered(crm) -> None:
    a = crm.create("client", {"name": "A", "notes": PAYLOAD})
    html = a["notes"]
    assert "<script" not in html and "onclick" not in html and "javascript:" not in html and "<img" not in html
    assert "<b>труб</b>" in html and "<li>один</li>" in html
    assert a["notes.text"] == "Поставка труб и&кабеля ссылка один два"  # spaces (no-break ones too) collapse
    assert [h["id"] for h in crm.search("кабеля")] == [a["id"]]
    assert crm.search("script") == [] and crm.search("onclick") == []  # tags and attributes are not words
    assert [r["id"] for r in crm.find("client", where="notes.text contains 'один два'")] == [a["id"]]
    crm.update("client", a["id"], {"notes": "<i>новое</i>"})
    assert crm.get("client", a["id"])["notes.text"] == "новое"
    assert crm.search("кабеля") == []
    crm.update("client", a["id"], {"notes": "<script>only()</script>"})
    assert crm.get("client", a["id"])["notes"] is None and crm.get("client", a["id"])["notes.text"] is None
    with pytest.raises(ValidationError, match=r"client.notes.text: is computed from the HTML of notes; it cannot be set"):
        crm.update("client", a["id"], {"notes.text": "x"})
    with pytest.raises(ValidationError, match=r"client.notes: \['x'\] is not text"):
        crm.create("client", {"name": "B", "notes": ["x"]})


def test_new_types_added_to_rows_then_dumped_and_restored_with_their_index(db_url, tmp_path) -> None:
    from metacrm.io.dump import dump, restore

    v1 = "metacrm: 1\nname: grow\nentities:\n  firm:\n    fields:\n      title: {type: string}\n"
    crm = migrated(db_url, tmp_path, v1, "v1")
    old = crm.create("firm", {"title": "old"})["id"]
    crm.close()
    v2 = v1 + (
        "      emails: {type: emails}\n      tags: {type: tags}\n      notes: {type: rich_text}\n"
        "      boss: {type: person_name}\n    search: [title, notes, tags]\n"
    )
    crm = migrated(db_url, tmp_path, v2, "v2")
    got = crm.get("firm", old)
    assert got["title"] == "old" and got["tags"] is None and got["notes.text"] is None and got["boss.full"] is None
    crm.update("firm", old, {"emails": "a@x.org", "tags": "vip", "notes": "<p>Старый <b>клиент</b></p>", "boss": {"last": "Lee"}})
    crm.create("firm", {"title": "new", "tags": ["vip", "new"]})
    crm.close()
    folder = tmp_path / "dump"
    manifest = dump(db_url, folder)
    assert not any(name.startswith("metacrm_values_") for name in manifest["tables"])  # derived: rebuilt
    target = f"sqlite:///{tmp_path / 'restored.db'}"
    restore(folder, target)
    back = metacrm.connect(crm.model, target)
    assert [r["id"] for r in back.find("firm", where="emails contains 'A@x.org' and tags contains 'VIP'")] == [old]
    assert back.tags("firm") == [{"tag": "vip", "count": 2}, {"tag": "new", "count": 1}]
    assert [h["id"] for h in back.search("клиент")] == [old]
    assert back.get("firm", old)["boss.full"] == "Lee"
    back.close()


def test_a_name_rule_on_a_person_name_compares_full_names(people) -> None:
    a = people.create("contact", {"name": {"first": "Анна", "last": "Ли"}})
    with pytest.warns(metacrm.DuplicateWarning, match=rf"duplicate of contact {a['id']} \(rule: name on name.full"):
        people.create("contact", {"name": {"first": "анна", "last": "ЛИ"}})


def test_csv_has_one_column_per_part(people, tmp_path) -> None:
    from metacrm.io.csv_io import export_csv, import_csv

    source = tmp_path / "people.csv"
    source.write_text("name.first,name.last,address.city,address.country\nАнна,Ли,Осло,Norway\n", encoding="utf-8")
    assert import_csv(people, "contact", source).created == 1
    out = tmp_path / "out.csv"
    export_csv(people, "contact", out, columns=["name.full", "name.last", "address.city", "address.country"])
    assert out.read_text(encoding="utf-8").splitlines() == ["name.full,name.last,address.city,address.country", "Анна Ли,Ли,Осло,NO"]
    bad = tmp_path / "bad.csv"
    bad.write_text("name.last,address.country\nЛи,Atlantis\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"line 2, address.country: 'Atlantis' is not a country"):
        import_csv(people, "contact", bad)


def test_a_text_field_becomes_rich_text_shown_as_it_was_and_searchable(db_url, tmp_path) -> None:
    v1 = "metacrm: 1\nname: conv\nentities:\n  memo:\n    fields:\n      body: {type: text}\n"
    crm = migrated(db_url, tmp_path, v1, "v1")
    ids = [crm.create("memo", {"body": b})["id"] for b in ("Цена < 5 & скидка\nвторая строка", "   ", None)]
    crm.close()
    v2 = "metacrm: 1\nname: conv\nentities:\n  memo:\n    fields:\n      body: {type: rich_text}\n    search: [body]\n"
    crm = migrated(db_url, tmp_path, v2, "v2")
    first = crm.get("memo", ids[0])
    assert first["body"] == "Цена &lt; 5 &amp; скидка<br>вторая строка"
    assert first["body.text"] == "Цена < 5 & скидка вторая строка"
    assert [crm.get("memo", i)["body"] for i in ids[1:]] == [None, None]
    assert [h["id"] for h in crm.search("скидка")] == [ids[0]]
    crm.close()
