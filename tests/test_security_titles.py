"""No title of a record the user may not read, anywhere (issue 15, item 2), on SQLite and
PostgreSQL, written as an attacker: anna (a manager, `read: own`) has deals linked to clients of
gleb, and a task about one of them; every path that shows a linked record (card, related,
group and funnel by a link, board, timeline, export, search, tasks, notifications, the CLI)
must show those clients as hidden — no title, no field value — while her own clients' titles
still show, and the hidden targets of a group report are one group."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.io.csv_io import export_csv

MODEL = Path(__file__).parent / "fixtures" / "valid" / "security_titles.yaml"
SECRETS = ("Hidden Corp", "Hidden Two", "s3cr3t-value", "other-secret", "Gleb deal", "Gleb private task")
runner = CliRunner()


@pytest.fixture
def world(db_url):
    crm = metacrm.connect(MODEL, db_url)
    crm.migrate()
    crm.add_user("anna", roles=["manager"], team="north", email="anna@example.com")
    crm.add_user("gleb", roles=["manager"], team="south", email="gleb@example.com")
    crm.add_user("boss", roles=["director"], email="boss@example.com")
    ids = {
        "hidden": crm.create("client", {"name": "Hidden Corp", "secret": "s3cr3t-value", "owner": "gleb"})["id"],
        "hidden2": crm.create("client", {"name": "Hidden Two", "secret": "other-secret", "owner": "gleb"})["id"],
        "mine": crm.create("client", {"name": "Visible Ltd", "secret": "mine-known", "owner": "anna"})["id"],
    }
    ids["d1"] = crm.create(
        "deal",
        {
            "title": "Anna one",
            "amount": "100",
            "client": ids["hidden"],
            "partners": [ids["hidden"], ids["mine"]],
            "owner": "anna",
        },
    )["id"]
    ids["d2"] = crm.create("deal", {"title": "Anna two", "amount": "10", "client": ids["hidden2"], "owner": "anna"})[
        "id"
    ]
    ids["d3"] = crm.create("deal", {"title": "Anna three", "amount": "1", "client": ids["mine"], "owner": "anna"})["id"]
    ids["d4"] = crm.create("deal", {"title": "Anna four", "amount": "5", "owner": "anna"})["id"]
    ids["gleb"] = crm.create("deal", {"title": "Gleb deal", "amount": "7", "client": ids["hidden"], "owner": "gleb"})[
        "id"
    ]
    ids["gtask"] = crm.create(
        "task", {"title": "Gleb private task", "subject": {"entity": "deal", "id": ids["d1"]}, "owner": "gleb"}
    )["id"]
    ids["atask"] = crm.create(
        "task",
        {
            "title": "Call them",
            "subject": {"entity": "client", "id": ids["hidden"]},
            "blocked_by": [ids["gtask"]],
            "owner": "anna",
        },
    )["id"]
    ids["mytask"] = crm.create(
        "task", {"title": "Call mine", "subject": {"entity": "client", "id": ids["mine"]}, "owner": "anna"}
    )["id"]
    crm.note("client", ids["hidden"], "note about Hidden Corp")
    yield crm, ids
    crm.close()


def leaks(output) -> list[str]:
    """The secrets found anywhere in an answer (its repr, or its JSON for documents)."""
    text = output if isinstance(output, str) else json.dumps(output, default=str, ensure_ascii=False) + repr(output)
    return [s for s in SECRETS if s.lower() in text.lower()]


def test_card_shows_hidden_targets_as_hidden(world) -> None:
    crm, ids = world
    anna = crm.as_user("anna")
    card = anna.card("deal", ids["d1"])
    assert leaks(card) == []
    hidden = {"entity": "client", "id": ids["hidden"], "title": None, "hidden": True}
    assert card["links"]["client"] == hidden
    assert card["links"]["partners"] == [
        hidden,
        {"entity": "client", "id": ids["mine"], "title": "Visible Ltd", "hidden": False},
    ]
    # the card of the task: its polymorphic subject is hidden the same way
    task_card = anna.card("task", ids["atask"])
    assert task_card["links"]["subject"] == hidden
    assert task_card["links"]["blocked_by"] == [{"entity": "task", "id": ids["gtask"], "title": None, "hidden": True}]
    assert leaks(task_card) == []
    # visible titles still show, and the system user sees everything
    assert anna.card("deal", ids["d3"])["links"]["client"]["title"] == "Visible Ltd"
    assert crm.card("deal", ids["d1"])["links"]["client"]["title"] == "Hidden Corp"
    # a hidden target and a missing one answer alike through titles()
    assert anna.titles("client", [ids["hidden"], 10**6, ids["mine"]]) == {ids["mine"]: "Visible Ltd"}
    # related lists: only readable records, whatever the link
    assert anna.related("deal", ids["d1"], "client") == []
    assert [r["name"] for r in anna.related("deal", ids["d1"], "partners")] == ["Visible Ltd"]
    assert leaks(anna.related("deal", ids["d1"], "tasks")) == []
    assert [d["title"] for d in anna.card("client", ids["mine"])["related"]["deals"]] == ["Anna three"]


def test_group_and_funnel_merge_hidden_targets_into_one_group(world) -> None:
    crm, ids = world
    anna = crm.as_user("anna")
    doc = anna.report_group("deal", "client", sum="amount")
    assert leaks(doc) == []
    rows = [(r["value"], r["label"], r["hidden"], r["count"], str(r["sum"])) for r in doc["rows"]]
    # two hidden clients, one group: how anna's deals spread over them is not shown
    assert rows == [  # by the sum, descending
        (None, None, True, 2, "110.00"),
        (None, None, False, 1, "5.00"),
        (ids["mine"], "Visible Ltd", False, 1, "1.00"),
    ]
    assert doc["total"]["count"] == 4
    monthly = anna.report_group("deal", "client", period="month")
    assert leaks(monthly) == [] and sum(r["hidden"] for r in monthly["rows"]) == 1
    # the system user sees every client by title
    assert {r["label"] for r in crm.report_group("deal", "client")["rows"]} == {
        "Hidden Corp",
        "Hidden Two",
        "Visible Ltd",
        None,
    }
    for funnels in (anna.funnel("deal", by="client"), anna.funnel("deal", by="client", date_from="2000-01-01")):
        assert leaks(funnels) == []
        assert [(f["value"], f["label"], f["hidden"], f["count"]) for f in funnels] == [
            (ids["mine"], "Visible Ltd", False, 1),
            (None, None, True, 2),
            (None, None, False, 1),
        ]


def test_board_timeline_search_tasks_and_export_show_nothing_hidden(world) -> None:
    crm, ids = world
    anna = crm.as_user("anna")
    crm.update("deal", ids["d1"], {"client": ids["mine"]})  # the journal keeps the hidden client's id only
    board = anna.board("deal")
    assert leaks(board) == [] and board["count"] == 4
    for entity, record_id in (("deal", ids["d1"]), ("client", ids["mine"]), ("task", ids["atask"])):
        timeline = anna.timeline(entity, record_id)
        assert leaks(timeline) == [], (entity, timeline)
    assert any(e["record_id"] == ids["d1"] for e in anna.timeline("deal", ids["d1"]))
    # search: a guessed title or secret finds what a wrong guess finds
    for guess in ("Hidden", "Hidden Corp", "s3cr3t", "Gleb"):
        assert anna.search(guess) == anna.search("Zzzwrongguess") == []
    assert [r["title"] for r in anna.search("Visible")] == ["Visible Ltd"]
    # tasks: the subject anna may not read is hidden; her own client's title shows
    tasks = {t["id"]: t for t in anna.tasks()}
    assert leaks(list(tasks.values())) == []
    assert (tasks[ids["atask"]]["subject_title"], tasks[ids["atask"]]["subject_hidden"]) == (None, True)
    assert (tasks[ids["mytask"]]["subject_title"], tasks[ids["mytask"]]["subject_hidden"]) == ("Visible Ltd", False)
    assert {t["subject_title"] for t in crm.tasks()} >= {"Hidden Corp", "Visible Ltd"}
    # closing a task blocked by a task anna may not read names the blocker by id alone
    with pytest.raises(metacrm.ValidationError) as refused:
        anna.update("task", ids["atask"], {"done": True})
    assert leaks(str(refused.value)) == [] and f"task {ids['gtask']} (hidden)" in str(refused.value)
    # export: link columns hold ids, never titles
    out = io.StringIO()
    assert export_csv(anna, "deal", out) == 4
    assert leaks(out.getvalue()) == [] and str(ids["hidden2"]) in out.getvalue()


def test_notifications_are_rendered_for_each_user(world) -> None:
    crm, ids = world
    crm.as_user("anna").move("deal", ids["d1"], "won")
    messages = {m["recipient"]: m for m in crm.outbox()}
    anna, boss = messages["anna@example.com"], messages["boss@example.com"]
    assert leaks(anna["subject"] + anna["body"]) == []
    assert anna["subject"] == "Won: (hidden)"
    assert anna["body"] == "Deal Anna one for (hidden) ((hidden)); partners: (hidden), Visible Ltd"
    assert boss["body"] == "Deal Anna one for Hidden Corp (s3cr3t-value); partners: Hidden Corp, Visible Ltd"
    assert metacrm.HIDDEN == "(hidden)"
    # the outbox as a user: only the messages rendered for that user (boss's names the client)
    mine = crm.as_user("anna").outbox()
    assert [m["recipient"] for m in mine] == ["anna@example.com"] and leaks(mine) == []
    assert crm.as_user("gleb").outbox() == []
    assert {m["recipient"] for m in crm.outbox()} == {"anna@example.com", "boss@example.com"}


def cli(url: str, *args: str) -> str:
    result = runner.invoke(app, [*args, "--model", str(MODEL), "--db", url])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_cli_as_user_shows_hidden_titles_as_hidden(world, db_url) -> None:
    crm, ids = world
    crm.as_user("anna").move("deal", ids["d2"], "won")
    anna = ("--as", "anna")
    outputs = {}
    for fmt in ("table", "json", "csv"):
        outputs[f"get {fmt}"] = cli(db_url, "get", "deal", str(ids["d1"]), *anna, "--format", fmt)
        outputs[f"list {fmt}"] = cli(db_url, "list", "deal", *anna, "--format", fmt)
        outputs[f"group {fmt}"] = cli(db_url, "report", "group", "deal", "--by", "client", *anna, "--format", fmt)
        outputs[f"funnel {fmt}"] = cli(db_url, "report", "funnel", "deal", "--by", "client", *anna, "--format", fmt)
        outputs[f"tasks {fmt}"] = cli(db_url, "tasks", *anna, "--format", fmt)
        outputs[f"history {fmt}"] = cli(db_url, "history", "deal", str(ids["d1"]), *anna, "--format", fmt)
        outputs[f"board {fmt}"] = cli(db_url, "board", "deal", *anna, "--format", fmt)
        outputs[f"task card {fmt}"] = cli(db_url, "get", "task", str(ids["atask"]), *anna, "--format", fmt)
    outputs["export"] = cli(db_url, "export", "deal", *anna)
    outputs["search"] = cli(db_url, "search", "Visible", *anna)
    for name, text in outputs.items():
        assert leaks(text) == [], (name, text)
    assert f"-> client: client {ids['hidden']} (hidden)" in outputs["get table"]
    assert f"client {ids['mine']} «Visible Ltd»" in outputs["get table"]
    assert "(hidden)" in outputs["group table"] and "Visible Ltd" in outputs["group table"]
    assert "(hidden)" in outputs["group csv"] and "client: (hidden)" in outputs["funnel table"]
    assert f"client:{ids['hidden']} (hidden)" in outputs["tasks table"]
    assert json.loads(outputs["get json"])["links"]["client"]["hidden"] is True
    assert "Visible Ltd" in outputs["search"]
    # a guessed title finds what a wrong guess finds
    guessed = runner.invoke(app, ["search", "Hidden Corp", *anna, "--model", str(MODEL), "--db", db_url])
    wrong = runner.invoke(app, ["search", "Wrongguess Corp", *anna, "--model", str(MODEL), "--db", db_url])
    assert (guessed.exit_code, guessed.stdout) == (wrong.exit_code, wrong.stdout)
    # the system user still sees the titles
    assert "Hidden Corp" in cli(db_url, "report", "group", "deal", "--by", "client")


def test_import_link_by_title_cannot_probe_hidden_titles(world, tmp_path) -> None:
    """A link cell naming a record by title: a hidden record's exact title, its id, or a near
    spelling are refused exactly as a wrong guess is, and nothing is imported."""
    from metacrm.io.csv_io import import_csv

    crm, ids = world
    anna = crm.as_user("anna")
    before = crm.count("deal")

    def refusal(cell: str) -> str:
        path = tmp_path / "deals.csv"
        path.write_text(f"title,client\nProbe,{cell}\n", encoding="utf-8")
        with pytest.raises(metacrm.ValidationError) as refused:
            import_csv(anna, "deal", path, near_matches=True)
        return str(refused.value).replace(cell, "<guess>")

    wrong = refusal("Wrong Corp")
    assert refusal("Hidden Corp") == wrong and refusal("HiddenCorp") == wrong and refusal("Hidden  corp") == wrong
    assert refusal(str(ids["hidden"])) == refusal("999999")
    assert leaks(wrong) == [] and crm.count("deal") == before
    path = tmp_path / "mine.csv"
    path.write_text("title,client\nMine,Visible Ltd\n", encoding="utf-8")
    assert import_csv(anna, "deal", path).created == 1
