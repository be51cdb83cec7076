"""Migrations, the change kinds that need the data's say: type changes with a conversion check,
a shrinking max_length, a link becoming many, removed stages, pipelines and options with a
map, system tables gaining columns; each on SQLite and PostgreSQL, the data checked row by
row afterwards, and the refusals leaving the database as it was."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import yaml
from test_migrate_support import base, dump, edit, migrate, schema, start, write_model

import metacrm

UTC = dt.UTC


def step(plan, kind, target=None):
    found = [s for s in plan if s.kind == kind and (target is None or s.target == target)]
    assert found, f"no {kind} {target or ''} step in {[s.kind for s in plan]}"
    return found[0]


def refused(db_url, tmp_path, doc, match: str, **kw) -> str:
    before_schema, before = schema(db_url), dump(db_url)
    with pytest.raises(metacrm.MigrationError, match=match) as info:
        migrate(db_url, tmp_path, doc, **kw)
    assert "\n" not in str(info.value)
    assert schema(db_url) == before_schema and dump(db_url) == before  # nothing written
    return str(info.value)


def item_model(decl: dict) -> dict:
    return {
        "metacrm": 1,
        "name": "conv",
        "entities": {"item": {"fields": {"name": {"type": "string"}, "v": decl}}},
    }


def seeded(db_url, tmp_path, decl: dict, values: list) -> tuple[dict, list[int]]:
    doc = item_model(decl)
    model, _ = write_model(tmp_path, doc, "old")
    crm = metacrm.connect(model, db_url)
    crm.migrate()
    ids = [crm.create("item", {"name": f"n{i}", "v": value})["id"] for i, value in enumerate(values)]
    crm.close()
    return doc, ids


# -- 1. type changes --------------------------------------------------------------------------------

D = Decimal
CONVERSIONS = {
    # id: (old declaration, new declaration, [(stored before, expected after)], [values that do not convert])
    "string-integer": (
        {"type": "string"},
        {"type": "integer"},
        [("12", 12), ("-3", -3), ("+5", 5), ("007", 7), (" 8 ", 8), ("123456789012345678901", None)][:5],
        ["abc", "12,5"],
    ),
    "string-money": (
        {"type": "string"},
        {"type": "money"},
        [("12,5", D("12.50")), ("1 000,25", D("1000.25")), ("7", D("7.00")), ("-0.5", D("-0.50")), ("12.34", D("12.34"))],
        ["3.14159", "ten"],
    ),
    "string-decimal": (
        {"type": "string"},
        {"type": "decimal"},
        [("3.14159", D("3.14159")), ("2,5", D("2.5")), ("-7", D("-7")), ("0.000001", D("0.000001"))],
        ["1.1234567"],
    ),
    "string-date": (
        {"type": "string"},
        {"type": "date"},
        [("2024-05-01", dt.date(2024, 5, 1)), ("01.05.2024", dt.date(2024, 5, 1)), ("2024-02-29", dt.date(2024, 2, 29))],
        ["2023-02-29", "May 1"],
    ),
    "string-boolean": (
        {"type": "string"},
        {"type": "boolean"},
        [("yes", True), ("Нет", False), ("да", True), ("0", False), ("TRUE", True)],
        ["maybe"],
    ),
    "integer-money": ({"type": "integer"}, {"type": "money"}, [(12, D("12.00")), (-3, D("-3.00")), (0, D("0.00"))], []),
    "integer-decimal": ({"type": "integer"}, {"type": "decimal", "max": 100}, [(12, D("12")), (-3, D("-3"))], [101]),
    "integer-string": ({"type": "integer"}, {"type": "string", "max_length": 3}, [(12, "12"), (-30, "-30")], [12345]),
    "money-integer": ({"type": "money"}, {"type": "integer"}, [("12.00", 12), ("-3", -3)], ["12.50"]),
    "money-string": ({"type": "money"}, {"type": "text"}, [("12.5", "12.50"), ("-0.05", "-0.05"), ("0", "0.00")], []),
    "decimal-money": ({"type": "decimal"}, {"type": "money"}, [("12.5", D("12.50")), ("-1.25", D("-1.25"))], ["1.125"]),
    "choice-string": (
        {"type": "choice", "options": ["site", "call"]},
        {"type": "string"},
        [("site", "site"), ("call", "call")],
        [],
    ),
    "string-choice": (
        {"type": "string"},
        {"type": "choice", "options": ["site", "call"]},
        [("site", "site"), ("Call", "call")],
        ["fax"],
    ),
    "text-string": ({"type": "text"}, {"type": "string", "max_length": 5}, [("short", "short"), ("ab", "ab")], ["longer"]),
    "string-text": ({"type": "string", "max_length": 10}, {"type": "text"}, [("abc", "abc")], []),
    "date-datetime": (
        {"type": "date"},
        {"type": "datetime"},
        [("2024-05-01", dt.datetime(2024, 5, 1, tzinfo=UTC)), ("1999-12-31", dt.datetime(1999, 12, 31, tzinfo=UTC))],
        [],
    ),
    "email-string": ({"type": "email"}, {"type": "string"}, [("a@example.com", "a@example.com")], []),
}


@pytest.mark.parametrize("case", list(CONVERSIONS))
def test_type_change_converts_every_value(db_url, tmp_path, case) -> None:
    old, new, good, bad = CONVERSIONS[case]
    doc, ids = seeded(db_url, tmp_path, old, [None, *[v for v, _ in good], *bad])
    none_id, good_ids, bad_ids = ids[0], ids[1 : 1 + len(good)], ids[1 + len(good) :]
    target = item_model(new)
    if bad:
        reason = refused(db_url, tmp_path, target, "would not convert")
        s = "s" if len(bad) > 1 else ""
        assert f"item.v: needs data: {len(bad)} value{s} of item.v would not convert to {new['type']}" in reason
        assert f"e.g. id {bad_ids[0]}: " in reason
        plan = metacrm.connect(write_model(tmp_path, target)[0], db_url).migrate(dry_run=True)
        assert step(plan, "change_type", "v").count == len(bad) and step(plan, "change_type", "v").refusal
        crm = metacrm.connect(write_model(tmp_path, doc)[0], db_url)
        for i in bad_ids:
            crm.delete("item", i)
        crm.close()
    before = dump(db_url)["item"]
    crm, plan = migrate(db_url, tmp_path, target)
    assert step(plan, "change_type", "v").count == 0
    assert crm.get("item", none_id)["v"] is None
    for i, (_, expected) in zip(good_ids, good, strict=True):
        got = crm.get("item", i)["v"]
        assert got == expected and type(got) is type(expected), (i, got, expected)
    after = dump(db_url)["item"]
    assert [{k: v for k, v in r.items() if k != "v"} for r in after] == [
        {k: v for k, v in r.items() if k != "v"} for r in before
    ]
    # the new type holds: a new record is validated and stored as the new type
    crm.close()


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ({"type": "string"}, {"type": "json"}, "there is no conversion from string to json"),
        ({"type": "datetime"}, {"type": "date"}, "would lose its time of day"),
        ({"type": "boolean"}, {"type": "integer"}, "there is no conversion from boolean to integer"),
    ],
)
def test_type_change_without_conversion_refused(db_url, tmp_path, old, new, expected) -> None:
    value = {"string": "x", "datetime": "2024-05-01T10:00:00Z", "boolean": True}[old["type"]]
    seeded(db_url, tmp_path, old, [value])
    reason = refused(db_url, tmp_path, item_model(new), expected)
    assert f"type of item.v cannot change from {old['type']} to {new['type']}" in reason
    refused(db_url, tmp_path, item_model(new), expected, allow_data_loss=True)


def test_type_change_with_rename_and_required(db_url, tmp_path) -> None:
    doc, ids = seeded(db_url, tmp_path, {"type": "string"}, ["1", "2,5", None])
    target = item_model({"type": "money", "required": True, "fill": "0", "renamed_from": "v"})
    target["entities"]["item"]["fields"]["price"] = target["entities"]["item"]["fields"].pop("v")
    crm, plan = migrate(db_url, tmp_path, target)
    assert [crm.get("item", i)["price"] for i in ids] == [D("1.00"), D("2.50"), D("0.00")]
    crm.close()


def test_type_change_dry_run_sql(tmp_path) -> None:
    db_url = f"sqlite:///{tmp_path / 'crm.db'}"
    seeded(db_url, tmp_path, {"type": "string"}, ["1"])
    model, _ = write_model(tmp_path, item_model({"type": "money"}))
    plan = metacrm.connect(model, db_url).migrate(dry_run=True)
    sql = "\n".join(plan.statements)
    assert "INSERT INTO _alembic_tmp_item" in sql and "CAST(CASE WHEN instr(v, '.') > 0" in sql
    pg = metacrm.migrate.plan_migration(metacrm.load_model(tmp_path / "old.yaml"), model, dialect="postgresql")
    assert "ALTER TABLE item ALTER COLUMN v TYPE NUMERIC(18, 2) USING CAST(v AS NUMERIC(18, 2))" in pg.statements


_ = (base, edit, start, yaml)


# -- 2. max_length shrinks ------------------------------------------------------------------------


def test_max_length_shrinks(db_url, tmp_path) -> None:
    doc, ids = seeded(db_url, tmp_path, {"type": "string", "max_length": 100}, ["abc", "abcdefgh", None, "abcdefghij"])
    reason = refused(db_url, tmp_path, item_model({"type": "string", "max_length": 5}), "longer than 5")
    assert "item.v: needs data: 2 values of item.v are longer than 5 characters" in reason
    assert f"id {ids[1]}: 'abcdefgh' (8 characters), id {ids[3]}: 'abcdefghij'" in reason
    crm = metacrm.connect(write_model(tmp_path, doc)[0], db_url)
    crm.update("item", ids[1], {"v": "abcd"})
    crm.update("item", ids[3], {"v": "abcde"})
    crm.close()
    crm, plan = migrate(db_url, tmp_path, item_model({"type": "string", "max_length": 5}))
    assert step(plan, "shrink_field", "v").count == 0
    assert [crm.get("item", i)["v"] for i in ids] == ["abc", "abcd", None, "abcde"]
    with pytest.raises(metacrm.ValidationError):
        crm.create("item", {"v": "abcdef"})
    if not db_url.startswith("sqlite"):  # the column itself is shortened
        assert schema(db_url)["item"]["columns"]["v"][0] == "VARCHAR(5)"
    crm.close()


# -- 3. a link becomes many -----------------------------------------------------------------------


@pytest.mark.parametrize("allow_data_loss", [False, True], ids=["kept", "dropped"])
def test_link_becomes_many_copies_values(db_url, tmp_path, allow_data_loss) -> None:
    start(db_url, tmp_path)
    before = dump(db_url)
    doc = edit(base())
    doc["entities"]["deal"]["links"]["client"] = {"to": "client", "many": True, "inverse": "deals"}
    crm, plan = migrate(db_url, tmp_path, doc, allow_data_loss=allow_data_loss)
    assert step(plan, "link_becomes_many", "client").count == 4
    old_column = step(plan, "old_link_column", "client_id")
    assert old_column.klass == ("destructive" if allow_data_loss else "safe")
    after = dump(db_url)
    assert after["deal__client"] == sorted(
        ({"source_id": r["id"], "target_id": r["client_id"]} for r in before["deal"]),
        key=lambda r: (r["source_id"], r["target_id"]),
    )
    for row in before["deal"]:
        assert [c["id"] for c in crm.related("deal", row["id"], "client")] == [row["client_id"]]
    kept = [r for r in after["deal"]]
    if allow_data_loss:
        assert all("client_id" not in r for r in kept)
    else:  # kept with its values, without its foreign key: deleting a client is not blocked by it
        assert [r["client_id"] for r in kept] == [r["client_id"] for r in before["deal"]]
        assert not [fk for fk in schema(db_url)["deal"]["fks"] if fk[0] == ("client_id",)]
    crm.link("deal", before["deal"][0]["id"], "client", before["client"][1]["id"])
    assert len(crm.related("deal", before["deal"][0]["id"], "client")) == 2
    crm.close()


def test_link_becomes_single_refused_counting_records_with_several(db_url, tmp_path) -> None:
    start(db_url, tmp_path)
    doc = edit(base())
    doc["entities"]["deal"]["links"]["products"] = {"to": "product", "inverse": "deals"}
    reason = refused(db_url, tmp_path, doc, "becomes single", allow_data_loss=True)
    assert "1 record has more than one" in reason



# -- 4. removed stages and pipelines --------------------------------------------------------------


def without_proposal(doc: dict) -> dict:
    stages = doc["entities"]["deal"]["stages"]
    del stages["states"]["proposal"]
    del stages["transitions"]["proposal"]
    stages["transitions"]["new"] = ["won", "lost"]
    return doc


def history(db_url) -> list[tuple]:
    return [(r["record_id"], r["from_stage"], r["to_stage"]) for r in dump(db_url)["metacrm_history"]]


@pytest.mark.parametrize("target", ["new", "lost"])
def test_stage_removed_with_stage_map_moves_its_records(db_url, tmp_path, target) -> None:
    start(db_url, tmp_path)
    before, moves = dump(db_url), history(db_url)
    doc = without_proposal(edit(base()))
    reason = refused(db_url, tmp_path, doc, "needs data: stage proposal of deal removed while 1 record is in it")
    assert "stage_map: {proposal: STAGE}" in reason
    doc["entities"]["deal"]["stages"]["stage_map"] = {"proposal": target}
    crm, plan = migrate(db_url, tmp_path, doc)
    assert step(plan, "remove_stage", "proposal").count == 1
    after = dump(db_url)
    bits = {"new": 1, "won": 2, "lost": 4}
    for old_row, row in zip(before["deal"], after["deal"], strict=True):
        was = old_row["stage"]
        stage = target if was == "proposal" else was
        assert row["stage"] == stage
        entered = {to for rid, _, to in moves if rid == row["id"]} | {stage}
        assert row["reached"] == sum(bits[s] for s in entered if s in bits)
        changed = ("stage", "reached", "closed_at", "stage_entered_at", "updated_at", "version")
        if was == "proposal":  # moved: a new version, entered its stage now
            assert (row["closed_at"] is not None) == (target == "lost")
            assert row["version"] == old_row["version"] + 1
            assert row["stage_entered_at"] > old_row["stage_entered_at"] and row["updated_at"] > old_row["updated_at"]
        else:
            assert {k: row[k] for k in changed if k != "reached"} == {k: old_row[k] for k in changed if k != "reached"}
        assert {k: v for k, v in row.items() if k not in changed} == {
            k: v for k, v in old_row.items() if k not in changed
        }
    moved = next(r["id"] for r in before["deal"] if r["stage"] == "proposal")
    # the history keeps the old name, and tells the move (source migrate)
    assert history(db_url) == [*moves, (moved, "proposal", target)]
    assert "proposal" in {to for _, _, to in moves}
    assert after["metacrm_history"][-1]["source"] == "migrate" and after["metacrm_history"][-1]["pipeline"] == "default"
    assert crm.get("deal", moved)["stage"] == target
    crm.close()


def test_stage_map_checked_by_the_model(tmp_path) -> None:
    doc = without_proposal(edit(base()))
    doc["entities"]["deal"]["stages"]["stage_map"] = {"proposal": "offer", "won": "new"}
    with pytest.raises(metacrm.ModelError) as info:
        write_model(tmp_path, doc)
    text = "\n".join(p.message for p in info.value.problems)
    assert "stage_map: 'proposal' maps to 'offer', which is not a stage of the pipeline (new, won, lost)" in text
    assert "stage_map: 'won' is still a stage; map only removed stages" in text


def pipelines_doc(mapping: str | None) -> dict:
    doc = edit(base())
    deal = doc["entities"]["deal"]
    del deal["stages"]
    deal["pipelines"] = {
        "sales": {
            "initial": "new",
            "states": {"new": {}, "won": {"kind": "won"}, "lost": {"kind": "lost"}},
            "transitions": {"new": ["won", "lost"]},
        }
    }
    if mapping:
        deal["pipeline_map"] = {"default": mapping}
    return doc


def test_pipeline_removed_with_pipeline_map(db_url, tmp_path) -> None:
    start(db_url, tmp_path)
    before, moves = dump(db_url), history(db_url)
    reason = refused(db_url, tmp_path, pipelines_doc(None), "pipeline default of deal removed while 4 records")
    assert "pipeline_map: {default: PIPELINE.STAGE}" in reason
    reason = refused(db_url, tmp_path, pipelines_doc("sales"), "1 record of pipeline default of deal is in stages")
    assert "pipeline_map: {default: sales.STAGE}" in reason
    crm, plan = migrate(db_url, tmp_path, pipelines_doc("sales.new"))
    assert step(plan, "remove_pipeline", "default").count == 4
    after = dump(db_url)
    bits = {"new": 1, "won": 2, "lost": 4}
    for old_row, row in zip(before["deal"], after["deal"], strict=True):
        stage = "new" if old_row["stage"] == "proposal" else old_row["stage"]
        assert (row["pipeline"], row["stage"]) == ("sales", stage)
        entered = {to for rid, _, to in moves if rid == row["id"]} | {stage}
        assert row["reached"] == sum(bits[s] for s in entered if s in bits)
        assert row["closed_at"] == old_row["closed_at"] and row["version"] == old_row["version"] + 1
    # a history row per record moved to the pipeline (the as-of funnel of sales finds them)
    added = after["metacrm_history"][len(before["metacrm_history"]) :]
    assert after["metacrm_history"][: len(moves)] == before["metacrm_history"]
    assert sorted((r["record_id"], r["pipeline"], r["from_stage"], r["to_stage"], r["source"]) for r in added) == sorted(
        (r["id"], "sales", r["stage"], "new" if r["stage"] == "proposal" else r["stage"], "migrate") for r in before["deal"]
    )
    crm.close()


# -- 5. removed choice options --------------------------------------------------------------------


@pytest.mark.parametrize("target", ["site", None])
def test_choice_option_removed_with_option_map(db_url, tmp_path, target) -> None:
    start(db_url, tmp_path)
    before = dump(db_url)
    doc = edit(base())
    source = doc["entities"]["client"]["fields"]["source"]
    source["options"] = ["site", "referral"]
    reason = refused(db_url, tmp_path, doc, "option 'call' of client.source removed while 1 record holds it")
    assert "option_map: {call: OPTION}" in reason
    source["option_map"] = {"call": target}
    crm, plan = migrate(db_url, tmp_path, doc)
    assert step(plan, "remove_option", "source").count == 1
    after = dump(db_url)
    for old_row, row in zip(before["client"], after["client"], strict=True):
        assert row["source"] == (target if old_row["source"] == "call" else old_row["source"])
        assert {k: v for k, v in row.items() if k != "source"} == {k: v for k, v in old_row.items() if k != "source"}
    with pytest.raises(metacrm.ValidationError):
        crm.create("client", {"name": "Delta", "source": "call"})
    crm.create("client", {"name": "Delta", "source": "referral"})
    crm.close()


def test_option_map_checked_by_the_model(tmp_path) -> None:
    doc = edit(base())
    source = doc["entities"]["client"]["fields"]["source"]
    source.update(options=["site"], required=True, option_map={"call": None, "fax": "mail", "site": "site"})
    with pytest.raises(metacrm.ModelError) as info:
        write_model(tmp_path, doc)
    text = "\n".join(p.message for p in info.value.problems)
    assert "option_map: 'call' maps to null but the field is required" in text
    assert "option_map: 'fax' maps to 'mail', which is not an option (site)" in text
    assert "option_map: 'site' is still an option; map only removed options" in text


def test_multichoice_option_renamed_and_removed(db_url, tmp_path) -> None:
    old = {"type": "multichoice", "options": ["a", "b", "c", "d"]}
    doc, ids = seeded(db_url, tmp_path, old, [["a", "b"], ["b"], ["c"], None, ["a", "d"], ["d"]])
    new = {
        "type": "multichoice",
        "options": ["c", {"value": "x", "renamed_from": "a"}],
        "option_map": {"b": "c"},
    }
    reason = refused(db_url, tmp_path, item_model(new), "option 'd' of item.v removed while 2 records hold it")
    assert "option_map: {d: OPTION}" in reason
    new["option_map"]["d"] = None
    crm, plan = migrate(db_url, tmp_path, item_model(new))
    assert step(plan, "rename_option", "v").count == 2
    assert [crm.get("item", i)["v"] for i in ids] == [["c", "x"], ["c"], ["c"], None, ["x"], None]
    crm.close()


# -- 6. system tables gain columns ----------------------------------------------------------------


def test_system_table_gains_a_missing_column(db_url, tmp_path) -> None:
    from metacrm.runtime.engine import make_engine

    start(db_url, tmp_path)
    engine = make_engine(db_url)
    with engine.begin() as conn:  # a database made before metacrm_user had `team` and `roles`
        conn.exec_driver_sql("ALTER TABLE metacrm_user DROP COLUMN team")
        conn.exec_driver_sql("ALTER TABLE metacrm_user DROP COLUMN roles")
    engine.dispose()
    before = dump(db_url)
    doc = edit(base())
    doc["entities"]["client"]["fields"]["zip"] = {"type": "string"}
    crm, plan = migrate(db_url, tmp_path, doc)
    added = step(plan, "add_system_columns", "metacrm_user")
    assert "roles" in added.description and "team" in added.description
    columns = schema(db_url)["metacrm_user"]["columns"]
    assert columns["team"] == ("VARCHAR(100)", True)
    assert columns["roles"][1] is False  # NOT NULL with its server default
    after = dump(db_url)
    assert [{k: v for k, v in r.items() if k not in ("team", "roles")} for r in after["metacrm_user"]] == before[
        "metacrm_user"
    ]
    crm.close()


# -- 7. progress ----------------------------------------------------------------------------------


def test_progress_reported_only_when_asked(tmp_path, capsys) -> None:
    from metacrm.migrate.apply import reporting

    db_url = f"sqlite:///{tmp_path / 'crm.db'}"
    start(db_url, tmp_path)
    doc = without_proposal(edit(base()))
    doc["entities"]["deal"]["stages"]["stage_map"] = {"proposal": "new"}
    doc["entities"]["client"]["fields"]["name"]["required"] = False
    calls = []
    with reporting(lambda done, total, step: calls.append((done, total, step and step.kind))):
        crm, plan = migrate(db_url, tmp_path, doc)
    crm.close()
    total = len([s for s in plan if s.actions])
    assert calls[-1] == (total, total, None) and total >= 3
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)  # steps in order
    assert {c[2] for c in calls[:-1]} >= {"remove_stage", "rebuild_table"}
    assert capsys.readouterr() == ("", "")  # the Python API prints nothing


def test_cli_migrate_without_terminal_has_no_progress_bar(tmp_path) -> None:
    from typer.testing import CliRunner

    from metacrm.cli.main import app

    db_url = f"sqlite:///{tmp_path / 'crm.db'}"
    start(db_url, tmp_path)
    doc = edit(base())
    doc["entities"]["client"]["fields"]["zip"] = {"type": "string"}
    _, path = write_model(tmp_path, doc)
    result = CliRunner().invoke(app, ["migrate", "--model", str(path), "--db", db_url])
    assert result.exit_code == 0, result.output
    assert "migrated shop" in result.output and "━" not in result.output


# -- 8. SIGKILL during a SQLite rebuild -----------------------------------------------------------

KILL_SCRIPT = """
import sys
import metacrm
crm = metacrm.connect(metacrm.load_model(sys.argv[1]), sys.argv[2])
crm.migrate()
print("done", flush=True)
"""


def test_sigkill_during_a_sqlite_rebuild_leaves_a_whole_database(tmp_path) -> None:
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    db = tmp_path / "crm.db"
    db_url = f"sqlite:///{db}"
    doc = item_model({"type": "string"})
    old_model, _ = write_model(tmp_path, doc, "old")
    crm = metacrm.connect(old_model, db_url)
    crm.migrate()
    crm.close()
    rows = 200_000
    with sqlite3.connect(db) as raw:
        raw.executemany(
            "INSERT INTO item (created_at, updated_at, version, name, v) VALUES (?, ?, 1, ?, ?)",
            (("2024-01-01 00:00:00.000000", "2024-01-01 00:00:00.000000", f"item {i:06d} " + "x" * 40, str(i))
             for i in range(rows)),
        )
    new_doc = item_model({"type": "integer", "required": True, "fill": 0})  # a conversion in a rebuild
    _, new_path = write_model(tmp_path, new_doc, "new")
    script = tmp_path / "migrate.py"
    script.write_text(KILL_SCRIPT)
    journals = [tmp_path / "crm.db-journal", tmp_path / "crm.db-wal"]  # the engine runs in WAL mode
    backup = tmp_path / "crm.db.pre-migrate"
    proc = subprocess.Popen([sys.executable, str(script), str(new_path), db_url], stdout=subprocess.PIPE)
    killed = False
    deadline = time.monotonic() + 10
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            # the safety copy is made, and the rebuild is writing to the journal
            written = sum(j.stat().st_size for j in journals if j.exists())
            if backup.exists() and written > 1024 * 1024:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        proc.wait()
    with sqlite3.connect(db) as raw:  # opening ignores (WAL) or rolls back (journal) what was not committed
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert raw.execute("SELECT count(*) FROM item").fetchone()[0] == rows
        recorded = raw.execute("SELECT sha256 FROM metacrm_model ORDER BY id DESC").fetchone()[0]
        types = {r[1]: r[2] for r in raw.execute("PRAGMA table_info(item)")}
        values = raw.execute("SELECT v FROM item ORDER BY id").fetchall()
    new_model = metacrm.load_model(new_path)
    print("killed mid-rebuild" if killed else "the migration finished before the kill")
    if killed:
        assert recorded == old_model.sha256, "a killed migration must leave the old model"
    assert recorded in (old_model.sha256, new_model.sha256)
    if recorded == old_model.sha256:  # the old schema and the old values, all of them
        assert types["v"] == "TEXT" and values == [(str(i),) for i in range(rows)]
        crm = metacrm.connect(old_model, db_url)  # the old model works on it
        assert crm.count("item") == rows and crm.get("item", rows)["v"] == str(rows - 1)
    else:  # the commit went through: the new schema and every value converted
        assert types["v"] == "BIGINT" and values == [(i,) for i in range(rows)]
        crm = metacrm.connect(new_model, db_url)
        assert crm.count("item") == rows and crm.get("item", rows)["v"] == rows - 1
    crm.close()
