"""Notifications, the sending side: the outbox (``metacrm_outbox``) delivered by e-mail over
SMTP and by webhook, with retries, backoff and a status per message.

Automations write outbox rows in the transaction of the operation that triggered them
(:func:`metacrm.notify.outbox.enqueue`); ``metacrm deliver`` / :func:`deliver` (also
``crm.deliver``, and ``metacrm tick``) sends them. Delivery is at least once: see
:mod:`metacrm.notify.outbox` for the guarantees and docs/notifications.md for the whole story.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Unpack

from .._lazy import lazy_attributes
from ..runtime.protocol import Host
from ..types import DeliverOptions, DeliveryReport, OutboxMessage

if TYPE_CHECKING:  # pragma: no cover
    from .delivery import deliver, smtp_settings
    from .outbox import CHANNELS, STATUSES, enqueue
    from .senders import DeliveryError, SmtpSettings

# imported on first use: the CRM facade carries DeliveryMixin, and a command that sends
# nothing should not import smtplib, ssl and urllib.request
_LAZY = {
    "deliver": "delivery",
    "smtp_settings": "delivery",
    "CHANNELS": "outbox",
    "STATUSES": "outbox",
    "enqueue": "outbox",
    "DeliveryError": "senders",
    "SmtpSettings": "senders",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


class DeliveryMixin(Host):
    """``crm.deliver(...)`` and ``crm.outbox(...)`` on the CRM facade."""

    def deliver(self, **options: Unpack[DeliverOptions]) -> DeliveryReport:
        """Send the due outbox messages: see :func:`metacrm.notify.deliver`."""
        from .delivery import deliver

        return deliver(self, **options)

    def outbox(self, *, status: str | None = None, limit: int | None = None) -> list[OutboxMessage]:
        """Outbox messages, newest first (``status``: pending, sending, sent or failed). A user
        (not the system) sees only the e-mails addressed to them: each message was rendered for
        its recipient, and another's may name records this user may not read."""
        from . import outbox

        self._ready()
        recipient = None
        if not self.actor.system:
            recipient = self.user_info(self.user)["email"] or ""
        return outbox.messages(self.engine, self.storage, status=status, limit=limit, recipient=recipient)

    def retry_outbox(self, ids: Sequence[int] | None = None, *, now: dt.datetime | None = None) -> int:
        """Send failed messages (all, or those of ``ids``) again: see :func:`outbox.retry`."""
        from . import outbox

        self._ready()
        count = outbox.retry(self.engine, self.storage, ids=ids, now=now)
        if count:
            logging.getLogger("metacrm.notify").info("%d failed messages queued for a new series of attempts", count)
        return count

    def outbox_counts(self) -> dict[str, int]:
        """How many outbox messages there are in each status."""
        from . import outbox

        self._ready()
        return outbox.counts(self.engine, self.storage)


__all__ = [
    "CHANNELS",
    "DeliveryError",
    "DeliveryMixin",
    "STATUSES",
    "SmtpSettings",
    "deliver",
    "enqueue",
    "smtp_settings",
]
