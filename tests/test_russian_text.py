"""Russian text on both dialects: ``ё`` and ``е`` are one letter for contains/startswith filters
(SQL and Python), fuzzy name duplicate rules and search; Cyrillic case folding on SQLite;
phone fields compare by their normalised form in filters and are found by search in any
common spelling of their digits. Stored values are never altered."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.expr.bind import Like, fold
from metacrm.runtime.search import fts5_query, phone_query
from metacrm.text import yo_variants

MODEL = """\
metacrm: 1
name: ru
region: RU
entities:
  client:
    owner: true
    title: name
    fields:
      name:  {type: string, required: true}
      phone: {type: phone}
      notes: {type: text}
    search: [name, phone, notes]
  lead:
    fields:
      name: {type: string, required: true}
    duplicates:
      - {match: name, field: name, threshold: 100, action: block}
roles:
  manager:
    client: {read: own, create: all, update: own}
"""


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "ru.yaml"
    path.write_text(MODEL, encoding="utf-8")
    return path


@pytest.fixture
def crm(model_path, db_url):
    crm = metacrm.connect(model_path, db_url)
    crm.migrate()
    crm.add_user("anna", roles=["manager"])
    crm.add_user("boris", roles=["manager"])
    yield crm
    crm.close()


def names(records) -> list[str]:
    return sorted(r["name"] for r in records)


# -- ё and е --------------------------------------------------------------------------------
def test_fold_and_spellings() -> None:
    assert fold("Ёлка ЕЛЬ") == "елка ель"
    assert yo_variants("елка") == ["елка", "ёлка"]
    assert yo_variants("ёж") == ["еж", "ёж"]
    assert yo_variants("acme") == ["acme"]
    assert fts5_query(["ёлка", "acme"]) == '("елка"* OR "ёлка"*) AND "acme"*'
    like = Like("contains", "ёлк", fold("ёлк"))
    assert like.check("Новогодняя ЕЛКА") is True and like.check("Ёлочка") is False


def test_contains_and_startswith_read_yo_as_ye(crm) -> None:
    crm.create("client", {"name": "Алёна Ёлкина"})
    crm.create("client", {"name": "Алена Елкина"})
    crm.create("client", {"name": "Олег Ершов"})
    both = ["Алена Елкина", "Алёна Ёлкина"]
    assert names(crm.find("client", where="name contains 'алена'")) == both
    assert names(crm.find("client", where="name contains 'АЛЁНА'")) == both
    assert names(crm.find("client", where="name startswith 'алёна ел'")) == both
    assert names(crm.find("client", where="name contains 'ёлкин'")) == both
    assert names(crm.find("client", where="name startswith 'ёлк'")) == []
    assert crm.count("client", where="not (name contains 'ёлк')") == 1
    assert names(crm.find("client", where="name contains :q", params={"q": "ЕЛКИНА"})) == both
    # stored values are never altered
    assert [r["name"] for r in crm.find("client", order_by="id")][:2] == ["Алёна Ёлкина", "Алена Елкина"]


def test_cyrillic_case_folded_on_every_dialect(crm) -> None:
    crm.create("client", {"name": "ООО «Ромашка»", "notes": "Ждём ПОСТАВКИ"})
    assert names(crm.find("client", where="name contains 'ромашка'")) == ["ООО «Ромашка»"]
    assert names(crm.find("client", where="notes contains 'ждем поставки'")) == ["ООО «Ромашка»"]
    assert [h["title"] for h in crm.search("поставки ждем")] == ["ООО «Ромашка»"]


def test_search_reads_yo_as_ye(crm) -> None:
    yo = crm.create("client", {"name": "Ёлкина", "notes": "берёзовый сок"})
    ye = crm.create("client", {"name": "Елкина", "notes": "березовый сок"})
    for query in ("елкина", "ЁЛКИНА", "берёз", "березовый", "ёлкина берез"):
        assert sorted(h["id"] for h in crm.search(query)) == [yo["id"], ye["id"]], query


def test_fuzzy_name_rule_reads_yo_as_ye(crm) -> None:
    first = crm.create("lead", {"name": "Алёна Петрова"})
    with pytest.raises(metacrm.ValidationError, match=rf"duplicate of lead {first['id']}"):
        crm.create("lead", {"name": "алена петрова"})
    assert crm.find_duplicates("lead", {"name": "АЛЕНА ПЕТРОВА"})
    assert crm.count("lead") == 1
    crm.create("lead", {"name": "Алина Петрова"})  # another name is no duplicate
    crm.create("lead", {"name": "Алена Петрова-Ёлкина"})
    assert crm.count("lead") == 3
    assert [g["records"] for g in crm.duplicates("lead")] == []


# -- phones ---------------------------------------------------------------------------------
SPELLINGS = [
    "+7 916 123-45-67",
    "8 916 123-45-67",
    "89161234567",
    "9161234567",
    "+7 (916) 123-45-67",
    "8-916-123-45-67",
]


def test_phone_query_reads_common_spellings() -> None:
    for text in SPELLINGS:
        assert phone_query(text, "RU") == ("=", "+79161234567"), text
    assert phone_query("9161234567", None) == ("suffix", "9161234567")
    assert phone_query("ромашка", "RU") is None
    assert phone_query("2024", "RU") is None  # too few digits: a word, not a phone


def test_phone_filters_compare_normalised(crm) -> None:
    a = crm.create("client", {"name": "Анна", "phone": "+7 916 123-45-67"})
    b = crm.create("client", {"name": "Борис", "phone": "8 (495) 123-45-67"})
    crm.create("client", {"name": "Вера"})
    assert a["phone"] == "+79161234567"  # stored in E.164
    for text in SPELLINGS:
        assert [r["id"] for r in crm.find("client", where=f"phone = '{text}'")] == [a["id"]], text
    assert [r["id"] for r in crm.find("client", where="phone = :p", params={"p": "8 916 123 45 67"})] == [a["id"]]
    assert [r["id"] for r in crm.find("client", where="phone != '8 916 123-45-67'")] == [b["id"]]
    found = crm.find("client", where="phone in ('8 916 123-45-67', '84951234567')", order_by="id")
    assert [r["id"] for r in found] == [a["id"], b["id"]]
    # a literal that is not a phone number compares as written: no error, no match
    assert crm.find("client", where="phone = 'не знаю'") == []
    assert [r["id"] for r in crm.find("client", where="phone contains '916'")] == [a["id"]]


def test_search_finds_a_phone_by_any_spelling(crm) -> None:
    a = crm.as_user("anna").create("client", {"name": "Анна", "phone": "+7 916 123-45-67"})
    crm.create("client", {"name": "Борис", "phone": "+7 916 765-43-21"})
    for text in SPELLINGS:
        hits = crm.search(text)
        assert [(h["entity"], h["id"]) for h in hits] == [("client", a["id"])], text
        assert hits[0]["snippet"] == "[+79161234567]"
    assert crm.as_user("anna").search("8 916 123 45 67")[0]["id"] == a["id"]
    assert crm.as_user("boris").search("8 916 123 45 67") == []  # not readable: not found


def test_cli_filter_and_search_by_phone(crm, model_path, db_url) -> None:
    crm.create("client", {"name": "Анна", "phone": "+7 916 123-45-67"})
    runner = CliRunner()
    common = ["--model", str(model_path), "--db", db_url]
    listed = runner.invoke(app, ["list", "client", "--where", "phone = '8 916 123-45-67'", "--format", "json", *common])
    assert listed.exit_code == 0, listed.output
    assert '"Анна"' in listed.output
    found = runner.invoke(app, ["search", "8 (916) 123-45-67", "--format", "json", *common])
    assert found.exit_code == 0, found.output
    assert '"Анна"' in found.output
