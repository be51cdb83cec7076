"""The issue's scenarios, on the example models as written, on SQLite and PostgreSQL:

- trade: a deal entering "contract" gives the lawyer a task, puts its documents under review
  and tells the owner; an overdue task is reported by `tick`;
- logistics: every stage change of a shipment notifies its manager and the client; customs
  gives the broker a task, which `tick` reports once it is overdue;
- service desk: a ticket past its stage's SLA is flagged, escalated and reported;
- SRM: a contract 30 days before its renewal decision gets a reminder task for its owner; a
  supplier invoice is matched against its order's ordered, received and invoiced roll-ups (the
  3-way match): a mismatch is flagged and the accountant told.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select, update

import metacrm

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
UTC = dt.UTC


def outbox(crm) -> list[dict]:
    table = crm.storage.outbox_table
    with crm.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).order_by(table.c.id)).mappings()]


def opened(db_url, name: str, users: dict[str, tuple[str, str]]):
    crm = metacrm.connect(EXAMPLES / f"{name}.yaml", db_url)
    crm.migrate()
    for login, (role, email) in users.items():
        crm.add_user(login, roles=[role], email=email)
    return crm


@pytest.fixture
def close():
    opened_ = []
    yield opened_.append
    for crm in opened_:
        crm.close()


def test_trade_contract_review_and_overdue_task(db_url, close):
    crm = opened(
        db_url,
        "trade",
        {"anna": ("manager", "anna@trade.ru"), "o.kuznetsova": ("lawyer", "lawyer@trade.ru")},
    )
    close(crm)
    anna = crm.as_user("anna")
    client = anna.create("client", {"name": "ООО Ромашка", "email": "info@romashka.ru"})
    supplier = crm.create("supplier", {"name": "ООО Поставщик"})
    product = crm.create("product", {"name": "Сервер", "sku": "SRV-1"})
    deal = anna.create(
        "deal",
        {
            "title": "Поставка серверов",
            "amount": "1200000",
            "client": client["id"],
            "supplier": supplier["id"],
            "products": [product["id"]],
        },
    )
    doc = anna.create("document", {"number": "Д-15", "kind": "contract", "deal": deal["id"]})
    anna.move("deal", deal["id"], "qualified")
    assert crm.find("task") == [] and outbox(crm) == []
    anna.move("deal", deal["id"], "contract")
    (task,) = crm.find("task")
    assert task["title"] == "Согласовать договор" and task["priority"] == "high"
    assert task["owner"] == "o.kuznetsova" and task["subject"] == {"entity": "deal", "id": deal["id"]}
    assert crm.get("document", doc["id"])["status"] == "review"
    (message,) = outbox(crm)
    assert message["recipient"] == "anna@trade.ru"
    assert message["body"] == "Сделка Поставка серверов перешла на этап «Договор»: юрист получил задачу на согласование"
    by = {e["by"] for e in crm.timeline("document", doc["id"]) if e["action"] == "update"}
    assert by == {"anna (automation contract_review)"}
    # two days later the task is overdue: the lawyer hears of it once
    later = task["due"] + dt.timedelta(minutes=1)
    fired = crm.tick(later)
    assert [(f["automation"], f["record_id"]) for f in fired] == [("task_overdue", task["id"])]
    assert outbox(crm)[-1]["recipient"] == "lawyer@trade.ru"
    assert outbox(crm)[-1]["body"].startswith("Задача «Согласовать договор» просрочена (срок ")
    assert crm.tick(later + dt.timedelta(hours=1)) == []


def test_logistics_every_stage_change_notifies_manager_and_client(db_url, close):
    crm = opened(
        db_url,
        "logistics",
        {"ivan": ("forwarder", "ivan@cargo.ru"), "t.egorova": ("customs_broker", "broker@cargo.ru")},
    )
    close(crm)
    ivan = crm.as_user("ivan")
    client = ivan.create("client", {"name": "ООО Ромашка", "email": "ved@romashka.ru"})
    line = crm.create("carrier", {"name": "MSC", "kind": "shipping_line", "code": "MSCU"})
    sha = crm.create("location", {"name": "Шанхай", "code": "CNSHA", "kind": "seaport", "country": "CN"})
    led = crm.create("location", {"name": "Санкт-Петербург", "code": "RULED", "kind": "seaport", "country": "RU"})
    shipment = ivan.create(
        "shipment",
        {"reference": "SEA-2030-00001", "mode": "sea", "cargo": "Станки", "client": client["id"], "eta": "2030-06-01"},
    )
    steps = [
        ("quoted", {"freight_rate": "350000.00"}),
        ("booked", {"carrier": line["id"], "origin": sha["id"], "destination": led["id"]}),
        ("container_loaded", {"container_number": "MSCU1234567"}),
        ("in_transit", {"bill_of_lading": "MSCU24123456"}),
        ("at_port", {}),
        ("customs", {"customs_declaration": "10702070/030624/1234567"}),
    ]
    for stage, values in steps:
        if values:
            ivan.update("shipment", shipment["id"], values)
        ivan.move("shipment", shipment["id"], stage)
    notices = [m for m in outbox(crm) if m["automation"] == "shipment_stage_notice"]
    assert len(notices) == 2 * len(steps)  # the manager and the client, at every stage
    assert {m["recipient"] for m in notices} == {"ivan@cargo.ru", "ved@romashka.ru"}
    assert notices[-1]["subject"] == "Перевозка SEA-2030-00001"
    assert "перешёл на этап «" in notices[-1]["body"] and "Плановое прибытие: 2030-06-01." in notices[-1]["body"]
    assert "SEA-2030-00001 (Станки)" in notices[0]["body"]
    # customs: the broker's task, due in two days; overdue after that, reported once
    (task,) = crm.find("service_task")
    assert task["owner"] == "t.egorova" and task["service"] == "customs" and task["shipment"] == shipment["id"]
    due_day = task["due"]
    after = dt.datetime(due_day.year, due_day.month, due_day.day, tzinfo=UTC) + dt.timedelta(days=1, hours=1)
    fired = crm.tick(after)
    assert [(f["automation"], f["record_id"]) for f in fired] == [("service_task_overdue", task["id"])]
    overdue = [m for m in outbox(crm) if m["automation"] == "service_task_overdue"]
    assert {m["recipient"] for m in overdue} == {"broker@cargo.ru"}  # the owner; no head_of_logistics user
    assert overdue[0]["body"] == f"Услуга «Таможенное оформление» просрочена (срок {due_day.isoformat()})"
    assert crm.tick(after) == []


def test_service_desk_sla_breach_is_flagged_and_escalated(db_url, close):
    crm = opened(
        db_url,
        "service_desk",
        {"agent1": ("agent", "agent1@help.ru"), "boss": ("supervisor", "boss@help.ru")},
    )
    close(crm)
    agent = crm.as_user("agent1")
    customer = crm.create("customer", {"name": "ООО Ромашка"})
    ticket = agent.create(
        "ticket",
        {"subject": "Не работает вход", "description": "Ошибка 500", "channel": "email", "customer": customer["id"]},
    )
    table = crm.storage.table("ticket")
    entered = dt.datetime(2030, 1, 10, 9, 0, tzinfo=UTC)
    with crm.engine.begin() as conn:  # the ticket came in at 09:00 (stage `new`, SLA 1h)
        conn.execute(update(table).where(table.c.id == ticket["id"]).values(stage_entered_at=entered))
    assert crm.tick(entered + dt.timedelta(minutes=59)) == []
    fired = crm.tick(entered + dt.timedelta(minutes=61))
    assert [(f["automation"], f["record_id"]) for f in fired] == [("sla_escalation", ticket["id"])]
    record = crm.get("ticket", ticket["id"])
    assert record["priority"] == "urgent" and record["escalated"] is True
    messages = outbox(crm)
    assert {m["recipient"] for m in messages} == {"agent1@help.ru", "boss@help.ru"}
    assert messages[0]["subject"] == "SLA нарушен: Не работает вход"
    assert "на этапе «" in messages[0]["body"] and "приоритет повышен до критического" in messages[0]["body"]
    assert crm.tick(entered + dt.timedelta(hours=5)) == []  # once per stage entry


def test_srm_contract_renewal_reminder(db_url, close):
    crm = opened(db_url, "srm", {"petr": ("buyer", "petr@srm.ru")})
    close(crm)
    petr = crm.as_user("petr")
    supplier = petr.create("supplier", {"name": "ООО Металл", "inn": "7701234567", "email": "sales@metall.ru"})
    today = dt.date(2030, 5, 1)
    renewal = today + dt.timedelta(days=25)
    common = {"supplier": supplier["id"], "start_date": "2029-06-01", "end_date": "2030-12-31"}
    due = petr.create("contract", {"number": "К-1", "renewal_date": renewal.isoformat(), **common})
    petr.create("contract", {"number": "К-2", "renewal_date": renewal.isoformat(), "auto_renew": True, **common})
    petr.create("contract", {"number": "К-3", "renewal_date": (today + dt.timedelta(days=90)).isoformat(), **common})
    now = dt.datetime(today.year, today.month, today.day, 8, tzinfo=UTC)
    fired = crm.tick(now)
    assert [(f["automation"], f["record_id"]) for f in fired] == [("contract_renewal_reminder", due["id"])]
    (task,) = crm.find("task")
    assert task["title"] == "Решить вопрос о продлении договора"
    assert task["owner"] == "petr" and task["due"] == renewal
    assert task["subject"] == {"entity": "contract", "id": due["id"]}
    (message,) = [m for m in outbox(crm) if m["automation"] == "contract_renewal_reminder"]
    assert message["recipient"] == "petr@srm.ru"
    assert message["body"] == f"Договор К-1: до решения о продлении осталось 30 дней ({renewal.isoformat()})"
    assert crm.tick(now + dt.timedelta(days=1)) == []


def _srm_order(crm, number: str, supplier: int, product: int, lines) -> dict:
    order = crm.create("purchase_order", {"number": number, "supplier": supplier})
    crm.create_many(
        "purchase_order_line",
        [
            {"line_no": i, "qty": qty, "price": price, "product": product, "purchase_order": order["id"]}
            for i, (qty, price) in enumerate(lines, 1)
        ],
    )
    return crm.get("purchase_order", order["id"])


def _srm_invoice(crm, number: str, supplier: int, order: int, amount: str, **more) -> dict:
    values = {"number": number, "invoice_date": "2030-05-01", "amount": amount, "supplier": supplier}
    return crm.create("supplier_invoice", {**values, "purchase_order": order, **more})


def test_srm_new_invoice_on_an_empty_order_is_a_mismatch(db_url, close):
    crm = opened(db_url, "srm", {"petr": ("buyer", "petr@srm.ru"), "acc": ("accountant", "acc@srm.ru")})
    close(crm)
    supplier = crm.create("supplier", {"name": "ООО Металл", "inn": "7701234567", "email": "sales@metall.ru"})
    order = crm.create("purchase_order", {"number": "PO-2030-0001", "supplier": supplier["id"]})
    assert order["three_way_ok"] is False  # nothing ordered: never null
    invoice = _srm_invoice(crm, "СФ-7", supplier["id"], order["id"], "100000")
    assert crm.get("supplier_invoice", invoice["id"])["match_status"] == "mismatch"
    messages = [m for m in outbox(crm) if m["automation"] == "three_way_mismatch"]
    assert [m["recipient"] for m in messages] == ["acc@srm.ru"]
    assert messages[0]["body"] == (
        "Счёт СФ-7 на 100000.00 не сходится с заказом PO-2030-0001: заказано на 0.00, выставлено счетов на "
        "100000.00; сверьте количество с приёмкой"
    )


def test_srm_three_way_match_flags_a_mismatch(db_url, close):
    crm = opened(db_url, "srm", {"petr": ("buyer", "petr@srm.ru"), "acc": ("accountant", "acc@srm.ru")})
    close(crm)
    supplier = crm.create("supplier", {"name": "ООО Металл", "inn": "7701234567", "email": "sales@metall.ru"})
    product = crm.create("product", {"name": "Лист стальной", "sku": "ST-100"})
    s, p = supplier["id"], product["id"]
    order = _srm_order(crm, "PO-2030-0001", s, p, [("10", "100.00"), ("5", "200.00")])
    assert (order["ordered_qty"], order["ordered_total"], order["three_way_ok"]) == (15, 2000, False)
    short = crm.create("goods_receipt", {"number": "ТН-1", "purchase_order": order["id"], "received_qty": "12"})
    invoice = _srm_invoice(crm, "СФ-1", s, order["id"], "2000.00")
    order = crm.get("purchase_order", order["id"])
    assert (order["received_qty"], order["invoiced_total"], order["three_way_ok"]) == (12, 2000, False)
    assert crm.get("supplier_invoice", invoice["id"])["match_status"] == "mismatch"
    (message,) = outbox(crm)
    assert (message["automation"], message["recipient"]) == ("three_way_mismatch", "acc@srm.ru")
    assert message["body"].startswith("Счёт СФ-1 на 2000.00 не сходится с заказом PO-2030-0001: заказано на 2000.00")
    # the rest arrives; linking the receipt to the invoice re-checks it: matched, nobody notified
    rest = crm.create("goods_receipt", {"number": "ТН-2", "purchase_order": order["id"], "received_qty": "3"})
    assert crm.get("purchase_order", order["id"])["three_way_ok"] is True
    assert crm.get("supplier_invoice", invoice["id"])["match_status"] == "mismatch"  # not journaled: no trigger
    crm.update("supplier_invoice", invoice["id"], {"goods_receipt": rest["id"]})
    assert crm.get("supplier_invoice", invoice["id"])["match_status"] == "matched"
    assert len(outbox(crm)) == 1
    # a matching order from the start: matched on creation, nobody notified
    order2 = _srm_order(crm, "PO-2030-0002", s, p, [("4", "25.50")])
    crm.create("goods_receipt", {"number": "ТН-3", "purchase_order": order2["id"], "received_qty": "4"})
    invoice2 = _srm_invoice(crm, "СФ-2", s, order2["id"], "102.00")
    assert crm.get("supplier_invoice", invoice2["id"])["match_status"] == "matched" and len(outbox(crm)) == 1
    # a changed amount re-checks: a mismatch now, the accountant told
    crm.update("supplier_invoice", invoice2["id"], {"amount": "110.00"})
    assert crm.get("supplier_invoice", invoice2["id"])["match_status"] == "mismatch"
    assert [m["body"].split(":")[0] for m in outbox(crm)][1:] == [
        "Счёт СФ-2 на 110.00 не сходится с заказом PO-2030-0002"
    ]
    assert crm.get("goods_receipt", short["id"])["received_qty"] == 12
