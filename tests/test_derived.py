"""Computed fields (formula) and roll-up fields (rollup): kept correct on every write, on both
dialects, and equal to a from-scratch recomputation after random sequences of writes."""

from __future__ import annotations

import textwrap
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

import metacrm
from metacrm.errors import ModelError, ValidationError
from metacrm.expr import compile_python

MODEL = """
metacrm: 1
name: derived_test
entities:
  client:
    fields:
      name: {type: string, required: true}
      discount: {type: money}
      won_total: {type: money, rollup: "sum(deals.amount where stage = 'won')"}
      deal_count: {type: integer, rollup: "count(deals)"}
      max_amount: {type: money, rollup: "max(deals.amount)"}
      best_net: {type: money, rollup: "max(deals.net)"}
      busy: {type: boolean, formula: "deal_count > 1 and not (won_total = max_amount - 0) or name in ('a', 'VIP')"}
  deal:
    fields:
      title: {type: string, required: true}
      amount: {type: money, rollup: "sum(lines.qty * lines.price)"}
      net: {type: money, formula: "amount - coalesce(client.discount, 0)"}
      client_name: {type: string, formula: "client.name"}
      big: {type: boolean, formula: "amount >= 10 and (client.discount is null or net > amount - 5) or stage = 'won' and client.name startswith 'C'"}
    links:
      client: {to: client, inverse: deals, on_delete: cascade}
      tags: {to: tag, many: true, inverse: deals}
    stages:
      initial: new
      states:
        new: {}
        won: {kind: won}
        lost: {kind: lost}
      transitions:
        - {from: new, to: [won, lost]}
        - {from: [won, lost], to: new, reopen: true}
  line:
    fields:
      qty: {type: integer}
      price: {type: money}
      total: {type: money, formula: "qty * price"}
      share: {type: decimal, formula: "price / 3"}
    links:
      deal: {to: deal, inverse: lines, on_delete: cascade}
  tag:
    fields:
      label: {type: string}
      deal_count: {type: integer, rollup: "count(deals)"}
      won_amount: {type: money, rollup: "sum(deals.amount where stage = 'won')"}
      lines_value: {type: money, rollup: "sum(deals.amount)"}
"""

ENTITIES = ("line", "deal", "tag", "client")


@pytest.fixture
def crm(db_url, tmp_path: Path):
    path = tmp_path / "model.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    yield crm
    crm.close()


# -- the oracle: every derived value computed from scratch, in plain Python --------------------
def _q(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def expected(crm) -> dict:
    rows = {e: {r["id"]: r for r in crm.find(e)} for e in ENTITIES}
    out: dict = {e: {} for e in ENTITIES}
    for i, line in rows["line"].items():
        qty, price = line["qty"], line["price"]
        total = None if qty is None or price is None else _q(qty * price, 2)
        share = None if price is None else _q(price / 3, 6)
        out["line"][i] = {"total": total, "share": share}
    for i, deal in rows["deal"].items():
        products = [
            line["qty"] * line["price"]
            for line in rows["line"].values()
            if line["deal"] == i and line["qty"] is not None and line["price"] is not None
        ]
        amount = _q(sum(products, Decimal(0)), 2)
        client = rows["client"].get(deal["client"])
        discount = client["discount"] if client and client["discount"] is not None else Decimal(0)
        out["deal"][i] = {"amount": amount, "net": amount - discount, "client_name": client and client["name"]}
        out["deal"][i]["big"] = _holds(crm, "deal", rows, out, deal)
    for i in rows["client"]:
        deals = [(d, out["deal"][j]) for j, d in rows["deal"].items() if d["client"] == i]
        amounts = [v["amount"] for _, v in deals]
        out["client"][i] = {
            "won_total": sum((v["amount"] for d, v in deals if d["stage"] == "won"), Decimal("0.00")),
            "deal_count": len(deals),
            "max_amount": max(amounts) if amounts else None,
            "best_net": max(v["net"] for _, v in deals) if deals else None,
        }
        out["client"][i]["busy"] = _holds(crm, "client", rows, out, rows["client"][i])
    for i in rows["tag"]:
        deals = [(d, out["deal"][j]) for j, d in rows["deal"].items() if i in d["tags"]]
        out["tag"][i] = {
            "deal_count": len(deals),
            "won_amount": sum((v["amount"] for d, v in deals if d["stage"] == "won"), Decimal("0.00")),
            "lines_value": sum((v["amount"] for _, v in deals), Decimal("0.00")),
        }
    return out


def _holds(crm, entity: str, rows: dict, out: dict, record: dict) -> bool:
    """A boolean formula (a condition) on ``record``, with the Python predicate compiler: the
    paths it reads come from the rows, derived values from the oracle (never from storage)."""
    field = {"deal": "big", "client": "busy"}[entity]
    predicate = compile_python(crm.model, entity, crm.model.entities[entity].fields[field].formula)
    links = {"deal": {"client": "client"}}.get(entity, {})

    def value(ent: str, rec: dict | None, name: str):
        if rec is None:
            return None
        derived = out[ent].get(rec["id"], {})
        return derived[name] if name in derived else rec[name]

    values = {}
    for path in predicate.paths:
        head, _, rest = path.partition(".")
        if rest:
            target = links[head]
            values[path] = value(target, rows[target].get(record[head]), rest)
        else:
            values[path] = value(entity, record, head)
    return predicate(values)  # a condition that is not true (false or unknown) is stored false


def stored(crm) -> dict:
    names = {e: list(expected_fields(e)) for e in ENTITIES}
    return {e: {r["id"]: {n: r[n] for n in names[e]} for r in crm.find(e)} for e in ENTITIES}


def expected_fields(entity: str):
    return {
        "line": ("total", "share"),
        "deal": ("amount", "net", "client_name", "big"),
        "client": ("won_total", "deal_count", "max_amount", "best_net", "busy"),
        "tag": ("deal_count", "won_amount", "lines_value"),
    }[entity]


def assert_consistent(crm) -> None:
    assert stored(crm) == expected(crm)


# -- behaviour ----------------------------------------------------------------------------------
def test_computed_on_create_update_and_link_change(crm) -> None:
    a = crm.create("client", {"name": "A", "discount": "10.00"})
    b = crm.create("client", {"name": "B"})
    d = crm.create("deal", {"title": "D", "client": a["id"]})
    assert (d["amount"], d["net"], d["client_name"]) == (Decimal("0.00"), Decimal("-10.00"), "A")
    line = crm.create("line", {"qty": 3, "price": "10.01", "deal": d["id"]})
    assert (line["total"], line["share"]) == (Decimal("30.03"), Decimal("3.336667"))  # returned fresh
    assert crm.get("deal", d["id"])["net"] == Decimal("20.03")
    line = crm.update("line", line["id"], {"price": "-0.05"})
    assert (line["total"], line["share"]) == (Decimal("-0.15"), Decimal("-0.016667"))  # half away from zero
    moved = crm.update("deal", d["id"], {"client": b["id"]})  # the link changes: the formula follows
    assert (moved["net"], moved["client_name"]) == (Decimal("-0.15"), "B")
    crm.update("client", b["id"], {"name": "Б", "discount": "1"})  # the linked record changes
    assert (crm.get("deal", d["id"])["client_name"], crm.get("deal", d["id"])["net"]) == ("Б", Decimal("-1.15"))
    assert crm.get("client", a["id"])["deal_count"] == 0 and crm.get("client", b["id"])["deal_count"] == 1
    assert_consistent(crm)


def test_rollups_follow_children_moves_relinks_and_deletes(crm) -> None:
    a = crm.create("client", {"name": "A"})
    b = crm.create("client", {"name": "B"})
    t = crm.create("tag", {"label": "t"})
    d1 = crm.create("deal", {"title": "1", "client": a["id"], "tags": [t["id"]]})
    d2 = crm.create("deal", {"title": "2", "client": a["id"]})
    crm.create_many("line", [{"qty": q, "price": "2.50", "deal": d1["id"]} for q in range(1, 5)])  # 25.00
    l2 = crm.create("line", {"qty": 1, "price": "7", "deal": d2["id"]})
    assert crm.get("client", a["id"])["won_total"] == Decimal("0.00")
    assert crm.move("deal", d1["id"], "won")["amount"] == Decimal("25.00")
    assert crm.get("client", a["id"])["won_total"] == Decimal("25.00")
    assert crm.get("tag", t["id"])["won_amount"] == Decimal("25.00")
    crm.update("line", l2["id"], {"deal": d1["id"]})  # relink a line: both deals change
    assert (crm.get("deal", d1["id"])["amount"], crm.get("deal", d2["id"])["amount"]) == (
        Decimal("32.00"),
        Decimal("0.00"),
    )
    assert crm.get("client", a["id"])["won_total"] == Decimal("32.00")
    crm.update("deal", d1["id"], {"client": b["id"]})  # relink a deal: both clients change
    assert crm.get("client", a["id"])["won_total"] == Decimal("0.00")
    assert crm.get("client", b["id"])["won_total"] == Decimal("32.00")
    crm.unlink("deal", d1["id"], "tags", t["id"])
    assert crm.get("tag", t["id"])["deal_count"] == 0
    crm.link("tag", t["id"], "deals", d1["id"])  # through the inverse side
    assert crm.get("tag", t["id"])["won_amount"] == Decimal("32.00")
    crm.move("deal", d1["id"], "new")  # leaves won: the filter drops it
    assert crm.get("client", b["id"])["won_total"] == Decimal("0.00")
    crm.delete("line", l2["id"])
    assert crm.get("deal", d1["id"])["amount"] == Decimal("25.00")
    assert_consistent(crm)
    crm.delete("client", b["id"])  # cascades to d1 and its lines: the tag loses the deal
    assert crm.get("tag", t["id"])["deal_count"] == 0
    assert crm.get("tag", t["id"])["lines_value"] == Decimal("0.00")
    assert_consistent(crm)


def test_merge_moves_children_and_recomputes(crm) -> None:
    a = crm.create("client", {"name": "A", "discount": "1"})
    b = crm.create("client", {"name": "B"})
    t = crm.create("tag", {"label": "t"})
    da = crm.create("deal", {"title": "a", "client": a["id"], "tags": [t["id"]]})
    db = crm.create("deal", {"title": "b", "client": b["id"], "tags": [t["id"]]})
    crm.create("line", {"qty": 1, "price": "5", "deal": da["id"]})
    crm.create("line", {"qty": 2, "price": "5", "deal": db["id"]})
    kept = crm.merge("client", a["id"], b["id"])
    assert (kept["deal_count"], kept["max_amount"]) == (2, Decimal("10.00"))
    assert crm.get("deal", db["id"])["net"] == Decimal("9.00")  # now under A's discount
    assert crm.get("deal", db["id"])["client_name"] == "A"
    assert_consistent(crm)
    c = crm.create("client", {"name": "C"})
    dc = crm.create("deal", {"title": "c", "client": c["id"]})
    crm.create("line", {"qty": 1, "price": "100", "deal": dc["id"]})
    merged = crm.merge("deal", da["id"], dc["id"])  # C loses its deal, A keeps da with both lines
    assert merged["amount"] == Decimal("105.00")
    assert crm.get("client", c["id"])["deal_count"] == 0
    assert crm.get("tag", t["id"])["lines_value"] == Decimal("115.00")
    assert_consistent(crm)


def test_boolean_formula_is_a_condition_stored_and_kept_current(crm) -> None:
    a = crm.create("client", {"name": "Acme", "discount": "1"})
    d = crm.create("deal", {"title": "D", "client": a["id"]})
    assert d["big"] is False  # amount 0 < 10
    line = crm.create("line", {"qty": 2, "price": "5", "deal": d["id"]})  # a child write: the roll-up, then big
    assert crm.get("deal", d["id"])["big"] is True  # 10 >= 10 and net 9 > 10 - 5
    crm.update("client", a["id"], {"discount": "6"})  # through the single link: net 4 > 5 is false
    assert crm.get("deal", d["id"])["big"] is False
    assert crm.move("deal", d["id"], "won")["big"] is False  # 'Acme' does not start with 'C'
    crm.update("client", a["id"], {"name": "Contoso"})
    assert crm.get("deal", d["id"])["big"] is True  # or stage = 'won' and client.name startswith 'C'
    crm.update("line", line["id"], {"qty": None})  # still won: true
    assert crm.get("deal", d["id"])["big"] is True
    crm.update("deal", d["id"], {"client": None})  # client.name is null: unknown, stored false (never null)
    assert crm.get("deal", d["id"])["big"] is False
    assert [r["id"] for r in crm.find("deal", where="big = false")] == [d["id"]]
    # a roll-up it reads changes with a child write: deal_count > 1 and not (won_total = max_amount - 0)
    b = crm.create("client", {"name": "B"})
    assert b["busy"] is False
    d1 = crm.create("deal", {"title": "1", "client": b["id"]})
    crm.create("line", {"qty": 1, "price": "3", "deal": d1["id"]})
    assert crm.get("client", b["id"])["busy"] is False  # one deal
    d2 = crm.create("deal", {"title": "2", "client": b["id"]})
    assert crm.get("client", b["id"])["busy"] is True  # two deals, nothing won: 0 != 3
    crm.move("deal", d1["id"], "won")
    assert crm.get("client", b["id"])["busy"] is False  # won_total 3 = max_amount 3
    crm.create("line", {"qty": 1, "price": "4", "deal": d2["id"]})  # max_amount 4
    assert crm.get("client", b["id"])["busy"] is True
    assert crm.create("client", {"name": "VIP"})["busy"] is True  # name in ('a', 'VIP')
    assert_consistent(crm)


def test_derived_fields_cannot_be_set(crm) -> None:
    with pytest.raises(ValidationError, match=r"deal\.amount: is computed from sum\(lines\.qty \* lines\.price\)"):
        crm.create("deal", {"title": "x", "amount": "5"})
    d = crm.create("deal", {"title": "x"})
    with pytest.raises(ValidationError, match=r"line\.total: is computed from qty \* price; it cannot be set"):
        crm.create_many("line", [{"qty": 1}, {"total": 5}])
    with pytest.raises(ValidationError, match="client_name: is computed from client.name"):
        crm.update("deal", d["id"], {"client_name": "x"})
    assert crm.count("line") == 0 and crm.get("deal", d["id"])["version"] == 1


def test_derived_values_filter_sort_and_skip_the_journal(crm) -> None:
    c = crm.create("client", {"name": "A"})
    d = crm.create("deal", {"title": "x", "client": c["id"]})
    crm.create_many("line", [{"qty": 2, "price": "3", "deal": d["id"]}, {"qty": 1, "price": "1", "deal": d["id"]}])
    assert [r["id"] for r in crm.find("deal", where="amount > 6.5 and net = amount")] == [d["id"]]
    assert [r["id"] for r in crm.find("line", order_by="-total")] == [1, 2]
    assert crm.get("deal", d["id"])["version"] == 1  # derived values do not bump the version
    changes = [e["changes"] for e in crm.timeline("deal", d["id"]) if e["entity"] == "deal"]
    assert all("amount" not in ch for ch in changes)


def test_bulk_create_is_set_based(crm) -> None:
    from sqlalchemy import event

    d = crm.create("deal", {"title": "x"})
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(crm.engine, "before_cursor_execute", count)
    try:
        crm.create_many("line", [{"qty": i, "price": "1.10", "deal": d["id"]} for i in range(1500)])
    finally:
        event.remove(crm.engine, "before_cursor_execute", count)
    updates = [s for s in statements if s.lstrip().upper().startswith("UPDATE")]
    assert len(updates) <= 12, len(updates)  # per batch of 1000: total, share, the deal (and on), not per row
    assert crm.get("deal", d["id"])["amount"] == _q(Decimal("1.10") * sum(range(1500)), 2)


# -- model checks -------------------------------------------------------------------------------
def _problems(tmp_path: Path, yaml: str) -> list[str]:
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(yaml), encoding="utf-8")
    with pytest.raises(ModelError) as info:
        metacrm.load_model(path)
    return [p.format() for p in info.value.problems]


BASE = """
metacrm: 1
name: bad
entities:
  client:
    fields:
      name: {type: string}
      total: {type: money, %s}
  deal:
    fields:
      title: {type: string}
      amount: {type: money}
      size: {type: integer, %s}
    links:
      client: {to: client, inverse: deals}
"""


@pytest.mark.parametrize(
    ("client_field", "deal_field", "message"),
    [
        ('rollup: "sum(deals.amout)"', 'formula: "1"', "deal: unknown name 'amout'"),
        ('rollup: "sum(client.amount)"', 'formula: "1"', "'client' is not a link of client"),
        ('rollup: "sum(deals.title)"', 'formula: "1"', "sum needs numbers"),
        ('rollup: "avg(deals.amount)"', 'formula: "1"', "unknown aggregate 'avg'"),
        ('rollup: "sum(deals.amount where stag = 1)"', 'formula: "1"', "unknown name 'stag'"),
        ('formula: "name"', 'formula: "1"', "the formula gives text, which does not fit a money field"),
        ('formula: "deals.amount"', 'formula: "1"', "goes through a many or inverse link"),
        ('rollup: "count(deals)", required: true', 'formula: "1"', "it cannot have 'required'"),
        ('formula: "1", rollup: "count(deals)"', 'formula: "1"', "either 'formula'"),
        (
            'rollup: "sum(deals.size)"',
            'formula: "client.total * 2"',
            "derived fields depend on each other in a cycle: client.total -> deal.size -> client.total",
        ),
        ('formula: "total + 1"', 'formula: "1"', "cycle: client.total -> client.total"),
        ('formula: "coalesce(name, 1)"', 'formula: "1"', "coalesce mixes"),
    ],
)
def test_model_check_errors(tmp_path: Path, client_field: str, deal_field: str, message: str) -> None:
    problems = _problems(tmp_path, BASE % (client_field, deal_field))
    assert any(message in p for p in problems), problems
    assert all(p.startswith(str(tmp_path / "bad.yaml") + ":") or "bad.yaml:" in p for p in problems)
    assert any(":8:" in p or ":13:" in p for p in problems), problems  # the field's line


BOOLEAN = """
metacrm: 1
name: bad
entities:
  purchase:
    fields:
      name: {type: string}
      qty: {type: integer, rollup: "count(lines)"}
      ok: {type: %s, formula: "%s"}
  line:
    fields:
      qty: {type: integer}
    links:
      purchase: {to: purchase, inverse: lines}
"""


@pytest.mark.parametrize(
    ("type_", "formula", "message"),
    [
        ("boolean", "qyt > 0", "purchase: unknown name 'qyt' at column 1 (did you mean 'qty'?); names: name, qty, ok"),
        ("boolean", "qty >", "formula: unexpected end of the expression at column 6; expected a value"),
        ("boolean", "qty > :limit", "formula: parameter ':limit' cannot be used in a formula"),
        ("boolean", "lines.qty > 1", "'lines.qty' goes through a many or inverse link"),
        ("boolean", "qty > 'a'", "purchase.qty: 'a' is not a number"),
        ("boolean", "qty > 1 and ok = true", "cycle: purchase.ok -> purchase.ok"),
        ("money", "qty > 1", "the formula is a condition (true or false), which does not fit a money field"),
    ],
)
def test_boolean_formula_model_checks(tmp_path: Path, type_: str, formula: str, message: str) -> None:
    problems = _problems(tmp_path, BOOLEAN % (type_, formula))
    assert any(message in p for p in problems), problems
    assert all("bad.yaml:9:" in p for p in problems), problems  # file:line of the field


# -- random sequences: the stored values equal a from-scratch recomputation ----------------------
OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "client",
                "tag",
                "deal",
                "line",
                "lines",
                "line_update",
                "line_relink",
                "deal_client",
                "deal_tags",
                "client_update",
                "move",
                "delete_line",
                "delete_deal",
                "delete_client",
                "merge_client",
                "merge_deal",
            ]
        ),
        st.integers(0, 10**6),
        st.integers(0, 10**6),
        st.one_of(st.none(), st.integers(-5, 20)),
        st.one_of(st.none(), st.decimals(Decimal("-50"), Decimal("500"), places=2)),
    ),
    min_size=1,
    max_size=12,
)


def _pick(crm, entity: str, n: int):
    ids = [r["id"] for r in crm.find(entity, order_by="id")]
    return ids[n % len(ids)] if ids else None


def _apply(crm, op: str, a: int, b: int, qty, price) -> None:
    client, deal, line, tag = (_pick(crm, e, a) for e in ("client", "deal", "line", "tag"))
    if op == "client":
        crm.create("client", {"name": f"c{a % 7}", "discount": price})
    elif op == "tag":
        crm.create("tag", {"label": "t"})
    elif op == "deal":
        tags = [t for t in {_pick(crm, "tag", a), _pick(crm, "tag", b)} if t is not None]
        crm.create("deal", {"title": "d", "client": _pick(crm, "client", b) if b % 4 else None, "tags": tags})
    elif op == "line":
        crm.create("line", {"qty": qty, "price": price, "deal": deal})
    elif op == "lines":
        crm.create_many("line", [{"qty": qty, "price": price, "deal": _pick(crm, "deal", a + i)} for i in range(3)])
    elif op == "line_update" and line:
        crm.update("line", line, {"qty": qty} if b % 2 else {"price": price})
    elif op == "line_relink" and line:
        crm.update("line", line, {"deal": _pick(crm, "deal", b) if b % 3 else None})
    elif op == "deal_client" and deal:
        crm.update("deal", deal, {"client": _pick(crm, "client", b) if b % 3 else None})
    elif op == "deal_tags" and deal:
        crm.update("deal", deal, {"tags": [t for t in {_pick(crm, "tag", b)} if t is not None and b % 2]})
    elif op == "client_update" and client:
        crm.update("client", client, {"discount": price} if b % 2 else {"name": f"n{b % 5}"})
    elif op == "move" and deal:
        stage = crm.get("deal", deal)["stage"]
        crm.move("deal", deal, ("won", "lost")[b % 2] if stage == "new" else "new")
    elif op == "delete_line" and line:
        crm.delete("line", line)
    elif op == "delete_deal" and deal:
        crm.delete("deal", deal)
    elif op == "delete_client" and client:
        crm.delete("client", client)
    elif op in ("merge_client", "merge_deal"):
        entity = op.split("_")[1]
        keep, other = _pick(crm, entity, a), _pick(crm, entity, b)
        if keep and other and keep != other:
            crm.merge(entity, keep, other)


def _clear(crm) -> None:
    with crm.engine.begin() as conn:
        for table in crm.storage.metadata.sorted_tables[::-1]:
            if table.name.startswith(("deal", "line", "client", "tag")) or table.name == "metacrm_journal":
                conn.execute(delete(table))


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=OPS)
def test_random_writes_keep_derived_values_correct(crm, ops) -> None:
    _clear(crm)
    clients = crm.create_many("client", [{"name": "a", "discount": "2.50"}, {"name": "b"}])
    tags = crm.create_many("tag", [{"label": "x"}, {"label": "y"}])
    deals = crm.create_many(
        "deal",
        [
            {"title": "1", "client": clients[0]["id"], "tags": [tags[0]["id"]]},
            {"title": "2", "client": clients[1]["id"], "tags": [t["id"] for t in tags]},
            {"title": "3"},
        ],
    )
    crm.create_many("line", [{"qty": i, "price": f"{i}.3{i}", "deal": deals[i % 3]["id"]} for i in range(1, 5)])
    assert_consistent(crm)
    for op, a, b, qty, price in ops:
        _apply(crm, op, a, b, qty, price)
        assert_consistent(crm)


def test_migrate_fills_an_added_derived_field(db_url, tmp_path: Path) -> None:
    plain = MODEL.replace('      total: {type: money, formula: "qty * price"}\n', "").replace(
        '      amount: {type: money, rollup: "sum(lines.qty * lines.price)"}\n', "      amount: {type: money}\n"
    )
    path = tmp_path / "model.yaml"
    path.write_text(plain.replace('rollup: "max(deals.amount)"', 'rollup: "max(deals.amount)", index: true'))
    with metacrm.connect(path, db_url) as crm:
        crm.migrate()
        d = crm.create("deal", {"title": "x", "amount": "99"})
        crm.create_many(
            "line", [{"qty": 2, "price": "1.25", "deal": d["id"]}, {"qty": 1, "price": "3", "deal": d["id"]}]
        )
    path.write_text(MODEL)
    with metacrm.connect(path, db_url) as crm:
        crm.migrate()
        assert [r["total"] for r in crm.find("line", order_by="id")] == [Decimal("2.50"), Decimal("3.00")]
        assert crm.get("deal", d["id"])["amount"] == Decimal("5.50")  # a field that became a roll-up
        assert_consistent(crm)


def _corrupt(crm, entity: str, field: str, value) -> None:
    table = crm.storage.table(entity)
    with crm.engine.begin() as conn:
        conn.execute(table.update().values({field: value}))


def test_migrate_recomputes_only_the_derived_fields_it_can_make_stale(db_url, tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(MODEL)
    with metacrm.connect(path, db_url) as crm:
        crm.migrate()
        c = crm.create("client", {"name": "Acme", "discount": "1"})
        d = crm.create("deal", {"title": "x", "client": c["id"]})
        crm.create_many(
            "line", [{"qty": 2, "price": "1.25", "deal": d["id"]}, {"qty": 1, "price": "3", "deal": d["id"]}]
        )
        _corrupt(crm, "line", "share", Decimal("7"))  # a stale value: only a recompute of share would fix it
    # nothing a derived field reads changes: no recompute, the stale value stays
    path.write_text(
        MODEL.replace("label: {type: string}", "label: {type: string, index: true}\n      note: {type: text}")
    )
    with metacrm.connect(path, db_url) as crm:
        assert [s.kind for s in crm.migrate(dry_run=True)] == ["add_field", "add_index", "record_model"]
        crm.migrate()
        assert {r["share"] for r in crm.find("line")} == {Decimal("7")}
    # client.discount changes type: what reads it (deal.net, deal.big) and what reads those (client.best_net)
    path.write_text(MODEL.replace("discount: {type: money}", "discount: {type: decimal}"))
    with metacrm.connect(path, db_url) as crm:
        plan = crm.migrate(dry_run=True)
        steps = [s for s in plan if s.kind == "recompute_derived"]
        assert [(s.entity, s.target) for s in steps] == [("deal", "net"), ("client", "best_net"), ("deal", "big")]
        assert all(s.klass == "safe" for s in steps) and [s.count for s in steps] == [1, 1, 1]
        assert "reads client.discount, which the migration changes" in steps[0].description
        assert steps[0].sql[0].startswith("UPDATE deal SET net=") and len(steps[0].sql) == 1
        assert plan.statements.index(steps[0].sql[0]) < len(plan.statements) - 1  # before the model is recorded
        assert plan.statements[-1].startswith("INSERT INTO metacrm_model")
        assert "recompute derived" in plan.format(sql=True)
        _corrupt(crm, "deal", "net", Decimal("-1"))
        crm.migrate()
        assert crm.get("deal", d["id"])["net"] == Decimal("4.50")  # 5.50 - 1
        assert crm.get("client", c["id"])["best_net"] == Decimal("4.50")
        assert {r["share"] for r in crm.find("line")} == {Decimal("7")}  # still not recomputed
    # a formula changes: that field, and nothing else
    changed = MODEL.replace("discount: {type: money}", "discount: {type: decimal}").replace("price / 3", "price / 4")
    path.write_text(changed)
    with metacrm.connect(path, db_url) as crm:
        plan = crm.migrate(dry_run=True)
        assert [(s.entity, s.target, s.count) for s in plan if s.kind == "recompute_derived"] == [("line", "share", 2)]
        assert "its formula changed" in plan[0].description
        crm.migrate()
        assert sorted(r["share"] for r in crm.find("line")) == [Decimal("0.312500"), Decimal("0.750000")]
