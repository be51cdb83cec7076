"""The values an automation's `create` and `update` write (automation/context.resolve and the
batched link reads): `$record.link.field` through a many-link, a polymorphic link and an inverse
link, `$record` as a single, many and polymorphic link value, `$now` on a date and on a datetime
field, and `$$` for a literal `$`; on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

import metacrm

MODEL = """\
metacrm: 1
name: values_test
entities:
  client:
    title: name
    fields:
      name: {type: string, required: true}
      city: {type: string}
  product:
    title: name
    fields:
      name: {type: string, required: true}
      code: {type: string}
  deal:
    title: title
    fields:
      title: {type: string, required: true}
      summary: {type: text}
      last_task: {type: string}
    links:
      client: {to: client, inverse: deals}
      products: {to: product, many: true, inverse: deals}
  task:
    title: title
    fields:
      title: {type: string, required: true}
      code: {type: string}
      city: {type: string}
      first_product: {type: string}
      due: {type: datetime}
      due_day: {type: date}
    links:
      subject: {to: [deal, client], inverse: tasks}
      products: {to: product, many: true}
      deal: {to: deal}
  memo:
    fields:
      text: {type: string, required: true}
      about: {type: string}
    links:
      deals: {to: deal, many: true}
automations:
  task_for_deal:
    when: {entity: deal, created: true}
    do:
      - create: task
        values:
          title: $record.title
          code: $$record.title
          city: $record.client.city
          first_product: $record.products.code
          due: $now
          due_day: $now
          subject: $record
          deal: $record
          products: $record.products.id
      - create: memo
        values: {text: "$$5", deals: $record}
  memo_for_task:
    when: {entity: task, created: true}
    do:
      - create: memo
        values: {text: $record.title, about: $record.subject.title}
  deal_hears_of_its_tasks:
    when: {entity: task, updated: [code]}
    do:
      - update: {target: deal, values: {last_task: $record.subject.name}}
  deal_lists_its_tasks:
    when: {entity: deal, updated: [title]}
    do:
      - update: {values: {summary: $record.tasks.title}}
"""


@pytest.fixture
def crm(db_url, tmp_path):
    path = tmp_path / "values.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    yield crm
    crm.close()


def test_values_through_links_and_references(crm) -> None:
    client = crm.create("client", {"name": "ООО Ромашка", "city": "Москва"})
    products = [crm.create("product", {"name": n, "code": c}) for n, c in (("Сервер", "S-1"), ("Кабель", "K-2"))]
    before = dt.datetime.now(dt.UTC)
    deal = crm.create("deal", {"title": "Поставка", "client": client["id"], "products": [p["id"] for p in products]})
    after = dt.datetime.now(dt.UTC)
    (task,) = crm.find("task")
    assert task["title"] == "Поставка" and task["code"] == "$record.title"  # $$: a literal $
    assert task["city"] == "Москва"  # through a single link
    assert task["first_product"] == "S-1"  # the first value through a many-link
    assert task["products"] == [p["id"] for p in products]  # every value, into a many-link
    assert task["subject"] == {"entity": "deal", "id": deal["id"]}  # $record into a polymorphic link
    assert task["deal"] == deal["id"]
    assert before <= task["due"] <= after  # $now on a datetime field: the moment
    assert task["due_day"] in {before.date(), after.date()}  # $now on a date field: the day
    memos = {m["text"]: m for m in crm.find("memo")}
    assert memos["$5"]["deals"] == [deal["id"]]  # $record into a many-link: a one-id list
    assert memos["Поставка"]["about"] == "Поставка"  # through the task's polymorphic subject (a deal)


def test_values_through_an_inverse_and_a_polymorphic_link_on_update(crm) -> None:
    client = crm.create("client", {"name": "ИП Лютик"})
    deal = crm.create("deal", {"title": "Ремонт", "client": client["id"]})  # creates its task, subject: the deal
    call = crm.create("task", {"title": "Звонок", "subject": f"client:{client['id']}", "deal": deal["id"]})
    crm.update("task", call["id"], {"code": "x"})
    assert crm.get("deal", deal["id"])["last_task"] == "ИП Лютик"  # through a polymorphic link, to a client
    crm.create("task", {"title": "Смета", "subject": f"deal:{deal['id']}"})
    crm.update("deal", deal["id"], {"title": "Ремонт офиса"})
    assert crm.get("deal", deal["id"])["summary"] == "Ремонт"  # the first (oldest) task through the inverse
    assert sorted(t["title"] for t in crm.related("deal", deal["id"], "tasks")) == ["Ремонт", "Смета"]
