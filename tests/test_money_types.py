"""Richer number types on SQLite and PostgreSQL: ``currency`` (an ISO 4217 code fixed per field
or read from a choice field of the record, the currency's decimals), ``decimal`` with a declared
``scale``/``precision``, ``duration`` (seconds), and choice options' ``color`` and ``order``."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import dump_database

import metacrm
from metacrm.dates import format_duration, parse_duration_seconds
from metacrm.model.colors import badge, contrast, parse_css_color
from metacrm.model.field_types import currency_precision

MODEL = """\
metacrm: 1
name: fx
entities:
  deal:
    fields:
      title: {type: string, required: true}
      cur: {type: choice, options: [RUB, USD, JPY, BHD]}
      amount: {type: currency, currency_field: cur, min: 0}
      yen: {type: currency, currency: JPY}
      rate: {type: decimal, scale: 9}
      spent: {type: duration}
      priority:
        type: choice
        options:
          - {value: low, color: "#2e7d32", order: 3}
          - {value: high, color: "#c62828", order: 1}
          - {value: normal, color: teal, order: 2}
"""


def write(tmp_path: Path, text: str = MODEL, name: str = "model.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def crm(db_url, tmp_path):
    crm = metacrm.connect(write(tmp_path), db_url)
    crm.migrate()
    yield crm
    crm.close()


def refused(crm, call, *args, match: str):
    before = dump_database(crm.engine)
    with pytest.raises(metacrm.ValidationError, match=match):
        call(*args)
    assert dump_database(crm.engine) == before


# -- pure ------------------------------------------------------------------------------------------


def test_currency_precision_from_cldr():
    assert [currency_precision(c) for c in ("JPY", "RUB", "USD", "BHD", "KWD")] == [0, 2, 2, 3, 3]
    assert currency_precision("ZZZ") is None
    assert currency_precision("rub") is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1h30m", 5400),
        ("2d", 172800),
        ("1d 2h 3m 4s", 93784),
        ("PT1H30M", 5400),
        ("P2D", 172800),
        ("P1W", 604800),
        ("pt1.5h", 5400),
        ("90", 90),
        ("1:30", 5400),
        ("0:00:15", 15),
        (3600, 3600),
    ],
)
def test_duration_forms(text, seconds):
    assert parse_duration_seconds(text) == seconds
    assert parse_duration_seconds(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("P1M", "months or years"),
        ("P1Y", "months or years"),
        ("-PT1H", "negative"),
        ("PT0.5S", "whole number of seconds"),
        ("soon", "not a duration"),
        (True, "yes/no"),
        (1.5, "whole number of seconds"),
    ],
)
def test_duration_refused(text, why):
    with pytest.raises(ValueError, match=why):
        parse_duration_seconds(text)


def test_format_duration():
    assert [format_duration(s) for s in (0, 59, 3600, 5400, 86400, 93784, None)] == [
        "0s",
        "59s",
        "1h",
        "1h 30m",
        "1d",
        "1d 2h 3m 4s",
        None,
    ]


def test_colors_and_contrast():
    assert parse_css_color("#f80") == (1.0, 0x88 / 255, 0.0)
    assert isinstance(parse_css_color("blurple"), str)
    assert "opaque" in parse_css_color("transparent")
    assert "not a CSS color" in parse_css_color("currentcolor")
    assert badge("#c62828") == ("#c62828", "#fff")
    assert badge("yellow") == ("#ffff00", "#000")
    assert badge("hsl(120 50% 40%)")[0] == "#339933"
    assert badge(None) is None
    # whichever ink is chosen reaches WCAG AA (4.5:1) on any background
    for grey in range(256):
        value = f"#{grey:02x}{grey:02x}{grey:02x}"
        background, ink = badge(value)
        from metacrm.model.colors import _luminance

        lum = _luminance(parse_css_color(background))
        assert contrast(lum, 0.0 if ink == "#000" else 1.0) >= 4.5


# -- model checks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decl", "message"),
    [
        ("{type: currency}", "needs exactly one of 'currency'"),
        ("{type: currency, currency: RUB, currency_field: cur}", "needs exactly one of 'currency'"),
        ("{type: currency, currency: RUR1}", "'RUR1'"),
        ("{type: currency, currency: ZZZ}", "'ZZZ' is not an ISO 4217 currency code"),
        ("{type: currency, currency_field: title}", "currency_field 'title' is not a choice field of deal"),
        ("{type: currency, currency_field: bad}", "options that are not ISO 4217 currency codes: roubles"),
        ("{type: decimal, scale: 9, precision: 6}", "scale 9 is more than precision 6"),
        ("{type: decimal, scale: 19}", "scale"),
        ("{type: percent, scale: 4, precision: 6}", "a percent needs 3"),
        ("{type: money, scale: 3}", "'scale' does not apply to type 'money'"),
        ("{type: integer, currency: RUB}", "'currency' does not apply to type 'integer'"),
        ("{type: decimal, scale: 9, max: 1000000000}", "beyond what a decimal field holds .NUMERIC.18,9."),
        ("{type: choice, options: [{value: a, color: blurple}]}", "option 'a': color 'blurple' is not a CSS color"),
        ("{type: choice, options: [{value: a, order: first}]}", "order"),
        ("{type: duration, default: P1M}", "months or years"),
        ("{type: currency, currency: JPY, default: 1.5}", r"default 1\.5 is not a whole number; x is kept to no decimals \(JPY\)"),
        ("{type: decimal, scale: 2, fill: '0.125'}", r"fill '0\.125' has more than 2 decimals"),
    ],
)
def test_model_checks(tmp_path, decl, message):
    text = f"""\
metacrm: 1
name: bad
entities:
  deal:
    fields:
      title: {{type: string}}
      cur: {{type: choice, options: [RUB, USD]}}
      bad: {{type: choice, options: [roubles]}}
      x: {decl}
"""
    with pytest.raises(metacrm.ModelError) as info:
        metacrm.load_model(write(tmp_path, text))
    problems = info.value.problems
    assert any(re.search(message, p.message) for p in problems), [p.message for p in problems]
    assert all(p.file.endswith("model.yaml") and p.line >= 6 for p in problems)


def test_model_check_names_the_line(tmp_path):
    text = "metacrm: 1\nname: bad\nentities:\n  deal:\n    fields:\n      x: {type: currency, currency: ZZZ}\n"
    with pytest.raises(metacrm.ModelError) as info:
        metacrm.load_model(write(tmp_path, text))
    (problem,) = info.value.problems
    assert (problem.line, problem.type) == (6, "field.currency_unknown")


def test_model_shapes(tmp_path):
    model = metacrm.load_model(write(tmp_path))
    fields = model.entities["deal"].fields
    assert (fields["amount"].decimals, fields["amount"].whole_digits) == (3, 15)  # BHD's 3
    assert (fields["yen"].decimals, fields["yen"].whole_digits) == (0, 18)
    assert (fields["rate"].decimals, fields["rate"].whole_digits) == (9, 9)
    assert fields["priority"].option_rank == {"high": 0, "normal": 1, "low": 2}


# -- values on both dialects ----------------------------------------------------------------------


def test_currency_values_kept_at_their_precision(crm):
    a = crm.create("deal", {"title": "a", "cur": "JPY", "amount": "1200", "yen": 300})
    b = crm.create("deal", {"title": "b", "cur": "BHD", "amount": "1.505"})
    c = crm.create("deal", {"title": "c", "cur": "USD", "amount": "19.9"})
    assert (a["amount"], a["yen"]) == (Decimal("1200"), Decimal("300"))
    assert str(a["amount"]) == "1200" and str(b["amount"]) == "1.505" and str(c["amount"]) == "19.90"
    got = {r["title"]: str(r["amount"]) for r in crm.find("deal", order_by="title")}
    assert got == {"a": "1200", "b": "1.505", "c": "19.90"}


def test_currency_too_many_decimals_refused(crm):
    refused(crm, crm.create, "deal", {"title": "x", "yen": "1.5"}, match=r"deal\.yen: '1\.5' is not a whole number; yen is kept to no decimals \(JPY\)")
    refused(crm, crm.create, "deal", {"title": "x", "cur": "JPY", "amount": "10.5"}, match=r"deal\.amount: 10\.5 JPY has more decimals than JPY keeps \(no decimals\)")
    refused(crm, crm.create, "deal", {"title": "x", "cur": "USD", "amount": "10.505"}, match=r"10\.505 USD .* \(2 decimals\)")
    refused(crm, crm.create, "deal", {"title": "x", "cur": "BHD", "amount": "1.0005"}, match=r"has more than 3 decimals; amount is kept to at most 3")
    refused(crm, crm.create, "deal", {"title": "x", "amount": "5"}, match=r"deal\.amount: 5 has no currency; set cur")
    refused(
        crm,
        crm.create_many,
        "deal",
        [{"title": "x", "cur": "JPY", "amount": 1}, {"title": "y", "cur": "JPY", "amount": "1.25"}],
        match=r"record 1: deal\.amount: 1\.25 JPY",
    )
    d = crm.create("deal", {"title": "d", "cur": "USD", "amount": "12.50"})
    refused(crm, crm.update, "deal", d["id"], {"cur": "JPY"}, match=rf"deal {d['id']}: amount 12\.5 JPY has more decimals")
    assert crm.update("deal", d["id"], {"cur": "JPY", "amount": 13})["amount"] == Decimal(13)


def test_decimal_scale_kept_exactly(crm):
    rate = "0.012345678"
    r = crm.create("deal", {"title": "fx", "rate": rate})
    assert r["rate"] == Decimal(rate)
    assert crm.get("deal", r["id"])["rate"] == Decimal(rate)
    assert [x["id"] for x in crm.find("deal", where=f"rate = {rate}")] == [r["id"]]
    assert crm.find("deal", where="rate > 0.012345677")[0]["id"] == r["id"]
    refused(crm, crm.create, "deal", {"title": "x", "rate": "0.0123456789"}, match=r"has more than 9 decimals; rate \(a decimal\) has at most 9")
    refused(crm, crm.create, "deal", {"title": "x", "rate": "1234567890"}, match=r"too large; rate \(a decimal\) has at most 9 digits")
    big = crm.create("deal", {"title": "big", "rate": "999999999.999999999"})
    assert crm.get("deal", big["id"])["rate"] == Decimal("999999999.999999999")


def test_duration_stored_as_seconds(crm):
    a = crm.create("deal", {"title": "a", "spent": "1h30m"})
    b = crm.create("deal", {"title": "b", "spent": "PT2H"})
    crm.create("deal", {"title": "c", "spent": 600})
    assert (a["spent"], b["spent"]) == (5400, 7200)
    assert [r["title"] for r in crm.find("deal", where="spent > '1h'", order_by="-spent")] == ["b", "a"]
    assert crm.count("deal", where="spent between 'PT1H' and '1h30m'") == 1
    doc = crm.report_group("deal", "title", sum="spent")
    assert doc["total"]["sum"] == 5400 + 7200 + 600
    refused(crm, crm.create, "deal", {"title": "x", "spent": "P1M"}, match=r"deal\.spent: 'P1M' counts months or years")
    with pytest.raises(metacrm.MetaCRMError, match="'soon' is not a duration"):
        crm.find("deal", where="spent > 'soon'")


def test_choice_order_sorts_lists(crm):
    for title, priority in (("a", "low"), ("b", "high"), ("c", "normal"), ("d", None)):
        crm.create("deal", {"title": title, "priority": priority})
    assert [r["title"] for r in crm.find("deal", order_by="priority")][:3] == ["b", "c", "a"]
    assert [r["title"] for r in crm.find("deal", order_by="-priority,title") if r["priority"]] == ["a", "c", "b"]


# -- migrations ------------------------------------------------------------------------------------

BASE = """\
metacrm: 1
name: fx
entities:
  deal:
    fields:
      title: {type: string, required: true}
"""


def _model(tmp_path: Path, fields: str, name: str) -> Path:
    return write(tmp_path, BASE + fields, name)


def test_lower_scale_counted_refused_then_rounded(db_url, tmp_path):
    old = _model(tmp_path, "      rate: {type: decimal, scale: 9}\n", "old.yaml")
    crm = metacrm.connect(old, db_url)
    crm.migrate()
    for rate in ("1.234567891", "-1.235", "2.5", None):
        crm.create("deal", {"title": "t", "rate": rate})
    crm.close()
    lower = _model(tmp_path, "      rate: {type: decimal, scale: 2}\n", "lower.yaml")
    crm = metacrm.connect(lower, db_url)
    plan = crm.migrate(dry_run=True)
    assert any("scale of deal.rate: NUMERIC(18,9) → NUMERIC(18,2)" in s.description for s in plan)
    before = dump_database(crm.engine)
    with pytest.raises(metacrm.MigrationError, match=r"2 values of deal\.rate would not convert to decimal with 2 decimals.*declare `round: true` on deal\.rate"):
        crm.migrate()
    assert dump_database(crm.engine) == before
    crm.close()
    rounding = _model(tmp_path, "      rate: {type: decimal, scale: 2, round: true}\n", "round.yaml")
    crm = metacrm.connect(rounding, db_url)
    plan = crm.migrate(dry_run=True)
    assert any("2 values of deal.rate lose digits and are rounded" in s.description for s in plan), plan.steps
    crm.migrate()
    assert [r["rate"] for r in crm.find("deal")] == [Decimal("1.23"), Decimal("-1.24"), Decimal("2.50"), None]
    with pytest.raises(metacrm.ValidationError, match="has more than 2 decimals"):
        crm.create("deal", {"title": "t", "rate": "1.001"})
    crm.close()


def test_raise_scale_keeps_values(db_url, tmp_path):
    old = _model(tmp_path, "      rate: {type: decimal}\n", "old.yaml")
    crm = metacrm.connect(old, db_url)
    crm.migrate()
    crm.create("deal", {"title": "t", "rate": "123456.123456"})
    crm.close()
    crm = metacrm.connect(_model(tmp_path, "      rate: {type: decimal, scale: 9, precision: 15}\n", "new.yaml"), db_url)
    crm.migrate()
    assert crm.find("deal")[0]["rate"] == Decimal("123456.123456")
    assert crm.create("deal", {"title": "t", "rate": "0.123456789"})["rate"] == Decimal("0.123456789")
    crm.close()


def test_money_to_currency_and_adding_one(db_url, tmp_path):
    old = _model(tmp_path, "      amount: {type: money}\n", "old.yaml")
    crm = metacrm.connect(old, db_url)
    crm.migrate()
    crm.create("deal", {"title": "a", "amount": "1200"})
    crm.create("deal", {"title": "b", "amount": "99.99"})
    crm.close()
    yen = "      amount: {type: currency, currency: JPY}\n"
    crm = metacrm.connect(_model(tmp_path, yen, "yen.yaml"), db_url)
    with pytest.raises(metacrm.MigrationError, match=r"1 value of deal\.amount would not convert to currency with 0 decimals, e\.g\. id 2: 99\.99"):
        crm.migrate()
    crm.close()
    rub = "      amount: {type: currency, currency: RUB}\n      fee: {type: currency, currency: BHD, fill: '0.125'}\n"
    crm = metacrm.connect(_model(tmp_path, rub, "rub.yaml"), db_url)
    crm.migrate()
    assert [(r["amount"], r["fee"]) for r in crm.find("deal")] == [(Decimal("1200.00"), Decimal("0.125"))] * 1 + [
        (Decimal("99.99"), Decimal("0.125"))
    ]
    crm.close()
    rounded = "      amount: {type: currency, currency: JPY, round: true}\n"
    crm = metacrm.connect(_model(tmp_path, rounded, "yen2.yaml"), db_url)
    crm.migrate(allow_data_loss=True)  # drops fee; rounds 99.99 to 100
    assert [r["amount"] for r in crm.find("deal")] == [Decimal(1200), Decimal(100)]
    crm.close()


def test_duration_from_text_and_integer(db_url, tmp_path):
    old = _model(tmp_path, "      spent: {type: string}\n      secs: {type: integer}\n", "old.yaml")
    crm = metacrm.connect(old, db_url)
    crm.migrate()
    crm.create("deal", {"title": "a", "spent": "1h30m", "secs": 90})
    crm.create("deal", {"title": "b", "spent": "PT2H", "secs": None})
    crm.close()
    new = _model(tmp_path, "      spent: {type: duration}\n      secs: {type: duration}\n", "new.yaml")
    crm = metacrm.connect(new, db_url)
    crm.migrate()
    assert [(r["spent"], r["secs"]) for r in crm.find("deal")] == [(5400, 90), (7200, None)]
    crm.close()


# -- reports ---------------------------------------------------------------------------------------

STAGED = """\
metacrm: 1
name: fx
entities:
  deal:
    fields:
      title: {type: string, required: true}
      cur: {type: choice, options: [RUB, USD, JPY, BHD]}
      amount: {type: currency, currency_field: cur}
      spent: {type: duration}
      priority:
        type: choice
        options:
          - {value: low, color: "#2e7d32", order: 3}
          - {value: high, color: "#c62828", order: 1}
          - {value: normal, color: yellow, order: 2}
    stages:
      initial: new
      states:
        new: {}
        offer: {probability: 0.5}
        won: {kind: won}
        lost: {kind: lost}
      transitions:
        new: [offer, lost]
        offer: [won, lost]
  order:
    fields:
      title: {type: string}
      total: {type: currency, currency: JPY}
    stages:
      initial: new
      states:
        new: {probability: 0.3}
        done: {kind: won}
      transitions:
        new: [done]
roles:
  boss:
    "*": all
"""


@pytest.fixture
def staged(db_url, tmp_path):
    crm = metacrm.connect(write(tmp_path, STAGED), db_url)
    crm.migrate()
    crm.create("deal", {"title": "a", "cur": "JPY", "amount": "1200", "priority": "low", "spent": "1h"})
    offer = crm.create("deal", {"title": "b", "cur": "USD", "amount": "10.55", "priority": "high"})
    crm.move("deal", offer["id"], "offer")
    crm.create("deal", {"title": "c", "cur": "USD", "amount": "1", "priority": "high", "spent": "30m"})
    crm.create("deal", {"title": "d", "priority": "normal"})
    crm.create("order", {"title": "x", "total": "1000"})
    yield crm
    crm.close()


def test_group_report_sums_per_currency(staged):
    doc = staged.report_group("deal", "priority", sum="amount")
    rows = [(r["value"], r["currency"], r["count"], r["sum"]) for r in doc["rows"]]
    # options in their declared order; one row per currency in each group
    assert rows == [
        ("high", "USD", 2, Decimal("11.55")),
        ("normal", None, 1, Decimal("0")),
        ("low", "JPY", 1, Decimal("1200")),
    ]
    assert doc["total"] == {
        "count": 4,
        "sum": None,
        "currency": None,
        "sums": {"JPY": Decimal("1200"), "USD": Decimal("11.55")},
    }
    one = staged.report_group("deal", "priority", sum="amount", date_to="2000-01-01")
    assert one["total"]["sums"] == {} and one["total"]["count"] == 0
    usd = staged.report_group("order", "title", sum="total")
    assert usd["rows"][0]["currency"] == "JPY" and usd["total"]["sum"] == Decimal(1000)
    assert usd["total"]["currency"] == "JPY"
    assert [g["value"] for g in staged.funnel("deal", by="priority")] == ["high", "normal", "low"]
    spent = staged.report_group("deal", "priority", sum="spent")
    assert spent["total"]["sum"] == 5400


def test_funnel_and_board_never_add_currencies(staged):
    funnel = staged.funnel("deal")
    assert funnel["currency"] is None and funnel["forecast"] is None
    new, offer = funnel["stages"][:2]
    assert new["amount"] is None and new["amounts"] == {"JPY": Decimal(1200), "USD": Decimal("1.00")}
    assert offer["amounts"] == {"JPY": Decimal(0), "USD": Decimal("10.55")}
    assert offer["forecasts"] == {"JPY": Decimal(0), "USD": Decimal("5.28")}
    assert funnel["forecasts"] == {"JPY": Decimal(0), "USD": Decimal("5.28")}
    assert staged.funnel("deal", as_of="2100-01-01")["stages"][0]["amounts"] == new["amounts"]
    board = staged.board("deal")
    assert board["amount"] is None and board["amounts"] == {"JPY": Decimal(1200), "USD": Decimal("11.55")}
    cards = {r["title"]: (r["amount"], r["currency"]) for r in board["columns"][0]["records"]}
    assert cards["a"] == (Decimal(1200), "JPY") and cards["c"] == (Decimal("1.00"), "USD")
    yen = staged.funnel("order")
    assert (yen["currency"], yen["forecast"], yen["stages"][0]["amount"]) == ("JPY", Decimal(300), Decimal(1000))
    assert staged.board("order")["amount"] == Decimal(1000)


def test_cli_group_report_lines_per_currency(staged, tmp_path, db_url):
    from typer.testing import CliRunner

    from metacrm.cli.main import app

    args = ["report", "group", "deal", "--by", "priority", "--sum", "amount", "--model", str(tmp_path / "model.yaml")]
    result = CliRunner().invoke(app, [*args, "--db", db_url])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.split()[-2:] == ["11.55", "USD"] for line in lines)
    assert any(line.split()[-3:] == ["1", "200", "JPY"] for line in lines)  # no decimals for yen
    total = [line for line in lines if line.startswith("total")][0]
    assert total.split()[-3:] == ["1", "200", "JPY"] and lines[-1].split()[-2:] == ["11.55", "USD"]
    funnel = CliRunner().invoke(app, ["report", "funnel", "deal", "--model", str(tmp_path / "model.yaml"), "--db", db_url])
    rows = {line.split()[0]: line for line in funnel.output.splitlines()}
    assert "1 200 JPY · 1.00 USD" in rows["new"] and "10.55 USD  5.28 USD" in rows["offer"]
    assert "forecast 5.28 USD" in funnel.output
    board = CliRunner().invoke(app, ["board", "deal", "--model", str(tmp_path / "model.yaml"), "--db", db_url])
    assert "── new · 3 · 1 200 JPY · 1.00 USD" in board.output and "1 200 JPY" in board.output
    listed = CliRunner().invoke(app, ["list", "deal", "--columns", "title,spent", "--model", str(tmp_path / "model.yaml"), "--db", db_url])
    assert "1h" in listed.output and "30m" in listed.output


def test_web_shows_currency_duration_and_badges(staged):
    from conftest import require_module

    require_module("fastapi", why="the web app (the [web] extra)")
    from fastapi.testclient import TestClient

    from metacrm.runtime.passwords import set_password
    from metacrm.web import create_app

    staged.add_user("boss", roles=["boss"])
    set_password(staged, "boss", "correct horse battery")
    with TestClient(create_app(staged), follow_redirects=False) as client:
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
        client.post("/login", data={"login": "boss", "password": "correct horse battery", "csrf": token, "next": "/"})
        page = client.get("/deal?order_by=priority").text
        assert '<span class="badge" style="background:#c62828;color:#fff">high</span>' in page
        assert '<span class="badge" style="background:#ffff00;color:#000">normal</span>' in page
        assert "¥1,200" in page or "1 200 ¥" in page or "1 200 JPY" in page or "JP¥" in page
        assert "1h" in page
        card = client.get(f"/deal/{staged.find('deal', where=chr(116) + 'itle = ' + repr('a'))[0]['id']}").text
        assert "1h" in card
        funnel = client.get("/reports/funnel/deal").text
        assert "10.55" in funnel or "10,55" in funnel
        board = client.get("/deal/board").text
        assert "¥1,200 · $1.00" in board and "$10.55" in board  # a column's sums per currency


def test_openapi_types(tmp_path):
    from conftest import require_module

    validator = require_module("openapi_spec_validator", why="the document is checked against OpenAPI 3.1")
    from jsonschema import Draft202012Validator

    from metacrm.web import create_app
    from metacrm.web.openapi import build_openapi

    crm = metacrm.connect(write(tmp_path), f"sqlite:///{tmp_path / 'crm.db'}")
    try:
        doc = build_openapi(create_app(crm), crm.model)
    finally:
        crm.close()
    validator.validate(doc)
    schemas = doc["components"]["schemas"]
    write_props = schemas["deal.create"]["properties"]
    read_props = schemas["deal.read"]["properties"]

    def accepts(props, name, value) -> bool:
        return Draft202012Validator(props[name]).is_valid(value)

    assert accepts(write_props, "yen", "1200") and not accepts(write_props, "yen", "1200.5")
    assert accepts(write_props, "amount", "1.505") and not accepts(write_props, "amount", "1.5055")
    assert accepts(write_props, "rate", "0.123456789") and not accepts(write_props, "rate", "0.1234567891")
    assert accepts(write_props, "spent", "1h30m") and accepts(write_props, "spent", 5400)
    assert accepts(read_props, "spent", 5400) and not accepts(read_props, "spent", "1h")


def test_currency_field_options_change_the_scale(db_url, tmp_path):
    two = "      cur: {type: choice, options: [RUB, USD]}\n      amount: {type: currency, currency_field: cur}\n"
    crm = metacrm.connect(_model(tmp_path, two, "two.yaml"), db_url)
    crm.migrate()
    crm.create("deal", {"title": "a", "cur": "USD", "amount": "10.55"})
    crm.close()
    dinars = two.replace("[RUB, USD]", "[RUB, USD, BHD]")
    crm = metacrm.connect(_model(tmp_path, dinars, "bhd.yaml"), db_url)
    plan = crm.migrate()
    assert any("NUMERIC(18,2) → NUMERIC(18,3)" in s.description for s in plan)
    crm.create("deal", {"title": "b", "cur": "BHD", "amount": "1.505"})
    assert [str(r["amount"]) for r in crm.find("deal")] == ["10.55", "1.505"]
    crm.close()
    yen = two.replace("[RUB, USD]", "[RUB, USD, JPY]").replace("currency_field: cur}", "currency_field: cur, round: true}")
    crm = metacrm.connect(_model(tmp_path, yen, "jpy.yaml"), db_url)
    with pytest.raises(metacrm.MigrationError, match="BHD"):  # an option still in use
        crm.migrate()
    crm.close()


def test_csv_round_trip(staged, tmp_path):
    from metacrm.io.csv_io import export_csv, import_csv

    path = tmp_path / "deals.csv"
    export_csv(staged, "deal", path)
    text = path.read_text(encoding="utf-8")
    assert "JPY,1200," in text and "USD,10.55," in text and ",3600," in text
    source = tmp_path / "in.csv"
    source.write_text("title,cur,amount,spent\nz,BHD,1.005,2d 3h\ny,JPY,12.5,\n", encoding="utf-8")
    before = staged.count("deal")
    with pytest.raises(metacrm.ValidationError, match=r"line 3.*12\.5 JPY has more decimals than JPY keeps"):
        import_csv(staged, "deal", source)
    assert staged.count("deal") == before
    source.write_text("title,cur,amount,spent\nz,BHD,1.005,2d 3h\n", encoding="utf-8")
    import_csv(staged, "deal", source)
    row = staged.find("deal", where="title = 'z'")[0]
    assert (row["amount"], row["spent"]) == (Decimal("1.005"), 2 * 86400 + 3 * 3600)


@pytest.mark.parametrize(
    ("rollup", "message"),
    [
        ("{type: currency, currency: USD, rollup: 'sum(deals.amount)'}", r"would add different currencies: filter to one"),
        ("{type: currency, currency: RUB, rollup: \"sum(deals.amount where cur = 'USD')\"}", r"adds USD amounts of deal\.amount into a field in RUB"),
        ("{type: currency, currency: RUB, rollup: 'sum(deals.fee)'}", r"adds JPY amounts of deal\.fee into a field in RUB"),
    ],
)
def test_rollups_never_add_currencies(tmp_path, rollup, message):
    text = ROLLUP.replace("ROLLUP", rollup)
    with pytest.raises(metacrm.ModelError) as info:
        metacrm.load_model(write(tmp_path, text))
    assert any(re.search(message, p.message) for p in info.value.problems), [p.message for p in info.value.problems]


ROLLUP = """\
metacrm: 1
name: fx
entities:
  client:
    fields:
      name: {type: string}
      total: ROLLUP
  deal:
    fields:
      cur: {type: choice, options: [RUB, USD]}
      amount: {type: currency, currency_field: cur}
      fee: {type: currency, currency: JPY}
    links:
      client: {to: client, inverse: deals}
"""


def test_rollup_of_one_currency(db_url, tmp_path):
    text = ROLLUP.replace("ROLLUP", "{type: currency, currency: USD, rollup: \"sum(deals.amount where cur = 'USD')\"}")
    crm = metacrm.connect(write(tmp_path, text), db_url)
    crm.migrate()
    c = crm.create("client", {"name": "c"})
    crm.create("deal", {"cur": "USD", "amount": "10.55", "client": c["id"]})
    crm.create("deal", {"cur": "RUB", "amount": "1000", "client": c["id"]})
    assert crm.get("client", c["id"])["total"] == Decimal("10.55")
    crm.close()


def test_duration_rollup_and_formula(db_url, tmp_path):
    text = """\
metacrm: 1
name: r
entities:
  project:
    fields:
      name: {type: string}
      spent: {type: duration, rollup: "sum(tasks.spent)"}
  task:
    fields:
      start: {type: date}
      end: {type: date}
      spent: {type: duration}
      span: {type: duration, formula: "days_between(start, end) * 86400"}
    links:
      project: {to: project, inverse: tasks}
"""
    crm = metacrm.connect(write(tmp_path, text), db_url)
    crm.migrate()
    p = crm.create("project", {"name": "p"})
    t = crm.create("task", {"project": p["id"], "spent": "1h", "start": "2026-01-01", "end": "2026-01-03"})
    crm.create("task", {"project": p["id"], "spent": "PT30M"})
    assert (crm.get("project", p["id"])["spent"], t["span"]) == (5400, 2 * 86400)
    assert crm.count("project", where="spent >= '1h30m'") == 1
    crm.close()


def test_http_api_values(staged):
    from conftest import require_module

    require_module("fastapi", why="the HTTP API (the [web] extra)")
    from fastapi.testclient import TestClient

    from metacrm.runtime.tokens import create_token
    from metacrm.web import create_app

    staged.add_user("boss", roles=["boss"])
    headers = {"Authorization": f"Bearer {create_token(staged, 'boss')['token']}"}
    with TestClient(create_app(staged), raise_server_exceptions=False) as client:
        made = client.post("/api/v1/deal", json={"title": "h", "cur": "BHD", "amount": "1.505", "spent": "1h30m"}, headers=headers)
        assert made.status_code == 201, made.text
        assert (made.json()["amount"], made.json()["spent"]) == ("1.505", 5400)
        bad = client.post("/api/v1/deal", json={"title": "h", "cur": "JPY", "amount": "1.5"}, headers=headers)
        assert bad.status_code == 422 and "JPY" in bad.text
        report = client.get("/api/v1/reports/group/deal", params={"by": "cur", "sum": "amount"}, headers=headers)
        assert report.json()["total"]["sums"] == {"BHD": "1.505", "JPY": "1200", "USD": "11.55"}
