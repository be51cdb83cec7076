"""Stage moves on SQLite and PostgreSQL: every reason a move is refused (no edge, missing
requires on a field, a link and a many-link, a failed `when`, a role, a terminal stage, a stale
version), each leaving the database as it was; the success path with its history rows;
reopen; allowed_moves; the `move` / `moves` commands; and the path analysis behind
`metacrm graph --paths` (what reaching won needs from each stage)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app

MOVES = Path(__file__).parent / "fixtures" / "valid" / "moves.yaml"


@pytest.fixture
def crm(db_url):
    crm = metacrm.connect(MOVES, db_url)
    crm.migrate()
    crm.add_user("anna", roles=["manager"])
    crm.add_user("boss", roles=["director"])
    yield crm
    crm.close()


@pytest.fixture
def ids(crm) -> dict:
    client = crm.create("client", {"name": "ООО Ромашка"})
    p1 = crm.create("product", {"name": "Сервер"})
    p2 = crm.create("product", {"name": "Ноутбук"})
    return {"client": client["id"], "p1": p1["id"], "p2": p2["id"]}


def state(crm, record_id: int) -> dict:
    """What a move changes: the record's stage columns and its history."""
    table = crm.storage.table("deal")
    history = crm.storage.history_table
    with crm.engine.connect() as conn:
        row = (
            conn.execute(
                select(
                    table.c.stage, table.c.version, table.c.closed_at, table.c.stage_entered_at, table.c.updated_at
                ).where(table.c.id == record_id)
            )
            .mappings()
            .one()
        )
        count = conn.execute(
            select(func.count()).select_from(history).where(history.c.record_id == record_id)
        ).scalar_one()
    return {**row, "history": count}


def snapshot(crm) -> dict:
    """Every row of every table."""
    out = {}
    with crm.engine.connect() as conn:
        for table in crm.storage.metadata.sorted_tables:
            rows = conn.execute(select(table)).mappings().all()
            out[table.name] = sorted(tuple(sorted((k, repr(v)) for k, v in r.items())) for r in rows)
    return out


def refused(crm, record_id: int, error: type, call, match: str) -> Exception:
    """Run ``call``; it must raise ``error`` matching ``match`` and change nothing."""
    before, everything = state(crm, record_id), snapshot(crm)
    with pytest.raises(error, match=match) as info:
        call()
    after = state(crm, record_id)
    assert (after["stage"], after["version"], after["history"]) == (
        before["stage"],
        before["version"],
        before["history"],
    )
    assert snapshot(crm) == everything
    return info.value


WALKS = {
    "new": [],
    "qualified": ["qualified"],
    "proposal": ["qualified", "proposal"],
    "approval": ["qualified", "proposal", "approval"],
    "won": ["qualified", "proposal", "won"],
    "lost": ["lost"],
}


def deal(crm, ids, stage: str = "new", **values) -> dict:
    """A deal with everything filled, moved (as the system user) to ``stage``."""
    filled = {"title": "Поставка", "client": ids["client"], "amount": "50000", "products": [ids["p1"]]}
    if stage == "approval":
        filled["amount"] = "250000"
    if stage == "lost":
        filled["lost_reason"] = "дорого"
    d = crm.create("deal", {**filled, **values})
    for step in WALKS[stage]:
        d = crm.move("deal", d["id"], step)
    return d


# -- the success path ---------------------------------------------------------------------------


def test_moves_write_history_and_close(crm, ids) -> None:
    anna = crm.as_user("anna")
    d = anna.create("deal", {"title": "Поставка", "client": ids["client"]})
    assert d["stage"] == "new" and d["version"] == 1 and d["owner"] == "anna"
    created = state(crm, d["id"])
    assert created["closed_at"] is None and created["history"] == 1

    d = anna.move("deal", d["id"], "qualified", note="позвонили")
    assert d["stage"] == "qualified" and d["version"] == 2
    anna.update("deal", d["id"], {"amount": "90000", "products": [ids["p1"], ids["p2"]]})
    d = crm.move("deal", d["id"], "proposal")
    assert d["version"] == 4  # the update counted too
    d = anna.move("deal", d["id"], "won", note="подписали")
    assert d["stage"] == "won" and d["version"] == 5

    after = state(crm, d["id"])
    assert after["closed_at"] is not None and after["closed_at"] == after["stage_entered_at"]
    history = crm.history("deal", d["id"])
    steps = [(h["from_stage"], h["to_stage"], h["by"], h["note"], h["source"]) for h in history]
    assert steps == [
        (None, "new", "anna", None, "create"),
        ("new", "qualified", "anna", "позвонили", "move"),
        ("qualified", "proposal", None, None, "move"),
        ("proposal", "won", "anna", "подписали", "move"),
    ]
    assert all(h["pipeline"] == "default" and h["record_id"] == d["id"] for h in history)
    assert all(isinstance(h["at"], dt.datetime) for h in history)
    assert [h["at"] for h in history] == sorted(h["at"] for h in history)
    assert history[0]["seconds_in_stage"] is None
    assert all(isinstance(h["seconds_in_stage"], int) and h["seconds_in_stage"] >= 0 for h in history[1:])


def reached(crm, record_id: int) -> set[str]:
    """The stages set in the record's ``reached`` mask."""
    table = crm.storage.table("deal")
    with crm.engine.connect() as conn:
        row = conn.execute(select(table.c.pipeline, table.c.reached).where(table.c.id == record_id)).one()
    bits = crm.storage.reached_bits[("deal", row.pipeline)]
    assert row.reached == sum(bit for bit in bits.values() if row.reached & bit)  # no stray bits
    return {s for s, bit in bits.items() if row.reached & bit}


def test_reached_mask_follows_every_way_into_a_stage(crm, ids) -> None:
    bits = crm.storage.reached_bits[("deal", "default")]
    assert bits == {"new": 1, "qualified": 2, "proposal": 4, "approval": 8, "won": 16, "lost": 32}
    d = deal(crm, ids)  # creation: the initial stage
    assert reached(crm, d["id"]) == {"new"}
    crm.move("deal", d["id"], "qualified")
    crm.move("deal", d["id"], "proposal")
    crm.move("deal", d["id"], "won")
    assert reached(crm, d["id"]) == {"new", "qualified", "proposal", "won"}
    crm.move("deal", d["id"], "proposal")  # a reopen enters a stage already reached: no change
    assert reached(crm, d["id"]) == {"new", "qualified", "proposal", "won"}
    lost = deal(crm, ids, "lost")
    crm.as_user("boss").move("deal", lost["id"], "new")
    assert reached(crm, lost["id"]) == {"new", "lost"}
    # an import placement: the initial stage and the stage given, not the stages between
    batch = crm.create_many(
        "deal",
        [
            {"title": "Импорт", "client": ids["client"], "amount": "150000", "stage": "approval"},  # its `when` holds
            {"title": "Импорт 2", "client": ids["client"]},
        ],
        import_stages=True,
    )
    assert [reached(crm, r["id"]) for r in batch] == [{"new", "approval"}, {"new"}]
    many = crm.create_many("deal", [{"title": f"Пакет {i}", "client": ids["client"]} for i in range(3)])
    assert all(reached(crm, r["id"]) == {"new"} for r in many)
    # a refused move leaves the mask as it was (refused() compares every row of every table)
    refused(crm, many[0]["id"], metacrm.TransitionError, lambda: crm.move("deal", many[0]["id"], "won"), "no move")
    assert reached(crm, many[0]["id"]) == {"new"}


def test_move_returns_the_row_as_stored(crm, ids) -> None:
    """moves.move returns the row after the move, moved_record the public record: what
    crm.move can return without reading the record again."""
    from metacrm.runtime.engine import writing
    from metacrm.runtime.moves import move, moved_record

    d = deal(crm, ids, "proposal")
    ent, table = crm.model.entity("deal"), crm.storage.table("deal")
    with writing(crm.engine) as conn:
        row = conn.execute(select(table).where(table.c.id == d["id"])).mappings().one()
        fresh = move(conn, crm.storage, ent, row, "won", by="anna", roles=None, note="ok")
        record = moved_record(conn, crm.storage, ent, fresh)
        stored = conn.execute(select(table).where(table.c.id == d["id"])).mappings().one()
    assert fresh == dict(stored)
    assert record == crm.get("deal", d["id"]) and record["products"] == [ids["p1"]]


def test_entering_lost_sets_closed_at(crm, ids) -> None:
    d = crm.create("deal", {"title": "Поставка", "lost_reason": "нет бюджета"})
    assert state(crm, d["id"])["closed_at"] is None
    crm.move("deal", d["id"], "lost")
    after = state(crm, d["id"])
    assert after["stage"] == "lost" and after["closed_at"] is not None


def test_seconds_in_stage_counts_the_time_spent(crm, ids) -> None:
    d = crm.create("deal", {"title": "Поставка", "client": ids["client"]})
    table = crm.storage.table("deal")
    an_hour_ago = state(crm, d["id"])["stage_entered_at"] - dt.timedelta(hours=1)
    with crm.engine.begin() as conn:
        conn.execute(table.update().where(table.c.id == d["id"]).values(stage_entered_at=an_hour_ago))
    crm.move("deal", d["id"], "qualified")
    assert 3600 <= crm.history("deal", d["id"])[-1]["seconds_in_stage"] < 3700


# -- every refusal, each writing nothing --------------------------------------------------------


def test_no_edge_is_refused_with_the_allowed_moves(crm, ids) -> None:
    d = crm.create("deal", {"title": "Поставка"})
    error = refused(crm, d["id"], metacrm.TransitionError, lambda: crm.move("deal", d["id"], "proposal"), "no move")
    assert str(error) == (
        f"deal {d['id']}: no move from 'new' to 'proposal'; allowed next: "
        "qualified (client is required), lost (lost_reason is required)"
    )
    assert [m["stage"] for m in error.allowed] == ["qualified", "lost"]
    refused(crm, d["id"], metacrm.TransitionError, lambda: crm.move("deal", d["id"], "won"), "allowed next: qualified")


def test_missing_field_requires(crm, ids) -> None:
    d = deal(crm, ids, "qualified")
    crm.update("deal", d["id"], {"amount": None})
    error = refused(
        crm, d["id"], metacrm.TransitionError, lambda: crm.move("deal", d["id"], "proposal"), "amount is required"
    )
    assert str(error) == (
        f"deal {d['id']}: cannot move from 'qualified' to 'proposal': amount is required; "
        "allowed next: proposal (amount is required), lost (lost_reason is required)"
    )


def test_missing_link_requires(crm, ids) -> None:
    d = crm.create("deal", {"title": "Поставка"})
    refused(crm, d["id"], metacrm.TransitionError, lambda: crm.move("deal", d["id"], "qualified"), "client is required")
    crm.update("deal", d["id"], {"client": ids["client"]})
    assert crm.move("deal", d["id"], "qualified")["stage"] == "qualified"


def test_missing_many_link_requires(crm, ids) -> None:
    d = crm.create("deal", {"title": "Поставка", "client": ids["client"], "amount": "1000"})
    crm.move("deal", d["id"], "qualified")
    refused(
        crm,
        d["id"],
        metacrm.TransitionError,
        lambda: crm.move("deal", d["id"], "proposal"),
        r"cannot move from 'qualified' to 'proposal': products is required;",
    )
    crm.link("deal", d["id"], "products", ids["p2"])
    assert crm.move("deal", d["id"], "proposal")["stage"] == "proposal"


def test_every_missing_requirement_is_named(crm, ids) -> None:
    d = deal(crm, ids, "qualified")
    crm.update("deal", d["id"], {"amount": None, "products": []})
    refused(
        crm,
        d["id"],
        metacrm.TransitionError,
        lambda: crm.move("deal", d["id"], "proposal"),
        "'proposal': amount is required; products is required;",
    )


def test_failed_when_condition(crm, ids) -> None:
    d = deal(crm, ids, "proposal", amount="250000")
    error = refused(
        crm, d["id"], metacrm.TransitionError, lambda: crm.move("deal", d["id"], "won"), "condition not met"
    )
    assert str(error) == (
        f"deal {d['id']}: cannot move from 'proposal' to 'won': condition not met: amount <= 100000; "
        "allowed next: approval, won (condition not met: amount <= 100000), lost (lost_reason is required)"
    )
    assert crm.move("deal", d["id"], "approval")["stage"] == "approval"


def test_role_not_allowed(crm, ids) -> None:
    d = deal(crm, ids, "approval")
    anna = crm.as_user("anna")
    error = refused(
        crm, d["id"], metacrm.TransitionError, lambda: anna.move("deal", d["id"], "won"), "only for roles: director"
    )
    assert "allowed next: won (only for roles: director), lost (lost_reason is required)" in str(error)
    assert crm.as_user("boss").move("deal", d["id"], "won")["stage"] == "won"
    assert crm.history("deal", d["id"])[-1]["by"] == "boss"


def test_the_system_user_may_make_any_move(crm, ids) -> None:
    d = deal(crm, ids, "approval")
    assert crm.user is None and crm.roles is None
    assert crm.move("deal", d["id"], "won")["stage"] == "won"
    assert crm.history("deal", d["id"])[-1]["by"] is None


@pytest.mark.parametrize("closed", ["won", "lost"])
def test_terminal_stage_leaves_only_by_reopen(crm, ids, closed) -> None:
    d = deal(crm, ids, closed)
    reopen = {"won": "proposal", "lost": "new"}[closed]
    other = {"won": "lost", "lost": "qualified"}[closed]
    error = refused(
        crm,
        d["id"],
        metacrm.TransitionError,
        lambda: crm.move("deal", d["id"], other),
        rf"deal {d['id']} is {closed} \(stage '{closed}'\); it can leave only by a declared reopen "
        rf"\(reopen moves: {reopen}\)",
    )
    assert [(m["stage"], m.get("reopen")) for m in error.allowed] == [(reopen, True)]


def test_reopen_clears_closed_at(crm, ids) -> None:
    d = deal(crm, ids, "lost")
    assert state(crm, d["id"])["closed_at"] is not None
    refused(
        crm,
        d["id"],
        metacrm.TransitionError,
        lambda: crm.as_user("anna").move("deal", d["id"], "new"),
        "only for roles: director",
    )
    reopened = crm.as_user("boss").move("deal", d["id"], "new", note="вернулись")
    assert reopened["stage"] == "new"
    after = state(crm, d["id"])
    assert after["closed_at"] is None
    last = crm.history("deal", d["id"])[-1]
    assert (last["from_stage"], last["to_stage"], last["by"], last["note"], last["source"]) == (
        "lost",
        "new",
        "boss",
        "вернулись",
        "reopen",
    )
    won = deal(crm, ids, "won")
    crm.move("deal", won["id"], "proposal")
    assert state(crm, won["id"])["closed_at"] is None and crm.get("deal", won["id"])["stage"] == "proposal"


def test_stale_version_is_a_conflict(crm, ids) -> None:
    d = crm.create("deal", {"title": "Поставка", "client": ids["client"]})
    old = d["version"]
    crm.update("deal", d["id"], {"amount": "10"})
    error = refused(
        crm,
        d["id"],
        metacrm.ConflictError,
        lambda: crm.move("deal", d["id"], "qualified", version=old),
        "changed by someone else",
    )
    assert f"now version {old + 1}, you had {old}" in str(error)
    assert crm.move("deal", d["id"], "qualified", version=old + 1)["version"] == old + 2


def test_unknown_and_current_stage_are_refused(crm, ids) -> None:
    d = crm.create("deal", {"title": "Поставка"})
    refused(
        crm,
        d["id"],
        metacrm.TransitionError,
        lambda: crm.move("deal", d["id"], "qualifed"),
        "unknown stage 'qualifed'.*did you mean 'qualified'",
    )
    refused(crm, d["id"], metacrm.TransitionError, lambda: crm.move("deal", d["id"], "new"), "already in stage 'new'")
    refused(crm, d["id"], metacrm.NotFound, lambda: crm.move("deal", 999, "qualified"), "deal 999 not found")


# -- allowed_moves --------------------------------------------------------------------------


def test_allowed_moves_lists_every_way_out(crm, ids) -> None:
    d = crm.create("deal", {"title": "Поставка"})
    assert crm.allowed_moves("deal", d["id"]) == [
        {
            "stage": "qualified",
            "label": "qualified",
            "kind": "open",
            "possible": False,
            "reasons": ["client is required"],
        },
        {"stage": "lost", "label": "lost", "kind": "lost", "possible": False, "reasons": ["lost_reason is required"]},
    ]
    crm.update("deal", d["id"], {"client": ids["client"]})
    assert [(m["stage"], m["possible"]) for m in crm.allowed_moves("deal", d["id"])] == [
        ("qualified", True),
        ("lost", False),
    ]
    d = deal(crm, ids, "approval")
    anna, boss = crm.as_user("anna"), crm.as_user("boss")
    assert anna.allowed_moves("deal", d["id"])[0] == {
        "stage": "won",
        "label": "won",
        "kind": "won",
        "possible": False,
        "reasons": ["only for roles: director"],
    }
    assert boss.allowed_moves("deal", d["id"])[0]["possible"] is True
    d = deal(crm, ids, "won")
    assert crm.allowed_moves("deal", d["id"]) == [
        {"stage": "proposal", "label": "proposal", "kind": "open", "possible": True, "reasons": [], "reopen": True}
    ]


def test_allowed_moves_writes_nothing(crm, ids) -> None:
    d = deal(crm, ids, "proposal", amount="250000")
    before = snapshot(crm)
    moves = crm.allowed_moves("deal", d["id"])
    assert [(m["stage"], m["possible"], m["reasons"]) for m in moves] == [
        ("approval", True, []),
        ("won", False, ["condition not met: amount <= 100000"]),
        ("lost", False, ["lost_reason is required"]),
    ]
    assert snapshot(crm) == before


def test_moves_of_an_entity_without_stages(crm, ids) -> None:
    with pytest.raises(metacrm.ValidationError, match="client has no stages"):
        crm.move("client", ids["client"], "won")
    with pytest.raises(metacrm.ValidationError, match="client has no stages"):
        crm.allowed_moves("client", ids["client"])


# -- the command line -------------------------------------------------------------------------


@pytest.fixture
def cli(db_url, crm):
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        result = runner.invoke(app, [*args, "--model", str(MOVES), "--db", db_url])
        assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}"
        assert "Traceback" not in result.output
        return result

    return invoke


def test_cli_move_refused_exits_1_with_one_line(crm, ids, cli) -> None:
    d = crm.create("deal", {"title": "Поставка"})
    before = state(crm, d["id"])
    result = cli("move", "deal", str(d["id"]), "proposal", code=1)
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: deal {d['id']}: no move from 'new' to 'proposal'; allowed next: "
        "qualified (client is required), lost (lost_reason is required)"
    ]
    result = cli("move", "deal", str(d["id"]), "qualified", code=1)
    assert result.stderr.splitlines() == [
        f"error: deal {d['id']}: cannot move from 'new' to 'qualified': client is required; "
        "allowed next: qualified (client is required), lost (lost_reason is required)"
    ]
    result = cli("move", "deal", str(d["id"]), "qualified", "--version", "7", code=1)
    assert len(result.stderr.splitlines()) == 1 and "changed by someone else" in result.stderr
    assert state(crm, d["id"]) == before


def test_cli_move_and_moves(crm, ids, cli) -> None:
    d = crm.create("deal", {"title": "Поставка", "client": ids["client"]})
    table = cli("moves", "deal", str(d["id"])).stdout
    lines = table.splitlines()
    assert "stage" in lines[0] and "possible" in lines[0] and "reasons" in lines[0]
    assert any("qualified" in line and "lost_reason" not in line for line in lines[1:])
    assert any("lost" in line and "lost_reason is required" in line for line in lines[1:])
    doc = json.loads(cli("moves", "deal", str(d["id"]), "--format", "json").stdout)
    assert [(m["stage"], m["possible"], m["reasons"]) for m in doc] == [
        ("qualified", True, []),
        ("lost", False, ["lost_reason is required"]),
    ]
    moved = json.loads(
        cli("move", "deal", str(d["id"]), "qualified", "--note", "звонок", "--version", "1", "--format", "json").stdout
    )
    assert moved["stage"] == "qualified" and moved["version"] == 2
    history = json.loads(cli("history", "deal", str(d["id"]), "--stages", "--format", "json").stdout)
    assert [(h["from_stage"], h["to_stage"], h["note"]) for h in history] == [
        (None, "new", None),
        ("new", "qualified", "звонок"),
    ]


# -- path analysis: what reaching won needs (`metacrm graph --paths`) ---------------------------

ROUTES = """\
metacrm: 1
name: routes
entities:
  deal:
    fields:
      title: {type: string}
      x: {type: string}
      y: {type: string}
      z: {type: string}
      reason: {type: text}
    stages:
      initial: new
      states:
        new: {}
        a: {requires: [x]}
        b: {requires: [y]}
        b2: {}
        hold: {}
        signed: {requires: [z]}
        won: {kind: won}
        lost: {kind: lost, requires: [reason]}
      transitions:
        - {from: new, to: [a, b, hold]}
        - {from: a, to: signed}
        - {from: b, to: b2, when: "title != ''"}
        - {from: b2, to: signed}
        - {from: signed, to: won, roles: [boss]}
        - {from: [new, a, b, b2, signed, hold], to: lost}
        - {from: lost, to: new, reopen: true}
roles:
  boss: {"*": all}
"""


@pytest.fixture
def routes(tmp_path) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES, encoding="utf-8")
    return path


def test_analysis_needs_cheapest_and_unwinnable(routes) -> None:
    from metacrm.stages.analysis import analyse_pipeline

    pipeline = metacrm.load_model(routes).entities["deal"].pipelines["default"]
    analysis = analyse_pipeline(pipeline)
    new = analysis.stages["new"]
    assert new.can_win and new.needs == ("z",)  # x or y, but z on every way
    assert [(r.stages, r.requires) for r in new.routes] == [
        (("new", "a", "signed", "won"), ("x", "z")),
        (("new", "b", "b2", "signed", "won"), ("y", "z")),
    ]
    assert new.cheapest == new.routes[0]  # as few requires, fewer moves
    assert new.routes[1].guards == (
        {"from": "b", "to": "b2", "when": "title != ''"},
        {"from": "signed", "to": "won", "roles": ["boss"]},
    )
    assert analysis.paths == new.routes
    assert analysis.stages["b"].needs == ("z",) and analysis.stages["b"].cheapest.stages == ("b", "b2", "signed", "won")
    assert analysis.stages["signed"].needs == () and analysis.stages["won"].routes[0].stages == ("won",)
    assert analysis.unwinnable == ("hold",)
    assert not analysis.stages["lost"].can_win  # the reopen move does not count as a way to won
    truncated = analyse_pipeline(pipeline, limit=1).stages["new"]
    assert truncated.truncated and len(truncated.routes) == 1 and truncated.needs == ("z",)  # needs stay exact


def test_graph_paths_lines_and_json(routes) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["graph", str(routes), "deal", "--paths"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "default: new -> a -> signed -> won",
        "default: new -> b -> b2 -> signed -> won",
        "default: from new, won needs: z, signed -> won (role boss); "
        "cheapest way (new -> a -> signed -> won) needs: x, z, signed -> won (role boss)",
        "default: from a, won needs: z, signed -> won (role boss)",
        "default: from b, won needs: z, b -> b2 (when title != ''), signed -> won (role boss)",
        "default: from b2, won needs: z, signed -> won (role boss)",
        "default: from hold, won is unreachable (only lost)",
        "default: from signed, won needs: signed -> won (role boss)",  # was "nothing": guards count
    ]
    doc = json.loads(runner.invoke(app, ["graph", str(routes), "deal", "--paths", "--format", "json"]).stdout)
    (pipeline,) = doc["pipelines"]
    assert doc["entity"] == "deal" and pipeline["pipeline"] == "default" and pipeline["unwinnable"] == ["hold"]
    assert [p["stages"] for p in pipeline["paths"]] == [
        ["new", "a", "signed", "won"],
        ["new", "b", "b2", "signed", "won"],
    ]
    by_stage = {s["stage"]: s for s in pipeline["stages"]}
    assert by_stage["new"]["needs"] == ["z"] and by_stage["new"]["cheapest"]["requires"] == ["x", "z"]
    assert by_stage["hold"] == {
        "stage": "hold",
        "kind": "open",
        "can_win": False,
        "needs": [],
        "cheapest": None,
        "routes": [],
        "truncated": False,
    }
    graph = json.loads(runner.invoke(app, ["graph", str(routes), "deal", "--format", "json"]).stdout)
    (pipeline,) = graph["pipelines"]
    assert [s["stage"] for s in pipeline["stages"]][:3] == ["new", "a", "b"]
    assert {"from": "lost", "to": "new", "when": None, "roles": [], "reopen": True, "label": None} in pipeline[
        "transitions"
    ]
    mermaid = runner.invoke(app, ["graph", str(routes), "deal"])
    assert mermaid.exit_code == 0 and mermaid.stdout.startswith("stateDiagram-v2")


def test_graph_paths_of_the_logistics_example() -> None:
    logistics = Path(__file__).resolve().parent.parent / "examples" / "logistics.yaml"
    result = CliRunner().invoke(app, ["graph", str(logistics), "shipment", "--paths", "--pipeline", "air"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        "air: request -> quoted -> booked -> awb_issued -> departed -> arrived -> customs -> delivered",
        "air: request -> quoted -> booked -> awb_issued -> departed -> arrived -> delivered",
    ]
    assert "air: from quoted, won needs: carrier, origin, destination, awb_number, delivered_at" in lines
    assert "air: from arrived, won needs: delivered_at" in lines
