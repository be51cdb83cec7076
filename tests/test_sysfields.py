"""System-managed fields on SQLite and PostgreSQL: ``readonly`` (a user's value refused, the
system, automations and imports may set it) and ``autonumber`` (numbers at create, never
given twice, consecutive under concurrent creates, filled by a migration that adds it)."""

from __future__ import annotations

import datetime as dt
import multiprocessing
from pathlib import Path

import pytest
from conftest import dump_database
from sqlalchemy import select

import metacrm
from metacrm.model.autonumber import pattern_problem, prefix, render

MODEL = """\
metacrm: 1
name: purchasing
timezone: Europe/Moscow
entities:
  purchase:
    fields:
      title: {type: string, required: true}
      number: {type: string, autonumber: "PO-{YYYY}-{####}", unique: true}
      approved_by: {type: string, readonly: true}
      status: {type: choice, options: [draft, sent], default: draft}
  ticket:
    fields:
      subject: {type: string, required: true}
      code: {type: string, autonumber: "T{###}"}
automations:
  approve:
    when: {entity: purchase, updated: [status]}
    if: "status = 'sent'"
    do:
      - update: {values: {approved_by: robot}}
roles:
  clerk:
    "*": all
"""


def write_model(tmp_path: Path, text: str = MODEL, name: str = "model.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def crm(db_url, tmp_path):
    crm = metacrm.connect(write_model(tmp_path), db_url)
    crm.migrate()
    crm.add_user("ivan", roles=["clerk"])
    yield crm
    crm.close()


# -- patterns (pure) -----------------------------------------------------------------------------


def test_patterns() -> None:
    day = dt.date(2026, 3, 9)
    assert prefix("PO-{YYYY}-{####}", day) == "PO-2026-{####}"
    assert render(prefix("INV-{YY}{MM}{DD}-{###}", day), 7) == "INV-260309-007"
    assert render("T{##}", 12345) == "T12345"  # a longer number is written whole
    assert pattern_problem("PO-{YYYY}-{####}") is None
    assert "exactly one number placeholder" in pattern_problem("PO-{YYYY}")
    assert "exactly one number placeholder" in pattern_problem("{#}-{##}")
    assert "unknown placeholder {year}" in pattern_problem("PO-{year}-{#}")
    assert "unbalanced brace" in pattern_problem("PO-{#}}")


@pytest.mark.parametrize(
    ("decl", "message"),
    [
        ('{type: string, autonumber: "PO-{####"}', "unbalanced brace"),
        ('{type: integer, autonumber: "{####}"}', "applies to a string or text field, not integer"),
        ('{type: string, autonumber: "{####}", required: true}', "cannot also have 'required'"),
        ('{type: string, autonumber: "{####}", default: x}', "cannot also have 'default'"),
        ('{type: string, autonumber: "{####}", readonly: false}', "always readonly"),
        ("{type: string, autonumber: 5}", "autonumber"),
        ("{type: string, readonly: yes please}", "readonly"),
    ],
)
def test_bad_declarations_are_refused_with_the_field_named(tmp_path, decl, message) -> None:
    text = f"metacrm: 1\nname: bad\nentities:\n  purchase:\n    fields:\n      number: {decl}\n"
    with pytest.raises(metacrm.ModelError) as info:
        metacrm.load_model(write_model(tmp_path, text))
    text = "\n".join(p.format() for p in info.value.problems)
    assert message in text
    assert "field 'purchase.number'" in text or "purchase.fields.number" in text


# -- readonly ------------------------------------------------------------------------------------


def test_a_users_value_for_a_readonly_field_is_refused(crm, db_url) -> None:
    ivan = crm.as_user("ivan")
    before = dump_database(crm.engine)
    with pytest.raises(metacrm.ValidationError, match=r"^purchase\.approved_by: is readonly") as info:
        ivan.create("purchase", {"title": "Бумага", "approved_by": "ivan"})
    assert "\n" not in str(info.value)
    with pytest.raises(metacrm.ValidationError, match=r"record 1: purchase\.number: is readonly"):
        ivan.create_many("purchase", [{"title": "a"}, {"title": "b", "number": "PO-1"}])
    assert dump_database(crm.engine) == before  # nothing written

    order = ivan.create("purchase", {"title": "Бумага", "approved_by": ""})  # an empty form field is no value
    assert order["approved_by"] is None
    with pytest.raises(metacrm.ValidationError, match=r"^purchase\.approved_by: is readonly"):
        ivan.update("purchase", order["id"], {"approved_by": "ivan"})
    with pytest.raises(metacrm.ValidationError, match=r"^purchase\.number: is readonly"):
        ivan.update("purchase", order["id"], {"number": "PO-1999-0001"})
    assert crm.get("purchase", order["id"])["version"] == 1
    # giving back the stored value (a form that sends the whole record) is no change
    same = ivan.update("purchase", order["id"], {"number": order["number"], "title": "Бумага А4"})
    assert same["title"] == "Бумага А4"

    # the system may set it; an automation (acting as the system) too
    assert crm.update("purchase", order["id"], {"approved_by": "anna"})["approved_by"] == "anna"
    ivan.update("purchase", order["id"], {"status": "sent"})
    assert crm.get("purchase", order["id"])["approved_by"] == "robot"


def test_imports_may_set_readonly_fields(crm, tmp_path) -> None:
    ivan = crm.as_user("ivan")
    rows = [{"title": "Старый", "number": "PO-2019-0042", "approved_by": "legacy"}, {"title": "Новый"}]
    out = ivan.create_many("purchase", rows, permission="import")
    assert out[0]["number"] == "PO-2019-0042" and out[0]["approved_by"] == "legacy"
    assert out[1]["number"].endswith("-0001")


def test_cli_refuses_a_users_value(crm, db_url, tmp_path) -> None:
    from typer.testing import CliRunner

    from metacrm.cli.main import app

    model = str(tmp_path / "model.yaml")
    runner = CliRunner()
    args = ["create", "purchase", "title=x", "approved_by=me", "--model", model, "--db", db_url]
    refused = runner.invoke(app, [*args, "--as", "ivan"])
    assert refused.exit_code == 1
    assert "purchase.approved_by: is readonly" in refused.output
    assert crm.count("purchase") == 0
    assert runner.invoke(app, args).exit_code == 0  # the system (no --as) may


def test_http_refuses_a_users_value(crm) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from metacrm.runtime.tokens import create_token
    from metacrm.web import create_app

    token = create_token(crm, "ivan")["token"]
    client = TestClient(create_app(crm))
    headers = {"Authorization": f"Bearer {token}"}
    r = client.post("/api/v1/purchase", json={"title": "x", "approved_by": "me"}, headers=headers)
    assert r.status_code == 422
    assert "purchase.approved_by: is readonly" in r.text
    r = client.post("/api/v1/purchase", json={"title": "x"}, headers=headers)
    assert r.status_code in (200, 201)
    assert r.json()["number"].startswith("PO-")
    assert crm.count("purchase") == 1
    schemas = client.get("/api/v1/openapi.json", headers=headers).json()["components"]["schemas"]
    assert "approved_by" not in schemas["purchase.create"]["properties"]
    assert "number" not in schemas["purchase.patch"]["properties"]
    assert schemas["purchase.read"]["properties"]["number"]["readOnly"] is True


# -- autonumber ------------------------------------------------------------------------------------


def test_numbers_are_given_in_order_and_never_twice(crm) -> None:
    year = dt.datetime.now(dt.UTC).astimezone(__import__("zoneinfo").ZoneInfo("Europe/Moscow")).year
    first = crm.create("purchase", {"title": "a"})
    assert first["number"] == f"PO-{year}-0001"
    more = crm.create_many("purchase", [{"title": "b"}, {"title": "c"}])
    assert [m["number"] for m in more] == [f"PO-{year}-0002", f"PO-{year}-0003"]
    assert crm.get("purchase", more[1]["id"])["number"] == f"PO-{year}-0003"  # as stored
    crm.delete("purchase", more[1]["id"])
    assert crm.create("purchase", {"title": "d"})["number"] == f"PO-{year}-0004"  # never reused
    # a refused create gives nothing away: the next number is still the next
    with pytest.raises(metacrm.ValidationError):
        crm.create_many("purchase", [{"title": "e"}, {"title": None}])
    assert crm.create("purchase", {"title": "f"})["number"] == f"PO-{year}-0005"
    # each field has its own sequence; a pattern without a date never starts again
    assert [t["code"] for t in crm.create_many("ticket", [{"subject": "x"}] * 3)] == ["T001", "T002", "T003"]
    seq = crm.storage.sequence_table
    with crm.engine.connect() as conn:
        rows = dict(conn.execute(select(seq.c.name, seq.c.value)).all())
    assert rows == {f"purchase.number:PO-{year}-{{####}}": 5, "ticket.code:T{###}": 3}


def test_the_year_starts_a_new_sequence(crm) -> None:
    from metacrm.runtime import sysfields

    ent = crm.model.entity("purchase")
    rows = [
        {"created_at": dt.datetime(2025, 12, 31, 20, 59, tzinfo=dt.UTC), "number": None},  # 23:59 in Moscow
        {"created_at": dt.datetime(2025, 12, 31, 21, 0, tzinfo=dt.UTC), "number": None},  # 00:00 next year
        {"created_at": dt.datetime(2026, 1, 2, tzinfo=dt.UTC), "number": None},
    ]
    with crm.engine.begin() as conn:
        sysfields.number_rows(conn, crm.storage, ent, rows, crm.model.timezone)
    assert [r["number"] for r in rows] == ["PO-2025-0001", "PO-2026-0001", "PO-2026-0002"]


def _creator(model: str, url: str, barrier, results, count: int) -> None:
    crm = metacrm.connect(model, url, busy_timeout=60 if url.startswith("sqlite") else None)
    try:
        barrier.wait(60)
        for i in range(count):
            results.put(crm.retrying(crm.create, "ticket", {"subject": f"s{i}"}, attempts=10)["code"])
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        results.put(f"error: {type(exc).__name__}: {exc}")
    finally:
        crm.close()


def test_concurrent_creates_get_distinct_consecutive_numbers(crm, db_url, tmp_path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    count = 5
    model = str(tmp_path / "model.yaml")
    procs = [context.Process(target=_creator, args=(model, db_url, barrier, results, count)) for _ in range(4)]
    for p in procs:
        p.start()
    codes = [results.get(timeout=120) for _ in range(4 * count)]
    for p in procs:
        p.join(60)
    assert not [c for c in codes if c.startswith("error")], codes
    assert sorted(codes) == [f"T{n:03}" for n in range(1, 4 * count + 1)]
    assert sorted(t["code"] for t in crm.find("ticket")) == sorted(codes)


# -- migrations ------------------------------------------------------------------------------------

BEFORE = """\
metacrm: 1
name: purchasing
entities:
  purchase:
    fields:
      title: {type: string, required: true}
      ref: {type: string}
"""


def test_a_migration_numbers_existing_records_in_id_order(db_url, tmp_path) -> None:
    old = metacrm.connect(write_model(tmp_path, BEFORE, "old.yaml"), db_url)
    old.migrate()
    ids = [r["id"] for r in old.create_many("purchase", [{"title": t} for t in "abc"])]
    old.create("purchase", {"title": "d", "ref": "R-7"})
    old.delete("purchase", ids[1])
    old.close()
    after = BEFORE.replace(
        "      ref: {type: string}\n",
        '      ref: {type: string, autonumber: "R-{##}"}\n      number: {type: string, autonumber: "N{###}"}\n',
    )
    crm = metacrm.connect(write_model(tmp_path, after, "new.yaml"), db_url)
    try:
        plan = crm.migrate(dry_run=True)
        steps = {s.kind: s for s in plan}
        assert steps["add_field"].count == 3
        assert "numbered 'N{###}' in id order" in steps["add_field"].description
        assert steps["autonumber_field"].count == 2  # the records without a ref
        crm.migrate()
        rows = sorted(crm.find("purchase"), key=lambda r: r["id"])
        assert [(r["title"], r["number"], r["ref"]) for r in rows] == [
            ("a", "N001", "R-01"),
            ("c", "N002", "R-02"),
            ("d", "N003", "R-7"),
        ]
        assert crm.create("purchase", {"title": "e"})["number"] == "N004"  # the sequence goes on
    finally:
        crm.close()


# -- created_by / updated_by -----------------------------------------------------------------------

STAGED = """\
metacrm: 1
name: desk
entities:
  case:
    fields:
      subject: {type: string, required: true}
    links:
      tags: {to: tag, many: true}
    stages:
      initial: new
      states: {new: {}, done: {kind: won}}
      transitions: {new: [done]}
  tag:
    fields:
      name: {type: string, required: true}
roles:
  agent:
    "*": all
"""


@pytest.fixture
def desk(db_url, tmp_path):
    crm = metacrm.connect(write_model(tmp_path, STAGED.replace("case", "ticket"), "desk.yaml"), db_url)
    crm.migrate()
    for login in ("ann", "bob"):
        crm.add_user(login, roles=["agent"])
    yield crm
    crm.close()


def test_who_created_and_who_changed_a_record(desk) -> None:
    ann, bob = desk.as_user("ann"), desk.as_user("bob")
    mine = ann.create("ticket", {"subject": "a"})
    assert (mine["created_by"], mine["updated_by"]) == ("ann", "ann")
    system = desk.create("ticket", {"subject": "b"})
    assert (system["created_by"], system["updated_by"]) == (None, None)  # the system
    theirs = bob.create_many("ticket", [{"subject": "c"}, {"subject": "d"}])
    assert {t["created_by"] for t in theirs} == {"bob"}

    changed = bob.update("ticket", mine["id"], {"subject": "a2"})
    assert (changed["created_by"], changed["updated_by"]) == ("ann", "bob")
    tag = desk.create("tag", {"name": "vip"})
    assert ann.link("ticket", mine["id"], "tags", tag["id"])["updated_by"] == "ann"
    bob.move("ticket", mine["id"], "done")
    assert desk.get("ticket", mine["id"])["updated_by"] == "bob"
    desk.update("ticket", mine["id"], {"subject": "a3"})
    assert desk.get("ticket", mine["id"])["updated_by"] is None

    # filters, lists and counts can use them; `:me` is the acting user
    assert [t["subject"] for t in ann.find("ticket", "created_by = :me")] == ["a3"]
    assert sorted(t["subject"] for t in bob.find("ticket", "created_by = :me", order_by="id")) == ["c", "d"]
    assert desk.count("ticket", "created_by is null") == 1
    assert ann.count("ticket", "updated_by = 'bob'") == 2
    assert [t["subject"] for t in desk.find("ticket", "created_by = :who", {"who": "ann"})] == ["a3"]
    board = bob.board("ticket", where="created_by = :me")
    assert {c["stage"]: c["count"] for c in board["columns"]} == {"new": 2, "done": 0}
    ordered = desk.find("ticket", "created_by is not null", order_by=["-created_by", "id"])
    assert [t["subject"] for t in ordered] == ["c", "d", "a3"]


def test_a_database_without_the_columns_is_migrated(db_url, tmp_path) -> None:
    from sqlalchemy import text

    path = write_model(tmp_path, STAGED.replace("case", "ticket"), "desk.yaml")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    crm.create("ticket", {"subject": "old"})
    with crm.engine.begin() as conn:  # as an earlier metacrm made it
        for table in ("ticket", "tag"):
            for column in ("created_by", "updated_by"):
                conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    crm.close()
    crm = metacrm.connect(path, db_url)
    try:
        with pytest.raises(metacrm.MigrationError, match="no created_by/updated_by columns: run `metacrm migrate`"):
            crm.find("ticket")
        plan = crm.migrate(dry_run=True)
        added = [s for s in plan if s.kind == "add_system_columns"]
        assert sorted(s.entity for s in added) == ["tag", "ticket"]
        assert {s.entity: s.count for s in added} == {"ticket": 1, "tag": 0}
        crm.migrate()
        (old,) = crm.find("ticket")
        assert (old["subject"], old["created_by"], old["updated_by"]) == ("old", None, None)
        assert crm.as_user(None).create("ticket", {"subject": "new"})["created_by"] is None
        assert len(crm.migrate(dry_run=True)) == 0
    finally:
        crm.close()


def test_cli_lists_my_records(desk, db_url, tmp_path) -> None:
    from typer.testing import CliRunner

    from metacrm.cli.main import app

    desk.as_user("ann").create("ticket", {"subject": "annas"})
    desk.as_user("bob").create("ticket", {"subject": "bobs"})
    args = ["list", "ticket", "--where", "created_by = :me", "--columns", "subject,created_by", "--format", "csv"]
    out = CliRunner().invoke(app, [*args, "--model", str(tmp_path / "desk.yaml"), "--db", db_url, "--as", "bob"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines() == ["subject,created_by", "bobs,bob"]
