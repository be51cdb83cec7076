"""Time-based automations on SQLite and PostgreSQL: `crm.tick(now)` / `metacrm tick` fires
overdue, sla, at (cron) and before triggers once each however often it runs, again when the
due value or the stage entry changes, and exactly once when two ticks run at once (real
processes)."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import textwrap

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app

UTC = dt.UTC
T0 = dt.datetime(2030, 3, 4, 10, 0, tzinfo=UTC)  # a Monday
TIMEOUT = 60

BASE = """\
metacrm: 1
name: tick_test
entities:
  deal:
    owner: true
    title: title
    fields:
      title: {type: string, required: true}
      hot: {type: boolean, default: false}
      escalated: {type: boolean, default: false}
      renewal: {type: date}
      remind_at: {type: datetime}
      lost_reason: {type: text}
    stages:
      initial: new
      states:
        new: {sla: 2h}
        review: {sla: 1d, label: Проверка}
        won: {kind: won}
        lost: {kind: lost, requires: [lost_reason]}
      transitions:
        new: [review, lost]
        review: [new, won, lost]
  task:
    owner: true
    title: title
    fields:
      title: {type: string, required: true}
      due: {type: datetime}
      due_day: {type: date}
      done: {type: boolean, default: false}
roles:
  manager:
    "*": all
"""


def model_text(automations: str) -> str:
    return BASE + "automations:\n" + textwrap.indent(textwrap.dedent(automations), "  ")


@pytest.fixture
def make(db_url, tmp_path):
    opened = []

    def _make(automations: str):
        path = tmp_path / f"model{len(opened)}.yaml"
        path.write_text(model_text(automations), encoding="utf-8")
        crm = metacrm.connect(path, db_url)
        crm.migrate()
        crm.add_user("alice", roles=["manager"], email="alice@example.ru")
        crm.path, crm.url = path, db_url
        opened.append(crm)
        return crm

    yield _make
    for crm in opened:
        crm.close()


def outbox(crm) -> list[dict]:
    table = crm.storage.outbox_table
    with crm.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).order_by(table.c.id)).mappings()]


def fired_rows(crm) -> int:
    table = crm.storage.fired_table
    with crm.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(table.c.record_id != 0)).scalar_one()


def _at(crm, entity: str, record_id: int, **moments) -> None:
    """Set system times (a stage entry) directly: the test's clock is `now=`."""
    from sqlalchemy import update

    table = crm.storage.table(entity)
    with crm.engine.begin() as conn:
        conn.execute(update(table).where(table.c.id == record_id).values(**moments))


OVERDUE = """
late:
  when: {entity: task, overdue: due}
  if: "done = false"
  do:
    - notify: {to: [owner], template: "Задача «{title}» просрочена (срок {due})"}
late_day:
  when: {entity: task, overdue: due_day}
  do:
    - notify: {to: ["https://hooks.example.ru/late"], template: "{title}: {due_day}"}
"""


def test_overdue_fires_once_per_record_and_due_value(make):
    crm = make(OVERDUE)
    alice = crm.as_user("alice")
    a = alice.create("task", {"title": "Позвонить", "due": T0 - dt.timedelta(hours=1)})
    alice.create("task", {"title": "Сделано", "due": T0 - dt.timedelta(hours=1), "done": True})
    alice.create("task", {"title": "Потом", "due": T0 + dt.timedelta(days=10)})
    fired = crm.tick(T0)
    assert [(f["automation"], f["record_id"], f["status"]) for f in fired] == [("late", a["id"], "fired")]
    assert fired[0]["occurrence"] == (T0 - dt.timedelta(hours=1)).isoformat()
    (message,) = outbox(crm)
    assert message["body"] == "Задача «Позвонить» просрочена (срок 2030-03-04 09:00 UTC)"
    assert message["recipient"] == "alice@example.ru" and message["automation"] == "late"
    assert crm.tick(T0) == [] and crm.tick(T0 + dt.timedelta(minutes=5)) == []
    assert len(outbox(crm)) == 1
    crm.update("task", a["id"], {"due": T0 + dt.timedelta(hours=3)})  # postponed, then missed again
    assert crm.tick(T0 + dt.timedelta(hours=2)) == []
    again = crm.tick(T0 + dt.timedelta(hours=4))
    assert [(f["automation"], f["record_id"]) for f in again] == [("late", a["id"])]
    assert len(outbox(crm)) == 2
    assert crm.tick(T0 + dt.timedelta(days=1)) == []


def test_overdue_on_a_date_field_waits_for_the_whole_day(make):
    crm = make(OVERDUE)
    t = crm.create("task", {"title": "Отчёт", "due_day": T0.date()})
    assert crm.tick(T0.replace(hour=23, minute=59)) == []
    fired = crm.tick(T0 + dt.timedelta(days=1))
    assert [(f["automation"], f["record_id"], f["occurrence"]) for f in fired] == [
        ("late_day", t["id"], T0.date().isoformat())
    ]
    (message,) = outbox(crm)
    assert message["channel"] == "webhook" and message["body"] == "Отчёт: 2030-03-04"
    assert message["payload"]["event"] == "overdue"
    assert crm.tick(T0 + dt.timedelta(days=2)) == []


def test_sla_fires_once_per_stage_entry(make):
    crm = make(
        """
        breach:
          when: {entity: deal, sla: true}
          do:
            - update: {values: {escalated: true}}
            - notify: {to: [owner], template: "«{title}» дольше срока на этапе «{stage}»"}
        """
    )
    d = crm.as_user("alice").create("deal", {"title": "Поставка"})
    crm.move("deal", d["id"], "review")
    _at(crm, "deal", d["id"], stage_entered_at=T0)
    assert crm.tick(T0 + dt.timedelta(hours=23)) == []
    fired = crm.tick(T0 + dt.timedelta(hours=25))
    assert [(f["record_id"], f["event"], f["occurrence"]) for f in fired] == [
        (d["id"], "sla", f"review since {T0.isoformat()}")
    ]
    assert crm.get("deal", d["id"])["escalated"] is True
    assert [m["body"] for m in outbox(crm)] == ["«Поставка» дольше срока на этапе «Проверка»"]
    assert crm.tick(T0 + dt.timedelta(days=5)) == []
    crm.move("deal", d["id"], "new")  # a new stage entry: its own SLA
    _at(crm, "deal", d["id"], stage_entered_at=T0 + dt.timedelta(days=5))
    assert crm.tick(T0 + dt.timedelta(days=5, hours=1)) == []
    assert len(crm.tick(T0 + dt.timedelta(days=5, hours=3))) == 1
    crm.move("deal", d["id"], "review")
    _at(crm, "deal", d["id"], stage_entered_at=T0 + dt.timedelta(days=6))
    assert len(crm.tick(T0 + dt.timedelta(days=8))) == 1  # the same stage entered again
    assert len(outbox(crm)) == 3


def test_at_fires_each_scheduled_minute_once_without_replaying_history(make):
    crm = make(
        """
        morning:
          when: {entity: deal, at: "0 9 * * *"}
          if: "hot = true"
          do:
            - notify: {to: [owner], template: "Утро: {title}"}
        """
    )
    alice = crm.as_user("alice")
    hot = alice.create("deal", {"title": "Горячая", "hot": True})
    alice.create("deal", {"title": "Холодная"})
    first = crm.tick(T0)  # 10:00: only the latest due minute (09:00 today), not the days before
    assert [(f["record_id"], f["occurrence"]) for f in first] == [(hot["id"], T0.replace(hour=9).isoformat())]
    assert crm.tick(T0) == [] and crm.tick(T0 + dt.timedelta(hours=5)) == []
    later = crm.tick(T0 + dt.timedelta(days=2))  # two mornings missed: both made up, in order
    assert [f["occurrence"] for f in later] == [
        (T0 + dt.timedelta(days=1)).replace(hour=9).isoformat(),
        (T0 + dt.timedelta(days=2)).replace(hour=9).isoformat(),
    ]
    assert crm.tick(T0 + dt.timedelta(days=2)) == []
    assert len(outbox(crm)) == 3


def test_before_fires_once_while_the_date_is_ahead(make):
    crm = make(
        """
        renewal:
          when: {entity: deal, before: {field: renewal, by: 30d}}
          do:
            - notify: {to: [owner], template: "Продление {title}: {renewal}"}
        call_back:
          when: {entity: deal, before: {field: remind_at, by: 14h}, at: "0 9 * * *"}
          do:
            - update: {values: {hot: true}}
        """
    )
    alice = crm.as_user("alice")
    soon = alice.create("deal", {"title": "Скоро", "renewal": (T0 + dt.timedelta(days=29)).date()})
    later = alice.create("deal", {"title": "Нескоро", "renewal": (T0 + dt.timedelta(days=31)).date()})
    alice.create("deal", {"title": "Прошло", "renewal": (T0 - dt.timedelta(days=1)).date()})
    fired = crm.tick(T0)
    assert [(f["automation"], f["record_id"]) for f in fired] == [("renewal", soon["id"])]
    assert [m["body"] for m in outbox(crm)] == [f"Продление Скоро: {(T0 + dt.timedelta(days=29)).date()}"]
    assert [f["record_id"] for f in crm.tick(T0 + dt.timedelta(days=1))] == [later["id"]]  # its 30 days came
    assert crm.tick(T0 + dt.timedelta(days=1)) == []
    # with `at`: the reminder goes out at the first scheduled minute after its moment
    call = alice.create("deal", {"title": "Перезвонить", "remind_at": T0 + dt.timedelta(days=3, hours=1)})
    # remind_at is 11:00 on the 7th: its moment is 21:00 on the 6th, its scheduled minute 09:00 on the 7th
    assert crm.tick(T0 + dt.timedelta(days=2, hours=12)) == []  # 22:00 on the 6th
    assert crm.get("deal", call["id"])["hot"] is False
    assert [f["record_id"] for f in crm.tick(T0 + dt.timedelta(days=2, hours=23, minutes=30))] == [call["id"]]
    assert crm.get("deal", call["id"])["hot"] is True


def test_a_failing_automation_is_reported_and_tried_again(make):
    crm = make(
        """
        close_it:
          when: {entity: deal, sla: true}
          do:
            - notify: {to: [owner], template: "{title}"}
            - move: {stage: won}
        """
    )
    d = crm.as_user("alice").create("deal", {"title": "Застряла"})
    _at(crm, "deal", d["id"], stage_entered_at=T0)
    (failed,) = crm.tick(T0 + dt.timedelta(hours=3))  # new -> won is not a transition
    assert failed["status"] == "failed" and "close_it" in failed["error"] and "won" in failed["error"]
    assert outbox(crm) == [] and fired_rows(crm) == 0  # rolled back, fired row included
    (again,) = crm.tick(T0 + dt.timedelta(hours=4))
    assert again["status"] == "failed"
    result = CliRunner().invoke(
        app, ["tick", "--model", str(crm.path), "--db", crm.url, "--now", (T0 + dt.timedelta(hours=5)).isoformat()]
    )
    assert result.exit_code == 1
    assert "error: automation 'close_it'" in result.stderr


def test_cli_tick(make):
    crm = make(OVERDUE)
    crm.as_user("alice").create("task", {"title": "Позвонить", "due": T0 - dt.timedelta(hours=1)})
    args = ["tick", "--model", str(crm.path), "--db", crm.url, "--now", T0.isoformat(), "--no-deliver"]
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    import json

    doc = json.loads(result.stdout)
    assert [f["automation"] for f in doc["fired"]] == ["late"] and doc["delivered"] is None
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "fired 0" in result.stdout
    bad = CliRunner().invoke(app, ["tick", "--model", str(crm.path), "--db", crm.url, "--now", "вчера"])
    assert bad.exit_code == 2 and "--now" in bad.stderr


# -- two ticks at once ---------------------------------------------------------------------------
def _ticker(path: str, url: str, barrier, results) -> None:
    crm = metacrm.connect(path, url)
    try:
        barrier.wait(TIMEOUT)
        fired = crm.tick(T0)
        results.put([(f["automation"], f["record_id"], f["status"]) for f in fired])
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        results.put(f"{type(exc).__name__}: {exc}")
    finally:
        crm.close()


def test_two_concurrent_ticks_fire_each_event_once(make):
    crm = make(OVERDUE)
    alice = crm.as_user("alice")
    rows = [{"title": f"Задача {i}", "due": T0 - dt.timedelta(minutes=i + 1)} for i in range(30)]
    ids = [t["id"] for t in alice.create_many("task", rows)]
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_ticker, args=(str(crm.path), crm.url, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=TIMEOUT * 2) for _ in procs]
    for p in procs:
        p.join(TIMEOUT)
    assert all(isinstance(o, list) for o in outcomes), outcomes
    fired = [f for o in outcomes for f in o]
    assert all(status == "fired" for _, _, status in fired), fired
    assert sorted(record_id for _, record_id, _ in fired) == sorted(ids)  # each once, by one of them
    assert len(outbox(crm)) == 30 and fired_rows(crm) == 30
    assert crm.tick(T0) == []
