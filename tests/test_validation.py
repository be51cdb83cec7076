"""Record validation: accepted inputs and their outputs, refusals with field and message."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

import metacrm
from metacrm.errors import FieldIssue
from metacrm.validation import build_validators

CONTRACT = Path(__file__).parent / "fixtures" / "valid" / "contract.yaml"

SHOP = """\
metacrm: 1
name: shop
region: RU
entities:
  maker:
    fields:
      name: {type: string, required: true}
  shipment:
    owner: true
    fields:
      title: {type: string, required: true}
    pipelines:
      air:
        initial: booked
        states: {booked: {}, flown: {kind: won}, cancelled: {kind: lost}}
        transitions: {booked: [flown, cancelled]}
      sea:
        initial: booked
        states: {booked: {}, sailed: {kind: won}, cancelled: {kind: lost}}
        transitions: {booked: [sailed, cancelled]}
  item:
    owner: true
    fields:
      name: {type: string, required: true, max_length: 10}
      code: {type: string, pattern: "[A-Z]{3}-[0-9]+"}
      notes: {type: text}
      qty: {type: integer, min: 0, max: 1000}
      weight: {type: decimal}
      price: {type: money, min: 0}
      discount: {type: percent}
      active: {type: boolean, default: true}
      since: {type: date, default: today}
      seen: {type: datetime, default: now}
      email: {type: email}
      phone: {type: phone}
      site: {type: url}
      color: {type: choice, options: [{value: red, label: Красный}, {value: green, label: Зелёный}, blue]}
      tags: {type: multichoice, options: [new, sale, hit], default: [new]}
      extra: {type: json}
    links:
      maker: {to: maker, required: true, inverse: items}
      parts: {to: maker, many: true}
      about: {to: [maker, shipment]}
"""

ITEM_FIELDS = [
    "name", "code", "notes", "qty", "weight", "price", "discount", "active", "since", "seen",
    "email", "phone", "site", "color", "tags", "extra",
]  # fmt: skip


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "shop.yaml"
    path.write_text(SHOP, encoding="utf-8")
    return metacrm.load_model(path)


@pytest.fixture(scope="module")
def item(shop):
    return build_validators(shop)["item"]


@pytest.fixture(scope="module")
def trade():
    return build_validators(metacrm.load_model(CONTRACT))


def refusal(call, *args, **kwargs) -> metacrm.ValidationError:
    with pytest.raises(metacrm.ValidationError) as info:
        call(*args, **kwargs)
    assert info.value.issues, "a ValidationError must list its issues"
    assert all(isinstance(issue, FieldIssue) for issue in info.value.issues)
    return info.value


def base(**values):
    return {"name": "Ёжик", "maker": 1, **values}


# --------------------------------------------------------------------------- accepted values

UTC = dt.UTC
ACCEPTED = [
    # string: surrounding spaces stripped, numbers as text, Cyrillic unchanged
    ("name", " Молоко ", "Молоко"),
    ("name", 12, "12"),
    ("name", Decimal("1.5"), "1.5"),
    ("code", "ABC-12", "ABC-12"),
    ("code", "", None),
    ("code", "   ", None),
    # text: nothing stripped
    ("notes", "  Привет,\nмир  ", "  Привет,\nмир  "),
    ("notes", "", None),
    # integer
    ("qty", 5, 5),
    ("qty", "5", 5),
    ("qty", " +7 ", 7),
    ("qty", "-0", 0),
    ("qty", 3.0, 3),
    ("qty", Decimal("4"), 4),
    ("qty", "", None),
    ("qty", None, None),
    # decimal
    ("weight", "120000.50", Decimal("120000.50")),
    ("weight", "120000,50", Decimal("120000.50")),
    ("weight", "120 000,50", Decimal("120000.50")),
    ("weight", "120\u00a0000,50", Decimal("120000.50")),
    ("weight", "1,234.5", Decimal("1234.5")),
    ("weight", 1.1, Decimal("1.1")),
    ("weight", 5, Decimal(5)),
    ("weight", Decimal("0.000001"), Decimal("0.000001")),
    ("weight", "-3", Decimal(-3)),
    ("weight", "", None),
    # money: Decimal with exactly two places
    ("price", "120000.5", Decimal("120000.50")),
    ("price", "1 000,5", Decimal("1000.50")),
    ("price", 10, Decimal("10.00")),
    ("price", 0.1, Decimal("0.10")),
    ("price", "1.230", Decimal("1.23")),
    ("price", Decimal("9999999999999999.99"), Decimal("9999999999999999.99")),
    ("price", "", None),
    # percent: 0..100, a trailing % allowed
    ("discount", "15", Decimal(15)),
    ("discount", "15 %", Decimal(15)),
    ("discount", "12,5", Decimal("12.5")),
    ("discount", 100, Decimal(100)),
    ("discount", 0, Decimal(0)),
    # boolean
    ("active", True, True),
    ("active", False, False),
    ("active", 1, True),
    ("active", 0, False),
    ("active", "да", True),
    ("active", "НЕТ", False),
    ("active", "Yes", True),
    ("active", "no", False),
    ("active", "TRUE", True),
    ("active", "false", False),
    ("active", "1", True),
    ("active", "0", False),
    ("active", "", None),
    # date
    ("since", "2024-05-01", dt.date(2024, 5, 1)),
    ("since", "01.05.2024", dt.date(2024, 5, 1)),
    ("since", "1.5.2024", dt.date(2024, 5, 1)),
    ("since", dt.date(2024, 5, 1), dt.date(2024, 5, 1)),
    ("since", "", None),
    # datetime: always aware, in UTC
    ("seen", "2024-05-01T10:00:00+03:00", dt.datetime(2024, 5, 1, 7, 0, tzinfo=UTC)),
    ("seen", "2024-05-01T10:00:00Z", dt.datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
    ("seen", "2024-05-01 10:00", dt.datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
    ("seen", "01.05.2024 10:30", dt.datetime(2024, 5, 1, 10, 30, tzinfo=UTC)),
    ("seen", dt.datetime(2024, 5, 1, 10, 0), dt.datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
    (
        "seen",
        dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=3))),
        dt.datetime(2024, 5, 1, 7, 0, tzinfo=UTC),
    ),
    ("seen", "", None),
    # email: normalized
    ("email", "Info@Example.COM", "info@example.com"),
    ("email", " иван@пример.рф ", "иван@пример.рф"),
    ("email", "", None),
    # phone: E.164; the model's region (RU) reads numbers without '+'
    ("phone", "8 (495) 123-45-67", "+74951234567"),
    ("phone", "+7 495 123 45 67", "+74951234567"),
    ("phone", "4951234567", "+74951234567"),
    ("phone", "+1 650 253 0000", "+16502530000"),
    ("phone", "", None),
    # url
    ("site", "https://example.com/a?b=1", "https://example.com/a?b=1"),
    ("site", " http://пример.рф ", "http://пример.рф"),
    ("site", "", None),
    # choice: a value, or a label (any case)
    ("color", "red", "red"),
    ("color", "Красный", "red"),
    ("color", "зелёный", "green"),
    ("color", "Blue", "blue"),
    ("color", "", None),
    # multichoice: declaration order, no duplicates
    ("tags", "sale,new", ["new", "sale"]),
    ("tags", "Sale, hit, sale", ["sale", "hit"]),
    ("tags", ["hit", "new", "hit"], ["new", "hit"]),
    ("tags", ("sale",), ["sale"]),
    ("tags", [], []),
    ("tags", "", None),
    # json: strings parsed when they parse
    ("extra", '{"a": [1, 2]}', {"a": [1, 2]}),
    ("extra", "просто текст", "просто текст"),
    ("extra", '"Привет"', "Привет"),
    ("extra", [1, {"b": None}], [1, {"b": None}]),
    ("extra", {"ключ": "значение"}, {"ключ": "значение"}),
    ("extra", "", None),
    # links
    ("maker", 3, 3),
    ("maker", "3", 3),
    ("maker", " 12 ", 12),
    ("parts", "1,4", [1, 4]),
    ("parts", " 1, 4 ,1", [1, 4]),
    ("parts", [4, "1"], [4, 1]),
    ("parts", "", []),
    ("parts", None, []),
    ("about", "shipment:5", {"entity": "shipment", "id": 5}),
    ("about", {"entity": "maker", "id": "2"}, {"entity": "maker", "id": 2}),
    ("about", None, None),
    ("owner", " ivan ", "ivan"),
    ("owner", "Пётр", "Пётр"),
]


@pytest.mark.parametrize(("name", "given", "expected"), ACCEPTED)
def test_create_accepts(item, name, given, expected):
    record = item.create(base(**{name: given}))
    assert record[name] == expected
    assert type(record[name]) is type(expected)


@pytest.mark.parametrize(("name", "given", "expected"), ACCEPTED)
def test_patch_accepts_the_same(item, name, given, expected):
    if name in ("name", "maker") and expected is None:
        pytest.skip("required")
    assert item.patch({name: given}) == {name: expected}


def test_money_is_quantized_to_cents(item):
    for given in ("5", 5, "5.5", Decimal("5.500")):
        assert item.create(base(price=given))["price"].as_tuple().exponent == -2


# --------------------------------------------------------------------------- refused values

REFUSED = [
    ("name", "Очень длинное имя", "is 17 characters long; the maximum is 10"),
    ("name", ["x"], "is not text"),
    ("code", "abc-1", "'abc-1' does not match the pattern [A-Z]{3}-[0-9]+"),
    ("qty", "abc", "'abc' is not a whole number"),
    ("qty", "1e3", "is not a whole number"),
    ("qty", "1 000", "is not a whole number"),
    ("qty", True, "yes/no value, not a whole number"),
    ("qty", 2.5, "2.5 is not a whole number"),
    ("qty", -1, "-1 is less than the minimum 0"),
    ("qty", "1001", "'1001' is more than the maximum 1000"),
    ("qty", 2**70, "too large"),
    ("weight", "abc", "'abc' is not a number"),
    ("weight", "1.2.3", "is not a number"),
    ("weight", "1.234,5", "is not a number"),
    ("weight", "NaN", "is not a number"),
    ("weight", float("inf"), "is not a number"),
    ("weight", "1.1234567", "more than 6 decimals"),
    ("weight", "1234567890123", "at most 12 digits before the decimal point"),
    ("weight", [1], "is not a number"),
    ("price", "1.234", "'1.234' has more than 2 decimals"),
    ("price", 0.1 + 0.2, "has more than 2 decimals"),
    ("price", -5, "-5 is less than the minimum 0"),
    ("price", "12345678901234567", "at most 16 digits before the decimal point"),
    ("price", Decimal("Infinity"), "is not a number"),
    ("price", True, "yes/no value, not a number"),
    ("discount", "101", "'101' is more than the maximum 100"),
    ("discount", -1, "-1 is less than the minimum 0"),
    ("active", "maybe", "'maybe' is not a yes/no value; use true/false, yes/no, 1/0 or да/нет"),
    ("active", 2, "is not a yes/no value"),
    ("since", "2024-02-30", "'2024-02-30' is not a date: day is out of range"),
    ("since", "05/01/2024", "use YYYY-MM-DD or DD.MM.YYYY"),
    ("since", dt.datetime(2024, 5, 1, 10), "is a date and time; a date is expected"),
    ("since", 20240501, "is not a date"),
    ("seen", "tomorrow", "'tomorrow' is not a date and time; use YYYY-MM-DD or DD.MM.YYYY"),
    ("seen", 5, "is not a date and time"),
    ("email", "foo@", "'foo@' is not a valid e-mail address: "),
    ("email", "a b@example.com", "is not a valid e-mail address"),
    ("email", 5, "is not an e-mail address"),
    ("phone", "12345", "'12345' is not a valid phone number; numbers without '+' are read as RU numbers"),
    ("site", "ftp://example.com", "'ftp://example.com' is not a web address; use http:// or https://"),
    ("site", "example.com", "did you mean 'https://example.com'?"),
    ("site", "https://", "is not a web address"),
    ("color", "purple", "'purple' is not an option; options: red, green, blue"),
    ("color", ["red"], "is not an option"),
    ("tags", "new,tv", "'tv' is not an option; options: new, sale, hit"),
    ("tags", ["tv", "radio"], "'tv', 'radio' are not options"),
    ("tags", 5, "is not a list of options"),
    ("extra", object(), "is not a JSON value"),
    ("extra", float("nan"), "is not a JSON value"),
    ("maker", "abc", "'abc' is not a record id; give the id of a maker record"),
    ("maker", 0, "ids are positive whole numbers"),
    ("maker", True, "is not a record id"),
    ("maker", 1.5, "is not a record id"),
    ("parts", "1,x", "'x' is not a record id"),
    ("parts", {"a": 1}, "is not a list of record ids"),
    ("about", "order:1", "links to 'order', which this link cannot reach; targets: maker, shipment"),
    ("about", "5", "does not name a record"),
    ("about", {"entity": "maker"}, "does not name a record"),
    ("about", "maker:x", "is not a record id"),
    ("owner", 5, "5 is not a user login"),
]


@pytest.mark.parametrize(("name", "given", "fragment"), REFUSED)
def test_create_refuses(item, name, given, fragment):
    error = refusal(item.create, base(**{name: given}))
    assert [(i.entity, i.field) for i in error.issues] == [("item", name)]
    issue = error.issues[0]
    assert fragment in issue.message
    assert issue.value is given or issue.value == given
    assert str(error) == f"item.{name}: {issue.message}"


@pytest.mark.parametrize(("name", "given", "fragment"), REFUSED)
def test_patch_refuses_the_same(item, name, given, fragment):
    error = refusal(item.patch, {name: given})
    assert [i.field for i in error.issues] == [name]
    assert fragment in error.issues[0].message


def test_exact_messages(trade):
    cases = [
        ("deal", {"title": "a", "client": 1, "amount": -5}, "deal.amount: -5 is less than the minimum 0"),
        ("client", {"name": "a", "source": "web"}, "client.source: 'web' is not an option; options: site, call, referral"),
        (
            "deal",
            {"title": "a", "client": 1, "amout": 5},
            "deal: unknown field 'amout' (did you mean 'amount'?); "
            "fields: title, amount, lost_reason, client, products, owner, pipeline",
        ),
        ("deal", {"title": "a", "client": 1, "id": 7}, "deal.id: is set by the system; leave it out"),
        ("deal", {"title": "a", "client": 1, "stage": "won"}, "deal.stage: changes only through move (metacrm move / crm.move)"),
    ]  # fmt: skip
    for entity, data, message in cases:
        assert str(refusal(trade[entity].create, data)) == message


def test_phone_without_region_needs_plus(trade):
    assert trade["client"].create({"name": "a", "phone": "+7 (495) 123-45-67"})["phone"] == "+74951234567"
    error = refusal(trade["client"].create, {"name": "a", "phone": "84951234567"})
    assert "'84951234567' is not a valid phone number" in error.issues[0].message
    assert "international numbers need '+'" in error.issues[0].message


# --------------------------------------------------------------------------- the record as a whole


def test_create_returns_every_field_and_given_links(item):
    record = item.create({"name": "Чайник", "maker": "2"})
    assert list(record) == [*ITEM_FIELDS, "maker"]
    assert record["name"] == "Чайник"
    assert record["qty"] is None and record["email"] is None


def test_create_keeps_given_links_owner_and_pipeline(shop, item):
    record = item.create(base(parts="1,2", about=None, owner="ivan"))
    assert {k: record[k] for k in ("maker", "parts", "about", "owner")} == {
        "maker": 1,
        "parts": [1, 2],
        "about": None,
        "owner": "ivan",
    }
    assert "owner" not in item.create(base(owner=""))  # not given: the runtime uses the acting user
    shipment = build_validators(shop)["shipment"]
    assert shipment.create({"title": "Рейс", "pipeline": "sea"}) == {"title": "Рейс", "pipeline": "sea"}
    assert shipment.create({"title": "Рейс"}) == {"title": "Рейс"}


def test_defaults(item):
    before = dt.datetime.now(UTC)
    record = item.create(base())
    assert record["active"] is True
    assert record["since"] == dt.date.today()
    assert before <= record["seen"] <= dt.datetime.now(UTC)
    assert record["tags"] == ["new"]
    record["tags"].append("hit")  # a mutable default is never shared
    assert item.create(base())["tags"] == ["new"]
    assert item.create(base(active=False, tags="hit"))["active"] is False


@pytest.mark.parametrize("missing", [{}, {"name": None}, {"name": ""}, {"name": "   "}])
def test_required_field(item, missing):
    data = {"name": "x", "maker": 1, **missing}
    if not missing:
        del data["name"]
    error = refusal(item.create, data)
    assert [(i.field, i.message) for i in error.issues] == [("name", "is required")]


@pytest.mark.parametrize("value", [None, "", " "])
def test_required_link(item, value):
    error = refusal(item.create, {"name": "x", "maker": value})
    assert [i.field for i in error.issues] == ["maker"]
    assert error.issues[0].message.startswith("is required")
    error = refusal(item.create, {"name": "x"})
    assert error.issues[0].message == "is required; give the id of a maker record"


def test_every_issue_is_reported(item):
    error = refusal(
        item.create,
        {"qty": "много", "price": "1.001", "colour": "red", "id": 5, "stage": "x", "email": "foo@", "color": "purple"},
    )
    fields = [i.field for i in error.issues]
    assert fields == [None, "id", None, "name", "qty", "price", "email", "color", "maker"]
    assert str(error) == f"{error.issues[0].format()} (and 8 more)"
    assert "unknown field 'colour' (did you mean 'color'?)" in error.issues[0].message
    assert error.issues[1].message == "is set by the system; leave it out"
    assert error.issues[2].message.startswith("unknown field 'stage'")  # item has no stages


@pytest.mark.parametrize("key", ["id", "created_at", "updated_at", "version"])
def test_system_keys(trade, key):
    for call in (trade["deal"].create, trade["deal"].patch):
        error = refusal(call, {"title": "a", "client": 1, key: 1})
        assert [(i.field, i.message) for i in error.issues] == [(key, "is set by the system; leave it out")]


def test_stage_only_through_move(trade):
    for call in (trade["deal"].create, trade["deal"].patch):
        error = refusal(call, {"title": "a", "client": 1, "stage": "won"})
        assert [(i.field, i.message) for i in error.issues] == [
            ("stage", "changes only through move (metacrm move / crm.move)")
        ]


def test_unknown_keys(shop, trade):
    cases = [
        (trade["product"], {"name": "a", "prise": 1}, "unknown field 'prise' (did you mean 'price'?); fields: name, price"),
        (trade["product"], {"name": "a", "owner": "ivan"}, "(product has no owner"),
        (trade["product"], {"name": "a", "pipeline": "x"}, "(product has no stages)"),
        (trade["client"], {"name": "a", "deals": [1]}, "it is the other side of deal.client; set the link there"),
        (trade["product"], {"name": "a", 5: 1}, "unknown field 5; fields: name, price"),
        (trade["product"], {"name": "a", "zzz": 1}, "unknown field 'zzz'; fields: name, price"),
    ]  # fmt: skip
    for validator, data, fragment in cases:
        error = refusal(validator.create, data)
        assert [i.field for i in error.issues] == [None]
        assert fragment in error.issues[0].message


def test_pipeline(shop, trade):
    shipment = build_validators(shop)["shipment"]
    error = refusal(shipment.create, {"title": "a", "pipeline": "rail"})
    assert [(i.field, i.message) for i in error.issues] == [
        ("pipeline", "'rail' is not a pipeline of shipment; pipelines: air, sea")
    ]
    assert trade["deal"].create({"title": "a", "client": 1, "pipeline": "default"})["pipeline"] == "default"
    error = refusal(shipment.patch, {"pipeline": "air"})
    assert error.issues[0].field == "pipeline"
    assert "cannot change" in error.issues[0].message


def test_not_a_mapping(item):
    for data in (None, [("name", "x")], "name=x"):
        error = refusal(item.create, data)
        assert error.issues[0].field is None
        assert "a record must be a mapping" in error.issues[0].message


def test_other_mappings_are_accepted(item):
    from types import MappingProxyType

    assert item.create(MappingProxyType(base()))["name"] == "Ёжик"


def test_nothing_raw_escapes(item):
    class Weird:
        def __eq__(self, other):
            raise RuntimeError("no comparing")

        __hash__ = object.__hash__

    weird = Weird()
    for call, data in ((item.create, base(active=weird)), (item.patch, {"active": weird})):
        error = refusal(call, data)
        assert [(i.field, i.value) for i in error.issues] == [("active", weird)]
        assert "cannot be read (Weird): no comparing" in error.issues[0].message
    error = refusal(item.create, base(maker=Decimal("1E+100")))
    assert [i.field for i in error.issues] == ["maker"]


# --------------------------------------------------------------------------- patch


def test_patch_returns_only_the_keys_given(item):
    assert item.patch({}) == {}
    assert item.patch({"price": "10", "parts": "3", "owner": "petr"}) == {
        "price": Decimal("10.00"),
        "parts": [3],
        "owner": "petr",
    }
    assert item.patch({"qty": "", "about": "", "parts": ""}) == {"qty": None, "about": None, "parts": []}


def test_patch_refuses_clearing_required_values(item):
    error = refusal(item.patch, {"name": "", "maker": None, "owner": None, "qty": -1})
    assert [i.field for i in error.issues] == ["name", "qty", "maker", "owner"]
    assert error.issues[0].message == "is required"
    assert error.issues[2].message.startswith("is required")
    assert error.issues[3].message == "cannot be cleared; give a user login"


# --------------------------------------------------------------------------- many records


def test_create_many(item):
    rows = [base(qty="1"), base(qty="x"), base(price="1,5"), base(qty=-1, price="1.001"), {"maker": 1}]
    error = refusal(item.create_many, rows)
    assert [(i.index, i.field) for i in error.issues] == [(1, "qty"), (3, "qty"), (3, "price"), (4, "name")]
    assert str(error).startswith("record 1: item.qty: 'x' is not a whole number")
    assert str(error).endswith("(and 3 more)")
    records = item.create_many(row for row in rows if row in (rows[0], rows[2]))
    assert [r["qty"] for r in records] == [1, None]
    assert [r["price"] for r in records] == [None, Decimal("1.50")]


def test_create_with_index(item):
    error = refusal(item.create, base(qty="x"), index=7)
    assert error.issues[0].index == 7
    assert str(error).startswith("record 7: item.qty:")


# --------------------------------------------------------------------------- built once


def test_validators_are_cached_per_model(shop, trade):
    assert build_validators(shop) is build_validators(shop)
    again = metacrm.load_model(CONTRACT)
    assert build_validators(again) is trade
    assert build_validators(shop) is not trade
    assert set(trade) == {"client", "deal", "product", "task"}
    assert trade["deal"] is build_validators(again)["deal"]


def test_fields_named_like_basemodel_attributes(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "metacrm: 1\nname: odd\nentities:\n  thing:\n    fields:\n"
        "      json: {type: json}\n      copy: {type: string, required: true}\n"
        "      model_config: {type: integer}\n",
        encoding="utf-8",
    )
    thing = build_validators(metacrm.load_model(path))["thing"]
    assert thing.create({"json": "[1]", "copy": "x", "model_config": "3"}) == {
        "json": [1],
        "copy": "x",
        "model_config": 3,
    }
    assert [i.field for i in refusal(thing.create, {}).issues] == ["copy"]
