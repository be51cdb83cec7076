"""Defects of issue 14 item 7 still present after session 6, on SQLite and PostgreSQL: a required
``pipeline_field`` filled from ``pipeline``; ``stage_map``/``pipeline_map`` moves in the stage
history; a refused duplicate names the stored record; rendered text in webhook bodies and a
subject from the text; ``graph --paths`` naming guards and roles; ``report group --by stage
--pipeline``; integer ticks on the funnel PNG."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import require_module
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.errors import ValidationError
from metacrm.storage.types import now_utc

MODEL = Path(__file__).parent / "fixtures" / "valid" / "defects_left.yaml"


def invoke(*args: str, code: int = 0):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def crm(db_url):
    crm = metacrm.connect(str(MODEL), db_url)
    crm.migrate()
    yield crm
    crm.close()


def test_a_required_pipeline_field_is_filled_from_pipeline(crm) -> None:
    deal = crm.create("deal", {"title": "flat", "pipeline": "rental"})
    assert (deal["kind"], deal["pipeline"], deal["stage"]) == ("rental", "rental", "asked")
    [one, two] = crm.create_many("deal", [{"title": "a", "pipeline": "sales"}, {"title": "b", "kind": "rental"}])
    assert (one["kind"], one["pipeline"]) == ("sales", "sales")
    assert (two["kind"], two["pipeline"]) == ("rental", "rental")
    with pytest.raises(ValidationError, match=r"deal\.kind: is required"):
        crm.create("deal", {"title": "neither"})  # neither given: the required field says so
    with pytest.raises(ValidationError, match="must agree"):
        crm.create("deal", {"title": "both", "kind": "sales", "pipeline": "rental"})


def test_a_refused_duplicate_names_the_stored_record(crm) -> None:
    stored = crm.create("client", {"name": "Ann", "email": "ann@example.com", "code": "A1"})
    with pytest.raises(ValidationError) as info:  # a unique field (the constraint answers)
        crm.create("client", {"name": "Bob", "code": "A1"})
    assert str(info.value) == f"client.code: 'A1' is already used by client {stored['id']}"
    assert info.value.issues[0].field == "code"
    with pytest.raises(ValidationError) as info:  # a batch (checked before writing)
        crm.create_many("client", [{"name": "Bob", "code": "B1"}, {"name": "Cy", "code": "A1"}])
    assert str(info.value) == f"record 1: client.code: 'A1' is already used by client {stored['id']}"
    other = crm.create("client", {"name": "Dan", "code": "D1"})
    with pytest.raises(ValidationError, match=f"'A1' is already used by client {stored['id']}$"):
        crm.update("client", other["id"], {"code": "A1"})
    with pytest.raises(ValidationError, match=f"duplicate of client {stored['id']}"):  # a `block` rule
        crm.create("client", {"name": "Eve", "email": "ann@example.com"})
    assert crm.count("client") == 2


def test_webhook_bodies_carry_the_text_and_a_subject_comes_from_it(crm) -> None:
    deal = crm.create("deal", {"title": "Flat 7", "kind": "sales"})
    crm.move("deal", deal["id"], "won")
    messages = {m["channel"]: m for m in crm.outbox()}
    text = "Deal Flat 7 won\nCongratulations"
    mail, hook = messages["email"], messages["webhook"]
    assert (mail["subject"], mail["body"]) == ("Deal Flat 7 won", text)  # no `subject:`: the first line
    assert hook["payload"]["subject"] == "Deal Flat 7 won" and hook["payload"]["text"] == text
    assert hook["payload"]["record"]["id"] == deal["id"] and hook["payload"]["event"] == "enters:won"


def opts(crm) -> list[str]:
    return ["--model", str(MODEL), "--db", crm.engine.url.render_as_string(hide_password=False)]


def test_report_group_by_stage_takes_one_pipeline(crm) -> None:
    crm.create_many("deal", [{"title": "a", "kind": "sales"}, {"title": "b", "kind": "sales"}, {"title": "c", "kind": "rental"}])
    result = invoke("report", "group", "deal", "--by", "stage", *opts(crm), code=2)
    assert result.stderr == (
        "error: deal: --by stage mixes the stages of pipelines sales, rental: give --pipeline (one of sales, rental)\n"
    )
    doc = crm.report_group("deal", "stage", pipeline="rental")
    assert [(r["value"], r["count"]) for r in doc["rows"]] == [("asked", 1)] and doc["pipeline"] == "rental"
    result = invoke("report", "group", "deal", "--by", "stage", "--pipeline", "sales", "-f", "csv", *opts(crm))
    assert result.stdout.splitlines() == ["value,label,count", "new,new,2"]
    result = invoke("report", "group", "deal", "--by", "kind", "--pipeline", "rental", "-f", "csv", *opts(crm))
    assert result.stdout.splitlines() == ["value,label,count", "rental,rental,1"]
    result = invoke("report", "group", "deal", "--by", "stage", "--pipeline", "rentl", *opts(crm), code=2)
    assert "unknown pipeline 'rentl'" in result.stderr and "valid: " in result.stderr


def test_chart_ticks_of_counts_are_whole_numbers(crm, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")  # the [png] extra
    from metacrm.runtime.reports import funnel_png, group_png

    deals = crm.create_many("deal", [{"title": t, "kind": "sales"} for t in ("a", "b")])
    crm.move("deal", deals[0]["id"], "talk")

    def ticks(fig) -> list[str]:
        return [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]

    funnel = ticks(funnel_png(crm.funnel("deal", "sales"), tmp_path / "funnel.png"))
    assert funnel and len(set(funnel)) == len(funnel), funnel  # was 0 0 0 1 1 1 2 2
    assert all(t.isdigit() for t in funnel), funnel
    group = ticks(group_png(crm.report_group("deal", "stage", pipeline="sales"), tmp_path / "group.png"))
    assert group and len(set(group)) == len(group) and all(t.isdigit() for t in group), group
    assert (tmp_path / "funnel.png").stat().st_size > 0 and (tmp_path / "group.png").stat().st_size > 0


GUARDED = """\
metacrm: 1
name: guarded
entities:
  deal:
    fields:
      amount: {type: money}
    stages:
      initial: new
      states:
        new: {}
        talk: {}
        won: {kind: won}
      transitions:
        - {from: new, to: talk, when: "amount > 0"}
        - {from: talk, to: won, roles: [boss]}
        - {from: new, to: won, roles: [boss]}
roles:
  boss: {"*": all}
"""


def test_graph_paths_names_guards_and_roles(db_url, tmp_path: Path) -> None:
    model = tmp_path / "guarded.yaml"
    model.write_text(GUARDED, encoding="utf-8")
    crm = metacrm.connect(str(model), db_url)  # the model works on the dialect (moves obey the guards)
    crm.migrate()
    deal = crm.create("deal", {})
    with pytest.raises(Exception, match="amount > 0"):
        crm.move("deal", deal["id"], "talk")
    crm.close()
    lines = invoke("graph", str(model), "deal", "--paths").stdout.splitlines()
    assert "default: from talk, won needs: talk -> won (role boss)" in lines
    assert (
        "default: from new, won needs: no field, but every way passes a guarded move; "
        "cheapest way (new -> won) needs: new -> won (role boss)"
    ) in lines
    assert not any("needs: nothing" in line for line in lines)


def _without_talk(tmp_path: Path) -> Path:
    """The model with stage talk of pipeline sales removed, its records sent to new."""
    import yaml

    doc = yaml.safe_load(MODEL.read_text(encoding="utf-8"))
    sales = doc["entities"]["deal"]["pipelines"]["sales"]
    del sales["states"]["talk"]
    sales["transitions"] = {"new": ["won"]}
    sales["stage_map"] = {"talk": "new"}
    path = tmp_path / "without_talk.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def test_a_stage_map_move_is_in_the_history_and_the_as_of_funnel(crm, tmp_path: Path) -> None:
    deals = crm.create_many("deal", [{"title": t, "kind": "sales"} for t in ("a", "b", "c")])
    crm.move("deal", deals[0]["id"], "talk")
    moved = crm.get("deal", deals[0]["id"])
    url = crm.engine.url.render_as_string(hide_password=False)
    crm.close()
    new = metacrm.connect(str(_without_talk(tmp_path)), url)
    try:
        new.migrate()
        after = new.get("deal", moved["id"])
        assert after["stage"] == "new" and after["version"] == moved["version"] + 1
        *_, last = new.history("deal", moved["id"])
        assert (last["pipeline"], last["from_stage"], last["to_stage"], last["source"]) == ("sales", "talk", "new", "migrate")
        funnel = new.funnel("deal", "sales", as_of=now_utc())
        assert {s["stage"]: s["now"] for s in funnel["stages"]}["new"] == 3  # none lost from the as-of funnel
        with pytest.raises(Exception, match="changed"):  # an edit opened before the migration conflicts
            new.update("deal", moved["id"], {"title": "late"}, version=moved["version"])
    finally:
        new.close()


def test_the_http_group_report_takes_a_pipeline(crm) -> None:
    require_module("fastapi", why="the HTTP API (the [web] extra)")
    from fastapi.testclient import TestClient

    from metacrm.runtime.tokens import create_token
    from metacrm.web import create_app

    crm.create_many("deal", [{"title": "a", "kind": "sales"}, {"title": "b", "kind": "rental"}])
    crm.add_user("boss", roles=["boss"])
    token = create_token(crm, "boss")["token"]
    with TestClient(create_app(crm), raise_server_exceptions=False) as client:
        answer = client.get(
            "/api/v1/reports/group/deal",
            params={"by": "stage", "pipeline": "rental"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 200, answer.text
    assert [(r["value"], r["count"]) for r in answer.json()["rows"]] == [("asked", 1)]
