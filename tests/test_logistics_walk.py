"""The logistics example on SQLite and PostgreSQL: a sea shipment and an air shipment walk
their different stage sequences; a skipped stage and a move lacking a `requires` field are
refused (and write nothing); the `mode` field picks the pipeline at creation."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import metacrm

LOGISTICS = Path(__file__).resolve().parent.parent / "examples" / "logistics.yaml"
DELIVERED = dt.datetime(2024, 6, 3, 14, 30, tzinfo=dt.UTC)

# stage -> the values its `requires` ask for (filled just before the move)
SEA = [
    ("quoted", {"freight_rate": "350000.00"}),
    ("booked", {"carrier": "line", "origin": "shanghai", "destination": "petersburg"}),
    ("container_loaded", {"container_number": "MSCU1234567"}),
    ("in_transit", {"bill_of_lading": "MSCU24123456"}),
    ("at_port", {}),
    ("customs", {"customs_declaration": "10702070/030624/1234567"}),
    ("delivered", {"delivered_at": DELIVERED}),
]
AIR = [
    ("quoted", {"freight_rate": "120000.00"}),
    ("booked", {"carrier": "airline", "origin": "pvg", "destination": "svo"}),
    ("awb_issued", {"awb_number": "555-12345678"}),
    ("departed", {}),
    ("arrived", {}),
    ("delivered", {"delivered_at": DELIVERED}),  # no customs: arrived -> delivered directly
]


@pytest.fixture
def crm(db_url):
    crm = metacrm.connect(LOGISTICS, db_url)
    crm.migrate()
    crm.add_user("t.egorova", roles=["customs_broker"])  # for automations that assign by role
    yield crm
    crm.close()


@pytest.fixture
def refs(crm) -> dict:
    client = crm.create("client", {"name": "ООО Ромашка", "inn": "7701234567", "email": "ved@romashka.ru"})
    out = {"client": client["id"]}
    for key, name, kind, code in (("line", "MSC", "shipping_line", "MSCU"), ("airline", "Аэрофлот", "airline", "SU")):
        out[key] = crm.create("carrier", {"name": name, "kind": kind, "code": code})["id"]
    for key, name, code, kind, country in (
        ("shanghai", "Шанхай", "CNSHA", "seaport", "CN"),
        ("petersburg", "Санкт-Петербург", "RULED", "seaport", "RU"),
        ("pvg", "Пудун", "CNPVG", "airport", "CN"),
        ("svo", "Шереметьево", "RUSVO", "airport", "RU"),
    ):
        out[key] = crm.create("location", {"name": name, "code": code, "kind": kind, "country": country})["id"]
    return out


def _values(values: dict, refs: dict) -> dict:
    links = ("carrier", "origin", "destination")
    return {k: refs[v] if k in links else v for k, v in values.items()}


def _fingerprint(crm, shipment_id: int) -> tuple:
    record = crm.get("shipment", shipment_id)
    return record["stage"], record["version"], len(crm.history("shipment", shipment_id))


def _refused(crm, shipment_id: int, stage: str, match: str) -> metacrm.TransitionError:
    before = _fingerprint(crm, shipment_id)
    with pytest.raises(metacrm.TransitionError, match=match) as info:
        crm.move("shipment", shipment_id, stage)
    assert _fingerprint(crm, shipment_id) == before
    return info.value


def _walk(crm, refs, shipment: dict, steps: list[tuple[str, dict]]) -> None:
    """Move along ``steps``; where a stage requires something, first show the move refused."""
    sid = shipment["id"]
    for stage, values in steps:
        if values:
            missing = "; ".join(f"{name} is required" for name in values)
            _refused(crm, sid, stage, f"cannot move from '.*' to '{stage}': {missing};")
            crm.update("shipment", sid, _values(values, refs))
        moved = crm.move("shipment", sid, stage)
        assert moved["stage"] == stage


def test_sea_shipment_walks_its_sequence(crm, refs) -> None:
    s = crm.create(
        "shipment",
        {"reference": "SEA-2024-00017", "cargo": "Станки, 12 ящиков", "mode": "sea", "client": refs["client"]},
    )
    assert (s["pipeline"], s["stage"], s["mode"]) == ("sea", "request", "sea")
    error = _refused(crm, s["id"], "booked", "no move from 'request' to 'booked'")
    assert str(error).endswith("allowed next: quoted (freight_rate is required), cancelled (cancel_reason is required)")
    _walk(crm, refs, s, SEA)
    history = crm.history("shipment", s["id"])
    assert [h["to_stage"] for h in history] == ["request", *(stage for stage, _ in SEA)]
    assert {h["pipeline"] for h in history} == {"sea"}
    assert crm.allowed_moves("shipment", s["id"]) == []  # delivered is won; no reopen declared
    _refused(crm, s["id"], "cancelled", "is won .*can leave only by a declared reopen")


def test_air_shipment_walks_its_own_sequence(crm, refs) -> None:
    s = crm.create(
        "shipment",
        {"reference": "AIR-2024-00003", "cargo": "Электроника", "mode": "air", "client": refs["client"]},
    )
    assert (s["pipeline"], s["stage"]) == ("air", "request")
    crm.update("shipment", s["id"], {"freight_rate": "120000.00"})
    crm.move("shipment", s["id"], "quoted")
    _refused(crm, s["id"], "awb_issued", "no move from 'quoted' to 'awb_issued'; allowed next: booked")
    _refused(crm, s["id"], "container_loaded", "unknown stage 'container_loaded'.*stages of pipeline 'air'")
    _walk(crm, refs, s, AIR[1:5])
    moves = crm.allowed_moves("shipment", s["id"])
    assert [(m["stage"], m["possible"], m["reasons"]) for m in moves] == [
        ("customs", False, ["customs_declaration is required"]),
        ("delivered", False, ["delivered_at is required"]),
    ]
    _walk(crm, refs, s, AIR[5:])
    assert [h["to_stage"] for h in crm.history("shipment", s["id"])] == ["request", *(stage for stage, _ in AIR)]
    assert crm.count("shipment", where="pipeline = 'air' and stage = 'delivered'") == 1


def test_both_pipelines_side_by_side(crm, refs) -> None:
    sea = crm.create(
        "shipment", {"reference": "SEA-2024-00001", "cargo": "Трубы", "mode": "sea", "client": refs["client"]}
    )
    air = crm.create(
        "shipment", {"reference": "AIR-2024-00001", "cargo": "Чипы", "mode": "air", "client": refs["client"]}
    )
    for s, steps in ((sea, SEA[:3]), (air, AIR[:3])):
        _walk(crm, refs, s, steps)
    assert crm.get("shipment", sea["id"])["stage"] == "container_loaded"
    assert crm.get("shipment", air["id"])["stage"] == "awb_issued"
    assert [m["stage"] for m in crm.allowed_moves("shipment", sea["id"])] == ["in_transit"]
    assert [m["stage"] for m in crm.allowed_moves("shipment", air["id"])] == ["departed"]


def test_cancelled_needs_a_reason(crm, refs) -> None:
    s = crm.create("shipment", {"reference": "SEA-2024-00002", "cargo": "Мебель", "client": refs["client"]})
    _refused(crm, s["id"], "cancelled", "cancel_reason is required")
    crm.update("shipment", s["id"], {"cancel_reason": "Клиент выбрал другого экспедитора"})
    assert crm.move("shipment", s["id"], "cancelled")["stage"] == "cancelled"


def test_mode_picks_the_pipeline(crm, refs) -> None:
    base = {"cargo": "Груз", "client": refs["client"]}
    default = crm.create("shipment", {**base, "reference": "SEA-2024-00010"})
    assert (default["pipeline"], default["mode"]) == ("sea", "sea")  # neither given: the first pipeline
    explicit = crm.create("shipment", {**base, "reference": "AIR-2024-00010", "pipeline": "air"})
    assert (explicit["pipeline"], explicit["mode"]) == ("air", "air")  # the field shows the pipeline
    both = crm.create("shipment", {**base, "reference": "AIR-2024-00011", "pipeline": "air", "mode": "air"})
    assert both["pipeline"] == "air"
    with pytest.raises(
        metacrm.ValidationError, match="shipment.mode: is 'sea' but the record is created in pipeline 'air'"
    ):
        crm.create("shipment", {**base, "reference": "AIR-2024-00012", "pipeline": "air", "mode": "sea"})
    with pytest.raises(metacrm.ValidationError, match="fixed at creation"):
        crm.update("shipment", explicit["id"], {"mode": "sea"})
    assert crm.get("shipment", explicit["id"])["mode"] == "air"
    many = crm.create_many(
        "shipment",
        [{**base, "reference": f"AIR-2024-0002{i}", "mode": mode} for i, mode in enumerate(("air", "sea", "air"))],
    )
    assert [r["pipeline"] for r in many] == ["air", "sea", "air"]
    assert crm.count("shipment", where="mode = 'air'") == crm.count("shipment", where="pipeline = 'air'") == 4


def test_mode_picks_the_pipeline_of_imported_records(crm, refs) -> None:
    base = {"cargo": "Груз", "client": refs["client"], "mode": "air"}
    (placed,) = crm.create_many(
        "shipment", [{**base, "reference": "AIR-2024-00030", "stage": "departed"}], import_stages=True
    )
    assert (placed["pipeline"], placed["stage"]) == ("air", "departed")
    with pytest.raises(metacrm.ValidationError, match="'container_loaded' is not a stage of pipeline 'air'"):
        crm.create_many(
            "shipment", [{**base, "reference": "AIR-2024-00031", "stage": "container_loaded"}], import_stages=True
        )
