"""Fuzzy duplicate rules decide at their threshold: for each ``match: name`` rule a pair of names
scoring just above it is a duplicate and a pair just below is not, when a record is created
(warned about or refused), when the stored records are grouped, and when candidates are looked
up; on SQLite and PostgreSQL. Warnings are errors here unless a test expects them."""

from __future__ import annotations

import pytest
from rapidfuzz import fuzz

import metacrm

pytestmark = pytest.mark.filterwarnings("error::metacrm.DuplicateWarning")

MODEL = """\
metacrm: 1
name: thresholds
entities:
  client:
    fields:
      name: {type: string, required: true}
      city: {type: string}
    duplicates:
      - {match: name, field: name, within: city, threshold: 85, action: warn}
  product:
    fields:
      name: {type: string, required: true}
    duplicates:
      - {match: name, field: name, action: block}    # the default threshold, 90
"""

# entity: (threshold, stored name, a name just above the threshold, a name just below it)
NEAR = {
    "client": (85, "ООО Ромашка", "ООО Ромашкин", "ООО Ромашкино"),  # 86.96 and 83.33
    "product": (90, "Northwind Traders", "Northwind Trad", "Northwind Traders Ltd"),  # 90.32 and 89.47
}
CITY = {"client": {"city": "Москва"}, "product": {}}


def score(a: str, b: str) -> float:
    return fuzz.token_sort_ratio(" ".join(a.casefold().split()), " ".join(b.casefold().split()))


@pytest.fixture
def crm(db_url, tmp_path):
    path = tmp_path / "thresholds.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    yield crm
    crm.close()


def test_the_pairs_straddle_each_threshold(crm) -> None:
    assert {e: crm.model.entity(e).duplicates[0].threshold for e in NEAR} == {e: t for e, (t, *_) in NEAR.items()}
    for threshold, stored, above, below in NEAR.values():
        assert threshold <= score(stored, above) < threshold + 6
        assert threshold - 6 < score(stored, below) < threshold


@pytest.mark.parametrize("entity", sorted(NEAR))
def test_create_flags_the_name_above_the_threshold(crm, entity) -> None:
    _, stored, above, _ = NEAR[entity]
    first = crm.create(entity, {"name": stored, **CITY[entity]})
    assert [f["id"] for f in crm.find_duplicates(entity, {"name": above, **CITY[entity]})] == [first["id"]]
    if entity == "client":
        with pytest.warns(metacrm.DuplicateWarning) as caught:
            crm.create(entity, {"name": above, **CITY[entity]})
        assert [(w.message.field, w.message.existing) for w in caught] == [("name", first["id"])]
        crm.create(entity, {"name": above, "city": "Казань"})  # another city: never compared
    else:
        with pytest.raises(metacrm.ValidationError, match=rf"duplicate of {entity} {first['id']} \(rule: name"):
            crm.create(entity, {"name": above})


@pytest.mark.parametrize("entity", sorted(NEAR))
def test_create_lets_the_name_below_the_threshold_through(crm, entity) -> None:
    _, stored, _, below = NEAR[entity]
    crm.create(entity, {"name": stored, **CITY[entity]})
    assert crm.find_duplicates(entity, {"name": below, **CITY[entity]}) == []
    crm.create(entity, {"name": below, **CITY[entity]})  # no warning (an error here), no refusal
    assert crm.count(entity) == 2 and crm.duplicates(entity) == []  # not a group either


@pytest.mark.parametrize("entity", sorted(NEAR))
def test_groups_hold_the_names_above_the_threshold(crm, entity) -> None:
    _, stored, above, _ = NEAR[entity]
    first = crm.create(entity, {"name": stored, **CITY[entity]})
    table = crm.storage.table(entity)
    now = first["created_at"]
    with crm.engine.begin() as conn:  # stored past the create-time check (a block rule refuses it)
        conn.execute(table.insert().values(name=above, created_at=now, updated_at=now, version=1, **CITY[entity]))
    groups = crm.duplicates(entity)
    assert [(g["match"], g["records"]) for g in groups] == [("name", [first["id"], first["id"] + 1])]
