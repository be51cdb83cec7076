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
    refused(crm, crm.create, "deal", {"title": "x", "amount": "5"}, match=r"amount 5 has no currency; set cur")
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
