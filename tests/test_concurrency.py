"""Two processes moving the same record at the same moment, on SQLite (WAL) and PostgreSQL:
exactly one succeeds, the other gets metacrm.ConflictError (exit 1 on the command line) and
nothing of its move is written.

Real parallel processes: each one connects, reads the record's version, waits at a barrier
with the other, then moves the record with ``version=`` (one to ``qualified``, the other to
``lost``, so whose move was written is visible). The command-line race starts two
``metacrm move ... --version V`` processes that wait for a start file once their imports are
done."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import pytest

import metacrm

MOVES = Path(__file__).parent / "fixtures" / "valid" / "moves.yaml"
ROUNDS = 10
TARGETS = ("qualified", "lost")
TIMEOUT = 60


def _racer(url: str, ids: list[int], who: int, barrier, results) -> None:
    """One process: for each record, read its version, wait for the other, move it."""
    crm = metacrm.connect(MOVES, url)
    try:
        for record_id in ids:
            version = crm.get("deal", record_id)["version"]
            barrier.wait(TIMEOUT)
            try:
                crm.move("deal", record_id, TARGETS[who], version=version, note=f"racer {who}")
                results.put((record_id, who, "ok", ""))
            except metacrm.ConflictError as exc:
                results.put((record_id, who, "conflict", str(exc)))
            except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
                results.put((record_id, who, "error", f"{type(exc).__name__}: {exc}"))
    finally:
        crm.close()


@pytest.fixture
def crm(db_url):
    crm = metacrm.connect(MOVES, db_url)
    crm.migrate()
    yield crm
    crm.close()


def _deals(crm, count: int) -> list[int]:
    client = crm.create("client", {"name": "ООО Ромашка"})
    rows = [{"title": f"Сделка {i}", "client": client["id"], "lost_reason": "дорого"} for i in range(count)]
    return [d["id"] for d in crm.create_many("deal", rows)]


def _assert_one_move_each(crm, outcomes: dict[int, dict[int, tuple[str, str]]]) -> None:
    for record_id, by_racer in outcomes.items():
        kinds = sorted(kind for kind, _ in by_racer.values())
        assert kinds == ["conflict", "ok"], (record_id, by_racer)
        (winner,) = [who for who, (kind, _) in by_racer.items() if kind == "ok"]
        (loser,) = [who for who in by_racer if who != winner]
        assert "by someone else" in by_racer[loser][1]
        record = crm.get("deal", record_id)
        assert record["stage"] == TARGETS[winner] and record["version"] == 2
        history = crm.history("deal", record_id)
        assert [(h["from_stage"], h["to_stage"], h["note"]) for h in history] == [
            (None, "new", None),
            ("new", TARGETS[winner], f"racer {winner}"),
        ]


def test_two_processes_one_wins(crm, db_url) -> None:
    ids = _deals(crm, ROUNDS)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    racers = [ctx.Process(target=_racer, args=(db_url, ids, who, barrier, results)) for who in (0, 1)]
    for p in racers:
        p.start()
    try:
        got = [results.get(timeout=TIMEOUT * 2) for _ in range(2 * ROUNDS)]
    finally:
        for p in racers:
            p.join(TIMEOUT)
            if p.is_alive():  # pragma: no cover - a hung racer must not hang the suite
                p.terminate()
    assert [p.exitcode for p in racers] == [0, 0]
    errors = [r for r in got if r[2] == "error"]
    assert errors == []
    outcomes: dict = {}
    for record_id, who, kind, message in got:
        outcomes.setdefault(record_id, {})[who] = (kind, message)
    assert sorted(outcomes) == sorted(ids)
    _assert_one_move_each(crm, outcomes)
    # both racers won some rounds or not: either way every round wrote exactly one move
    assert crm.count("deal", where="stage = 'qualified'") + crm.count("deal", where="stage = 'lost'") == ROUNDS


_CLI = """
import os, sys, time
import metacrm.cli.main, metacrm.runtime.crm, sqlalchemy  # the imports first: both start ready
ready, start, args = sys.argv[1], sys.argv[2], sys.argv[3:]
open(ready, "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(start):
    if time.monotonic() > deadline:
        sys.exit(99)
    time.sleep(0.001)
sys.argv = ["metacrm", *args]
metacrm.cli.main.main()
"""


def test_two_cli_moves_one_wins(crm, db_url, tmp_path) -> None:
    (record_id,) = _deals(crm, 1)
    version = crm.get("deal", record_id)["version"]
    start = tmp_path / "start"
    procs = []
    for who, target in enumerate(TARGETS):
        args = ["move", "deal", str(record_id), target, "--version", str(version), "--note", f"racer {who}"]
        args += ["--model", str(MOVES), "--db", db_url]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _CLI, str(tmp_path / f"ready{who}"), str(start), *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.monotonic() + TIMEOUT
    while not all((tmp_path / f"ready{who}").exists() for who in (0, 1)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a racer did not start"
        time.sleep(0.01)
    start.touch()
    outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 1], (codes, outputs)
    winner, loser = codes.index(0), codes.index(1)
    out, err = outputs[loser]
    assert out == "" and "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith(f"error: deal {record_id} ") and "by someone else" in err
    assert outputs[winner][1] == ""
    _assert_one_move_each(crm, {record_id: {winner: ("ok", ""), loser: ("conflict", err)}})
