"""Sending one outbox message: e-mail over SMTP (stdlib ``smtplib``) and webhooks (an HTTP
POST of JSON with stdlib ``urllib``).

Each sender raises :class:`DeliveryError` on failure, saying whether the failure is
*permanent* (retrying cannot help: SMTP 5xx for the message, HTTP 4xx, a malformed
recipient) or may pass (no connection, a time-out, SMTP 4xx, HTTP 5xx, 408, 429), which the
delivery loop retries with backoff.

Every message carries a stable identity, the same on each attempt, so that a receiver can
drop a repeat (delivery is at least once, see :mod:`metacrm.notify.outbox`): mail has
``Message-ID: <metacrm.<id>.<created>@<domain>>`` and ``X-Metacrm-Message: <id>``; a webhook
has the headers ``Idempotency-Key`` (the same text as the Message-ID's left part) and
``X-Metacrm-Message``. A tenant's message names the tenant in its identity
(``metacrm.<tenant>.<id>.<created>``) and in ``X-Metacrm-Tenant``.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, formatdate
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import ValidationError
from .addresses import resolved_problem

DEFAULT_SENDER = "metacrm@localhost"
TIMEOUT = 30.0
_RESPONSE_PREVIEW = 200


class DeliveryError(Exception):
    """Sending one message failed; ``permanent`` when trying again cannot help."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how mail goes: ``security`` is ``none``, ``starttls`` or ``ssl``."""

    host: str
    port: int = 25
    username: str | None = None
    password: str | None = None
    security: str = "none"
    sender: str = DEFAULT_SENDER
    timeout: float = TIMEOUT

    @classmethod
    def from_url(
        cls, url: str, *, sender: str | None = None, starttls: bool | None = None, timeout: float = TIMEOUT
    ) -> SmtpSettings:
        """``smtp://[user:password@]host[:port]`` (plain; ``?starttls=true`` or the scheme
        ``smtp+starttls://`` upgrades with STARTTLS) or ``smtps://...`` (TLS from the start,
        port 465 by default). User and password are percent-decoded."""
        usage = "use smtp://[user:password@]host[:port], smtp+starttls://... or smtps://..."
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise ValidationError(f"SMTP URL {url!r} is not valid ({exc}); {usage}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("smtp", "smtps", "smtp+starttls") or not parts.hostname:
            raise ValidationError(f"SMTP URL {url!r} is not valid; {usage}")
        query = {k.lower(): v[-1].lower() for k, v in parse_qs(parts.query).items()}
        security = {"smtps": "ssl", "smtp+starttls": "starttls"}.get(scheme, "none")
        if query.get("starttls") in ("1", "true", "yes") or starttls:
            if security == "ssl":
                raise ValidationError(f"SMTP URL {url!r}: smtps is TLS already; STARTTLS is for smtp://")
            security = "starttls"
        return cls(
            host=parts.hostname,
            port=port or (465 if security == "ssl" else 587 if security == "starttls" else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            security=security,
            sender=sender or DEFAULT_SENDER,
            timeout=timeout,
        )

    def describe(self) -> str:
        """The server without the password (for messages and logs)."""
        scheme = {"ssl": "smtps", "starttls": "smtp+starttls"}.get(self.security, "smtp")
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def message_key(message: Mapping) -> str:
    """The message's stable identity: the same on every attempt. A tenant's message names its
    tenant (``metacrm.acme.<id>.<created>``): ids are per tenant, and a tenant restored from
    another's backup holds the same ids and times, so a receiver two tenants share would take
    one's message for a repeat of the other's."""
    created = message.get("created_at")
    stamp = int(created.timestamp() * 1_000_000) if created is not None else 0
    tenant = message.get("tenant")
    return f"metacrm.{tenant + '.' if tenant else ''}{message['id']}.{stamp}"


def _tenant_header(message: Mapping) -> dict[str, str]:
    return {"X-Metacrm-Tenant": message["tenant"]} if message.get("tenant") else {}


def build_email(message: Mapping, sender: str) -> EmailMessage:
    """The mail for an outbox message: UTF-8 subject and body, stable Message-ID."""
    recipient = str(message["recipient"] or "").strip()
    subject = str(message.get("subject") or "")
    for what, value in (("sender", sender), ("recipient", recipient), ("subject", subject)):
        _no_header_injection(what, value)
    if "@" not in recipient or any(c.isspace() for c in recipient.replace(", ", ",")):
        raise DeliveryError(f"recipient {recipient!r} is not an e-mail address", permanent=True)
    domain = sender.rpartition("@")[2].strip("> ") or "localhost"
    mail = EmailMessage()
    try:
        mail["From"] = sender
        mail["To"] = recipient
        mail["Subject"] = subject
    except (ValueError, TypeError) as exc:  # the email package refuses the header: so would every retry
        raise DeliveryError(f"the mail's headers are not valid: {exc}", permanent=True) from None
    created = message.get("created_at")
    mail["Date"] = format_datetime(created) if created is not None else formatdate(usegmt=True)
    mail["Message-ID"] = f"<{message_key(message)}@{domain}>"
    mail["X-Metacrm-Message"] = str(message["id"])
    for header, value in _tenant_header(message).items():
        mail[header] = value
    body = message.get("body") or ""
    if body.isascii():
        mail.set_content(body)
    else:  # base64: survives any relay, 8BITMIME or not
        mail.set_content(body, charset="utf-8", cte="base64")
    return mail


_HEADER_BREAKS = frozenset("\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def _no_header_injection(what: str, value: str) -> None:
    """A line break in a header value (a subject or address rendered from record data) would
    start a new header or the body: refused for good, never retried (every attempt would be the
    same), with the reason and without the value's tail."""
    for i, char in enumerate(value):
        if char in _HEADER_BREAKS:
            raise DeliveryError(
                f"the {what} contains a line break ({char!r} after {value[:i][:60]!r}): "
                "refused, a header cannot hold one (header injection)",
                permanent=True,
            )


class Mailer:
    """One SMTP connection for a delivery run, opened on the first mail and opened again
    after a failure."""

    def __init__(self, settings: SmtpSettings):
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        if s.security == "ssl":
            smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        try:
            if s.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if s.username:
                smtp.login(s.username, s.password or "")
        except BaseException:
            _quietly(smtp.close)
            raise
        return smtp

    def send(self, message: Mapping) -> None:
        mail = build_email(message, self.settings.sender)
        try:
            if self._smtp is None:
                self._smtp = self._connect()
            self._smtp.send_message(mail)
        except Exception as exc:
            self.close()
            raise _smtp_failure(exc, self.settings) from exc

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            _quietly(smtp.quit)
            _quietly(smtp.close)


def _smtp_failure(exc: Exception, settings: SmtpSettings) -> DeliveryError:
    """SMTP 5xx about this message is permanent; anything else (4xx, no connection, a
    login refused: the server's or the settings' trouble, not the message's) may pass."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        detail = "; ".join(f"{r}: {c} {_text(m)}" for r, (c, m) in exc.recipients.items())
        return DeliveryError(f"SMTP refused the recipient ({detail})", permanent=bool(codes) and min(codes) >= 500)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return DeliveryError(f"SMTP login to {settings.describe()} refused: {exc.smtp_code} {_text(exc.smtp_error)}")
    if isinstance(exc, smtplib.SMTPSenderRefused | smtplib.SMTPDataError):
        what = "the sender" if isinstance(exc, smtplib.SMTPSenderRefused) else "the message"
        return DeliveryError(
            f"SMTP refused {what}: {exc.smtp_code} {_text(exc.smtp_error)}", permanent=exc.smtp_code >= 500
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        return DeliveryError(f"SMTP error {exc.smtp_code} {_text(exc.smtp_error)}")
    return DeliveryError(f"SMTP {settings.describe()}: {type(exc).__name__}: {exc}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # a POST is never replayed elsewhere
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def webhook_body(message: Mapping) -> object:
    """What a webhook receives: the message's ``payload``, or (without one) a document of
    the message itself."""
    payload = message.get("payload")
    if payload is not None:
        return payload
    return {
        "id": message["id"],
        "automation": message.get("automation"),
        "entity": message.get("entity"),
        "record_id": message.get("record_id"),
        "subject": message.get("subject"),
        "body": message.get("body"),
    }


def post_webhook(message: Mapping, *, timeout: float = TIMEOUT, allow_private: bool = False) -> int:
    """POST the message's JSON to its URL; returns the HTTP status (2xx). Unless
    ``allow_private``, a host that is or resolves to a non-public address (loopback,
    link-local, private, reserved) is refused for good."""
    url = str(message["recipient"] or "").strip()
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        parts, host, port = None, None, None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not host:
        raise DeliveryError(f"webhook recipient {url!r} is not an http(s) URL", permanent=True)
    if not allow_private:
        why = resolved_problem(host, port or (443 if parts.scheme.lower() == "https" else 80))
        if why:
            raise DeliveryError(
                f"webhook {url} refused: {why}; the model allows such addresses with webhooks: {{allow_private: true}}",
                permanent=True,
            )
    data = json.dumps(webhook_body(message), ensure_ascii=False, default=str).encode("utf-8")
    from .. import __version__

    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "Idempotency-Key": message_key(message),
            "X-Metacrm-Message": str(message["id"]),
            **_tenant_header(message),
            "User-Agent": f"metacrm/{__version__}",
        },
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(65536)
            status = response.status
    except urllib.error.HTTPError as exc:
        preview = _preview(exc)
        retry = exc.code >= 500 or exc.code in (408, 425, 429) or 300 <= exc.code < 400
        raise DeliveryError(f"webhook {url} answered HTTP {exc.code}{preview}", permanent=not retry) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"webhook {url}: {type(reason).__name__}: {reason}") from None
    if not 200 <= status < 300:
        raise DeliveryError(f"webhook {url} answered HTTP {status}")
    return status


def _preview(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read(_RESPONSE_PREVIEW).decode("utf-8", "replace").strip()
    except Exception:  # noqa: BLE001 - the status says enough
        return ""
    finally:
        _quietly(exc.close)
    return f": {text}" if text else ""


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _quietly(call) -> None:
    try:
        call()
    except Exception:  # noqa: BLE001 - closing a broken connection
        pass
