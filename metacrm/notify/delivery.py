"""``deliver``: send what the outbox holds, with retries and backoff.

A run claims due messages a batch at a time (see :func:`metacrm.notify.outbox.claim`),
sends each outside any transaction, records each outcome, and goes on until nothing is due
or ``limit`` messages were handled. ``now`` (injectable for tests and for ``tick``) is the
time the run acts at: what is due, the lease, the next attempt's time.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping

from sqlalchemy import func, select

from ..errors import ValidationError
from ..storage.types import now_utc
from ..types import Delivered, DeliveryReport
from . import outbox
from .senders import TIMEOUT, DeliveryError, Mailer, SmtpSettings, post_webhook

SMTP_ENV = "METACRM_SMTP_URL"
FROM_ENV = "METACRM_MAIL_FROM"
BATCH = 20
log = logging.getLogger("metacrm.notify")


def smtp_settings(
    smtp: SmtpSettings | str | None = None,
    *,
    sender: str | None = None,
    starttls: bool | None = None,
    timeout: float = TIMEOUT,
) -> SmtpSettings | None:
    """The SMTP server: given (settings or a URL), else ``$METACRM_SMTP_URL``, else None.
    The sender address: ``sender``, else ``$METACRM_MAIL_FROM``, else metacrm@localhost."""
    sender = sender or os.environ.get(FROM_ENV) or None
    if isinstance(smtp, SmtpSettings):
        return smtp if sender is None else _replace(smtp, sender=sender)
    url = smtp or os.environ.get(SMTP_ENV) or None
    if not url:
        return None
    return SmtpSettings.from_url(url, sender=sender, starttls=starttls, timeout=timeout)


def _replace(settings: SmtpSettings, **changes) -> SmtpSettings:
    from dataclasses import replace

    return replace(settings, **changes)


def _positive(value, what: str, *, whole: bool = False):
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not number > 0 or (whole and number != int(number)):
        raise ValidationError(f"deliver: {what} must be a {'whole ' if whole else ''}number > 0, not {value!r}")
    return int(number) if whole else number


def deliver(
    crm,
    *,
    now: dt.datetime | None = None,
    limit: int | None = None,
    smtp: SmtpSettings | str | None = None,
    sender: str | None = None,
    starttls: bool | None = None,
    webhooks: bool = True,
    batch: int = BATCH,
    max_attempts: int = outbox.MAX_ATTEMPTS,
    backoff: float = outbox.BACKOFF,
    backoff_cap: float = outbox.BACKOFF_CAP,
    lease: float = outbox.LEASE,
    timeout: float = TIMEOUT,
) -> DeliveryReport:
    """Send the due outbox messages; returns ``{"sent", "retry", "failed", "waiting",
    "messages": [{"id", "channel", "recipient", "status", "attempts", "error",
    "next_attempt_at"}]}``. ``retry`` counts messages that failed an attempt and wait for
    the next; ``waiting`` counts due e-mail left pending because no SMTP server is set
    (``smtp``, ``$METACRM_SMTP_URL``). Several deliveries may run at once (processes,
    threads, machines): each message is claimed by one of them."""
    from ..runtime.tenants import tenant_of

    crm._ready()
    if crm._tx is not None:
        raise ValidationError("deliver sends outside any transaction: call it after crm.transaction() ends")
    if limit is not None:
        limit = _positive(limit, "limit", whole=True)
    batch = _positive(batch, "batch", whole=True)
    max_attempts = _positive(max_attempts, "max_attempts", whole=True)
    backoff, backoff_cap = _positive(backoff, "backoff"), _positive(backoff_cap, "backoff_cap")
    lease, timeout = _positive(lease, "lease"), _positive(timeout, "timeout")
    settings = smtp_settings(smtp, sender=sender, starttls=starttls, timeout=timeout)
    channels = [c for c, on in (("email", settings is not None), ("webhook", webhooks)) if on]
    now = now or now_utc()
    engine, storage = crm.engine, crm.storage
    tenant = tenant_of(engine)  # named in each message's identity (metacrm.notify.senders.message_key)
    mailer = Mailer(settings) if settings is not None else None
    summary: DeliveryReport = {"sent": 0, "retry": 0, "failed": 0, "waiting": 0, "messages": []}
    remaining = limit
    try:
        while channels and (remaining is None or remaining > 0):
            take = batch if remaining is None else min(batch, remaining)
            claimed = outbox.claim(engine, storage, now=now, limit=take, channels=channels, lease=lease)
            if not claimed:
                break
            for message in claimed:
                if tenant is not None:
                    message["tenant"] = tenant
                summary["messages"].append(
                    _send_one(
                        engine,
                        storage,
                        message,
                        mailer,
                        now=now,
                        timeout=timeout,
                        max_attempts=max_attempts,
                        backoff=backoff,
                        backoff_cap=backoff_cap,
                        summary=summary,
                        allow_private=crm.model.webhooks_allow_private,
                    )
                )
            if remaining is not None:
                remaining -= len(claimed)
    finally:
        if mailer is not None:
            mailer.close()
    if settings is None:
        summary["waiting"] = _due_email(engine, storage, now)
        if summary["waiting"]:
            log.warning("%d due e-mails wait: no SMTP server is set (smtp=, $%s)", summary["waiting"], SMTP_ENV)
    if summary["messages"]:
        log.info("delivery run: %d sent, %d to retry, %d failed", summary["sent"], summary["retry"], summary["failed"])
    return summary


def _send_one(
    engine,
    storage,
    message: Mapping,
    mailer,
    *,
    now,
    timeout,
    max_attempts,
    backoff,
    backoff_cap,
    summary,
    allow_private,
) -> Delivered:
    attempts = int(message["attempts"] or 0) + 1
    try:
        if message["channel"] == "email":
            mailer.send(message)
        elif message["channel"] == "webhook":
            post_webhook(message, timeout=timeout, allow_private=allow_private)
        else:
            raise DeliveryError(f"unknown channel {message['channel']!r}", permanent=True)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded on the message
        if not isinstance(exc, DeliveryError):
            exc = DeliveryError(f"{type(exc).__name__}: {exc}")
        status = outbox.mark_failed(
            engine,
            storage,
            message,
            str(exc),
            now=now,
            permanent=exc.permanent,
            max_attempts=max_attempts,
            backoff=backoff,
            backoff_cap=backoff_cap,
        )
        error = str(exc)
        next_at = now + dt.timedelta(seconds=outbox.backoff_seconds(attempts, base=backoff, cap=backoff_cap))
        what = f"message {message['id']} ({message['channel']}): attempt {attempts} failed"
        if status == "pending":
            summary["retry"] += 1
            log.warning("%s, next at %s: %s", what, f"{next_at:%Y-%m-%d %H:%M:%S}", error)
        elif status == "failed":
            summary["failed"] += 1
            log.error("%s: %s", what + (" for good" if exc.permanent else ", the last allowed"), error)
        else:
            log.info("%s after its lease ran out (another sender has the message): %s", what, error)
    else:
        outbox.mark_sent(engine, storage, message, now=now)
        status, error, next_at = "sent", None, None
        summary["sent"] += 1
        log.info("message %s (%s): sent at attempt %d", message["id"], message["channel"], attempts)
    return {
        "id": message["id"],
        "channel": message["channel"],
        "recipient": message["recipient"],
        "status": status,
        "attempts": attempts,
        "error": error,
        "next_attempt_at": next_at if status == "pending" else None,
    }


def _due_email(engine, storage, now) -> int:
    from ..runtime.engine import reading

    table = storage.outbox_table
    with reading(engine) as conn:
        return conn.execute(
            select(func.count()).where(
                table.c.channel == "email", table.c.status == "pending", table.c.next_attempt_at <= now
            )
        ).scalar_one()
