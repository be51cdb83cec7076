"""Outbox claims under concurrency (metacrm.notify.outbox.claim): on PostgreSQL a claim skips the
rows another sender holds locked in its open transaction (SKIP LOCKED) instead of waiting for
them; and on both dialects the UPDATE takes only the rows that are still due when it runs."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import create_engine, event, select, update

import metacrm
from metacrm.notify import outbox

MODEL = """\
metacrm: 1
name: claims
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


def put(crm, n: int) -> list[int]:
    with crm.transaction():
        return [
            outbox.enqueue(
                crm._tx,
                crm.storage,
                channel="webhook",
                recipient=f"http://127.0.0.1:9/{i}",
                subject=None,
                body="",
                payload={"i": i},
                automation="test",
                entity="deal",
                record_id=1,
                now=T0,
            )
            for i in range(n)
        ]


def status(crm, message_id: int) -> str:
    table = crm.storage.outbox_table
    with crm.engine.connect() as conn:
        return conn.execute(select(table.c.status).where(table.c.id == message_id)).scalar_one()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_claim_skips_rows_another_claim_holds_locked(crm) -> None:
    ids = put(crm, 4)
    table = crm.storage.outbox_table
    url = crm.engine.url.render_as_string(hide_password=False)
    other = create_engine(url)

    @event.listens_for(other, "connect")
    def _lock_timeout(dbapi_connection, _record) -> None:  # a claim that waits fails instead of hanging
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '5s'")

    holder = crm.engine.connect()
    try:
        tx = holder.begin()  # the first sender, mid-claim: its SELECT ... FOR UPDATE holds three rows
        held = holder.execute(
            select(table.c.id).order_by(table.c.next_attempt_at, table.c.id).limit(3).with_for_update(skip_locked=True)
        ).scalars()
        assert list(held) == ids[:3]
        taken = outbox.claim(other, crm.storage, now=T0, limit=10)  # the second sender, meanwhile
        assert [m["id"] for m in taken] == ids[3:]
        holder.execute(
            update(table)
            .where(table.c.id.in_(ids[:3]))
            .values(status="sending", claimed_until=T0 + dt.timedelta(minutes=5))
        )
        tx.commit()
    finally:
        holder.close()
        other.dispose()
    assert outbox.claim(crm.engine, crm.storage, now=T0, limit=10) == []  # nothing is due any more
    assert [status(crm, i) for i in ids] == ["sending"] * 4


def test_the_update_takes_only_rows_still_due(crm) -> None:
    """Between the claim's SELECT and its UPDATE a message stops being due (here: sent, written on
    the claim's own connection, since its lock keeps every other writer out): the UPDATE repeats
    the due condition, so the message is neither taken nor set back to 'sending'."""
    ids = put(crm, 3)
    table = crm.storage.outbox_table
    done: list[int] = []

    def meanwhile(conn, cursor, statement, parameters, context, executemany) -> None:
        if not done and statement.lstrip().upper().startswith("UPDATE") and table.name in statement:
            done.append(ids[1])
            conn.execute(update(table).where(table.c.id == ids[1]).values(status="sent", sent_at=T0))

    event.listen(crm.engine, "before_cursor_execute", meanwhile)
    try:
        taken = outbox.claim(crm.engine, crm.storage, now=T0, limit=10)
    finally:
        event.remove(crm.engine, "before_cursor_execute", meanwhile)
    assert done == [ids[1]]  # the UPDATE ran after the row changed
    assert [m["id"] for m in taken] == [ids[0], ids[2]]
    assert [status(crm, i) for i in ids] == ["sending", "sent", "sending"]
