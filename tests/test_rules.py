"""Rules in the expression language: an entity's ``rules:``, a field's ``required_if`` and
``readonly_if``, and a stage's ``requires`` kept while a record sits in it. Checked on every
write path (create, create_many, import, update, link changes, moves, automations, HTTP) on
both dialects; a refusal names the entity, the rule and the record and writes nothing."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import require_module

import metacrm
from metacrm.errors import AutomationError, ModelError, TransitionError, ValidationError

MODEL = """
metacrm: 1
name: rules_test
entities:
  client:
    fields:
      name: {type: string, required: true}
      city: {type: string}
  contract:
    fields:
      title: {type: string, required: true}
      start_date: {type: date}
      end_date: {type: date}
      amount: {type: money}
      lost_reason: {type: text, required_if: "stage = 'lost'"}
      discount: {type: percent, readonly_if: "stage in ('won', 'lost')"}
      note: {type: string}
      locked: {type: boolean}
    links:
      client: {to: client, inverse: contracts}
      tags: {to: tag, many: true}
    rules:
      - {name: dates_ordered, check: "end_date >= start_date", message: "the end date must not be before the start date"}
      - {check: "amount is null or amount <= 1000000", message: "amounts above a million need a second contract"}
      - {name: client_city, check: "client is null or client.city is not null", message: "the client needs a city"}
      - {name: tags_limit, check: "not (tags.name = 'banned')", message: "no banned tags"}
    stages:
      initial: new
      states:
        new: {}
        proposal: {requires: [amount, client]}
        won: {kind: won, requires: [tags]}
        lost: {kind: lost}
      transitions:
        new: [proposal, lost]
        proposal: [won, lost]
  tag:
    fields:
      name: {type: string, required: true}
roles:
  boss:
    "*": all
automations:
  stamp:
    when: {entity: contract, updated: [note]}
    if: "note = 'lock'"
    do:
      - update: {values: {discount: 50}}
  breaker:
    when: {entity: contract, updated: [note]}
    if: "note = 'break'"
    do:
      - update: {values: {end_date: "2000-01-01"}}
"""


def _model(tmp_path: Path, text: str = MODEL) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def crm(tmp_path, db_url):
    c = metacrm.connect(_model(tmp_path), db_url)
    c.migrate()
    yield c
    c.close()


def _refused(call, *parts: str) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message
    return info.value


def test_rule_refuses_create_and_writes_nothing(crm):
    bad = {"title": "a", "start_date": "2026-05-01", "end_date": "2026-04-01"}
    err = _refused(lambda: crm.create("contract", bad), "contract", "dates_ordered", "end date must not be before")
    assert err.entity == "contract"
    assert crm.count("contract") == 0
    # an unknown result (an empty date) passes, as a SQL CHECK does
    ok = crm.create("contract", {"title": "b", "start_date": "2026-05-01"})
    assert ok["end_date"] is None
    # a rule without a name is named by its message
    _refused(lambda: crm.create("contract", {"title": "c", "amount": "2000000"}), "amounts above a million")


def test_rule_refuses_create_many_naming_the_record(crm):
    rows = [
        {"title": "ok"},
        {"title": "bad", "start_date": "2026-05-01", "end_date": "2026-04-01"},
    ]
    err = _refused(lambda: crm.create_many("contract", rows), "record 1", "dates_ordered")
    assert [i.index for i in err.issues] == [1]
    assert crm.count("contract") == 0


def test_rule_refuses_update_naming_record(crm):
    c = crm.create("contract", {"title": "a", "start_date": "2026-05-01", "end_date": "2026-06-01"})
    _refused(
        lambda: crm.update("contract", c["id"], {"end_date": "2026-01-01"}),
        f"contract {c['id']} breaks rule 'dates_ordered'",
    )
    assert str(crm.get("contract", c["id"])["end_date"]) == "2026-06-01"
    assert crm.update("contract", c["id"], {"end_date": "2026-07-01"})["version"] == 2


def test_rule_through_a_single_link(crm):
    nowhere = crm.create("client", {"name": "Nowhere"})
    moscow = crm.create("client", {"name": "M", "city": "Moscow"})
    _refused(lambda: crm.create("contract", {"title": "a", "client": nowhere["id"]}), "client_city")
    c = crm.create("contract", {"title": "a", "client": moscow["id"]})
    _refused(lambda: crm.link("contract", c["id"], "client", nowhere["id"]), f"contract {c['id']}", "client_city")
    assert crm.get("contract", c["id"])["client"] == moscow["id"]
    # through the inverse side: the declaring record is checked
    _refused(lambda: crm.link("client", nowhere["id"], "contracts", c["id"]), "client_city")
    assert crm.get("contract", c["id"])["client"] == moscow["id"]


def test_rule_through_a_many_link(crm):
    banned = crm.create("tag", {"name": "banned"})
    fine = crm.create("tag", {"name": "fine"})
    c = crm.create("contract", {"title": "a", "tags": [fine["id"]]})
    _refused(lambda: crm.link("contract", c["id"], "tags", banned["id"]), "tags_limit")
    assert crm.get("contract", c["id"])["tags"] == [fine["id"]]
    _refused(lambda: crm.update("contract", c["id"], {"tags": [banned["id"]]}), "tags_limit")
    _refused(lambda: crm.create("contract", {"title": "b", "tags": [banned["id"]]}), "tags_limit")
    assert crm.count("contract") == 1


def test_required_if_on_create_update_and_move(crm):
    c = crm.create("contract", {"title": "b"})
    # the move that makes the condition hold is refused while the field is empty
    with pytest.raises(TransitionError) as info:
        crm.move("contract", c["id"], "lost")
    assert "lost_reason is required when stage = 'lost'" in str(info.value)
    lost = next(m for m in crm.allowed_moves("contract", c["id"]) if m["stage"] == "lost")
    assert not lost["possible"] and lost["reasons"] == ["lost_reason is required when stage = 'lost'"]
    assert crm.get("contract", c["id"])["stage"] == "new"
    crm.update("contract", c["id"], {"lost_reason": "price"})
    assert crm.move("contract", c["id"], "lost")["stage"] == "lost"
    _refused(lambda: crm.update("contract", c["id"], {"lost_reason": None}), "lost_reason is required")
    assert crm.get("contract", c["id"])["lost_reason"] == "price"


def test_readonly_if(crm):
    c = crm.create("contract", {"title": "a", "discount": 5, "lost_reason": "r"})
    assert crm.update("contract", c["id"], {"discount": 7})["discount"] == 7
    crm.move("contract", c["id"], "lost")
    err = _refused(
        lambda: crm.update("contract", c["id"], {"discount": 9}),
        f"contract {c['id']}: discount is read-only while stage in ('won', 'lost')",
    )
    assert err.field == "discount"
    # the same value again is not a change; other fields stay writable
    crm.update("contract", c["id"], {"discount": 7, "title": "b"})
    assert crm.get("contract", c["id"])["discount"] == 7
    # the model's own automations may still set it
    crm.update("contract", c["id"], {"note": "lock"})
    assert crm.get("contract", c["id"])["discount"] == 50


def test_automation_breaking_a_rule_refuses_the_operation(crm):
    c = crm.create("contract", {"title": "a", "start_date": "2026-05-01"})
    with pytest.raises(AutomationError) as info:
        crm.update("contract", c["id"], {"note": "break"})
    assert "automation 'breaker'" in str(info.value) and "dates_ordered" in str(info.value)
    got = crm.get("contract", c["id"])
    assert got["note"] is None and got["end_date"] is None


def test_stage_keeps_what_it_requires(crm):
    city = crm.create("client", {"name": "M", "city": "Moscow"})
    tag = crm.create("tag", {"name": "t"})
    c = crm.create("contract", {"title": "a", "amount": "10", "client": city["id"]})
    crm.move("contract", c["id"], "proposal")
    _refused(lambda: crm.update("contract", c["id"], {"amount": None}), "stage 'proposal'", "requires amount")
    _refused(lambda: crm.unlink("contract", c["id"], "client"), "stage 'proposal'", "client")
    assert crm.get("contract", c["id"])["amount"] is not None
    crm.link("contract", c["id"], "tags", tag["id"])
    crm.move("contract", c["id"], "won")
    _refused(lambda: crm.unlink("contract", c["id"], "tags", tag["id"]), "stage 'won'", "tags")
    assert crm.get("contract", c["id"])["tags"] == [tag["id"]]
    # a field the stage does not require may be emptied
    assert crm.update("contract", c["id"], {"note": None})["note"] is None


def test_csv_import_checks_rules(crm, tmp_path):
    from metacrm.io.csv_io import import_csv

    path = tmp_path / "c.csv"
    path.write_text("title,start_date,end_date\nok,,\nbad,2026-05-01,2026-04-01\n", encoding="utf-8")
    with pytest.raises(ValidationError) as info:
        import_csv(crm, "contract", path)
    assert "dates_ordered" in str(info.value)
    assert crm.count("contract") == 0


def test_http_api_refuses_with_problem(crm):
    require_module("fastapi", why="the HTTP API")
    from fastapi.testclient import TestClient

    from metacrm.runtime.tokens import create_token
    from metacrm.web import create_app

    crm.add_user("ann", roles=["boss"])
    headers = {"Authorization": f"Bearer {create_token(crm, 'ann')['token']}"}
    c = crm.create("contract", {"title": "a", "start_date": "2026-05-01"})
    with TestClient(create_app(crm), raise_server_exceptions=False) as client:
        bad = {"title": "b", "start_date": "2026-05-01", "end_date": "2026-04-01"}
        r = client.post("/api/v1/contract", json=bad, headers=headers)
        assert r.status_code == 422, r.text
        assert "dates_ordered" in r.json()["detail"]
        r = client.patch(f"/api/v1/contract/{c['id']}", json={"end_date": "2026-01-01"}, headers=headers)
        assert r.status_code == 422, r.text
        assert f"contract {c['id']} breaks rule 'dates_ordered'" in r.json()["detail"]
    assert crm.count("contract") == 1
    assert crm.get("contract", c["id"])["end_date"] is None


BAD = [
    ("rules: [{check: 'end_dte >= start_date', message: m}]", "rule.expression", "end_dte"),
    ("rules: [{check: 'owner = :me', message: m}]", "rule.expression", ":me"),
    ("rules: [{name: a, check: 'x > 1', message: m}, {name: a, check: 'x > 2', message: n}]", "rule.duplicate", "'a'"),
    ("fields: {y: {type: integer, required_if: 'nope > 1'}}", "rule.expression", "nope"),
    ("fields: {y: {type: integer, readonly_if: 'x >'}}", "rule.expression", "readonly_if"),
    ("fields: {y: {type: integer, required: true, required_if: 'x > 1'}}", "rule.always_required", "required"),
    ("fields: {y: {type: integer, formula: 'x + 1', readonly_if: 'x > 1'}}", "rule.derived_field", "computed"),
]


@pytest.mark.parametrize(("extra", "type_", "part"), BAD)
def test_bad_rules_are_model_errors_with_lines(tmp_path, extra, type_, part):
    key, _, rest = extra.partition(": ")
    fields = "      x: {type: integer}\n"
    if key == "fields":
        body = rest.strip()[1:-1]
        fields += f"      {body}\n"
        block = ""
    else:
        block = f"    rules: {rest}\n"
    text = f"metacrm: 1\nname: bad\nentities:\n  thing:\n    owner: true\n    fields:\n{fields}{block}"
    with pytest.raises(ModelError) as info:
        metacrm.load_model(_model(tmp_path, text))
    found = [p for p in info.value.problems if p.type == type_]
    assert found, info.value.problems
    assert part in found[0].message
    assert found[0].line >= 6
    where = found[0].message.split(": ")[0]
    assert found[0].message.count(where) == 1, found[0].message  # the field or rule named once


def test_migration_adding_rules_counts_breaking_records_and_keeps_them(tmp_path, db_url):
    v1 = textwrap.dedent(
        """
        metacrm: 1
        name: mig
        entities:
          contract:
            fields:
              title: {type: string, required: true}
              start_date: {type: date}
              end_date: {type: date}
              reason: {type: text}
              closed: {type: boolean}
        """
    )
    v2 = v1.replace(
        "reason: {type: text}", 'reason: {type: text, required_if: "closed = true"}\n      extra: {type: integer}'
    )
    v2 += (
        "    rules:\n"
        '      - {name: dates_ordered, check: "end_date >= start_date", message: "dates in order"}\n'
        '      - {name: extra_positive, check: "extra > 0", message: "extra must be positive"}\n'
    )
    path = tmp_path / "m.yaml"
    path.write_text(v1, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    rows = [
        {"title": "ok", "start_date": "2026-01-01", "end_date": "2026-02-01"},
        {"title": "bad1", "start_date": "2026-03-01", "end_date": "2026-02-01", "closed": True},
        {"title": "bad2", "start_date": "2026-03-01", "end_date": "2026-01-01", "closed": True, "reason": "r"},
    ]
    ids = [r["id"] for r in crm.create_many("contract", rows)]
    crm.close()
    path.write_text(v2, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    try:
        plan = crm.migrate(dry_run=True)
        steps = {(s.kind, s.target): s for s in plan}
        assert steps[("check_rule", "dates_ordered")].count == 2
        assert steps[("check_rule", "reason")].count == 1
        assert "metacrm list contract --where" in steps[("check_rule", "dates_ordered")].description
        # a rule over a field this migration adds has nothing to count yet
        assert steps[("check_rule", "extra_positive")].count is None
        assert not plan.refusals
        crm.migrate()
        assert crm.count("contract") == 3  # kept as they are
        _refused(
            lambda: crm.update("contract", ids[1], {"title": "x"}), f"contract {ids[1]} breaks rule 'dates_ordered'"
        )
        crm.update("contract", ids[2], {"end_date": "2026-04-01", "extra": 1})
        assert crm.update("contract", ids[0], {"extra": 2})["extra"] == 2
    finally:
        crm.close()


def test_delete_that_empties_a_link_a_rule_needs_is_refused(tmp_path, db_url):
    text = """
    metacrm: 1
    name: del
    entities:
      client:
        fields:
          name: {type: string, required: true}
      deal:
        fields:
          title: {type: string, required: true}
          signed: {type: boolean}
        links:
          client: {to: client, on_delete: set_null}
        rules:
          - {name: signed_has_client, check: "signed = false or client is not null", message: "a signed deal needs a client"}
    """
    crm = metacrm.connect(_model(tmp_path, text), db_url)
    crm.migrate()
    try:
        a = crm.create("client", {"name": "A"})
        b = crm.create("client", {"name": "B"})
        d = crm.create("deal", {"title": "d", "signed": True, "client": a["id"]})
        crm.create("deal", {"title": "e", "signed": False, "client": b["id"]})
        d2 = crm.create("deal", {"title": "f", "signed": True, "client": a["id"]})  # ids not consecutive
        err = _refused(
            lambda: crm.delete("client", a["id"]), f"deal {d['id']} breaks rule 'signed_has_client'", "(and 1 more)"
        )
        assert [i.message.split()[1] for i in err.issues] == [str(d["id"]), str(d2["id"])]
        assert crm.count("client") == 2 and crm.get("deal", d["id"])["client"] == a["id"]
        crm.delete("client", b["id"])  # the unsigned deal may lose its client
        assert crm.count("client") == 1
    finally:
        crm.close()


def test_required_if_through_a_link_is_checked_after_the_move(tmp_path, db_url):
    text = """
    metacrm: 1
    name: via
    entities:
      client:
        fields:
          name: {type: string, required: true}
          vip: {type: boolean}
      deal:
        fields:
          title: {type: string, required: true}
          manager_note: {type: text, required_if: "stage = 'won' and client.vip = true"}
        links:
          client: {to: client}
        stages:
          initial: new
          states: {new: {}, won: {kind: won}}
          transitions: {new: [won]}
    """
    crm = metacrm.connect(_model(tmp_path, text), db_url)
    crm.migrate()
    try:
        vip = crm.create("client", {"name": "V", "vip": True})
        d = crm.create("deal", {"title": "d", "client": vip["id"]})
        _refused(lambda: crm.move("deal", d["id"], "won"), f"deal {d['id']}: manager_note is required when")
        assert crm.get("deal", d["id"])["stage"] == "new"
        crm.update("deal", d["id"], {"manager_note": "ok"})
        assert crm.move("deal", d["id"], "won")["stage"] == "won"
    finally:
        crm.close()


def test_delete_that_empties_a_link_a_stage_requires_is_refused(tmp_path, db_url):
    text = """
    metacrm: 1
    name: keep
    entities:
      client:
        fields:
          name: {type: string, required: true}
      deal:
        fields:
          title: {type: string, required: true}
        links:
          client: {to: client, on_delete: set_null}
        stages:
          initial: new
          states: {new: {}, signed: {requires: [client]}, done: {kind: won}}
          transitions: {new: [signed], signed: [done]}
    """
    crm = metacrm.connect(_model(tmp_path, text), db_url)
    crm.migrate()
    try:
        a = crm.create("client", {"name": "A"})
        d = crm.create("deal", {"title": "d", "client": a["id"]})
        free = crm.create("deal", {"title": "e", "client": a["id"]})
        crm.move("deal", d["id"], "signed")
        _refused(lambda: crm.delete("client", a["id"]), f"deal {d['id']} is in stage 'signed', which requires client")
        assert crm.get("deal", free["id"])["client"] == a["id"]
        crm.move("deal", d["id"], "done")  # 'done' requires nothing: the client may go
        crm.delete("client", a["id"])
        assert crm.get("deal", d["id"])["client"] is None
    finally:
        crm.close()
