"""The expression language: parsing, errors, SQL on both dialects, and Python predicates that
agree with SQL (three-valued logic, paths through links, money, dates, Cyrillic)."""

from __future__ import annotations

import datetime as dt
import re
import tempfile
from decimal import Decimal
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from sqlalchemy import BigInteger, Numeric, create_engine, delete, event, func, insert, inspect, select, type_coerce
from sqlalchemy.dialects import postgresql, sqlite

import metacrm
from metacrm.errors import ExpressionError, ValidationError
from metacrm.expr import Expr, check_names, compile_python, compile_sql, parse
from metacrm.expr.functions import install_sqlite_functions
from metacrm.expr.parser import MAX_LENGTH
from metacrm.storage import naming
from metacrm.storage.tables import build_storage

CONTRACT = Path(__file__).parent / "fixtures" / "valid" / "contract.yaml"
UTC = dt.UTC
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

LAB_YAML = """
metacrm: 1
name: lab
entities:
  company:
    fields:
      name:    {type: string, required: true}
      city:    {type: string}
      tags:    {type: multichoice, options: [vip, new, old]}
      vip:     {type: boolean}
      founded: {type: date}
      meta:    {type: json}
  person:
    fields:
      name:   {type: string}
      score:  {type: integer}
      rate:   {type: decimal}
      salary: {type: money}
      bonus:  {type: money}
      seen:   {type: datetime}
    links:
      company: {to: company, inverse: people}
      friends: {to: person, many: true, inverse: friend_of}
  note:
    fields:
      text: {type: string}
    links:
      about: {to: [company, person], inverse: notes}
"""


@cache
def contract() -> metacrm.Model:
    return metacrm.load_model(CONTRACT)


@cache
def lab() -> metacrm.Model:
    path = Path(tempfile.mkdtemp(prefix="metacrm-expr-")) / "lab.yaml"
    path.write_text(LAB_YAML, encoding="utf-8")
    return metacrm.load_model(path)


def _engine(url: str):
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":

        def on_connect(dbapi_connection, record):
            install_sqlite_functions(dbapi_connection)
            dbapi_connection.execute("PRAGMA foreign_keys=ON")

        event.listen(engine, "connect", on_connect)
    return engine


def _t(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text).astimezone(UTC)


# -- data ----------------------------------------------------------------------------------
def _contract_rows():
    clients = [
        dict(id=1, name="ООО Ромашка", email="info@romashka.ru", city="Москва", source="site", owner="anna"),
        dict(id=2, name="ИП Лютик", email=None, city="Казань", source="call", owner="boris"),
        dict(id=3, name="Acme_50%", email=None, city=None, source=None, owner=None),
        dict(id=4, name="O'Brien; --", email=None, city="Москва", source="referral", owner="anna"),
    ]
    products = [
        dict(id=1, name="Сервер", price=Decimal("1500.00")),
        dict(id=2, name="Лицензия", price=Decimal("99.99")),
        dict(id=3, name="Кабель", price=None),
    ]

    def deal(id, title, amount, client, stage, created, owner, closed=None, reason=None):
        return dict(
            id=id, title=title, amount=None if amount is None else Decimal(amount), client_id=client, stage=stage,
            pipeline="default", stage_entered_at=NOW, created_at=_t(created), owner=owner, closed_at=_t(closed),
            lost_reason=reason,
        )  # fmt: skip

    deals = [
        deal(1, "Поставка серверов", "120000.50", 1, "new", "2026-01-10T09:00:00+00:00", "anna"),
        deal(2, "Лицензии", "999.99", 1, "qualified", "2026-02-01T00:00:00+00:00", "boris"),
        deal(3, "Ремонт", None, 2, "won", "2026-02-15T12:00:00+03:00", None, closed="2026-03-01T00:00:00+00:00"),
        deal(4, "Кабели", "1000.00", 2, "lost", "2026-03-05T00:00:00+00:00", "anna", reason="Дорого"),
        deal(5, "РОМАШКА: сервис", "0.01", 3, "proposal", "2026-03-10T00:00:00+00:00", "boris"),
    ]
    deal_products = [(1, 1), (1, 2), (2, 2), (4, 3), (5, 1), (5, 3)]
    tasks = [
        dict(id=1, title="Позвонить", due=_t("2026-03-01T10:00:00+00:00"), subject_entity="deal", subject_id=1),
        dict(id=2, title="Письмо", due=None, subject_entity="client", subject_id=2),
        dict(id=3, title="Без темы", due=None, subject_entity=None, subject_id=None),
    ]
    return {"client": clients, "product": products, "deal": deals, "task": tasks}, {("deal", "products"): deal_products}


def _lab_rows():
    companies = [
        dict(
            id=1,
            name="Альфа",
            city="Москва",
            tags=["vip", "new"],
            vip=True,
            founded=dt.date(2020, 1, 15),
            meta={"a": 1},
        ),
        dict(id=2, name="Beta", city=None, tags=[], vip=False, founded=None, meta=None),
        dict(id=3, name="Gamma", city="Казань", tags=None, vip=None, founded=dt.date(2021, 6, 1), meta=None),
    ]

    def person(id, name, score, rate, salary, bonus, seen, company):
        money = [None if v is None else Decimal(v) for v in (rate, salary, bonus)]
        return dict(
            id=id,
            name=name,
            score=score,
            rate=money[0],
            salary=money[1],
            bonus=money[2],
            seen=_t(seen),
            company_id=company,
        )

    people = [
        person(1, "Иван", 10, "1.5", "100.00", "50.00", "2026-01-01T10:00:00+00:00", 1),
        person(2, "Пётр", None, "0.000001", None, "10", None, None),
        person(3, None, 10, None, "50.50", None, "2026-01-02T00:00:00+03:00", 3),
        person(4, "ivan", -5, "-2", "0", "0", None, 2),
    ]
    notes = [
        dict(id=1, text="Звонок", about_entity="company", about_id=1),
        dict(id=2, text="meeting", about_entity="person", about_id=1),
        dict(id=3, text="x", about_entity=None, about_id=None),
    ]
    friends = [(1, 2), (1, 3), (3, 1), (4, 1)]
    return {"company": companies, "person": people, "note": notes}, {("person", "friends"): friends}


def _load(conn, storage, rows, joins) -> None:
    for entity in ("client", "product", "deal", "task", "company", "person", "note"):
        if entity in rows:
            system = dict(created_at=NOW, updated_at=NOW)
            conn.execute(insert(storage.table(entity)), [{**system, **r} for r in rows[entity]])
    for (entity, link), pairs in joins.items():
        if not pairs:
            continue
        conn.execute(
            insert(storage.join_table(entity, link)),
            [{naming.JOIN_SOURCE: s, naming.JOIN_TARGET: t} for s, t in pairs],
        )


def _clear(conn, storage) -> None:
    for table in reversed(storage.entity_tables()):
        conn.execute(delete(table))


class World:
    """All rows in memory, to compute each path's values independently of the compiler."""

    def __init__(self, model, conn, storage):
        self.model = model
        self.rows = {
            name: {r["id"]: dict(r) for r in conn.execute(select(storage.table(name))).mappings()}
            for name in model.entities
        }
        self.joins = {
            key: [tuple(r) for r in conn.execute(select(t.c.source_id, t.c.target_id))]
            for key, t in storage.join_tables.items()
        }

    def _linked(self, entity, record, name):
        """(target entity, records reached, multi) through one member of ``entity``."""
        e = self.model.entities[entity]
        if name in e.links:
            link = e.links[name]
            if link.many:
                ids = [t for s, t in self.joins[(entity, name)] if s == record["id"]]
                return link.target, [self.rows[link.target][i] for i in ids], True
            target_id = record[f"{name}_id"]
            return link.target, [] if target_id is None else [self.rows[link.target][target_id]], False
        inv = e.inverses[name]
        if inv.many_to_many:
            ids = [s for s, t in self.joins[(inv.source, inv.link)] if t == record["id"]]
            return inv.source, [self.rows[inv.source][i] for i in ids], True
        poly = self.model.entities[inv.source].links[inv.link].polymorphic
        found = [
            r for r in self.rows[inv.source].values()
            if r[f"{inv.link}_id"] == record["id"] and (not poly or r[f"{inv.link}_entity"] == entity)
        ]  # fmt: skip
        return inv.source, found, True

    def value(self, entity, record, path):
        parts = path.split(".")
        records, multi = [record], False
        for part in parts[:-1]:
            nxt = []
            for r in records:
                entity_next, found, many = self._linked(entity, r, part)
                nxt += found
                multi = multi or many
            entity, records = entity_next, nxt
        last = parts[-1]
        e = self.model.entities[entity]
        values = []
        for r in records:
            if last in e.links and not e.links[last].many:
                values.append(r[f"{last}_id"])
            elif last in e.links or last in e.inverses:
                _, found, _ = self._linked(entity, r, last)
                values += [f["id"] for f in found]
                multi = True
            else:
                values.append(r[last])
        if multi:
            return values
        return values[0] if values else None

    def python_ids(self, entity, expr, params=None) -> set[int]:
        predicate = compile_python(self.model, entity, expr)
        matched = set()
        for record in self.rows[entity].values():
            values = {p: self.value(entity, record, p) for p in predicate.paths}
            if predicate(values, params):
                matched.add(record["id"])
        return matched


def _sql_ids(conn, storage, entity, expr, params=None) -> set[int]:
    table = storage.table(entity)
    return set(conn.execute(select(table.c.id).where(compile_sql(storage, entity, expr, params))).scalars())


# -- filters on both dialects ------------------------------------------------------------
CONTRACT_CASES = [
    # operators on money (exact: cents on SQLite), null handling
    ("deal", "amount > 999.99", None, {1, 4}),
    ("deal", "amount >= 999.99", None, {1, 2, 4}),
    ("deal", "amount = 1000", None, {4}),
    ("deal", "amount < 1000", None, {2, 5}),
    ("deal", "amount <= 1000.00", None, {2, 4, 5}),
    ("deal", "amount != 999.99", None, {1, 4, 5}),
    ("deal", "amount <> 999.99", None, {1, 4, 5}),
    ("deal", "999.99 < amount", None, {1, 4}),
    ("deal", "amount is null", None, {3}),
    ("deal", "amount IS NOT NULL", None, {1, 2, 4, 5}),
    ("deal", "amount between 999.99 and 1000", None, {2, 4}),
    ("deal", "amount not between 1 and 200000", None, {5}),
    ("deal", "amount in (0.01, 1000)", None, {4, 5}),
    ("deal", "amount not in (0.01, 1000)", None, {1, 2}),
    ("deal", "amount in (0.01, null)", None, {5}),
    ("deal", "amount not in (0.01, null)", None, set()),
    ("deal", "amount = null", None, set()),
    ("deal", "not amount = null", None, set()),
    ("deal", "not (amount > 1000)", None, {2, 4, 5}),
    ("deal", "amount > 1000 or amount is null", None, {1, 3}),
    # text: case-insensitive contains/startswith, Cyrillic included; LIKE characters are literal
    ("deal", "title contains 'ромашка'", None, {5}),
    ("deal", "title CONTAINS 'СЕРВ'", None, {1, 5}),
    ("deal", "title startswith 'лиц'", None, {2}),
    ("deal", "lost_reason contains 'ДОРОГ'", None, {4}),
    ("deal", "title contains '%'", None, set()),
    ("client", "name contains 'ромашка'", None, {1}),
    ("client", "name contains '_5'", None, {3}),
    ("client", "name contains '%'", None, {3}),
    ("client", "name contains '_'", None, {3}),
    ("client", "name startswith 'o''b'", None, {4}),
    ("client", "name = 'O''Brien; --'", None, {4}),
    ("client", "email is null", None, {2, 3, 4}),
    ("client", "source = 'site' or city is null", None, {1, 3}),
    ("client", "not source = 'site'", None, {2, 4}),
    ("client", "city > 'Л'", None, {1, 4}),
    # system columns, stages, parameters
    ("deal", "stage in ('new', 'qualified')", None, {1, 2}),
    ("deal", "stage = 'won' OR stage = 'lost'", None, {3, 4}),
    ("deal", "not (stage = 'new' or stage = 'won')", None, {2, 4, 5}),
    ("deal", "stage in :stages", {"stages": ["won", "lost"]}, {3, 4}),
    ("deal", "stage not in :stages", {"stages": []}, {1, 2, 3, 4, 5}),
    ("deal", "closed_at is not null", None, {3}),
    ("deal", "owner is null", None, {3}),
    ("deal", "amount > :min and owner = :me", {"min": Decimal("500"), "me": "anna"}, {1, 4}),
    ("deal", "amount > :min", {"min": "999.99"}, {1, 4}),
    ("deal", "amount > :min", {"min": None}, set()),
    ("deal", "id in (1, 3) or amount > 100000", None, {1, 3}),
    ("deal", "version = 1 and pipeline = 'default'", None, {1, 2, 3, 4, 5}),
    # dates and times (aware, compared in UTC)
    ("deal", "created_at >= '2026-02-16'", None, {4, 5}),
    ("deal", "created_at >= '2026-02-15T09:00:00Z'", None, {3, 4, 5}),
    ("deal", "created_at < '2026-02-01T00:00:01+00:00'", None, {1, 2}),
    ("deal", "created_at between :a and :b", {"a": dt.date(2026, 2, 1), "b": "2026-02-28"}, {2, 3}),
    (
        "deal",
        "created_at > :t",
        {"t": dt.datetime(2026, 3, 5, 2, 0, tzinfo=dt.timezone(dt.timedelta(hours=3)))},
        {4, 5},
    ),
    ("task", "due > '2026-01-01'", None, {1}),
    ("task", "due is null", None, {2, 3}),
    # single links: the link alone is its id; paths keep SQL's three-valued logic
    ("deal", "client = 1", None, {1, 2}),
    ("deal", "client.id = 2", None, {3, 4}),
    ("deal", "client.city = 'Москва'", None, {1, 2}),
    ("deal", "client.city != 'Москва'", None, {3, 4}),
    ("deal", "not client.city = 'Москва'", None, {3, 4}),
    ("deal", "client.city is null", None, {5}),
    ("deal", "not client.city is null", None, {1, 2, 3, 4}),
    ("deal", "client.source in ('site', 'call')", None, {1, 2, 3, 4}),
    ("deal", "client.name contains 'ромашка'", None, {1, 2}),
    ("deal", "amount >= 1000 and not (client.city = 'Москва')", None, {4}),
    # many-links and inverse links: some linked record matches; negations: none does
    ("deal", "products.name = 'Сервер'", None, {1, 5}),
    ("deal", "products.name != 'Сервер'", None, {2, 3, 4}),
    ("deal", "products.price > 1000", None, {1, 5}),
    ("deal", "products is null", None, {3}),
    ("deal", "products is not null", None, {1, 2, 4, 5}),
    ("deal", "products = 3", None, {4, 5}),
    ("deal", "products.price is null", None, {3, 4}),
    ("deal", "products.deals.client.city = 'Казань'", None, {4, 5}),
    ("client", "deals.amount > 1000", None, {1}),
    ("client", "deals.amount >= 1000", None, {1, 2}),
    ("client", "deals is null", None, {4}),
    ("client", "deals.stage = 'won'", None, {2}),
    ("client", "deals.products.name = 'Сервер'", None, {1, 3}),
    ("client", "not deals.amount > 1000", None, {2, 3, 4}),
    ("product", "deals.client.name contains 'лютик'", None, {3}),
    ("product", "deals is null", None, set()),
    ("product", "price > 99.99", None, {1}),
    # polymorphic links: null checks only
    ("task", "subject is null", None, {3}),
    ("task", "subject is not null", None, {1, 2}),
]

LAB_CASES = [
    ("person", "company.city = 'Москва'", None, {1}),
    ("person", "company.city != 'Москва'", None, {3}),
    ("person", "not company.city = 'Москва'", None, {3}),
    ("person", "company.city is null", None, {2, 4}),
    ("person", "company.people.name is null", None, {2, 3}),
    ("person", "not company.people.name = 'Иван'", None, {2, 3, 4}),
    ("person", "company.city is not null", None, {1, 3}),
    ("person", "company is null", None, {2}),
    ("person", "company.vip = true", None, {1}),
    ("person", "company.vip = FALSE", None, {4}),
    ("person", "company.vip != true", None, {4}),
    ("person", "company.tags contains 'vip'", None, {1}),
    ("person", "not company.tags contains 'vip'", None, {2, 3, 4}),
    ("person", "company.founded < '2021-01-01'", None, {1}),
    ("person", "company.meta is null", None, {2, 3, 4}),
    ("person", "friends.name = 'Иван'", None, {3, 4}),
    ("person", "friends is null", None, {2}),
    ("person", "friend_of.name startswith 'ив'", None, {2, 3}),
    ("person", "friends.friends.name = 'Пётр'", None, {3, 4}),
    ("person", "company.people.score = -5", None, {4}),
    ("person", "notes.text = 'meeting'", None, {1}),
    ("person", "notes.text = 'Звонок'", None, set()),
    ("person", "score = 10", None, {1, 3}),
    ("person", "score > :s", {"s": 0}, {1, 3}),
    ("person", "score != 10", None, {4}),
    ("person", "rate > 1", None, {1}),
    ("person", "rate = 0.000001", None, {2}),
    ("person", "salary >= 50.5", None, {1, 3}),
    ("person", "salary = 0", None, {4}),
    ("person", "salary > bonus", None, {1}),
    ("person", "salary >= bonus", None, {1, 4}),
    ("person", "seen > '2026-01-01T12:00:00+03:00'", None, {1, 3}),
    ("person", "seen < '2026-01-01T15:00:00Z'", None, {1}),
    ("person", "name is null", None, {3}),
    ("person", "name contains 'ИВАН'", None, {1}),
    ("person", "name contains 'ivan'", None, {4}),
    ("company", "people.score > 5", None, {1, 3}),
    ("company", "people is null", None, set()),
    ("company", "notes.text = 'Звонок'", None, {1}),
    ("company", "notes is null", None, {2, 3}),
    ("company", "tags contains 'vip'", None, {1}),
    ("company", "tags is null", None, {3}),
    ("company", "meta is not null", None, {1}),
    ("company", "vip is null", None, {3}),
    ("company", "vip = true or vip = false", None, {1, 2}),
    ("company", "vip in (true)", None, {1}),
    ("company", "founded between '2020-01-01' and '2020-12-31'", None, {1}),
]


def _check_cases(db_url, model, rows_of, cases) -> None:
    storage = build_storage(model)
    engine = _engine(db_url)
    storage.metadata.create_all(engine)
    rows, joins = rows_of()
    with engine.begin() as conn:
        _load(conn, storage, rows, joins)
    failures = []
    with engine.connect() as conn:
        world = World(model, conn, storage)
        for entity, text, params, expected in cases:
            got = _sql_ids(conn, storage, entity, text, params)
            python = world.python_ids(entity, text, params)
            if got != expected or python != expected:
                failures.append(
                    f"{entity}: {text!r}: expected {sorted(expected)}, SQL {sorted(got)}, Python {sorted(python)}"
                )
    engine.dispose()
    assert not failures, "\n".join(failures)


def test_filters_on_contract(db_url: str) -> None:
    _check_cases(db_url, contract(), _contract_rows, CONTRACT_CASES)


def test_filters_on_every_type_and_link_kind(db_url: str) -> None:
    _check_cases(db_url, lab(), _lab_rows, LAB_CASES)


def test_select_never_repeats_rows(db_url: str) -> None:
    model = contract()
    storage = build_storage(model)
    engine = _engine(db_url)
    storage.metadata.create_all(engine)
    rows, joins = _contract_rows()
    with engine.begin() as conn:
        _load(conn, storage, rows, joins)
    deal = storage.table("deal")
    with engine.connect() as conn:
        clause = compile_sql(storage, "deal", "products.price > 0 or products.deals.products.name contains 'е'")
        ids = conn.execute(select(deal.c.id).where(clause)).scalars().all()
    engine.dispose()
    assert sorted(ids) == [1, 2, 4, 5]


# -- parsing -------------------------------------------------------------------------------
PARSE_ERRORS = [
    ("amount > 5 and and", "filter: unexpected 'and' at column 16; expected a value", 16),
    ("amount >", "filter: unexpected end of the expression at column 9; expected a value", 9),
    ("amount 5", "filter: unexpected '5' at column 8; expected an operator (=, !=", 8),
    ("x is", "expected 'null' or 'not null'", 5),
    ("x not 5", "expected 'in' or 'between'", 7),
    ("x in 5", "expected '(' or a parameter", 6),
    ("x in (1 2)", "expected ',' or ')'", 9),
    ("(x = 1", "expected ')'", 7),
    ("x = 1)", "unexpected ')' at column 6; expected the end", 6),
    ("x = 1 y", "expected 'and', 'or' or the end", 7),
    ("x between 1 2", "expected 'and'", 13),
    ("x = 'abc", "text that is never closed", 5),
    ('x = "abc"', "write text in single quotes", 5),
    ("x == 1", "unexpected '=' at column 4", 4),
    ("x && y", "use =, !=, and, or, not", 3),
    ("", "the expression is empty", 1),
    ("   ", "the expression is empty", 1),
    ("x = 1" + "0" * 60, "number too long", 5),
    ("not " * 100 + "x = 1", "nested more than", None),
    ("(" * 5000 + "x = 1" + ")" * 5000, "longer than", MAX_LENGTH + 1),
    ("x = 1 and " * 1000 + "x = 1", "longer than", MAX_LENGTH + 1),
    ("order = 1 and in = 2", "unexpected 'in' at column 15; expected a value", 15),
]


def test_parse_errors() -> None:
    for text, message, position in PARSE_ERRORS:
        with pytest.raises(ExpressionError) as info:
            parse(text)
        assert message in str(info.value), (text, str(info.value))
        assert info.value.position == position, (text, info.value.position)
        assert isinstance(info.value, ValidationError)


def test_parse_tree_and_round_trip() -> None:
    tree = parse("amount > 5 AND (client.city = 'Мос''ква' or not products is null) and :p in (1, -2.50, true, null)")
    assert (
        str(tree)
        == "amount > 5 and (client.city = 'Мос''ква' or not products is null) and :p in (1, -2.50, true, null)"
    )
    assert parse(str(tree)) == tree
    assert parse("a between 1 and 2 and b = 3").items[0].high.value == 2
    assert parse("x = 120000.50").right.value == Decimal("120000.50")
    assert parse("x = -5").right.value == -5
    assert parse("android = 1 and order = 2 and notes is null and isin = 1 and Between2 = 1") is not None
    assert parse("x = 1") is parse("x = 1")  # cached
    assert isinstance(parse("x <> 1").op, str) and parse("x <> 1").op == "!="
    with pytest.raises(ExpressionError):
        parse(5)  # type: ignore[arg-type]


def test_deep_but_short_nesting_is_fine() -> None:
    text = "(" * 2000 + "x = 1" + ")" * 2000
    assert str(parse(text)) == "x = 1"
    tree = parse(" and ".join(f"x = {i}" for i in range(800)))
    assert len(tree.items) == 800


# -- names, types, values -----------------------------------------------------------------
NAME_ERRORS = [
    (
        "deal",
        "amout > 5",
        None,
        "deal: unknown name 'amout' at column 1 (did you mean 'amount'?); names: title, amount, lost_reason, client, products, id, created_at",
        1,
    ),
    ("deal", "amount > 'abc'", None, "deal.amount: 'abc' is not a number", 10),
    ("deal", "amount > 1.234", None, "deal.amount: 1.234 has more than 2 decimal places", 10),
    ("deal", "amount > 100000000000000000", None, "out of range", 10),
    (
        "deal",
        "client.citi = 'x'",
        None,
        "client: unknown name 'citi' in 'client.citi' at column 8 (did you mean 'city'?)",
        8,
    ),
    ("deal", "title.x = 1", None, "'title' is a field, not a link", 1),
    ("deal", "stage.x = 1", None, "'stage' is a system column, not a link", 1),
    (
        "task",
        "subject.title = 'x'",
        None,
        "'subject' links to several entities (deal, client) and cannot be followed",
        1,
    ),
    ("task", "subject = 3", None, "only 'is null' and 'is not null' apply", 1),
    (
        "deal",
        "stage = 'wno'",
        None,
        "deal.stage: 'wno' is not a stage (did you mean 'won'?); stages: new, qualified",
        9,
    ),
    ("deal", "pipeline = 'main'", None, "is not a pipeline", 12),
    (
        "client",
        "source in ('site', 'web')",
        None,
        "client.source: 'web' is not an option; options: site, call, referral",
        20,
    ),
    ("deal", "amount contains '1'", None, "deal.amount: 'contains' does not apply to money values", 1),
    ("deal", "title > 5", None, "deal.title: 5 is not text", 9),
    ("deal", "title contains null", None, "'contains' needs text, not null", 16),
    ("deal", "created_at > 'yesterday'", None, "deal.created_at: 'yesterday' is not a date and time", 14),
    ("task", "due > 5", None, "task.due: 5 is not a date and time", 7),
    ("deal", "amount > :min", None, "filter: unknown parameter ':min' at column 10; parameters: none given", 10),
    ("deal", "amount > :min", {"max": 1}, "parameters: :max", 10),
    ("deal", "amount > :min", {"min": "lots"}, "deal.amount: 'lots' is not a number", 10),
    ("deal", "amount > :min", {"min": float("nan")}, "is not a number", 10),
    ("deal", "amount > :min", {"min": [1, 2]}, "holds a list; use 'in :min'", 10),
    ("deal", "stage in :s", {"s": "won"}, "must be a list", 10),
    ("deal", "stage in :s", {"s": ["wno"]}, "is not a stage", 10),
    ("deal", "5 = 5", None, "compares two values", 1),
    ("deal", ":a = 1", None, "compares two values", 1),
    ("deal", "5 in (1, 2)", None, "'in' needs a name on its left", 1),
    ("deal", "title in (title)", None, "'in' takes values, not the name 'title'", 11),
    ("deal", "amount > products.price", None, "a path through links can be compared with values only", 1),
    ("deal", "amount > client.id", None, "deal.amount (money) and deal.client (link) cannot be compared", 1),
    ("deal", "amount > created_at", None, "cannot be compared", 1),
    ("deal", "products contains 'x'", None, "'contains' does not apply", 1),
    ("client", "deals.amount > 'x'", None, "deal.amount: 'x' is not a number", 16),
]


def test_name_and_value_errors() -> None:
    storage = build_storage(contract())
    for entity, text, params, message, position in NAME_ERRORS:
        for run in (_run_sql, _run_python):
            with pytest.raises(ExpressionError) as info:
                run(storage, entity, text, params)
            assert message in str(info.value), (text, str(info.value))
            assert info.value.position == position, (text, info.value.position)
    with pytest.raises(ExpressionError, match="unknown entity 'deals'"):
        compile_sql(storage, "deals", "amount > 1")


def _run_sql(storage, entity, text, params):
    compile_sql(storage, entity, text, params)


def _run_python(storage, entity, text, params):
    compile_python(storage.model, entity, text)(_AnyValues(), params)


class _AnyValues(dict):
    def __missing__(self, key):
        return None


def test_lab_type_errors() -> None:
    model = lab()
    cases = [
        (
            "company",
            "tags = 'vip'",
            "'=' does not apply to multichoice values (column 1) (use 'contains' for multichoice)",
        ),
        ("company", "tags contains 'gold'", "company.tags: 'gold' is not an option"),
        ("company", "tags startswith 'v'", "'startswith' does not apply to multichoice"),
        ("company", "meta = 1", "'=' does not apply to json"),
        ("company", "vip > true", "'>' does not apply to boolean"),
        ("company", "vip = 'yes'", "company.vip: 'yes' is not true or false"),
        ("company", "founded = '2020-13-01'", "company.founded: '2020-13-01' is not a date: month must be in 1..12"),
        ("person", "score = 1.5", "person.score: 1.5 is not a whole number"),
        ("person", "score = 99999999999999999999", "out of range"),
        ("person", "rate = 0.0000001", "more than 6 decimal places"),
        ("person", "score = name", "cannot be compared"),
        ("person", "salary > name", "person.salary (money) and person.name (string) cannot be compared"),
        ("person", "salary * 2 > name", "compares a number with person.name (string)"),
        ("person", "name + 1 > 2", "'+' needs numbers, not person.name (string)"),
        ("person", "salary > :x * 2", "cannot be used in arithmetic"),
        ("person", "sum(salary) > 2", "unknown function 'sum'; functions: coalesce, round"),
        ("person", "coalesce(salary, name) > 2", "coalesce mixes"),
        ("note", "about.text = 'x'", "cannot be followed"),
    ]
    for entity, text, message in cases:
        with pytest.raises(ExpressionError) as info:
            check_names(model, entity, text)
        assert message in str(info.value), (text, str(info.value))


def test_check_names() -> None:
    model = contract()
    assert check_names(model, "deal", "amount > 5 and client.city = 'x' and products.deals.amount < :p") is None
    with pytest.raises(ExpressionError, match="unknown name 'amout'"):
        check_names(model, "deal", parse("amout > 5"), what="when")
    with pytest.raises(ExpressionError, match="^when: unexpected"):
        check_names(model, "deal", "amount >", what="when")


def test_predicate_interface() -> None:
    model = contract()
    p = compile_python(model, "deal", "amount > :min and client.city = 'Москва' or products.name = 'Сервер'")
    assert p.paths == {"amount", "client.city", "products.name"}
    assert p.lists == {"products.name"}
    assert p.params == {"min"}
    values = {"amount": "1000.00", "client.city": "Москва", "products.name": []}
    assert p(values, {"min": 5})
    assert not p(values, {"min": 5000})
    assert p({**values, "amount": None, "products.name": ["Сервер"]}, {"min": 5})
    assert p.truth({**values, "amount": None}, {"min": 5}) is None  # unknown: does not match
    with pytest.raises(ExpressionError, match="no value given for 'client.city'"):
        p({"amount": 1, "products.name": []}, {"min": 0})
    with pytest.raises(ExpressionError, match="give a list"):
        p({**values, "products.name": "Сервер"}, {"min": 5000})
    with pytest.raises(ExpressionError, match="value of 'amount'"):
        p({**values, "amount": "much"}, {"min": 1})
    q = compile_python(model, "deal", "created_at < '2026-01-01T03:00:00+03:00'")
    assert q({"created_at": dt.datetime(2025, 12, 31, 23, 59)})  # naive is UTC
    assert not q({"created_at": "2026-01-01T00:00:00Z"})


# -- property-based ------------------------------------------------------------------------
TOKENS = st.sampled_from(
    [
        "and", "or", "not", "in", "between", "contains", "startswith", "is", "null", "true", "false", "AND", "Not",
        "(", ")", ",", "=", "!=", "<>", "<", "<=", ">", ">=", "'", "''", "'x'", "'Мос''ква'", ":p", ":", "-", ".", "5",
        "-1.5", "amount", "client.city", "products.name", "deals", "x.", ".y", "\n", "\\", ";", "--", "/*", "\x00",
    ]
)  # fmt: skip
ATOMS = st.sampled_from(
    [
        "amount > 5", "client.city = 'Москва'", "stage in ('new', 'won')", "title contains 'а'", "owner is null",
        "deals.amount >= 1000", "name startswith 'ООО'", "products.price < :p", "not city is null", "email = :p",
        "id between 2 and :p", "deals.products.name = 'Сервер'", "(amount + 1) * 2 > 100", "source != 'site'",
    ]
)  # fmt: skip
COMPOSED = st.lists(st.tuples(st.sampled_from(["and", "or", "and not"]), ATOMS), min_size=1, max_size=4).map(
    lambda parts: " ".join(f"{op} ({atom})" for op, atom in parts).split(" ", 1)[1].removeprefix("not ")
)


@pytest.fixture(scope="module")
def contract_sqlite(tmp_path_factory):
    """The contract model's tables on SQLite with the rows of _contract_rows, and a World over them."""
    storage = build_storage(contract())
    engine = _engine(f"sqlite:///{tmp_path_factory.mktemp('contract') / 'contract.db'}")
    storage.metadata.create_all(engine)
    with engine.begin() as conn:
        _load(conn, storage, *_contract_rows())
    with engine.connect() as conn:
        world = World(contract(), conn, storage)
    yield engine, storage, world
    engine.dispose()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.text(max_size=60),
        st.lists(TOKENS, max_size=14).map(" ".join),
        st.lists(TOKENS, max_size=14).map("".join),
        COMPOSED,
    )
)
def test_any_text_parses_or_raises_expression_error(contract_sqlite, text: str) -> None:
    """Any text parses or raises ExpressionError (with a position inside it); what parses and
    compiles runs as SQL, and selects the records the Python predicate accepts."""
    engine, storage, world = contract_sqlite
    try:
        tree = parse(text)
    except ExpressionError as exc:
        assert str(exc) and (exc.position is None or 1 <= exc.position <= len(text) + 1)
        return
    assert isinstance(tree, Expr)
    assert parse(str(tree)) == tree
    hypothesis_event("parsed")
    for entity in ("deal", "client"):
        params = {"p": "1"}
        try:
            compile_python(contract(), entity, tree)
        except ExpressionError as exc:
            with pytest.raises(ExpressionError):  # names and types are checked alike
                compile_sql(storage, entity, tree, params)
            assert str(exc)
            continue
        try:
            with engine.connect() as conn:
                sql = _sql_ids(conn, storage, entity, tree, params)
        except ExpressionError as exc:  # a parameter's value the SQL cannot bind
            assert ":p" in text and str(exc), (text, str(exc))
            continue
        assert sql == world.python_ids(entity, tree, params), (entity, text)
        hypothesis_event("ran as SQL and agreed with Python")


ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.decimals(), st.text(max_size=12), st.dates(),
    st.datetimes(timezones=st.sampled_from([None, UTC])), st.sampled_from(["2026-01-01", "1e999999", "NaN", "new", "12.5"]),
    st.lists(st.one_of(st.integers(), st.text(max_size=5), st.none()), max_size=3), st.binary(max_size=4),
)  # fmt: skip
ANY_PARAM_EXPRESSIONS = [
    ("deal", "amount > :v"), ("deal", "id = :v"), ("deal", "created_at between :v and :v"), ("deal", "stage in :v"),
    ("deal", "title contains :v"), ("deal", "client.city startswith :v"), ("deal", "products.price in (:v, 1)"),
    ("task", "due < :v"), ("client", "deals.stage = :v"),
]  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(ANY_PARAM_EXPRESSIONS), value=ANY_VALUE, record=ANY_VALUE)
def test_any_parameter_or_record_value_gives_a_bool_or_expression_error(contract_sqlite, case, value, record) -> None:
    """A parameter's value is bound or refused (ExpressionError), never passed to the database
    to fail there: what compiles runs and selects what the Python predicate selects."""
    engine, storage, world = contract_sqlite
    entity, text = case
    try:
        with engine.connect() as conn:
            sql = _sql_ids(conn, storage, entity, text, {"v": value})
    except ExpressionError as exc:
        assert str(exc)
        sql = None
    if sql is not None:
        assert sql == world.python_ids(entity, text, {"v": value}), (text, value)
        hypothesis_event("ran as SQL and agreed with Python")
    predicate = compile_python(contract(), entity, text)
    values = {p: ([record] if p in predicate.lists else record) for p in predicate.paths}
    try:
        assert predicate(values, {"v": value}) in (True, False)
    except ExpressionError as exc:
        assert str(exc)


MARK = st.text(alphabet="abcxyzАБВгдё'%_;-/ ", min_size=2, max_size=10).map(lambda s: "Zq" + s)
NUMBER = st.integers(7000, 7999)
MONEY = st.builds(lambda a, b: Decimal(f"{a}.{b:02d}"), st.integers(7000, 7999), st.integers(10, 99))
DAY = st.dates(dt.date(2031, 1, 1), dt.date(2039, 12, 31))


def _quote(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, dt.date):
        return f"'{value.isoformat()}'"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _atom(names: dict, values: dict):
    """An atom over one of ``names`` (path -> kind), with ``values[kind]`` for its values."""

    pool = [p for p in sorted(names) for _ in range(1 + 2 * p.count("."))]  # longer paths weigh more

    def build(draw):
        path = draw(st.sampled_from(pool))
        kind = names[path]
        value = values[kind]
        if kind == "tags":
            return draw(st.sampled_from([f"{path} contains {_quote(draw(value))}", f"{path} is null"])), []
        ops = ["=", "!=", "<>"] + (["<", "<=", ">", ">="] if kind != "bool" else [])
        a, b2, c = draw(value), draw(value), draw(value)
        forms = [
            f"{path} {draw(st.sampled_from(ops))} {_quote(a)}",
            f"{path} in ({_quote(a)}, {_quote(b2)}, {_quote(c)})",
            f"{path} not in ({_quote(a)}, {_quote(b2)})",
            f"{path} is null",
            f"{path} is not null",
        ]
        if kind != "bool":
            forms += [
                f"{path} between {_quote(a)} and {_quote(b2)}",
                f"{path} not between {_quote(a)} and {_quote(b2)}",
            ]
        if kind == "text" and a is not None:
            forms += [f"{path} contains {_quote(a)}", f"{path} startswith {_quote(a)}"]
        return draw(st.sampled_from(forms)), [a, b2, c]

    return st.composite(lambda draw: build(draw))()


def _expressions(names: dict, values: dict):
    atoms = _atom(names, values)

    def combine(children):
        return st.one_of(
            st.tuples(children, children, st.sampled_from([" and ", " or ", " AND ", " Or "])).map(
                lambda t: (f"({t[0][0]}){t[2]}({t[1][0]})", t[0][1] + t[1][1])
            ),
            children.map(lambda c: (f"not ({c[0]})", c[1])),
        )

    return st.recursive(atoms, combine, max_leaves=6)


DISTINCT = {
    "text": MARK,
    "int": NUMBER,
    "money": MONEY,
    "date": DAY,
    "bool": st.booleans(),
    "tags": st.sampled_from(["vip", "new", "old"]),
}
CONTRACT_NAMES = {
    "title": "text", "amount": "money", "stage_entered_at": "date", "created_at": "date", "owner": "text",
    "client.city": "text", "client.name": "text", "products.name": "text", "products.price": "money",
    "client.deals.amount": "money", "products.deals.title": "text", "id": "int", "client": "int", "products": "int",
}  # fmt: skip


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_expressions(CONTRACT_NAMES, DISTINCT))
def test_literals_are_always_bound_parameters(case) -> None:
    text, values = case
    storage = build_storage(contract())
    clause = compile_sql(storage, "deal", text)
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        sql = str(clause.compile(dialect=dialect))
        for value in values:
            if isinstance(value, str):
                assert value not in sql and value.replace("'", "''") not in sql, (text, sql)
            elif isinstance(value, dt.date):
                assert value.isoformat() not in sql, (text, sql)
            elif not isinstance(value, bool):
                digits = str(value).split(".")[0]
                assert not re.search(rf"(?<![\w.]){digits}(?![\w])", sql), (text, sql)


LAB_NAMES = {
    "name": "text", "score": "int", "salary": "money", "seen": "date", "company": "id", "company.city": "text",
    "company.vip": "bool", "company.founded": "date", "company.tags": "tags", "friends.name": "text",
    "friends.score": "int", "friend_of.salary": "money", "company.people.name": "text", "notes.text": "text",
    "friends.company.city": "text",
}  # fmt: skip

COMPANY_NAMES = {
    "city": "text", "vip": "bool", "tags": "tags", "founded": "date", "people.name": "text", "people.score": "int",
    "people.friends.name": "text", "notes.text": "text", "people": "id", "people.company.city": "text",
}  # fmt: skip

SMALL_TEXT = st.sampled_from([None, "Zqa", "zqA", "Zq'%", "Zqё", "ZqЁд", "Zq_"])
SMALL_INT = st.sampled_from([None, 7000, 7001, 7500])
SMALL_MONEY = st.sampled_from([None, Decimal("7000.10"), Decimal("7500.55"), Decimal("7999.99")])
SMALL_DATE = st.sampled_from([None, dt.date(2031, 1, 1), dt.date(2035, 6, 1), dt.date(2039, 12, 31)])
SMALL = {
    "text": st.sampled_from([None, "Zqa", "ZQA", "zq", "q'%", "ё", "Ёд", "_", "%", ""]),
    "int": SMALL_INT,
    "id": st.sampled_from([None, 1, 2, 3]),
    "money": SMALL_MONEY,
    "date": SMALL_DATE,
    "bool": st.sampled_from([None, True, False]),
    "tags": st.sampled_from(["vip", "new", "old"]),
}


@st.composite
def _lab_world(draw):
    companies = [
        dict(
            id=i, name=f"c{i}", city=draw(SMALL_TEXT), vip=draw(st.sampled_from([None, True, False])),
            founded=draw(SMALL_DATE), tags=draw(st.sampled_from([None, [], ["vip"], ["new", "old"]])),
        )
        for i in (1, 2, 3)
    ]  # fmt: skip
    people = [
        dict(
            id=i, name=draw(SMALL_TEXT), score=draw(SMALL_INT), salary=draw(SMALL_MONEY),
            seen=None if (d := draw(SMALL_DATE)) is None else dt.datetime(d.year, d.month, d.day, tzinfo=UTC),
            company_id=draw(st.sampled_from([None, 1, 2, 3])),
        )
        for i in (1, 2, 3, 4)
    ]  # fmt: skip
    friends = draw(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), max_size=6, unique=True))
    notes = [
        dict(id=i, text=draw(SMALL_TEXT), about_entity=e, about_id=draw(st.integers(1, 3)))
        for i, e in ((1, "person"), (2, "company"), (3, "person"))
    ]
    return {"company": companies, "person": people, "note": notes}, {("person", "friends"): friends}


@pytest.fixture(scope="module")
def lab_sqlite(tmp_path_factory):
    storage = build_storage(lab())
    engine = _engine(f"sqlite:///{tmp_path_factory.mktemp('lab') / 'lab.db'}")
    storage.metadata.create_all(engine)
    yield engine, storage
    engine.dispose()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(world=_lab_world(), person=_expressions(LAB_NAMES, SMALL), company=_expressions(COMPANY_NAMES, SMALL))
def test_sql_and_python_agree(lab_sqlite, world, person, company) -> None:
    engine, storage = lab_sqlite
    rows, joins = world
    with engine.begin() as conn:
        _clear(conn, storage)
        _load(conn, storage, rows, joins)
    with engine.connect() as conn:
        world = World(lab(), conn, storage)
        for entity, (text, _) in (("person", person), ("company", company)):
            sql = _sql_ids(conn, storage, entity, text)
            python = world.python_ids(entity, text)
            assert sql == python, (entity, text, sql, python)


INJECTIONS = [
    "'); DROP TABLE client; --",
    "x'; DELETE FROM deal; --",
    "a' OR '1'='1",
    "--",
    ";",
    "\\'",
    "%_%",
    "/*",
    "ёЁ'\"`",
    "",
]


def _injection_check(engine, storage, value: str) -> None:
    client = storage.table("client")
    with engine.begin() as conn:
        cid = conn.execute(select(func.max(client.c.id) + 1)).scalar_one()  # explicit ids: no sequence
        conn.execute(insert(client), dict(id=cid, name=value or "-", city=value, created_at=NOW, updated_at=NOW))
    quoted = "'" + value.replace("'", "''") + "'"
    with engine.connect() as conn:
        for text, params in (
            (f"city = {quoted}", None),
            ("city = :v", {"v": value}),
            (f"city in ({quoted}, 'zz')", None),
            (f"city contains {quoted}", None),
            (f"city startswith {quoted}", None),
            ("city contains :v", {"v": value}),
        ):
            ids = _sql_ids(conn, storage, "client", text, params)
            assert cid in ids, (text, value)
            assert parse(text).items[0].value == value if " in (" in text else True
    with engine.begin() as conn:
        conn.execute(delete(client).where(client.c.id == cid))
    names = set(inspect(engine).get_table_names())
    assert {"client", "deal", "product", "task", "deal__products"} <= names


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    value=st.one_of(
        st.sampled_from(INJECTIONS),
        st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30),
    )
)
def test_hostile_strings_round_trip_as_values(contract_db, value) -> None:
    engine, storage = contract_db
    _injection_check(engine, storage, value)


@pytest.fixture
def contract_db(db_url):
    storage = build_storage(contract())
    engine = _engine(db_url)
    storage.metadata.create_all(engine)
    rows, joins = _contract_rows()
    with engine.begin() as conn:
        _load(conn, storage, rows, joins)
    yield engine, storage
    with engine.connect() as conn:
        deal = storage.table("deal")
        assert conn.execute(select(deal.c.id).order_by(deal.c.id)).scalars().all() == [1, 2, 3, 4, 5]
    engine.dispose()


def test_injection_strings_on_both_dialects(contract_db) -> None:
    engine, storage = contract_db
    for value in INJECTIONS:
        _injection_check(engine, storage, value)


# -- arithmetic: SQL and Python compute the same exact values ---------------------------------
NUMERIC_LEAVES = st.sampled_from(["score", "rate", "salary", "bonus", "0", "1", "-2", "0.5", "3.25", "100", "7"])


def _arith(children):
    return st.one_of(
        st.tuples(children, st.sampled_from(["+", "-", "*", "/"]), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        children.map(lambda c: f"-({c})"),
        st.tuples(children, children).map(lambda t: f"coalesce({t[0]}, {t[1]})"),
        children.map(lambda c: f"round({c}, 1)"),
        st.tuples(st.sampled_from(["score > 3", "rate is null", "salary >= bonus"]), children, children).map(
            lambda t: f"if({t[0]}, {t[1]}, {t[2]})"
        ),
        children.map(lambda c: f"length(coalesce(name, 'abc') || 'é') * {c}"),
    )


ARITHMETIC = st.recursive(NUMERIC_LEAVES, _arith, max_leaves=3)
_ARITH_DB: dict = {}


def _arith_people():
    values = [
        (10, "1.5", "100.00", "50.00"),
        (None, "0.001", None, "10"),
        (-7, None, "50.55", None),
        (0, "-2", "0", "0"),
        (3, "0.125", "-1999.99", "0.05"),
        (-1, "-0.333", "0.01", "-0.05"),
        (49, "1.999", "1234.56", "-0.5"),
        (2, "0", "-0.05", "0.15"),
    ]
    return [
        dict(
            id=i + 1,
            name=None,
            score=s,
            rate=None if r is None else Decimal(r),
            salary=None if m is None else Decimal(m),
            bonus=None if b is None else Decimal(b),
            seen=None,
            company_id=None,
        )
        for i, (s, r, m, b) in enumerate(values)
    ]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=ARITHMETIC, op=st.sampled_from(["=", "!=", "<", ">=", ">"]), bound=st.sampled_from(["0", "1.5", "-2"]))
def test_arithmetic_agrees_in_sql_and_python(db_url: str, text: str, op: str, bound: str) -> None:
    from metacrm.expr.parser import parse_value
    from metacrm.expr.to_sql import ValueSQL
    from metacrm.expr.values import bind_value, python_value, scaled

    model = lab()
    storage = build_storage(model)
    if db_url not in _ARITH_DB:
        _ARITH_DB.clear()
        engine = _engine(db_url)
        storage.metadata.create_all(engine)
        with engine.begin() as conn:
            _load(conn, storage, {"person": _arith_people()}, {})
        _ARITH_DB[db_url] = engine
    engine = _ARITH_DB[db_url]
    try:
        value = bind_value(model, "person", parse_value(text), "formula")
    except ExpressionError as exc:
        assert "decimal places" in str(exc), (text, str(exc))
        return
    person = storage.table("person")
    fn = python_value(value, lambda r: lambda values: values[r.path])
    rows = {r["id"]: r for r in _arith_people()}
    raw = ValueSQL(storage).value(value, person)
    raw = type_coerce(raw, BigInteger() if engine.dialect.name == "sqlite" else Numeric())
    condition = f"{text} {op} {bound}"
    try:
        clause, predicate = compile_sql(storage, "person", condition), compile_python(model, "person", condition)
    except ExpressionError as exc:  # a bare name against a value that does not fit it, or no name at all
        assert "whole number" in str(exc) or "compares two values" in str(exc), (condition, str(exc))
        clause = predicate = None
    with engine.connect() as conn:
        got = dict(conn.execute(select(person.c.id, raw)).all())
        sql_ids = set(conn.execute(select(person.c.id).where(clause)).scalars()) if clause is not None else set()
    for i, row in rows.items():
        want, have = fn(row), got[i]
        if have is not None and engine.dialect.name != "sqlite":  # NUMERIC: the value itself
            have = scaled(Decimal(have), value.scale)
        assert have == want, (text, i, have, want)
        if predicate is not None:
            assert (i in sql_ids) == predicate(row), (condition, i)
