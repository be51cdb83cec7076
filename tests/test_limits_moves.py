"""Two moves of the same record from the same stage without ``version=``: the one that waited
for the write lock while the other moved the record gets ConflictError, not TransitionError,
on SQLite and PostgreSQL. The race is made certain, not left to the scheduler: the winner
holds its move uncommitted until the loser has read the record's stage."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import metacrm
from metacrm.runtime import moves

MOVES = Path(__file__).parent / "fixtures" / "valid" / "moves.yaml"


@pytest.fixture
def crm(db_url):
    crm = metacrm.connect(MOVES, db_url)
    crm.migrate()
    yield crm
    crm.close()


def _race(crm, db_url, monkeypatch, winner_to: str, loser_to: str) -> tuple[dict, object]:
    client = crm.create("client", {"name": "ООО Ромашка"})
    deal = crm.create("deal", {"title": "Сделка", "client": client["id"], "lost_reason": "дорого"})
    read = threading.Event()
    real = moves.read_before

    def spy(*args):
        row = real(*args)
        read.set()  # the loser has seen 'new' and now waits for the write lock
        return row

    monkeypatch.setattr(moves, "read_before", spy)
    outcome: dict = {}
    other = metacrm.connect(MOVES, db_url)

    def loser() -> None:
        try:
            outcome["record"] = other.move("deal", deal["id"], loser_to, note="loser")
        except Exception as exc:  # noqa: BLE001 - the test looks at what it was
            outcome["error"] = exc

    thread = threading.Thread(target=loser)
    try:
        with crm.transaction():
            crm.move("deal", deal["id"], winner_to, note="winner")
            thread.start()
            assert read.wait(30)
        thread.join(60)
        assert not thread.is_alive()
    finally:
        other.close()
    return deal, outcome.get("error", outcome.get("record"))


@pytest.mark.parametrize(("winner_to", "loser_to"), [("qualified", "qualified"), ("qualified", "lost")])
def test_concurrent_moves_from_the_same_stage_one_wins(crm, db_url, monkeypatch, winner_to, loser_to) -> None:
    deal, got = _race(crm, db_url, monkeypatch, winner_to, loser_to)
    assert isinstance(got, metacrm.ConflictError), repr(got)
    assert f"deal {deal['id']}" in str(got) and "by someone else" in str(got)
    record = crm.get("deal", deal["id"])
    assert record["stage"] == winner_to and record["version"] == 2
    history = crm.history("deal", deal["id"])
    assert [(h["from_stage"], h["to_stage"], h["note"]) for h in history] == [
        (None, "new", None),
        ("new", winner_to, "winner"),
    ]


def test_without_a_race_the_refusal_is_still_a_transition_error(crm) -> None:
    client = crm.create("client", {"name": "ООО Ромашка"})
    deal = crm.create("deal", {"title": "Сделка", "client": client["id"]})
    crm.move("deal", deal["id"], "qualified")
    with pytest.raises(metacrm.TransitionError, match="already in stage 'qualified'"):
        crm.move("deal", deal["id"], "qualified")
    with pytest.raises(metacrm.NotFound):
        crm.move("deal", 999_999, "qualified")
