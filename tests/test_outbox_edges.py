"""The outbox at its edges (killed survivors of tools/mutation.py on notify/outbox.py): the
default number of attempts and lease, a claim of one message, a failure that may pass stays
pending, the stored error's bound, and the listing's recipient and limit filters; on SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

import metacrm
from metacrm.notify import outbox

MODEL = """\
metacrm: 1
name: edges
entities:
  deal:
    fields:
      title: {type: string, required: true}
"""
T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def crm(db_url, tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    yield crm
    crm.close()


def put(crm, *messages: tuple[str, str]) -> list[int]:
    with crm.transaction():
        return [
            outbox.enqueue(crm._tx, crm.storage, channel=channel, recipient=recipient, body="b", now=T0)
            for channel, recipient in messages
        ]


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def test_a_claim_of_one_takes_one_message_with_the_default_lease(crm) -> None:
    ids = put(crm, ("webhook", "http://127.0.0.1:9/a"), ("webhook", "http://127.0.0.1:9/b"))
    [taken] = outbox.claim(crm.engine, crm.storage, now=T0, limit=1)
    assert taken["id"] == ids[0]
    assert aware(taken["claimed_until"]) == at(outbox.LEASE) == at(300)
    assert outbox.counts(crm.engine, crm.storage) == {"pending": 1, "sending": 1, "sent": 0, "failed": 0}
    assert outbox.claim(crm.engine, crm.storage, now=T0, limit=0) == []


def test_a_message_is_given_up_after_eight_attempts_by_default(crm) -> None:
    [mid] = put(crm, ("email", "a@x.example"))
    statuses, waits = [], []
    now = T0
    for _ in range(8):
        [message] = outbox.claim(crm.engine, crm.storage, now=now, limit=10)
        statuses.append(outbox.mark_failed(crm.engine, crm.storage, message, "421 try later", now=now))
        [row] = outbox.messages(crm.engine, crm.storage)
        waits.append((aware(row["next_attempt_at"]) - now).total_seconds())
        now = now + dt.timedelta(hours=2)  # past any backoff
    assert statuses == ["pending"] * 7 + ["failed"]
    assert waits == [60, 120, 240, 480, 960, 1920, 3600, 0]  # doubled, capped at an hour; none once failed
    [row] = outbox.messages(crm.engine, crm.storage)
    assert (row["id"], row["status"], row["attempts"]) == (mid, "failed", 8)


def test_one_attempt_allowed_gives_up_at_the_first_failure(crm) -> None:
    put(crm, ("email", "a@x.example"))
    [message] = outbox.claim(crm.engine, crm.storage, now=T0, limit=10)
    assert outbox.mark_failed(crm.engine, crm.storage, message, "421", now=T0, max_attempts=1) == "failed"


def test_a_long_error_is_stored_to_its_first_2000_characters(crm) -> None:
    put(crm, ("email", "a@x.example"))
    [message] = outbox.claim(crm.engine, crm.storage, now=T0, limit=10)
    error = "".join(str(i % 10) for i in range(3000))
    assert outbox.mark_failed(crm.engine, crm.storage, message, error, now=T0) == "pending"
    [row] = outbox.messages(crm.engine, crm.storage)
    assert row["last_error"] == error[:2000]


def test_messages_filter_by_recipient_and_limit(crm) -> None:
    ids = put(
        crm,
        ("email", "a@x.example"),
        ("webhook", "a@x.example"),  # not an e-mail: left out of a recipient's messages
        ("email", "b@x.example"),
        ("email", "a@x.example"),
    )
    mine = outbox.messages(crm.engine, crm.storage, recipient="a@x.example")
    assert [m["id"] for m in mine] == [ids[3], ids[0]]  # newest first
    assert [m["id"] for m in outbox.messages(crm.engine, crm.storage, limit=2)] == [ids[3], ids[2]]
    assert len(outbox.messages(crm.engine, crm.storage)) == 4
