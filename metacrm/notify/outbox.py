"""The outbox table's life cycle: enqueue, claim, mark sent or failed, list.

A message (a row of ``metacrm_outbox``) is ``pending`` until a sender claims it; the claim
sets ``status = 'sending'`` and a lease (``claimed_until``) in one short transaction, and the
sender then sends outside any transaction and records the outcome:

- ``sent``: delivered (``sent_at``, ``attempts`` counted);
- back to ``pending`` with ``attempts + 1``, ``last_error`` and ``next_attempt_at`` pushed
  back by an exponential backoff (1 min, 2 min, 4 min ... up to a cap) after a failure that
  may pass (a refused connection, SMTP 4xx, HTTP 5xx, a time-out);
- ``failed``: given up, kept for inspection, after ``max_attempts`` attempts or at once after a
  refusal that will not pass (SMTP 5xx for the message, HTTP 4xx, a malformed address).

Claims never overlap: on PostgreSQL the due rows are selected ``FOR UPDATE SKIP LOCKED``; on
SQLite the claim runs under ``BEGIN IMMEDIATE`` (one writer at a time); in both the UPDATE
repeats the due condition, so a row that another sender claimed meanwhile is not taken.

A sender that dies mid-send leaves its messages ``sending``; when the lease runs out they are
due again and sent once more. Delivery is therefore *at least once*: each message carries a
stable id (``Message-ID``/``X-Metacrm-Message`` in mail, ``Idempotency-Key`` on webhooks) so
that a receiver can drop a repeat.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from sqlalchemy import and_, func, insert, or_, select, update

from ..errors import ValidationError
from ..runtime.engine import writing
from ..storage.types import now_utc
from ..types import OutboxMessage

STATUSES = ("pending", "sending", "sent", "failed")
CHANNELS = ("email", "webhook")
MAX_ATTEMPTS = 8
BACKOFF = 60.0  # seconds before the first retry; doubled per attempt
BACKOFF_CAP = 3600.0  # the longest wait between two attempts
LEASE = 300.0  # seconds a claim holds a message before another sender may take it


def backoff_seconds(attempts: int, *, base: float = BACKOFF, cap: float = BACKOFF_CAP) -> float:
    """The wait after the ``attempts``-th failed attempt: base, 2*base, 4*base ... <= cap."""
    return min(cap, base * 2 ** max(0, attempts - 1))


def enqueue(
    conn,
    storage,
    *,
    channel: str,
    recipient: str,
    body: str,
    subject: str | None = None,
    payload=None,
    automation: str | None = None,
    entity: str | None = None,
    record_id: int | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Write one pending message in the caller's transaction; returns its id."""
    if channel not in CHANNELS:
        raise ValidationError(f"outbox: unknown channel {channel!r}; channels: {', '.join(CHANNELS)}")
    if not recipient:
        raise ValidationError(f"outbox: a {channel} message needs a recipient")
    now = now or now_utc()
    table = storage.outbox_table
    row = {
        "created_at": now,
        "automation": automation,
        "entity": entity,
        "record_id": record_id,
        "channel": channel,
        "recipient": recipient,
        "subject": subject,
        "body": body if body is not None else "",
        "payload": payload,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
    }
    return conn.execute(insert(table).returning(table.c.id), row).scalar_one()


def _due(table, now: dt.datetime, channels: Sequence[str]):
    return and_(
        table.c.channel.in_(list(channels)),
        or_(
            and_(table.c.status == "pending", table.c.next_attempt_at <= now),
            and_(table.c.status == "sending", table.c.claimed_until <= now),  # a lost sender's lease ran out
        ),
    )


def claim(
    engine,
    storage,
    *,
    now: dt.datetime,
    limit: int,
    channels: Sequence[str] = CHANNELS,
    lease: float = LEASE,
) -> list[dict]:
    """Take up to ``limit`` due messages for this sender, oldest due first, in one short
    transaction; returns them (as dicts) with ``status = 'sending'`` and their lease."""
    if limit <= 0 or not channels:
        return []
    table = storage.outbox_table
    until = now + dt.timedelta(seconds=lease)
    with writing(engine) as conn:  # BEGIN IMMEDIATE on SQLite: one claimer at a time
        query = (
            select(table.c.id)
            .where(_due(table, now, channels))
            .order_by(table.c.next_attempt_at, table.c.id)
            .limit(limit)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list(conn.execute(query).scalars())
        if not ids:
            return []
        rows = conn.execute(  # the due condition again: only what this statement took is ours
            update(table)
            .where(table.c.id.in_(ids), _due(table, now, channels))
            .values(status="sending", claimed_until=until)
            .returning(*table.c)
        ).mappings()
        rows = sorted(rows, key=lambda r: (r["next_attempt_at"], r["id"]))
        return [dict(r) for r in rows]


def mark_sent(engine, storage, message: Mapping, *, now: dt.datetime) -> None:
    """The message went out: ``sent``, whoever holds the lease now (it was delivered)."""
    table = storage.outbox_table
    with writing(engine) as conn:
        conn.execute(
            update(table)
            .where(table.c.id == message["id"], table.c.status != "sent")
            .values(
                status="sent",
                sent_at=now,
                attempts=table.c.attempts + 1,
                claimed_until=None,
                last_error=None,
            )
        )


def mark_failed(
    engine,
    storage,
    message: Mapping,
    error: str,
    *,
    now: dt.datetime,
    permanent: bool = False,
    max_attempts: int = MAX_ATTEMPTS,
    backoff: float = BACKOFF,
    backoff_cap: float = BACKOFF_CAP,
) -> str:
    """Record a failed attempt; returns the message's new status (``pending`` or ``failed``).
    Only while this sender still holds the lease: when it ran out and another sender took
    the message, that sender's outcome counts (returns ``"taken"``)."""
    table = storage.outbox_table
    attempts = int(message["attempts"] or 0) + 1
    status = "failed" if permanent or attempts >= max_attempts else "pending"
    wait = dt.timedelta(seconds=backoff_seconds(attempts, base=backoff, cap=backoff_cap))
    with writing(engine) as conn:
        result = conn.execute(
            update(table)
            .where(
                table.c.id == message["id"],
                table.c.status == "sending",
                table.c.claimed_until == message["claimed_until"],
            )
            .values(
                status=status,
                attempts=table.c.attempts + 1,
                last_error=error[:2000],
                next_attempt_at=now + wait if status == "pending" else now,
                claimed_until=None,
            )
        )
    return status if result.rowcount else "taken"


def messages(
    engine, storage, *, status: str | None = None, limit: int | None = None, recipient: str | None = None
) -> list[OutboxMessage]:
    """Outbox messages, newest first (``status`` filters; ``recipient``: only the e-mails to
    that address)."""
    from ..runtime.engine import reading

    if status is not None and status not in STATUSES:
        raise ValidationError(f"outbox: unknown status {status!r}; statuses: {', '.join(STATUSES)}")
    table = storage.outbox_table
    query = select(table).order_by(table.c.id.desc())
    if status is not None:
        query = query.where(table.c.status == status)
    if recipient is not None:
        query = query.where(table.c.channel == "email", table.c.recipient == recipient)
    if limit is not None:
        query = query.limit(limit)
    with reading(engine) as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def retry(engine, storage, *, ids: Sequence[int] | None = None, now: dt.datetime | None = None) -> int:
    """Give failed messages (all, or those of ``ids``) a new series of attempts: back to
    ``pending``, due at ``now``, attempts counted from 0 (``last_error`` is kept until the next
    outcome). Messages in any other status are left alone. Returns how many were requeued."""
    table = storage.outbox_table
    stmt = (
        update(table)
        .where(table.c.status == "failed")
        .values(status="pending", attempts=0, next_attempt_at=now or now_utc(), claimed_until=None)
    )
    if ids is not None:
        stmt = stmt.where(table.c.id.in_(list(ids)))
    with writing(engine) as conn:
        return conn.execute(stmt).rowcount


def counts(engine, storage) -> dict[str, int]:
    """How many messages there are in each status."""
    from ..runtime.engine import reading

    table = storage.outbox_table
    with reading(engine) as conn:
        found = dict(conn.execute(select(table.c.status, func.count()).group_by(table.c.status)).all())
    return {s: int(found.get(s, 0)) for s in STATUSES}
