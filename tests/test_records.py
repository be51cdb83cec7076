"""Records through metacrm.connect on SQLite and PostgreSQL: create, get, update, delete,
find, count, link, unlink, related, create_many — and refusals that write nothing."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

import metacrm

CONTRACT = Path(__file__).parent / "fixtures" / "valid" / "contract.yaml"


@pytest.fixture
def crm(db_url):
    crm = metacrm.connect(CONTRACT, db_url)
    crm.migrate()
    yield crm
    crm.close()


def snapshot(crm) -> dict:
    """Every row of every table, to show a refused operation changed nothing."""
    out = {}
    with crm.engine.connect() as conn:
        for table in crm.storage.metadata.sorted_tables:
            rows = conn.execute(select(table)).mappings().all()
            out[table.name] = sorted(tuple(sorted((k, repr(v)) for k, v in r.items())) for r in rows)
    return out


@pytest.fixture
def filled(crm):
    c1 = crm.create("client", {"name": "ООО Ромашка", "email": "info@romashka.ru", "city": "Москва", "source": "site"})
    c2 = crm.create("client", {"name": "АО Василёк", "city": "Казань"})
    p1 = crm.create("product", {"name": "Сервер", "price": "150000.00"})
    p2 = crm.create("product", {"name": "Ноутбук", "price": "80000"})
    d1 = crm.create(
        "deal",
        {"title": "Поставка серверов", "amount": "120000.00", "client": c1["id"], "products": [p1["id"], p2["id"]]},
    )
    d2 = crm.create("deal", {"title": "Ноутбуки", "amount": "500", "client": c2["id"], "products": [p2["id"]]})
    t1 = crm.create("task", {"title": "Позвонить", "subject": {"entity": "deal", "id": d1["id"]}})
    t2 = crm.create("task", {"title": "Встреча", "subject": f"client:{c2['id']}"})
    return {"c1": c1, "c2": c2, "p1": p1, "p2": p2, "d1": d1, "d2": d2, "t1": t1, "t2": t2}


def test_contract_python_example(crm) -> None:
    c = crm.create("client", {"name": "ООО Ромашка", "email": "info@romashka.ru"})
    d = crm.create("deal", {"title": "Поставка", "amount": "120000.00", "client": c["id"]})
    assert d["stage"] == "new" and d["amount"] == Decimal("120000.00") and d["client"] == c["id"]
    assert crm.find("deal", where="amount > 1000", order_by="-amount", limit=50)[0]["id"] == d["id"]
    assert [r["id"] for r in crm.related("client", c["id"], "deals")] == [d["id"]]
    assert crm.count("deal", where="stage = 'new'") == 1
    assert crm.get("client", c["id"])["name"] == "ООО Ромашка"


def test_get_returns_plain_dict_with_links(crm, filled) -> None:
    d1 = crm.get("deal", filled["d1"]["id"])
    assert d1["products"] == sorted([filled["p1"]["id"], filled["p2"]["id"]])
    assert d1["client"] == filled["c1"]["id"]
    assert d1["stage"] == "new" and "pipeline" not in d1
    assert d1["version"] == 1
    t1 = crm.get("task", filled["t1"]["id"])
    assert t1["subject"] == {"entity": "deal", "id": filled["d1"]["id"]}
    assert d1 == {**filled["d1"], "products": d1["products"]}


def test_related_both_ways(crm, filled) -> None:
    ids = lambda rows: [r["id"] for r in rows]  # noqa: E731
    assert ids(crm.related("deal", filled["d1"]["id"], "client")) == [filled["c1"]["id"]]
    assert ids(crm.related("deal", filled["d1"]["id"], "products")) == sorted([filled["p1"]["id"], filled["p2"]["id"]])
    assert ids(crm.related("product", filled["p2"]["id"], "deals")) == [filled["d1"]["id"], filled["d2"]["id"]]
    assert ids(crm.related("client", filled["c2"]["id"], "deals")) == [filled["d2"]["id"]]
    assert ids(crm.related("task", filled["t2"]["id"], "subject")) == [filled["c2"]["id"]]
    with pytest.raises(metacrm.ValidationError, match="unknown link 'deels'.*did you mean 'deals'"):
        crm.related("client", filled["c1"]["id"], "deels")


def test_find_filters_and_orders(crm, filled) -> None:
    rows = crm.find("deal", where="client.city = 'Москва'")
    assert [r["id"] for r in rows] == [filled["d1"]["id"]]
    rows = crm.find("deal", order_by="-amount")
    assert [r["amount"] for r in rows] == [Decimal("120000.00"), Decimal("500.00")]
    assert crm.count("deal", where="products.name = 'Сервер'") == 1
    assert crm.count("deal") == 2 and crm.count("product") == 2
    assert crm.count("deal", where="amount > 1000000") == 0
    assert crm.count("client", where="name contains 'ромашка'") == 1
    # a count capped at `limit` stops reading there: min(count, limit), the filter still applied
    assert [crm.count("deal", limit=n) for n in (0, 1, 2, 3)] == [0, 1, 2, 2]
    assert crm.count("deal", where="amount > 1000", limit=5) == 1
    with pytest.raises(metacrm.ValidationError, match="limit"):
        crm.count("deal", limit=-1)
    assert crm.find("deal", order_by="title", limit=1, offset=1)[0]["title"] == "Поставка серверов"
    with pytest.raises(metacrm.ExpressionError):
        crm.find("deal", where="amount >")
    with pytest.raises(metacrm.ValidationError, match="unknown field 'amout'"):
        crm.find("deal", order_by="amout")


def test_update_and_optimistic_lock(crm, filled) -> None:
    d = crm.update("deal", filled["d1"]["id"], {"amount": "130 000,50", "products": [filled["p1"]["id"]]})
    assert d["amount"] == Decimal("130000.50") and d["products"] == [filled["p1"]["id"]] and d["version"] == 2
    with pytest.raises(metacrm.ConflictError):
        crm.update("deal", d["id"], {"title": "x"}, version=1)
    assert crm.update("deal", d["id"], {"title": "y"}, version=2)["version"] == 3
    with pytest.raises(metacrm.NotFound):
        crm.update("deal", 999, {"title": "x"})


def test_link_unlink(crm, filled) -> None:
    d2 = filled["d2"]["id"]
    assert crm.link("deal", d2, "products", filled["p1"]["id"])["products"] == sorted(
        [filled["p1"]["id"], filled["p2"]["id"]]
    )
    assert crm.unlink("deal", d2, "products", filled["p2"]["id"])["products"] == [filled["p1"]["id"]]
    # through the inverse: product p2 gains deal d2 again
    crm.link("product", filled["p2"]["id"], "deals", d2)
    assert filled["p2"]["id"] in crm.get("deal", d2)["products"]
    # a single link through its inverse: client c1 takes deal d2
    crm.link("client", filled["c1"]["id"], "deals", d2)
    assert crm.get("deal", d2)["client"] == filled["c1"]["id"]
    with pytest.raises(metacrm.ValidationError, match="client"):
        crm.unlink("deal", d2, "client")  # required link


def test_unlinking_what_is_not_linked_is_not_found_and_writes_nothing(crm, filled) -> None:
    """An unlink names the target it removes: one that is not linked there is refused (it
    used to clear a single link whatever the target, and bump the version of a many-link)."""
    c1, d1, d2 = (filled[k]["id"] for k in ("c1", "d1", "d2"))
    t1 = filled["t1"]["id"]
    before = {e: crm.find(e) for e in ("deal", "task")}
    for call in (
        lambda: crm.unlink("deal", d2, "client", c1),  # d2's client is c2
        lambda: crm.unlink("deal", d2, "products", filled["p1"]["id"]),  # d2 has p2 only
        lambda: crm.unlink("client", c1, "deals", d2),  # the inverse: d2 is c2's
        lambda: crm.unlink("product", filled["p1"]["id"], "deals", d2),
        lambda: crm.unlink("task", t1, "subject", {"entity": "deal", "id": d2}),  # t1's subject is d1
    ):
        with pytest.raises(metacrm.NotFound, match="is not linked to .* nothing to unlink"):
            call()
    assert {e: crm.find(e) for e in ("deal", "task")} == before
    assert crm.unlink("task", t1, "subject", {"entity": "deal", "id": d1})["subject"] is None
    crm.unlink("product", filled["p2"]["id"], "deals", d2)  # what is linked still unlinks, through the inverse
    assert crm.get("deal", d2)["products"] == []


def test_delete_restrict_cascade_and_polymorphic(crm, filled) -> None:
    before = snapshot(crm)
    with pytest.raises(metacrm.ValidationError, match="restrict"):
        crm.delete("client", filled["c1"]["id"])  # deals link to it (restrict)
    with pytest.raises(metacrm.ValidationError, match="restrict"):
        crm.delete("product", filled["p1"]["id"])  # a deal's many-link (restrict)
    assert snapshot(crm) == before
    deleted = crm.delete("task", filled["t1"]["id"])
    assert deleted == {"task": [filled["t1"]["id"]]}
    deleted = crm.delete("deal", filled["d2"]["id"])
    assert deleted == {"deal": [filled["d2"]["id"]]}
    assert [r["id"] for r in crm.related("product", filled["p2"]["id"], "deals")] == [filled["d1"]["id"]]
    with pytest.raises(metacrm.NotFound):
        crm.get("deal", filled["d2"]["id"])


def test_create_many_all_or_nothing(crm, filled) -> None:
    before = snapshot(crm)
    rows = [
        {"name": "Один", "email": "one@x.ru"},
        {"name": "", "email": "bad@"},
        {"name": "Три", "email": "info@romashka.ru"},
        {"name": "Четыре", "email": "one@x.ru"},
    ]
    with pytest.raises(metacrm.ValidationError) as info:
        crm.create_many("client", rows)
    by_index = {(i.index, i.field) for i in info.value.issues}
    assert (1, "name") in by_index and (1, "email") in by_index
    assert snapshot(crm) == before
    created = crm.create_many("client", [{"name": f"Клиент {i}", "city": "Тверь"} for i in range(2500)])
    assert len(created) == 2500 and created[0]["name"] == "Клиент 0" and created[-1]["name"] == "Клиент 2499"
    assert [c["id"] for c in created] == sorted(c["id"] for c in created)
    assert crm.count("client", where="city = 'Тверь'") == 2500


def test_create_many_reports_duplicates_and_missing_links(crm, filled) -> None:
    with pytest.raises(metacrm.ValidationError) as info:
        crm.create_many(
            "client",
            [
                {"name": "a", "email": "info@romashka.ru"},
                {"name": "b", "email": "z@z.ru"},
                {"name": "c", "email": "z@z.ru"},
            ],
        )
    assert {(i.index, i.field) for i in info.value.issues} == {(0, "email"), (2, "email")}
    with pytest.raises(metacrm.ValidationError) as info:
        crm.create_many("deal", [{"title": "ok", "client": filled["c1"]["id"]}, {"title": "x", "client": 999}])
    assert [(i.index, i.field) for i in info.value.issues] == [(1, "client")]


BAD_INPUTS = [
    ("client", {"email": "a@b.ru"}, "name"),  # missing required
    ("deal", {"title": "x", "amount": "abc", "client": "{c1}"}, "amount"),  # wrong type
    ("client", {"name": "x", "email": "not-an-email"}, "email"),
    ("deal", {"title": "x", "amount": "-5", "client": "{c1}"}, "amount"),  # out of range
    ("client", {"name": "x", "source": "web"}, "source"),  # unknown choice
    ("client", {"name": "x", "email": "info@romashka.ru"}, "email"),  # duplicate unique
    ("deal", {"title": "x", "client": 999}, "client"),  # link to a missing record
    ("client", {"name": "x", "nmae": "y"}, "nmae"),  # unknown field
]


@pytest.mark.parametrize(
    ("entity", "data", "field"), BAD_INPUTS, ids=[f"{e}-{f}-{i}" for i, (e, _, f) in enumerate(BAD_INPUTS)]
)
def test_bad_input_refused_and_nothing_written(crm, filled, entity, data, field) -> None:
    data = {k: (v.format(c1=filled["c1"]["id"]) if isinstance(v, str) else v) for k, v in data.items()}
    before = snapshot(crm)
    with pytest.raises(metacrm.ValidationError) as info:
        crm.create(entity, data)
    assert f"{entity}.{field}" in str(info.value) or (field in str(info.value) and entity in str(info.value))
    assert "\n" not in str(info.value)
    assert snapshot(crm) == before


def test_data_operations_need_migrate(db_url) -> None:
    crm = metacrm.connect(CONTRACT, db_url)
    with pytest.raises(metacrm.MigrationError, match="migrate"):
        crm.create("client", {"name": "x"})
    assert crm.migrate(dry_run=True)
    with pytest.raises(metacrm.MigrationError):
        crm.count("client")
    crm.migrate()
    assert crm.count("client") == 0
    assert crm.migrate() == []
    crm.close()


def test_other_model_version_refused(db_url, tmp_path) -> None:
    crm = metacrm.connect(CONTRACT, db_url)
    crm.migrate()
    crm.close()
    changed = tmp_path / "changed.yaml"
    changed.write_text(
        CONTRACT.read_text(encoding="utf-8").replace("city:  {type: string}", "city:  {type: text}"), encoding="utf-8"
    )
    other = metacrm.connect(changed, db_url)
    with pytest.raises(metacrm.MigrationError, match="another version"):
        other.find("client")
    other.close()


def test_history_row_on_create(crm, filled) -> None:
    history = crm.storage.history_table
    with crm.engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(history).where(history.c.entity == "deal")).scalar_one()
        stages = set(conn.execute(select(history.c.to_stage)).scalars())
    assert n == 2 and stages == {"new"}


def test_transaction_all_or_nothing_with_atomic_steps(crm, filled) -> None:
    before = snapshot(crm)
    with pytest.raises(metacrm.ValidationError), crm.transaction():
        crm.create("client", {"name": "Новый"})
        crm.create_many("product", [{"name": "Принтер"}, {"name": "Сканер"}])
        crm.create("deal", {"title": "x", "client": 999})
    assert snapshot(crm) == before
    with crm.transaction():
        c = crm.create("client", {"name": "Новый"})
        with pytest.raises(metacrm.ValidationError):  # refused inside: only this step is undone
            crm.create_many("product", [{"name": "Принтер"}, {"name": ""}])
        crm.create("deal", {"title": "Сделка", "client": c["id"]})
        assert crm.count("deal", where=f"client = {c['id']}") == 1  # sees its own writes
    assert crm.count("client", where="name = 'Новый'") == 1
    assert crm.count("product", where="name = 'Принтер'") == 0
