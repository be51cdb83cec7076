"""Duplicate rules at their edges (killed survivors of tools/mutation.py on runtime/duplicates.py
and runtime/fuzzy.py): e-mail rules compare case-insensitively against stored records (also
ones written in capitals outside the CRM), groups
are found in every `within` value, a merge moves join rows without losing a third record's and
moves the merged record's own many-links, the block keys of words of each length, the thresholds
where blocking starts and where legal forms become keys, and the best match of a name found in
several blocks; on SQLite and PostgreSQL."""

from __future__ import annotations

import random

import pytest
from rapidfuzz import fuzz
from sqlalchemy import select

import metacrm
from metacrm.runtime.fuzzy import Blocks, block_keys, sort_tokens

MODEL = """\
metacrm: 1
name: edges
entities:
  client:
    title: name
    fields:
      name: {type: string, required: true}
      email: {type: email}
      contact: {type: email}
      city: {type: string}
    links:
      partners: {to: partner, many: true}
    duplicates:
      - {match: email, field: email, action: block}
      - {match: email, field: contact, within: city, action: warn}
  partner:
    title: name
    fields:
      name: {type: string, required: true}
  project:
    title: name
    fields:
      name: {type: string, required: true}
    links:
      clients: {to: client, many: true}
"""


@pytest.fixture
def crm(db_url, tmp_path):
    path = tmp_path / "edges.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    yield crm
    crm.close()


def test_an_email_rule_matches_a_stored_address_in_another_case(crm) -> None:
    stored = crm.create("client", {"name": "A", "email": "Info@Romashka.example"})
    with pytest.raises(metacrm.ValidationError) as info:
        crm.create("client", {"name": "B", "email": "INFO@romashka.example"})
    assert f"duplicate of client {stored['id']}" in str(info.value)
    assert [r["name"] for r in crm.find("client")] == ["A"]


def test_an_email_rule_finds_a_stored_address_written_in_capitals_by_another_program(crm) -> None:
    # the CRM stores addresses in lower case; a row written straight into the table (an older
    # import, another program) keeps its capitals, and the rule still compares case-insensitively
    stored = crm.create("client", {"name": "Raw"})["id"]
    table = crm.storage.table("client")
    with crm.engine.begin() as conn:
        conn.execute(table.update().where(table.c.id == stored).values(email="Sales@Romashka.example"))
    with pytest.raises(metacrm.ValidationError) as info:
        crm.create("client", {"name": "B", "email": "sales@romashka.example"})
    assert f"duplicate of client {stored}" in str(info.value)
    assert [r["name"] for r in crm.find("client")] == ["Raw"]


def test_groups_are_found_in_every_within_value(crm) -> None:
    with pytest.warns(metacrm.DuplicateWarning):
        ids = [
            crm.create("client", {"name": n, "contact": c, "city": city})["id"]
            for n, c, city in [
                ("A", "a@x.example", "Paris"),
                ("B", "A@x.example", "Paris"),
                ("C", "c@x.example", "Rome"),
                ("D", "C@x.example", "Rome"),
                ("E", "a@x.example", "Rome"),  # same address as A, another city: not its duplicate
            ]
        ]
    groups = [g["records"] for g in crm.duplicates("client") if g["match"] == "email"]
    assert sorted(groups) == [[ids[0], ids[1]], [ids[2], ids[3]]]


def test_a_merge_moves_join_rows_and_the_merged_records_own_links(crm) -> None:
    keep, other, third = (crm.create("client", {"name": n})["id"] for n in ("Keep", "Other", "Third"))
    a, b = (crm.create("partner", {"name": n})["id"] for n in ("PA", "PB"))
    crm.update("client", keep, {"partners": [a]})
    crm.update("client", other, {"partners": [a, b]})  # a: a pair keep has already
    shared = crm.create("project", {"name": "Shared", "clients": [keep, other, third]})["id"]
    only = crm.create("project", {"name": "Only", "clients": [other]})["id"]

    crm.merge("client", keep, other)

    assert crm.get("project", shared)["clients"] == [keep, third]  # the third client stays
    assert crm.get("project", only)["clients"] == [keep]
    assert crm.get("client", keep)["partners"] == [a, b]
    table = crm.storage.journal_table
    with crm.engine.connect() as conn:
        text = conn.execute(select(table.c.text).where(table.c.action == "merge")).scalar_one()
    assert text == (f"merged client {other}; project.clients: [{shared}, {only}]; client.partners (own): [{a}, {b}]")


def test_the_block_keys_of_words_of_each_length() -> None:
    assert block_keys("ab") == {"<ab", ">ab", "<<ab", ">>ab", "<<<a"}
    assert block_keys("abc") == {"<abc", ">abc", "<<ab", ">>bc", "<<<a"}
    assert block_keys("abcd") == {"<abc", ">bcd", "<bcd", ">abc", "<<ab", ">>cd"}
    assert block_keys("abcdef") == {"<abc", ">def", "<bcd", ">cde", "<<ab", ">>ef"}
    assert block_keys("abcdefg") == {"<abc", ">efg", "<bcd", ">def"}
    assert block_keys("ооо abcdefg", forms=True) == {"=ооо", "<abc", ">efg", "<bcd", ">def"}
    assert block_keys("ооо") == {"<ооо", ">ооо", "<<оо", ">>оо", "<<<о"}  # only a legal form: kept


@pytest.mark.parametrize(
    ("threshold", "keys"),
    [
        (74.9, {"*"}),  # below 75: every pair is compared
        (75, {"=ооо", "<abc", ">efg", "<bcd", ">def"}),  # blocked, legal forms are keys below 85
        (84.9, {"=ооо", "<abc", ">efg", "<bcd", ">def"}),
        (85, {"<abc", ">efg", "<bcd", ">def"}),
    ],
)
def test_where_blocking_starts_and_where_legal_forms_become_keys(threshold, keys) -> None:
    assert set(Blocks(threshold, [(1, "ооо abcdefg")]).blocks) == keys


def test_the_best_match_is_the_highest_score_then_the_lowest_id_over_every_block() -> None:
    """Blocks.best against a scan of every stored name sharing a block key with the query: the
    highest score at or above the threshold, the first added (lowest id) among equals."""
    rng = random.Random(18)
    stems = ["ромашка", "василек", "лютик", "подорожник", "одуванчик", "колокольчик"]

    def variant(word: str) -> str:
        i = rng.randrange(len(word))
        return word[:i] + rng.choice("абвгдеклмнопрст") + word[i + 1 :]

    names = [f"{variant(rng.choice(stems))} {variant(rng.choice(stems))}" for _ in range(300)]
    checked = 0
    for threshold in (75, 80, 90):
        blocks = Blocks(threshold, enumerate(names[:200]))
        for query in names[200:]:
            keys = block_keys(query, forms=threshold < 85)
            scored = [
                (fuzz.ratio(sort_tokens(query), sort_tokens(name)), i)
                for i, name in enumerate(names[:200])
                if keys & block_keys(name, forms=threshold < 85)
            ]
            scored = [(s, i) for s, i in scored if s >= threshold]
            expected = min(scored, key=lambda si: (-si[0], si[1]))[1] if scored else None
            assert blocks.best(query) == expected, (threshold, query)
            checked += expected is not None
    assert checked > 100  # most queries have a match: the test compares real choices
