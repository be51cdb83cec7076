"""`metacrm demo`: builds a working CRM from the examples in ./demo, shows it, refuses to
overwrite without --force, and the commands it suggests work."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shlex
from pathlib import Path

import phonenumbers
import pytest
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.io.demo import build_demo, example_files, examples_dir, inn, required_on_the_way, translit

CYRILLIC = re.compile(r"[А-Яа-яЁё]")
TRADE = {"client": 30, "supplier": 10, "carrier": 5, "product": 20, "deal": 60}
DEAL_STAGES = {"new": 8, "qualified": 9, "proposal": 10, "contract": 8, "invoice": 7, "won": 10, "lost": 8}


def _demo(*args: str):
    return CliRunner().invoke(app, ["demo", *args])


def _snapshot(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def _try_next(output: str) -> list[str]:
    lines = output.splitlines()
    start = lines.index("Try next:")
    return [line.strip() for line in lines[start + 1 :] if line.strip()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One `metacrm demo` run, in a fresh directory: (directory, result)."""
    where = tmp_path_factory.mktemp("demo-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(where)
        result = _demo()
    assert result.exit_code == 0, result.output
    return where, result


def test_demo_builds_the_directory(built) -> None:
    where, _ = built
    demo = where / "demo"
    names = {p.name for p in demo.iterdir()}
    assert {"trade.yaml", "trade.db", "logistics.yaml", "logistics.db", "metacrm.schema.json"} <= names
    assert {p.name for p in example_files()} <= names
    assert not [p for p in where.iterdir() if p.name != "demo"]  # no staging directory left behind
    for model in demo.glob("*.yaml"):  # the editor's schema comment resolves next to the model
        first = model.read_text(encoding="utf-8").splitlines()[0]
        if first.startswith("# yaml-language-server: $schema="):
            assert (demo / first.split("=", 1)[1]).is_file()
        metacrm.load_model(model)  # every copied model is valid


def test_demo_database_holds_the_sample_data(built) -> None:
    where, _ = built
    demo = where / "demo"
    with metacrm.connect(demo / "trade.yaml", f"sqlite:///{demo / 'trade.db'}") as crm:
        for entity, n in TRADE.items():
            assert crm.count(entity) == n, entity
        for stage, n in DEAL_STAGES.items():
            assert crm.count("deal", where=f"stage = '{stage}'") == n, stage
        assert crm.count("document") > 30 and crm.count("task") > 30
        assert crm.count("deal", where="amount > 100000") > 10
        pipeline = crm.model.entity("deal").default_pipeline
        for deal in crm.find("deal"):  # each deal holds what the stages on its way require
            for name in required_on_the_way(pipeline, deal["stage"]):
                assert deal[name] not in (None, [], ""), (deal["id"], deal["stage"], name)
        clients = crm.find("client")
        assert {c["city"] for c in clients} >= {"Москва", "Санкт-Петербург", "Казань", "Новосибирск"}
        assert all(CYRILLIC.search(c["name"]) for c in clients)
        for c in clients:
            assert phonenumbers.region_code_for_number(phonenumbers.parse(c["phone"])) == "RU"
            assert re.fullmatch(r"[a-z0-9.-]+@[a-z0-9.-]+\.ru", c["email"])
            assert inn_valid(c["inn"])
        assert crm.related("client", 1, "deals")  # the client the demo shows has deals
        tasks = crm.find("task")
        assert {t["subject"]["entity"] for t in tasks} == {"deal", "client"}
    with metacrm.connect(demo / "logistics.yaml", f"sqlite:///{demo / 'logistics.db'}") as crm:
        assert crm.count("shipment") == 30 and crm.count("client") == 12
        assert crm.count("shipment", where="pipeline = 'air'") == 12
        entity = crm.model.entity("shipment")
        for shipment in crm.find("shipment"):
            pipeline = entity.pipelines[shipment["pipeline"]]
            for name in required_on_the_way(pipeline, shipment["stage"]):
                assert shipment[name] not in (None, [], ""), (shipment["reference"], shipment["stage"], name)


def inn_valid(number: str) -> bool:
    digits = [int(c) for c in number]

    def check(ks):
        return sum(d * k for d, k in zip(digits, ks, strict=False)) % 11 % 10

    if len(digits) == 10:
        return check((2, 4, 10, 3, 5, 9, 4, 6, 8)) == digits[9]
    return (
        check((7, 2, 4, 10, 3, 5, 9, 4, 6, 8)) == digits[10] and check((3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)) == digits[11]
    )


def test_demo_shows_a_card_a_list_and_what_to_try(built) -> None:
    _, result = built
    out = result.output
    assert "Traceback" not in out
    assert len(out.splitlines()) <= 60
    assert "trade.db" in out and "client 30" in out and "deal 60" in out
    card = out.split("$ metacrm get client 1", 1)[1].split("$ metacrm list deal", 1)[0]
    name = re.search(r"^name\s+(.+)$", card, re.M).group(1)
    assert CYRILLIC.search(name) and "<- deals (" in card
    listing = out.split("$ metacrm list deal", 1)[1].split("Try next:", 1)[0]
    assert "(8 records)" in listing
    rows = [line for line in listing.splitlines() if re.match(r"^\d+\s", line)]
    assert len(rows) == 8 and all(CYRILLIC.search(r) for r in rows)
    assert len(_try_next(out)) >= 3


def test_the_latest_deals_are_a_list_command_a_user_can_repeat(built, monkeypatch) -> None:
    where, result = built
    monkeypatch.chdir(where)
    shown = result.output.split("$ metacrm list deal", 1)[1].split("\n\nTry next:", 1)[0]
    command, expected = shown.split("\n", 1)
    ran = CliRunner().invoke(app, ["list", "deal", *shlex.split(command)])
    assert ran.exit_code == 0, ran.output
    assert ran.stdout == expected + "\n"
    assert "client" in expected.splitlines()[0] and re.search(r"«", expected)  # the client's title, not its id


def test_the_suggested_commands_work(built, monkeypatch) -> None:
    where, result = built
    monkeypatch.chdir(where)
    commands = _try_next(result.output)
    runner = CliRunner()
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "metacrm"
        ran = runner.invoke(app, argv[1:])
        assert ran.exit_code == 0, f"{line}\n{ran.output}"
        assert "Traceback" not in ran.output
    listing = next(c for c in commands if "amount > 100000" in c)
    ran = runner.invoke(app, [*shlex.split(listing)[1:], "--format", "json"])
    import json

    deals = json.loads(ran.stdout)
    amounts = [float(d["amount"]) for d in deals]
    assert deals and all(a > 100000 for a in amounts) and amounts == sorted(amounts, reverse=True)


def test_second_run_refuses_and_force_rebuilds(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _demo().exit_code == 0
    demo = tmp_path / "demo"
    (demo / "notes.txt").write_text("mine", encoding="utf-8")
    with metacrm.connect(demo / "trade.yaml", f"sqlite:///{demo / 'trade.db'}") as crm:
        crm.delete("deal", 1)
    before = _snapshot(demo)

    again = _demo()
    assert again.exit_code == 1
    assert "already exists" in again.stderr and "--force" in again.stderr
    assert "Traceback" not in again.output
    assert _snapshot(demo) == before  # nothing changed

    forced = _demo("--force")
    assert forced.exit_code == 0, forced.output
    assert (demo / "notes.txt").read_text(encoding="utf-8") == "mine"  # only the demo's own files replaced
    with metacrm.connect(demo / "trade.yaml", f"sqlite:///{demo / 'trade.db'}") as crm:
        assert crm.count("deal") == 60


def test_demo_in_another_directory_and_not_over_a_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = _demo("--dir", "sub/crm")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sub" / "crm" / "trade.db").is_file()
    assert "--model sub/crm/trade.yaml --db sqlite:///sub/crm/trade.db" in result.output
    (tmp_path / "file").write_text("x", encoding="utf-8")
    refused = _demo("--dir", "file")
    assert refused.exit_code == 1 and "not a directory" in refused.stderr


def test_the_data_is_deterministic(tmp_path) -> None:
    day = dt.date(2025, 3, 14)
    first = build_demo(tmp_path / "a", today=day)
    second = build_demo(tmp_path / "b", today=day)
    assert first.seconds < 15 and first.databases["trade"].counts == second.databases["trade"].counts

    def records(result, entity):
        db = result.databases["trade"]
        with metacrm.connect(db.model, db.url) as crm:
            rows = crm.find(entity, order_by="id")
        return [{k: v for k, v in r.items() if k not in ("created_at", "updated_at", "stage_entered_at")} for r in rows]

    for entity in ("client", "deal", "document", "task"):
        assert records(first, entity) == records(second, entity), entity


def test_helpers() -> None:
    assert (examples_dir() / "trade.yaml").is_file()
    assert translit("Волга-Трейд") == "volga-treyd" and translit("Сибирский лес") == "sibirskiy-les"
    import random

    rng = random.Random(1)
    assert all(inn_valid(inn(rng, "77")) for _ in range(50))
    assert all(inn_valid(inn(rng, "16", person=True)) for _ in range(50))
