"""Tasks (entities declaring ``task:``): the open-task list across task lists with subjects,
overdue and blocked flags; the rules that a blocked task cannot be closed and that
``blocked_by`` has no cycle; tasks in their subject's timeline; row-level access; the CLI.
On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import event, select
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
MODEL = """\
metacrm: 1
name: tasks_test
entities:
  client:
    owner: true
    fields:
      name: {type: string, required: true}
  deal:
    owner: true
    fields:
      title: {type: string, required: true}
    links:
      client: {to: client, inverse: deals}
  task:
    owner: true
    title: title
    fields:
      title: {type: string, required: true}
      due: {type: datetime}
      priority: {type: choice, options: [low, normal, high], default: normal}
      done: {type: boolean, default: false}
    links:
      subject: {to: [deal, client], inverse: tasks, on_delete: cascade}
      blocked_by: {to: task, many: true, on_delete: set_null}
    task: {}
  chore:
    owner: true
    fields:
      name: {type: string, required: true}
      deadline: {type: date}
      state: {type: choice, options: [open, doing, done, cancelled], default: open}
    links:
      client: {to: client}
      after: {to: chore, many: true, on_delete: set_null}
    task: {due: deadline, status: state, closed: [done, cancelled], subject: client, blocked_by: after}
roles:
  manager:
    client: {read: own, create: all, update: own}
    deal: {read: own, create: all, update: own}
    task: {read: own, create: all, update: own}
    chore: {read: own, create: all, update: own}
  director:
    "*": all
"""
NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


def when(days: float) -> str:
    return (NOW + dt.timedelta(days=days)).isoformat()


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text(MODEL, encoding="utf-8")
    return path


@pytest.fixture
def crm(db_url, model_path):
    crm = metacrm.connect(model_path, db_url)
    crm.migrate()
    crm.add_user("anna", roles=["manager"])
    crm.add_user("boris", roles=["manager"])
    yield crm
    crm.close()


@pytest.fixture
def data(crm):
    """A client and a deal of anna's, a client of boris's, and tasks on them."""
    romashka = crm.create("client", {"name": "ООО Ромашка", "owner": "anna"})
    vasilek = crm.create("client", {"name": "ООО Василёк", "owner": "boris"})
    deal = crm.create("deal", {"title": "Поставка", "client": romashka["id"], "owner": "anna"})
    t = {}
    t["call"] = crm.create(
        "task",
        {"title": "Позвонить", "due": when(-2), "subject": f"deal:{deal['id']}", "owner": "anna", "priority": "high"},
    )
    t["send"] = crm.create(
        "task",
        {"title": "Отправить КП", "due": when(1), "subject": f"deal:{deal['id']}", "owner": "anna"},
    )
    t["sign"] = crm.create(
        "task",
        {
            "title": "Подписать договор",
            "due": when(5),
            "subject": f"client:{romashka['id']}",
            "owner": "anna",
            "blocked_by": [t["call"]["id"], t["send"]["id"]],
        },
    )
    t["old"] = crm.create("task", {"title": "Старое", "due": when(-30), "owner": "anna", "done": True})
    t["nodue"] = crm.create("task", {"title": "Когда-нибудь", "owner": "boris"})
    t["visit"] = crm.create(
        "chore",
        {
            "name": "Съездить",
            "deadline": (NOW.date() - dt.timedelta(days=1)).isoformat(),
            "client": vasilek["id"],
            "owner": "boris",
        },
    )
    t["today"] = crm.create("chore", {"name": "Сегодня", "deadline": NOW.date().isoformat(), "owner": "anna"})
    return {"romashka": romashka, "vasilek": vasilek, "deal": deal, **t}


def ids(tasks) -> list[tuple[str, int]]:
    return [(t["entity"], t["id"]) for t in tasks]


# -- the list ---------------------------------------------------------------------------------------
def test_open_tasks_by_deadline_with_subjects_and_flags(crm, data) -> None:
    tasks = crm.tasks(now=NOW)
    expected = [data[k] for k in ("call", "visit", "today", "send", "sign", "nodue")]
    assert [(t["title"], t["id"]) for t in tasks] == [(r.get("title") or r.get("name"), r["id"]) for r in expected]
    by = {(t["entity"], t["id"]): t for t in tasks}
    call = by[("task", data["call"]["id"])]
    assert call["overdue"] and not call["blocked"] and call["priority"] == "high" and call["owner"] == "anna"
    assert call["subject"] == {"entity": "deal", "id": data["deal"]["id"]} and call["subject_title"] == "Поставка"
    sign = by[("task", data["sign"]["id"])]
    assert sign["blocked"] and sign["blocked_by"] == sorted([data["call"]["id"], data["send"]["id"]])
    assert sign["subject_title"] == "ООО Ромашка" and not sign["overdue"]
    visit = by[("chore", data["visit"]["id"])]
    assert visit["overdue"] and visit["subject"] == {"entity": "client", "id": data["vasilek"]["id"]}
    assert visit["subject_title"] == "ООО Василёк" and visit["title"] == "Съездить"
    today = by[("chore", data["today"]["id"])]
    assert not today["overdue"]  # a date is due all day
    assert by[("task", data["nodue"]["id"])]["subject"] is None


def test_filters(crm, data) -> None:
    overdue = crm.tasks(now=NOW, overdue=True)
    assert ids(overdue) == [("task", data["call"]["id"]), ("chore", data["visit"]["id"])]
    assert ids(crm.tasks(now=NOW, for_user="boris")) == [("chore", data["visit"]["id"]), ("task", data["nodue"]["id"])]
    assert ids(crm.tasks(now=NOW, entity="chore")) == [("chore", data["visit"]["id"]), ("chore", data["today"]["id"])]
    everything = crm.tasks(now=NOW, include_done=True)
    assert ids(everything)[0] == ("task", data["old"]["id"]) and everything[0]["done"] and not everything[0]["overdue"]
    assert len(crm.tasks(now=NOW, limit=2)) == 2
    with pytest.raises(metacrm.ValidationError, match="deal is not a task list.*task lists: task, chore"):
        crm.tasks(entity="deal")
    with pytest.raises(metacrm.NotFound, match="unknown entity 'tsk'"):
        crm.tasks(entity="tsk")
    with pytest.raises(metacrm.NotFound, match="no user 'nobody'"):
        crm.tasks(for_user="nobody")
    assert crm.task_entities() == ["task", "chore"]


def test_no_n_plus_one(crm, data) -> None:
    """The queries a listing costs do not grow with the number of tasks."""

    def queries() -> int:
        count = [0]

        def on_execute(*args):
            count[0] += 1

        event.listen(crm.engine, "before_cursor_execute", on_execute)
        try:
            crm.tasks(now=NOW)
        finally:
            event.remove(crm.engine, "before_cursor_execute", on_execute)
        return count[0]

    before = queries()
    for i in range(15):
        deal = crm.create("deal", {"title": f"Сделка {i}", "owner": "anna"})
        crm.create(
            "task",
            {
                "title": f"Задача {i}",
                "due": when(i),
                "subject": f"deal:{deal['id']}",
                "blocked_by": [data["call"]["id"]],
                "owner": "anna",
            },
        )
        crm.create("chore", {"name": f"Дело {i}", "client": data["romashka"]["id"], "owner": "anna"})
    assert queries() == before


def test_access_sees_only_readable_tasks(crm, data) -> None:
    anna = crm.as_user("anna")
    mine = anna.tasks(now=NOW)
    assert {t["owner"] for t in mine} == {"anna"}
    assert ("chore", data["visit"]["id"]) not in ids(mine)
    boris = crm.as_user("boris")
    theirs = boris.tasks(now=NOW)
    assert ids(theirs) == [("chore", data["visit"]["id"]), ("task", data["nodue"]["id"])]
    # a task of boris's on anna's client: he sees the task, not the client's name
    crm.create(
        "task",
        {"title": "Чужой клиент", "due": when(2), "subject": f"client:{data['romashka']['id']}", "owner": "boris"},
    )
    seen = [t for t in boris.tasks(now=NOW) if t["title"] == "Чужой клиент"][0]
    assert seen["subject"] == {"entity": "client", "id": data["romashka"]["id"]} and seen["subject_title"] is None


# -- the rules ------------------------------------------------------------------------------------------
def journal_count(crm) -> int:
    table = crm.storage.journal_table
    with crm.engine.connect() as conn:
        return len(conn.execute(select(table.c.id)).all())


def test_a_blocked_task_cannot_be_closed(crm, data) -> None:
    sign = data["sign"]["id"]
    before = journal_count(crm)
    with pytest.raises(metacrm.ValidationError) as info:
        crm.update("task", sign, {"done": True})
    message = str(info.value)
    assert "\n" not in message
    assert f"task {sign}: cannot set done: blocked by open task {data['call']['id']} «Позвонить»" in message
    assert "«Отправить КП»" in message and "close them first" in message
    assert crm.get("task", sign)["done"] is False and journal_count(crm) == before  # nothing written
    crm.update("task", data["call"]["id"], {"done": True})
    with pytest.raises(
        metacrm.ValidationError, match=r"blocked by open task .*«Отправить КП» \(blocked_by\); close it first"
    ):
        crm.update("task", sign, {"done": True})
    crm.update("task", data["send"]["id"], {"done": True})
    assert crm.update("task", sign, {"done": True})["done"] is True
    # created closed while a blocker is open: refused too
    with pytest.raises(metacrm.ValidationError, match="cannot set done"):
        crm.create("task", {"title": "x", "done": True, "blocked_by": [data["nodue"]["id"]]})
    # emptying the blockers in the same update closes it
    t = crm.create("task", {"title": "y", "blocked_by": [data["nodue"]["id"]]})
    assert crm.update("task", t["id"], {"done": True, "blocked_by": []})["done"] is True


def test_a_status_task_list_closes_by_its_closed_values(crm, data) -> None:
    first = crm.create("chore", {"name": "Сначала", "owner": "anna"})
    then = crm.create("chore", {"name": "Потом", "owner": "anna", "after": [first["id"]]})
    crm.update("chore", then["id"], {"state": "doing"})  # still open: allowed
    with pytest.raises(metacrm.ValidationError, match=f"chore {then['id']}: cannot set state: blocked by open chore"):
        crm.update("chore", then["id"], {"state": "cancelled"})
    crm.update("chore", first["id"], {"state": "cancelled"})  # a closed blocker no longer blocks
    assert crm.update("chore", then["id"], {"state": "done"})["state"] == "done"


def test_blocked_by_cycles_are_refused(crm, data) -> None:
    a = crm.create("task", {"title": "A"})
    b = crm.create("task", {"title": "B", "blocked_by": [a["id"]]})
    c = crm.create("task", {"title": "C", "blocked_by": [b["id"]]})
    before = journal_count(crm)
    with pytest.raises(metacrm.ValidationError, match=f"task {a['id']}: blocked_by {c['id']} would make a cycle"):
        crm.update("task", a["id"], {"blocked_by": [c["id"]]})
    with pytest.raises(metacrm.ValidationError, match="would make a cycle"):
        crm.link("task", a["id"], "blocked_by", b["id"])
    with pytest.raises(metacrm.ValidationError, match="cannot name the task itself"):
        crm.update("task", a["id"], {"blocked_by": [a["id"]]})
    assert crm.get("task", a["id"])["blocked_by"] == [] and journal_count(crm) == before
    crm.update("task", c["id"], {"blocked_by": [a["id"], b["id"]]})  # a diamond is no cycle
    assert crm.get("task", c["id"])["blocked_by"] == sorted([a["id"], b["id"]])


def test_deleting_a_blocker_unblocks(crm, data) -> None:
    crm.delete("task", data["call"]["id"])
    sign = [t for t in crm.tasks(now=NOW) if t["id"] == data["sign"]["id"] and t["entity"] == "task"][0]
    assert sign["blocked_by"] == [data["send"]["id"]]


def test_tasks_appear_in_their_subjects_timeline(crm, data) -> None:
    crm.update("task", data["call"]["id"], {"done": True})
    timeline = crm.timeline("deal", data["deal"]["id"])
    from_tasks = [e for e in timeline if e["entity"] == "task"]
    assert {e["record_id"] for e in from_tasks} == {data["call"]["id"], data["send"]["id"]}
    assert {e["action"] for e in from_tasks} >= {"create", "update"}
    assert all(e["via"] for e in from_tasks)
    client_line = crm.timeline("client", data["vasilek"]["id"])
    assert any(e["entity"] == "chore" and e["record_id"] == data["visit"]["id"] for e in client_line)
    # a user sees the tasks of the subject that they may read
    assert [e for e in crm.as_user("boris").timeline("client", data["vasilek"]["id"]) if e["entity"] == "chore"]


# -- the command line and the examples -------------------------------------------------------------
def test_cli_tasks(db_url, crm, data, model_path) -> None:
    runner = CliRunner()
    common = ["--model", str(model_path), "--db", db_url, "--as-of", NOW.isoformat()]
    result = runner.invoke(app, ["tasks", "--format", "json", *common])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {(r["entity"], r["id"]) for r in rows} >= {("task", data["sign"]["id"]), ("chore", data["visit"]["id"])}
    assert "record" not in rows[0]
    result = runner.invoke(app, ["tasks", "--overdue", "--for", "anna", *common])
    assert result.exit_code == 0, result.output
    assert "Позвонить" in result.stdout and "overdue" in result.stdout and "deal:1 «Поставка»" in result.stdout
    assert "Съездить" not in result.stdout and "Подписать" not in result.stdout
    result = runner.invoke(app, ["tasks", "--entity", "task", "--all", "--format", "csv", *common])
    assert result.exit_code == 0 and "Старое" in result.stdout and result.stdout.startswith("entity,id,title,due")
    result = runner.invoke(app, ["tasks", "--as", "boris", "--format", "json", *common])
    assert {r["owner"] for r in json.loads(result.stdout)} == {"boris"}
    for bad, why in ((["--entity", "deal"], "not a task list"), (["--for", "nobody"], "no user 'nobody'")):
        result = runner.invoke(app, ["tasks", *bad, *common])
        assert result.exit_code == 1 and why in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["tasks", "--as-of", "someday", *common[:4]])
    assert result.exit_code == 2 and "--as-of: 'someday' is not a date and time" in result.output
    result = runner.invoke(app, ["update", "task", str(data["sign"]["id"]), "done=true", *common[:4]])
    assert result.exit_code == 1 and "cannot set done: blocked by open task" in result.output


@pytest.mark.parametrize("example", ["trade", "srm", "logistics"])
def test_examples_declare_their_task_lists(example) -> None:
    model = metacrm.load_model(ROOT / "examples" / f"{example}.yaml")
    lists = [e for e in model.entities.values() if e.task is not None]
    assert lists and all(e.owner and e.task.blocked_by and e.task.due for e in lists)


def test_defaults_take_the_conventional_names(tmp_path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MODEL, encoding="utf-8")
    spec = metacrm.load_model(path).entities["task"].task
    assert (spec.due, spec.done, spec.status, spec.priority, spec.subject, spec.blocked_by) == (
        "due",
        "done",
        None,
        "priority",
        "subject",
        "blocked_by",
    )
