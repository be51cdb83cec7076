"""Event-driven automations on SQLite and PostgreSQL: one test per trigger kind (created,
updated, deleted, enters, leaves, `if:`) and per action kind (create, update, move, notify),
the rollback of the whole operation when an action fails, the chain limit, the load-time
checks, and users' e-mail addresses."""

from __future__ import annotations

import datetime as dt
import textwrap

import pytest
from sqlalchemy import event, func, select
from typer.testing import CliRunner

import metacrm
from metacrm.automation import automation_reactor
from metacrm.cli.main import app

BASE = """\
metacrm: 1
name: auto_test
entities:
  client:
    owner: true
    title: name
    fields:
      name: {type: string, required: true}
      email: {type: email}
      city: {type: string}
  deal:
    owner: true
    title: title
    fields:
      title: {type: string, required: true}
      amount: {type: money, min: 0}
      note: {type: text}
      flagged: {type: boolean, default: false}
      touched: {type: integer, default: 0}
      priority:
        type: choice
        default: normal
        options:
          - {value: normal, label: Обычный}
          - {value: high, label: Высокий}
      lost_reason: {type: text}
    links:
      client: {to: client, inverse: deals}
    stages:
      initial: new
      states:
        new: {label: Новая}
        qualified: {label: Квалифицирована}
        contract: {label: Договор, sla: 1d}
        won: {label: Выиграна, kind: won}
        lost: {label: Проиграна, kind: lost, requires: [lost_reason]}
      transitions:
        new: [qualified, lost]
        qualified: [contract, lost]
        contract: [won, lost]
  task:
    owner: true
    title: title
    fields:
      title: {type: string, required: true}
      due: {type: datetime}
      due_day: {type: date}
      done: {type: boolean, default: false}
    links:
      subject: {to: [deal, client], inverse: tasks, on_delete: cascade}
  document:
    fields:
      number: {type: string, required: true}
      status:
        type: choice
        default: draft
        options: [draft, review, signed]
    links:
      deal: {to: deal, inverse: documents, on_delete: cascade}
  shipment:
    fields:
      number: {type: string, required: true}
      tracking: {type: string}
    links:
      deal: {to: deal, inverse: shipments, on_delete: cascade}
    stages:
      initial: open
      states:
        open: {}
        shipped: {kind: won, requires: [tracking]}
      transitions:
        open: [shipped]
roles:
  manager:
    "*": all
  lawyer:
    "*": all
  director:
    "*": all
"""


def model_text(automations: str) -> str:
    return BASE + "automations:\n" + textwrap.indent(textwrap.dedent(automations), "  ")


@pytest.fixture
def make(db_url, tmp_path):
    opened = []

    def _make(automations: str, *, users: bool = True):
        path = tmp_path / f"model{len(opened)}.yaml"
        path.write_text(model_text(automations), encoding="utf-8")
        crm = metacrm.connect(path, db_url)
        crm.migrate()
        if users:
            crm.add_user("alice", roles=["manager"], email="alice@example.ru")
            crm.add_user("bob", roles=["manager"])  # no e-mail
            crm.add_user("lena", roles=["lawyer"], email="lena@example.ru")
            crm.add_user("mark", roles=["lawyer"], email="mark@example.ru")
            crm.add_user("dir", roles=["director"], email="dir@example.ru")
        opened.append(crm)
        crm.path = path
        return crm

    yield _make
    for crm in opened:
        crm.close()


def outbox(crm) -> list[dict]:
    table = crm.storage.outbox_table
    with crm.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).order_by(table.c.id)).mappings()]


def counts(crm) -> dict:
    """Rows in every table: what a refused operation must leave as it was."""
    out = {}
    with crm.engine.connect() as conn:
        for table in [*crm.storage.entity_tables(), crm.storage.history_table, crm.storage.journal_table]:
            out[table.name] = conn.execute(select(func.count()).select_from(table)).scalar_one()
        out["outbox"] = conn.execute(select(func.count()).select_from(crm.storage.outbox_table)).scalar_one()
    return out


def deal(crm, **values):
    client = crm.create("client", {"name": "ООО Ромашка", "email": "info@romashka.ru", "city": "Москва"})
    return crm.as_user("alice").create("deal", {"title": "Поставка", "amount": "150000", "client": client["id"], **values})


# -- triggers -----------------------------------------------------------------------------------
def test_created_creates_a_task_for_a_role_with_resolved_values(make):
    crm = make(
        """
        new_deal_task:
          when: {entity: deal, created: true}
          do:
            - create: task
              values: {title: "Позвонить: $record.title", subject: $record, due: +2d, due_day: +1d}
              assign: {role: lawyer}
            - create: task
              values: {title: $record.title, subject: $record}
        """
    )
    before = dt.datetime.now(dt.UTC)
    d = deal(crm)
    tasks = crm.find("task", order_by="id")
    assert len(tasks) == 2
    first, second = tasks
    assert first["title"] == "Позвонить: $record.title"  # only a whole value is a reference
    assert first["subject"] == {"entity": "deal", "id": d["id"]}
    assert first["owner"] == "lena"  # the first user with the role, by login
    assert before + dt.timedelta(days=2) <= first["due"] <= dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    assert first["due_day"] == (before + dt.timedelta(days=1)).date()
    assert second["title"] == "Поставка"
    assert second["owner"] == "alice"  # no assign: the user who triggered it
    entries = crm.timeline("task", first["id"])
    assert entries[0]["by"] == "alice (automation new_deal_task)"


def test_created_fires_once_per_record_of_a_batch_with_batched_reads(make):
    crm = make(
        """
        moscow_only:
          when: {entity: deal, created: true}
          if: "client.city = 'Москва' and amount > 1000"
          do:
            - notify: {to: ["email:client.email"], template: "Сделка {title} клиента {client.name}"}
        """
    )
    moscow = crm.create("client", {"name": "Москва", "email": "m@example.ru", "city": "Москва"})
    spb = crm.create("client", {"name": "Питер", "email": "p@example.ru", "city": "Санкт-Петербург"})
    rows = [
        {"title": f"Сделка {i}", "amount": "5000", "client": (moscow if i % 2 else spb)["id"]} for i in range(40)
    ]
    selects = []

    def count(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    event.listen(crm.engine, "before_cursor_execute", count)
    try:
        crm.create_many("deal", rows)
    finally:
        event.remove(crm.engine, "before_cursor_execute", count)
    messages = outbox(crm)
    assert len(messages) == 20
    assert {m["recipient"] for m in messages} == {"m@example.ru"}
    assert messages[0]["body"] == "Сделка Сделка 1 клиента Москва"
    assert len(selects) < 15, selects  # condition, records, links, users: one query each, not one per record


def test_updated_with_fields_fires_on_those_and_on_links(make):
    crm = make(
        """
        amount_changed:
          when: {entity: deal, updated: [amount, client]}
          do:
            - update: {values: {touched: 1}}
        """
    )
    d = deal(crm)
    crm.update("deal", d["id"], {"note": "не то поле"})
    assert crm.get("deal", d["id"])["touched"] == 0
    crm.update("deal", d["id"], {"amount": "200000"})
    assert crm.get("deal", d["id"])["touched"] == 1
    crm.update("deal", d["id"], {"touched": 0})
    other = crm.create("client", {"name": "Другой"})
    crm.link("deal", d["id"], "client", other["id"])  # a link entry counts as an update of the link
    assert crm.get("deal", d["id"])["touched"] == 1


def test_updated_true_does_not_loop_on_its_own_update(make):
    crm = make(
        """
        count_updates:
          when: {entity: deal, updated: true}
          do:
            - update: {values: {flagged: true}}
            - notify: {to: [owner], template: "{title} изменена"}
        """
    )
    d = deal(crm)
    crm.update("deal", d["id"], {"note": "раз"})
    assert crm.get("deal", d["id"])["flagged"] is True
    assert len(outbox(crm)) == 1  # fired once: its own update did not fire it again


def test_deleted_notifies_a_webhook_with_the_last_values(make):
    crm = make(
        """
        deal_gone:
          when: {entity: deal, deleted: true}
          if: "amount > 100000"
          do:
            - notify: {to: ["https://hooks.example.ru/crm"], template: "Удалена сделка {title} на {amount}"}
        """
    )
    big = deal(crm)
    small = crm.create("deal", {"title": "Мелкая", "amount": "10"})
    crm.delete("deal", small["id"])
    crm.delete("deal", big["id"])
    (message,) = outbox(crm)
    assert message["channel"] == "webhook" and message["recipient"] == "https://hooks.example.ru/crm"
    assert message["body"] == "Удалена сделка Поставка на 150000.00"
    payload = message["payload"]
    assert payload["automation"] == "deal_gone" and payload["entity"] == "deal"
    assert payload["record_id"] == big["id"] and payload["event"] == "deleted"
    assert payload["record"]["title"] == "Поставка"


def test_enters_and_leaves(make):
    crm = make(
        """
        entered_contract:
          when: {entity: deal, enters: contract}
          do:
            - notify: {to: [owner], subject: "Этап {stage}", template: "Сделка «{title}»: этап «{stage}»"}
        left_any:
          when: {entity: deal, leaves: "*"}
          do:
            - update: {values: {touched: 5}}
        left_qualified:
          when: {entity: deal, leaves: [qualified]}
          do:
            - update: {values: {flagged: true}}
        """
    )
    d = deal(crm)
    crm.move("deal", d["id"], "qualified")
    record = crm.get("deal", d["id"])
    assert record["touched"] == 5 and record["flagged"] is False and outbox(crm) == []
    crm.move("deal", d["id"], "contract")
    assert crm.get("deal", d["id"])["flagged"] is True
    (message,) = outbox(crm)
    assert message["subject"] == "Этап Договор"
    assert message["body"] == "Сделка «Поставка»: этап «Договор»"  # the stage's label, Cyrillic kept
    assert message["recipient"] == "alice@example.ru" and message["status"] == "pending"
    assert message["automation"] == "entered_contract" and message["record_id"] == d["id"]


# -- actions ------------------------------------------------------------------------------------
def test_update_through_an_inverse_link(make):
    crm = make(
        """
        review_documents:
          when: {entity: deal, enters: contract}
          do:
            - update: {target: documents, values: {status: review}}
            - update: {target: client, values: {city: "$record.title"}}
        """
    )
    d = deal(crm)
    docs = [crm.create("document", {"number": f"Д-{i}", "deal": d["id"]}) for i in range(3)]
    other = deal(crm)
    stranger = crm.create("document", {"number": "чужой", "deal": other["id"]})
    crm.move("deal", d["id"], "qualified")
    crm.move("deal", d["id"], "contract")
    assert [crm.get("document", x["id"])["status"] for x in docs] == ["review"] * 3
    assert crm.get("document", stranger["id"])["status"] == "draft"
    assert crm.get("client", d["client"])["city"] == "Поставка"


def test_move_linked_records_through_the_normal_path(make):
    crm = make(
        """
        ship_shipments:
          when: {entity: deal, enters: won}
          do:
            - move: {target: shipments, stage: shipped}
        """
    )
    d = deal(crm)
    order = crm.create("shipment", {"number": "З-1", "deal": d["id"], "tracking": "TRK1"})
    for stage in ("qualified", "contract", "won"):
        crm.move("deal", d["id"], stage)
    assert crm.get("shipment", order["id"])["stage"] == "shipped"
    moves = crm.history("shipment", order["id"])
    assert [(h["from_stage"], h["to_stage"]) for h in moves] == [(None, "open"), ("open", "shipped")]


def test_notify_resolves_every_kind_of_recipient(make):
    crm = make(
        """
        tell_everyone:
          when: {entity: deal, enters: qualified}
          do:
            - notify:
                to: [owner, "role:lawyer", dir, "email:client.email", "ops@example.ru", "https://hooks.example.ru/x"]
                subject: "Сделка {title}"
                template: "Сделка «{title}» ({priority}) клиента {client} на {amount} ₽: этап «{stage}», {client.city}"
        """
    )
    d = deal(crm, priority="high")
    crm.move("deal", d["id"], "qualified")
    messages = outbox(crm)
    assert [(m["channel"], m["recipient"]) for m in messages] == [
        ("email", "alice@example.ru"),
        ("email", "lena@example.ru"),
        ("email", "mark@example.ru"),
        ("email", "dir@example.ru"),
        ("email", "info@romashka.ru"),
        ("email", "ops@example.ru"),
        ("webhook", "https://hooks.example.ru/x"),
    ]
    body = "Сделка «Поставка» (Высокий) клиента ООО Ромашка на 150000.00 ₽: этап «Квалифицирована», Москва"
    assert {m["body"] for m in messages} == {body}
    assert {m["subject"] for m in messages} == {"Сделка Поставка"}
    assert messages[-1]["payload"]["record"]["stage"] == "qualified"
    assert all(m["payload"] is None for m in messages[:-1])


def test_notify_skips_a_recipient_without_address_and_says_so(make):
    crm = make(
        """
        tell_owner:
          when: {entity: deal, enters: qualified}
          do:
            - notify: {to: [owner, "email:client.email", nobody], template: "{title}"}
        """
    )
    client = crm.create("client", {"name": "Без почты"})
    d = crm.as_user("bob").create("deal", {"title": "Сделка", "client": client["id"]})
    crm.move("deal", d["id"], "qualified")
    assert outbox(crm) == []
    assert crm.get("deal", d["id"])["stage"] == "qualified"  # the operation went on
    notes = [e for e in crm.timeline("deal", d["id"]) if e["action"] == "note"]
    texts = sorted(n["text"] for n in notes)
    assert len(texts) == 3
    assert "user 'bob' has no e-mail" in texts[2] or any("user 'bob' has no e-mail" in t for t in texts)
    assert any("has no client.email" in t for t in texts)
    assert any("no user 'nobody'" in t for t in texts)
    assert {n["by"] for n in notes} == {"automation tell_owner"}


def test_assign_owner_and_user_and_missing_role(make):
    crm = make(
        """
        tasks_for_people:
          when: {entity: deal, created: true}
          do:
            - create: task
              values: {title: владелец, subject: $record}
              assign: {owner: true}
            - create: task
              values: {title: марк, subject: $record}
              assign: {user: mark}
            - create: task
              values: {title: никто, subject: $record}
              assign: {user: ghost}
        """
    )
    d = crm.as_user("bob").create("deal", {"title": "С"})
    owners = {t["title"]: t["owner"] for t in crm.find("task")}
    assert owners == {"владелец": "bob", "марк": "mark", "никто": None}
    notes = [e["text"] for e in crm.timeline("deal", d["id"]) if e["action"] == "note"]
    assert any("no user 'ghost'" in n for n in notes)


# -- failures roll the whole operation back -------------------------------------------------------
def test_a_failing_create_rolls_back_the_move(make):
    crm = make(
        """
        needs_note:
          when: {entity: deal, enters: qualified}
          do:
            - notify: {to: [owner], template: "{title}"}
            - update: {target: documents, values: {status: review}}
            - create: task
              values: {title: $record.note, subject: $record}
        """
    )
    d = deal(crm)
    doc = crm.create("document", {"number": "Д-1", "deal": d["id"]})
    before = counts(crm)
    with pytest.raises(metacrm.AutomationError) as info:
        crm.move("deal", d["id"], "qualified")
    message = str(info.value)
    assert "automation 'needs_note'" in message and "action 3 (create)" in message and "title" in message
    assert info.value.automation == "needs_note" and info.value.action == 3
    assert counts(crm) == before
    assert crm.get("deal", d["id"])["stage"] == "new"
    assert crm.get("document", doc["id"])["status"] == "draft"


def test_a_refused_move_fails_the_automation(make):
    crm = make(
        """
        ship_shipments:
          when: {entity: deal, enters: won}
          do:
            - move: {target: shipments, stage: shipped}
        """
    )
    d = deal(crm)
    crm.create("shipment", {"number": "З-1", "deal": d["id"]})  # no tracking: shipped requires it
    crm.move("deal", d["id"], "qualified")
    crm.move("deal", d["id"], "contract")
    before = counts(crm)
    with pytest.raises(metacrm.AutomationError, match=r"ship_shipments.*action 1 \(move\).*tracking"):
        crm.move("deal", d["id"], "won")
    assert counts(crm) == before
    assert crm.get("deal", d["id"])["stage"] == "contract"


def test_a_failure_inside_a_transaction_rolls_back_only_that_operation(make):
    crm = make(
        """
        boom:
          when: {entity: deal, enters: qualified}
          do:
            - create: task
              values: {title: $record.note}
        """
    )
    d = deal(crm)
    with crm.transaction():
        crm.update("deal", d["id"], {"amount": "1"})
        with pytest.raises(metacrm.AutomationError):
            crm.move("deal", d["id"], "qualified")
    record = crm.get("deal", d["id"])
    assert record["amount"] == 1 and record["stage"] == "new"


def test_the_cli_says_why_in_one_line(make):
    crm = make(
        """
        boom:
          when: {entity: deal, enters: qualified}
          do:
            - create: task
              values: {title: $record.note}
        """
    )
    d = deal(crm)
    result = CliRunner().invoke(
        app, ["move", "deal", str(d["id"]), "qualified", "--model", str(crm.path), "--db", str(crm.engine.url)]
    )
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: automation 'boom'")
    assert "Traceback" not in result.output


# -- chains -------------------------------------------------------------------------------------
def test_a_chain_too_deep_stops_naming_it(make, monkeypatch):
    crm = make(
        """
        spawn:
          when: {entity: task, created: true}
          do:
            - create: task
              values: {title: ещё}
        """
    )
    before = counts(crm)
    with pytest.raises(metacrm.AutomationError) as info:
        crm.create("task", {"title": "первая"})
    message = str(info.value)
    assert "deeper than 8" in message
    assert "spawn → spawn → spawn → spawn → spawn → spawn → spawn → spawn → spawn" in message
    assert counts(crm) == before
    monkeypatch.setenv("METACRM_AUTOMATION_DEPTH", "2")
    with pytest.raises(metacrm.AutomationError, match="deeper than 2 .*: spawn → spawn → spawn;"):
        crm.create("task", {"title": "первая"})
    assert counts(crm) == before


def test_a_chain_across_automations_runs_to_its_end(make):
    crm = make(
        """
        contract_review:
          when: {entity: deal, enters: contract}
          do:
            - create: document
              values: {number: Договор, deal: $record}
        document_note:
          when: {entity: document, created: true}
          do:
            - update: {target: deal, values: {flagged: true}}
        flagged_notice:
          when: {entity: deal, updated: [flagged]}
          do:
            - notify: {to: [owner], template: "{title}: задача юристу"}
        """
    )
    d = deal(crm)
    crm.move("deal", d["id"], "qualified")
    crm.move("deal", d["id"], "contract")
    assert crm.get("deal", d["id"])["flagged"] is True
    assert [m["body"] for m in outbox(crm)] == ["Поставка: задача юристу"]
    by = {e["by"] for e in crm.timeline("deal", d["id"]) if e["action"] == "update"}
    assert by == {"automation document_note"}  # the system user started the chain


# -- model checks and the cost of no automations -------------------------------------------------
@pytest.mark.parametrize(
    ("automation", "kind", "fragment"),
    [
        (
            "a: {when: {entity: deal, created: true}, do: [{notify: {to: [owner], template: 'Сделка {titel}'}}]}",
            "automation.placeholder_unknown",
            "'titel' is not a field or link of 'deal'",
        ),
        (
            "a: {when: {entity: deal, created: true}, do: [{notify: {to: [owner], template: '{client.town}'}}]}",
            "automation.placeholder_unknown",
            "client has no field 'town'",
        ),
        (
            "a: {when: {entity: deal, created: true}, do: [{notify: {to: [owner], template: 'a { b'}}]}",
            "automation.template_invalid",
            "unmatched",
        ),
        (
            "a: {when: {entity: deal, created: true}, do: [{notify: {to: ['role:boss'], template: x}}]}",
            "automation.role_unknown",
            "unknown role 'boss'",
        ),
        (
            "a: {when: {entity: deal, created: true}, do: [{notify: {to: ['email:client.mail'], template: x}}]}",
            "automation.recipient_invalid",
            "client has no field 'mail'",
        ),
        (
            "a: {when: {entity: deal, created: true}, do: [{create: task, values: {titl: x}}]}",
            "automation.value_unknown",
            "'task' has no field or link 'titl'",
        ),
        (
            "a: {when: {entity: deal, created: true}, do: [{create: task, values: {title: $record.nope}}]}",
            "automation.value_invalid",
            "'nope' is not a field or link of 'deal'",
        ),
        (
            "a: {when: {entity: deal, created: true}, do: [{create: document, values: {number: x}, assign: {role: lawyer}}]}",
            "automation.assign_no_owner",
            "'document' has no owner",
        ),
        (
            "a: {when: {entity: deal, created: true}, do: [{move: {target: shipments, stage: gone}}]}",
            "automation.stage_unknown",
            "'shipment' has no stage 'gone'",
        ),
        (
            "a: {when: {entity: deal, at: '0 9 * *'}, do: [{update: {values: {flagged: true}}}]}",
            "automation.at_invalid",
            "needs 5 fields",
        ),
        (
            "a: {when: {entity: deal, at: '0 25 * * *'}, do: [{update: {values: {flagged: true}}}]}",
            "automation.at_invalid",
            "not a valid cron expression",
        ),
    ],
)
def test_load_time_checks(tmp_path, automation, kind, fragment):
    path = tmp_path / "model.yaml"
    path.write_text(model_text(automation + "\n"), encoding="utf-8")
    with pytest.raises(metacrm.ModelError) as info:
        metacrm.load_model(path)
    problems = [p for p in info.value.problems if p.type == kind]
    assert problems, [p.format() for p in info.value.problems]
    assert fragment in problems[0].message
    assert problems[0].line > 0


def test_a_model_without_automations_has_no_reactor(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text(BASE, encoding="utf-8")
    model = metacrm.load_model(path)
    assert automation_reactor(model) is None
    timed = tmp_path / "timed.yaml"
    timed.write_text(
        model_text("late: {when: {entity: task, overdue: due}, do: [{update: {values: {done: true}}}]}\n"),
        encoding="utf-8",
    )
    assert automation_reactor(metacrm.load_model(timed)) is None  # only tick fires it


# -- users' e-mail ------------------------------------------------------------------------------
def test_users_have_an_email(make, tmp_path):
    crm = make("a: {when: {entity: deal, created: true}, do: [{notify: {to: [owner], template: x}}]}\n", users=False)
    assert crm.add_user("anna", roles=["manager"], email=" Anna@Example.ru ")["email"] == "Anna@example.ru"
    assert crm.set_user("anna", email="anna@example.com")["email"] == "anna@example.com"
    assert crm.set_user("anna", email="")["email"] is None
    with pytest.raises(metacrm.ValidationError, match="not an e-mail address"):
        crm.add_user("petr", email="не почта")
    result = CliRunner().invoke(
        app,
        ["user", "add", "ivan", "--role", "manager", "--email", "ivan@example.ru", "--model", str(crm.path),
         "--db", str(crm.engine.url), "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    assert crm.user_info("ivan")["email"] == "ivan@example.ru"
