"""Names: SQL reserved words are entity, field, link and stage-field names like any other (every
statement quotes its identifiers), only the expression keywords and the system columns stay
reserved, and 63-character names work on both dialects with derived names shortened within
PostgreSQL's 63-byte limit."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

import metacrm
from metacrm.errors import ModelError
from metacrm.storage import naming

RESERVED = """
metacrm: 1
name: reserved
entities:
  case:
    search: [select]
    fields:
      select: {type: string, required: true}
      group:  {type: string, index: true}
  order:
    search: [select, where_to]
    fields:
      select:   {type: string, required: true}
      where_to: {type: string}
      full:     {type: money}
      user:     {type: date}
      limit:    {type: integer, index: true}
      table:    {type: string, formula: "upper(select)"}
    links:
      from:  {to: case, inverse: orders}
      group: {to: case, many: true, inverse: grouped}
    unique: [[select, limit]]
    stages:
      initial: new
      states:
        new: {}
        check: {requires: [full, user]}
        done: {kind: won}
        lost: {kind: lost}
      transitions:
        - {from: new, to: [check, lost]}
        - {from: check, to: [done, lost]}
"""


def _connect(tmp_path: Path, db_url: str, text: str):
    path = tmp_path / "model.yaml"
    path.write_text(text, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    return crm, path


def test_sql_reserved_words_are_names(db_url: str, tmp_path: Path) -> None:
    crm, path = _connect(tmp_path, db_url, RESERVED)
    try:
        c = crm.create("case", {"select": "Первый случай", "group": "g"})
        o = crm.create("order", {"select": "alpha", "limit": 3, "from": c["id"], "group": [c["id"]]})
        crm.create("order", {"select": "beta", "limit": 5, "full": "10.50", "user": "2026-01-02"})
        assert o["table"] == "ALPHA"
        assert [r["select"] for r in crm.find("order", "limit > 2 and from.select contains 'случай'")] == ["alpha"]
        assert [r["select"] for r in crm.find("order", "group.group = 'g'")] == ["alpha"]
        assert [r["id"] for r in crm.find("case", "orders.select = 'alpha'")] == [c["id"]]
        # a stage that requires fields named by SQL words
        with pytest.raises(metacrm.errors.TransitionError, match="full is required; user is required"):
            crm.move("order", o["id"], "check")
        crm.update("order", o["id"], {"full": "1.00", "user": "2026-03-04"})
        assert crm.move("order", o["id"], "check")["stage"] == "check"
        report = crm.report_group("order", "stage", sum="full")
        assert report is not None
        hits = crm.search("beta")
        assert [(h["entity"], h["id"]) for h in hits] == [("order", 2)]
        # a migration adds a field named by a SQL word, and an index on it
        crm.close()
        path.write_text(
            RESERVED.replace(
                "      limit:    {type: integer, index: true}\n",
                "      limit:    {type: integer, index: true}\n      distinct: {type: string, index: true}\n",
            ),
            encoding="utf-8",
        )
        crm = metacrm.connect(path, db_url)
        crm.migrate()
        crm.update("order", o["id"], {"distinct": "x"})
        assert [r["select"] for r in crm.find("order", "distinct = 'x'")] == ["alpha"]
    finally:
        crm.close()


@pytest.mark.parametrize("word", ["and", "where", "in", "startswith", "rowid"])
def test_expression_keywords_stay_reserved(tmp_path: Path, word: str) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(
        RESERVED.replace("      full:     {type: money}", f"      {word}: {{type: string}}"), encoding="utf-8"
    )
    with pytest.raises(ModelError) as info:
        metacrm.load_model(path)
    assert f"field 'order.{word}': name '{word}' is a keyword of the expression language" in str(info.value)


def test_system_columns_stay_reserved(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(RESERVED.replace("      full:     {type: money}", "      stage: {type: string}"), encoding="utf-8")
    with pytest.raises(ModelError) as info:
        metacrm.load_model(path)
    assert "field 'order.stage': name 'stage' is a system column" in str(info.value)


LONG_ENTITY = "e" + "x" * 62  # 63 characters
LONG_FIELD = "f" + "y" * 62
LONG_LINK = "l" + "z" * 62
LONG = f"""
metacrm: 1
name: long_names
entities:
  {LONG_ENTITY}:
    search: [{LONG_FIELD}]
    fields:
      {LONG_FIELD}: {{type: string, required: true, index: true}}
      other: {{type: integer, unique: true}}
    links:
      {LONG_LINK}: {{to: {LONG_ENTITY}, many: true, inverse: back}}
      single_{"w" * 50}: {{to: {LONG_ENTITY}}}
    unique: [[{LONG_FIELD}, other]]
"""


def test_63_character_names_on_both_dialects(db_url: str, tmp_path: Path) -> None:
    assert len(LONG_ENTITY) == len(LONG_FIELD) == len(LONG_LINK) == 63
    crm, path = _connect(tmp_path, db_url, LONG)
    try:
        a = crm.create(LONG_ENTITY, {LONG_FIELD: "один", "other": 1})
        b = crm.create(
            LONG_ENTITY, {LONG_FIELD: "Омега", "other": 2, LONG_LINK: [a["id"]], f"single_{'w' * 50}": a["id"]}
        )
        assert [r["id"] for r in crm.find(LONG_ENTITY, f"{LONG_LINK}.{LONG_FIELD} = 'один'")] == [b["id"]]
        assert [r["id"] for r in crm.find(LONG_ENTITY, f"single_{'w' * 50} = {a['id']}")] == [b["id"]]
        assert [r["id"] for r in crm.find(LONG_ENTITY, "back.other = 2")] == [a["id"]]
        assert len(crm.search("омега")) == 1
        engine = create_engine(db_url)
        try:
            insp = inspect(engine)
            names = set(insp.get_table_names())
            join = naming.join_table_name(LONG_ENTITY, LONG_LINK)
            assert join in names and len(join.encode()) <= 63 and join != f"{LONG_ENTITY}__{LONG_LINK}"
            columns = {c["name"] for c in insp.get_columns(LONG_ENTITY)}
            assert naming.link_column(f"single_{'w' * 50}") in columns
            indexes = [i["name"] for i in insp.get_indexes(LONG_ENTITY) if not i.get("duplicates_constraint")]
            uniques = [u["name"] for u in insp.get_unique_constraints(LONG_ENTITY)]
            derived = indexes + uniques
            assert len(derived) >= 3 and all(len(n.encode()) <= 63 for n in derived if n)
            assert len(set(derived)) == len(derived)  # shortened names stay distinct
        finally:
            engine.dispose()
        # migrating again is a no-op: the shortened names are stable
        crm.close()
        crm = metacrm.connect(path, db_url)
        assert list(crm.migrate(dry_run=True)) == []
    finally:
        crm.close()


def test_64_character_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(LONG.replace(LONG_FIELD, LONG_FIELD + "y"), encoding="utf-8")
    with pytest.raises(ModelError, match="longer than 63 characters"):
        metacrm.load_model(path)


def test_short_names_are_deterministic_and_within_63_bytes() -> None:
    a, b = "ix_" + "a" * 80, "ix_" + "a" * 81
    assert naming.short(a) == naming.short(a) and naming.short(a) != naming.short(b)
    assert all(len(naming.short(n).encode()) == 63 for n in (a, b))
    assert naming.short("ix_order_limit") == "ix_order_limit"


def test_old_narrow_system_columns_are_widened(db_url: str, tmp_path: Path) -> None:
    """A database made when names had at most 30 characters (VARCHAR(30) name columns in
    metacrm's tables on PostgreSQL) is widened by the next migration, then takes long names."""
    crm, path = _connect(tmp_path, db_url, RESERVED)
    crm.close()
    engine = create_engine(db_url)
    try:
        if engine.dialect.name != "postgresql":
            pytest.skip("SQLite does not enforce VARCHAR lengths")
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE metacrm_journal ALTER COLUMN entity TYPE VARCHAR(30)")
            conn.exec_driver_sql('ALTER TABLE "order" ALTER COLUMN stage TYPE VARCHAR(30)')
    finally:
        engine.dispose()
    path.write_text(RESERVED + LONG.split("entities:\n", 1)[1], encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    try:
        plan = crm.migrate()
        widened = {s.target for s in plan if s.kind == "widen_system_columns"}
        assert widened == {"metacrm_journal", "order"}, [s.description for s in plan]
        crm.create(LONG_ENTITY, {LONG_FIELD: "x"})
        assert list(crm.migrate(dry_run=True)) == []
    finally:
        crm.close()
