"""examples/buying.yaml, ERPNext's Buying module translated (issue 13): its main flow on both
dialects — a supplier with several e-mails and an address, items, a purchase order numbered by
its autonumber whose items carry quantity and rate on the link, the rules, the stages, an
attachment, the per-currency report, archive and restore, and the buyer's row-level access."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

import metacrm
from metacrm.errors import TransitionError, ValidationError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "buying.yaml"


@pytest.fixture
def crm(db_url, tmp_path):
    c = metacrm.connect(metacrm.load_model(EXAMPLE), db_url, files=tmp_path / "files")
    c.migrate()
    c.add_user("anna", roles=["purchase_user"])
    c.add_user("boris", roles=["purchase_user"])
    yield c
    c.close()


def _refused(call, *parts: str) -> str:
    with pytest.raises(ValidationError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message
    return message


def _setup(crm):
    supplier = crm.create(
        "supplier",
        {
            "supplier_name": "Acme Metals",
            "country": "DE",
            "email_id": "Sales@ACME.example; info@acme.example",
            "address": {"street": "Hauptstr. 1", "city": "Berlin", "postcode": "10115", "country": "DE"},
            "default_currency": "EUR",
        },
    )
    steel = crm.create(
        "item", {"item_code": "STEEL-01", "item_name": "Steel sheet", "item_group": "raw_material", "stock_uom": "kg"}
    )
    bolt = crm.create("item", {"item_code": "BOLT-M8", "item_name": "Bolt M8", "item_group": "consumable"})
    return supplier, steel, bolt


def test_purchase_order_flow(crm):
    supplier, steel, bolt = _setup(crm)
    assert supplier["email_id"] == ["sales@acme.example", "info@acme.example"]  # normalised, the first the primary
    assert supplier["address.city"] == "Berlin"
    hits = crm.search("info@acme.example", entity="supplier")  # any of its addresses finds it
    assert [(h["entity"], h["id"]) for h in hits] == [("supplier", supplier["id"])]

    po = crm.create(
        "purchase_order",
        {
            "supplier": supplier["id"],
            "currency": "JPY",
            "conversion_rate": "0.006712345",  # 9 decimals kept exactly
            "schedule_date": "2030-01-10",
            "buyer": "anna",
            "items": [{"id": steel["id"], "qty": "2.5", "rate": "1200"}, {"id": bolt["id"], "qty": 100, "rate": "3.5"}],
        },
    )
    assert re.fullmatch(r"PUR-ORD-\d{4}-00001", po["name"])
    stored = crm.get("purchase_order", po["id"])
    assert stored["conversion_rate"] == Decimal("0.006712345")
    assert stored["total"] == Decimal("3350.00")  # sum(items.link.qty * items.link.rate)
    assert stored["total_qty"] == Decimal("102.5")
    assert {row["id"]: row["qty"] for row in stored["items.link"]} == {steel["id"]: 2.5, bolt["id"]: 100}

    # the link's values are validated like fields; a changed pair keeps the values not given
    before = crm.get("purchase_order", po["id"])
    _refused(lambda: crm.link("purchase_order", po["id"], "items", steel["id"], values={"qty": 0}), "items.qty")
    assert crm.get("purchase_order", po["id"]) == before
    crm.link("purchase_order", po["id"], "items", steel["id"], values={"qty": 3})
    after = crm.get("purchase_order", po["id"])
    assert after["total"] == Decimal("3950.00")
    assert [r["rate"] for r in after["items.link"] if r["id"] == steel["id"]] == [Decimal("1200.00")]

    # the rules, named
    _refused(
        lambda: crm.update("purchase_order", po["id"], {"schedule_date": "2020-01-01"}),
        "schedule_after_order",
        "Required By date cannot be before",
    )
    _refused(
        lambda: crm.update("purchase_order", po["id"], {"advance_paid": "5000"}),
        "advance_within_total",
    )
    _refused(lambda: crm.update("purchase_order", po["id"], {"advance_paid": "10.5"}), "advance_paid")  # JPY: 0 decimals

    # the stage graph: Submit needs a total; Close needs a reason
    empty = crm.create("purchase_order", {"supplier": supplier["id"], "schedule_date": "2030-02-01"})
    with pytest.raises(TransitionError):
        crm.move("purchase_order", empty["id"], "to_receive_and_bill")
    assert crm.move("purchase_order", po["id"], "to_receive_and_bill")["stage"] == "to_receive_and_bill"
    with pytest.raises(TransitionError, match="close_reason is required"):
        crm.move("purchase_order", po["id"], "closed")
    assert crm.move("purchase_order", po["id"], "to_bill")["stage"] == "to_bill"
    assert crm.move("purchase_order", po["id"], "completed")["stage"] == "completed"

    # attachments: accepted types only
    quote = crm.attach("purchase_order", po["id"], b"%PDF-1.4 quotation", name="quote.pdf")
    assert quote["mime"] == "application/pdf"
    _refused(lambda: crm.attach("purchase_order", po["id"], b"PK", name="a.zip"), "not accepted")
    assert [f["name"] for f in crm.files("purchase_order", po["id"])] == ["quote.pdf"]


def test_report_sums_per_currency_never_across(crm):
    supplier, _steel, bolt = _setup(crm)

    def order(currency, advance, rate):
        return crm.create(
            "purchase_order",
            {
                "supplier": supplier["id"],
                "currency": currency,
                "advance_paid": advance,
                "items": [{"id": bolt["id"], "qty": 1, "rate": rate}],
            },
        )

    order("BHD", "1.234", "5")  # 3 decimals
    order("JPY", "500", "600")
    order("JPY", "100", "600")
    report = crm.report_group("purchase_order", "supplier", sum="advance_paid")
    sums = {(row["value"], row["currency"]): row["sum"] for row in report["rows"]}
    assert sums == {(supplier["id"], "BHD"): Decimal("1.234"), (supplier["id"], "JPY"): Decimal("600")}
    assert report["total"]["sums"] == {"BHD": Decimal("1.234"), "JPY": Decimal("600")}
    assert report["total"]["sum"] is None  # two currencies: no single total


def test_archive_restore_and_the_buyers_access(crm):
    supplier, _steel, bolt = _setup(crm)
    mine = crm.create(
        "purchase_order", {"supplier": supplier["id"], "buyer": "anna", "items": [{"id": bolt["id"], "rate": "1"}]}
    )
    other = crm.create(
        "purchase_order", {"supplier": supplier["id"], "buyer": "boris", "items": [{"id": bolt["id"], "rate": "1"}]}
    )
    anna = crm.as_user("anna")
    assert [r["id"] for r in anna.find("purchase_order")] == [mine["id"]]
    # a guessed filter on another buyer's order answers like a wrong guess
    assert anna.find("purchase_order", where=f"id = {other['id']}") == anna.find("purchase_order", where="id = 0")

    crm.delete("purchase_order", other["id"])  # archive: true -> archived, kept
    assert [r["id"] for r in crm.find("purchase_order")] == [mine["id"]]
    assert crm.get("purchase_order", other["id"])["archived_at"] is not None
    crm.restore("purchase_order", other["id"])
    assert sorted(r["id"] for r in crm.find("purchase_order")) == sorted([mine["id"], other["id"]])
    # numbers are never reused, even after a purge
    crm.purge("purchase_order", other["id"])
    third = crm.create("purchase_order", {"supplier": supplier["id"]})
    assert third["name"].endswith("-00003")
