"""Stage moves at their edges (killed survivors of tools/mutation.py on runtime/moves.py): an
empty multichoice does not fill a stage's `requires`, and the time a record spent in a stage is
never negative, even when the stage was entered by a clock ahead of this one; on SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update

import metacrm

MODEL = """\
metacrm: 1
name: edges
entities:
  deal:
    fields:
      title: {type: string, required: true}
      tags: {type: multichoice, options: [a, b]}
    stages:
      initial: new
      states:
        new: {}
        tagged: {requires: [tags]}
        won: {kind: won}
      transitions:
        new: [tagged]
        tagged: [won]
"""


@pytest.fixture
def crm(db_url, tmp_path):
    path = tmp_path / "edges.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    yield crm
    crm.close()


def test_an_empty_multichoice_does_not_fill_requires(crm) -> None:
    deal = crm.create("deal", {"title": "Без меток", "tags": []})
    assert deal["tags"] == []
    with pytest.raises(metacrm.TransitionError, match="tags is required"):
        crm.move("deal", deal["id"], "tagged")
    crm.update("deal", deal["id"], {"tags": ["a"]})
    assert crm.move("deal", deal["id"], "tagged")["stage"] == "tagged"


def seconds_in_stage(crm, record_id: int, to_stage: str):
    table = crm.storage.history_table
    with crm.engine.connect() as conn:
        return conn.execute(
            select(table.c.seconds_in_stage).where(table.c.record_id == record_id, table.c.to_stage == to_stage)
        ).scalar_one()


def set_entered(crm, record_id: int, at: dt.datetime) -> None:
    table = crm.storage.table("deal")
    with crm.engine.begin() as conn:
        conn.execute(update(table).where(table.c.id == record_id).values(stage_entered_at=at))


def test_time_in_a_stage_is_whole_seconds_and_never_negative(crm) -> None:
    now = dt.datetime.now(dt.UTC)
    ahead = crm.create("deal", {"title": "Часы впереди", "tags": ["a"]})
    set_entered(crm, ahead["id"], now + dt.timedelta(hours=1))  # entered by a host whose clock is ahead
    crm.move("deal", ahead["id"], "tagged")
    assert seconds_in_stage(crm, ahead["id"], "tagged") == 0
    waited = crm.create("deal", {"title": "Ждала", "tags": ["a"]})
    set_entered(crm, waited["id"], now - dt.timedelta(seconds=90))
    crm.move("deal", waited["id"], "tagged")
    assert 90 <= seconds_in_stage(crm, waited["id"], "tagged") < 3600
