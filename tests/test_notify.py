"""Notification delivery: the outbox sent by e-mail to a real SMTP server (aiosmtpd) and by
webhook to a real HTTP server, both on 127.0.0.1; retries with backoff (time injected, never
slept), permanent failures, leases of crashed senders, and concurrent senders, on SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import require_module
from sqlalchemy import insert, select, update
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.notify import SmtpSettings, outbox
from metacrm.notify.senders import build_email

aiosmtpd_controller = require_module("aiosmtpd.controller", why="the tests send e-mail to a real SMTP server")

MODEL = """\
metacrm: 1
name: notify_test
webhooks: {allow_private: true}  # the test servers listen on 127.0.0.1
entities:
  deal:
    fields:
      title: {type: string, required: true}
"""
T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("METACRM_SMTP_URL", raising=False)
    monkeypatch.delenv("METACRM_MAIL_FROM", raising=False)


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text(MODEL, encoding="utf-8")
    return path


@pytest.fixture
def crm(db_url, model_path):
    crm = metacrm.connect(model_path, db_url)
    crm.migrate()
    yield crm
    crm.close()


def put(crm, channel: str, recipient: str, *, subject=None, body="", payload=None, now=T0) -> int:
    """An outbox row as the automations write it (in a transaction of its own here)."""
    with crm.transaction():
        return outbox.enqueue(
            crm._tx,
            crm.storage,
            channel=channel,
            recipient=recipient,
            subject=subject,
            body=body,
            payload=payload,
            automation="test",
            entity="deal",
            record_id=1,
            now=now,
        )


def row(crm, message_id: int) -> dict:
    table = crm.storage.outbox_table
    with crm.engine.connect() as conn:
        return dict(conn.execute(select(table).where(table.c.id == message_id)).mappings().one())


# -- servers ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """An aiosmtpd handler: refuses the first ``fail`` messages with ``code``, keeps the rest."""

    def __init__(self, fail: int = 0, code: str = "451 4.3.0 try again later", rcpt_code: str | None = None):
        self.fail, self.code, self.rcpt_code = fail, code, rcpt_code
        self.received: list = []
        self.attempts = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_code:
            return self.rcpt_code
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.attempts += 1
        if self.fail > 0:
            self.fail -= 1
            return self.code
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


@pytest.fixture
def smtp_server():
    """Start an SMTP server on 127.0.0.1 with a handler: ``start(Inbox(...)) -> url``."""
    controllers = []

    def start(handler: Inbox, **kwargs) -> str:
        port = free_port()
        controller = aiosmtpd_controller.Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        controllers.append(controller)
        return f"smtp://127.0.0.1:{port}"

    yield start
    for controller in controllers:
        controller.stop()


class Hook:
    """What a webhook server received, and the statuses it answers with (then 200)."""

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.requests: list[dict] = []
        self.lock = threading.Lock()


@pytest.fixture
def http_server():
    servers = []

    def start(hook: Hook) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with hook.lock:
                    status = hook.statuses.pop(0) if hook.statuses else 200
                    hook.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "json": json.loads(body), "status": status}
                    )
                reply = b'{"ok": true}' if status < 300 else b"not now"
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):  # quiet
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# -- delivered ------------------------------------------------------------------------------------
def test_email_with_cyrillic_arrives_intact(crm, smtp_server) -> None:
    inbox = Inbox()
    url = smtp_server(inbox)
    subject = "Сделка «Поставка»: этап won — согласовать договор"
    body = "Здравствуйте!\nСделка «Поставка» на 120 000,00 ₽ перешла в этап won.\n" + "Ещё строка. " * 20
    mid = put(crm, "email", "anna@example.org", subject=subject, body=body)
    summary = crm.deliver(smtp=url, sender="crm@romashka.ru", now=at(0))
    assert (summary["sent"], summary["retry"], summary["failed"]) == (1, 0, 0)
    assert len(inbox.received) == 1
    mail_from, rcpt, message = inbox.received[0]
    assert mail_from == "crm@romashka.ru" and rcpt == ["anna@example.org"]
    assert message["Subject"] == subject
    assert message.get_content().replace("\r\n", "\n").rstrip("\n") == body.rstrip("\n")
    assert message["X-Metacrm-Message"] == str(mid)
    assert message["Message-ID"].startswith(f"<metacrm.{mid}.") and message["Message-ID"].endswith("@romashka.ru>")
    stored = row(crm, mid)
    assert stored["status"] == "sent" and stored["attempts"] == 1 and stored["sent_at"] == at(0)
    assert stored["claimed_until"] is None and stored["last_error"] is None
    assert crm.deliver(smtp=url, now=at(3600))["messages"] == []  # sent once, never again
    assert len(inbox.received) == 1


def test_webhook_posts_the_payload_json(crm, http_server) -> None:
    hook = Hook()
    base = http_server(hook)
    payload = {"event": "deal.won", "deal": {"id": 1, "title": "Поставка", "amount": "120000.00"}}
    mid = put(crm, "webhook", f"{base}/hooks/crm", payload=payload)
    without = put(crm, "webhook", f"{base}/plain", subject="Тема", body="Текст")
    summary = crm.deliver(now=at(0))
    assert summary["sent"] == 2
    first, second = hook.requests
    assert first["path"] == "/hooks/crm" and first["json"] == payload
    assert first["headers"]["Content-Type"].startswith("application/json")
    assert first["headers"]["X-Metacrm-Message"] == str(mid)
    assert first["headers"]["Idempotency-Key"].startswith(f"metacrm.{mid}.")
    assert second["json"]["subject"] == "Тема" and second["json"]["body"] == "Текст" and second["json"]["id"] == without
    assert row(crm, mid)["status"] == "sent"


def test_smtp_login_and_url_forms(crm, smtp_server) -> None:
    from aiosmtpd.smtp import AuthResult

    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=True)

    inbox = Inbox()
    url = smtp_server(inbox, authenticator=authenticator, auth_require_tls=False)
    port = url.rsplit(":", 1)[1]
    put(crm, "email", "boss@example.org", subject="Отчёт", body="Готово")
    assert crm.deliver(smtp=f"smtp://robot:p%40ss@127.0.0.1:{port}", now=at(0))["sent"] == 1
    assert logins == [(b"robot", b"p@ss")]
    assert len(inbox.received) == 1

    s = SmtpSettings.from_url("smtps://u:p@mail.example.org", sender="a@b.c")
    assert (s.host, s.port, s.security, s.username, s.password) == ("mail.example.org", 465, "ssl", "u", "p")
    assert SmtpSettings.from_url("smtp://mail.example.org?starttls=true").security == "starttls"
    assert SmtpSettings.from_url("smtp+starttls://mail.example.org").port == 587
    assert "p@ss" not in SmtpSettings.from_url("smtp://u:p%40ss@h:25").describe()
    with pytest.raises(metacrm.ValidationError, match="SMTP URL"):
        SmtpSettings.from_url("http://mail.example.org")


def test_smtp_from_environment_and_email_waits_without_server(crm, smtp_server, monkeypatch, http_server) -> None:
    hook = Hook()
    mail = put(crm, "email", "anna@example.org", subject="Привет", body="Тело")
    hooked = put(crm, "webhook", http_server(hook) + "/x", payload={"a": 1})
    summary = crm.deliver(now=at(0))  # no SMTP server anywhere: e-mail waits, webhooks go
    assert summary["sent"] == 1 and summary["waiting"] == 1
    assert row(crm, mail)["status"] == "pending" and row(crm, mail)["attempts"] == 0
    assert row(crm, hooked)["status"] == "sent"
    inbox = Inbox()
    monkeypatch.setenv("METACRM_SMTP_URL", smtp_server(inbox))
    monkeypatch.setenv("METACRM_MAIL_FROM", "noreply@romashka.ru")
    assert crm.deliver(now=at(1))["sent"] == 1
    assert inbox.received[0][0] == "noreply@romashka.ru"


# -- retries ------------------------------------------------------------------------------------
def test_smtp_451_then_accepted_is_retried_with_backoff_and_sent_once(crm, smtp_server) -> None:
    inbox = Inbox(fail=2)
    url = smtp_server(inbox)
    mid = put(crm, "email", "anna@example.org", subject="Счёт", body="Оплатите счёт")
    first = crm.deliver(smtp=url, now=at(0))
    assert (first["sent"], first["retry"]) == (0, 1)
    stored = row(crm, mid)
    assert stored["status"] == "pending" and stored["attempts"] == 1 and "451" in stored["last_error"]
    assert stored["next_attempt_at"] == at(60) and stored["claimed_until"] is None
    assert crm.deliver(smtp=url, now=at(59))["messages"] == []  # not due yet
    second = crm.deliver(smtp=url, now=at(60))
    assert second["retry"] == 1 and row(crm, mid)["next_attempt_at"] == at(60 + 120)  # 1 min, then 2 min
    third = crm.deliver(smtp=url, now=at(180))
    assert third["sent"] == 1
    stored = row(crm, mid)
    assert stored["status"] == "sent" and stored["attempts"] == 3 and stored["sent_at"] == at(180)
    assert inbox.attempts == 3 and len(inbox.received) == 1
    assert crm.deliver(smtp=url, now=at(10_000))["messages"] == []
    assert len(inbox.received) == 1


def test_webhook_500_then_accepted_keeps_its_idempotency_key(crm, http_server) -> None:
    hook = Hook(statuses=[500])
    mid = put(crm, "webhook", http_server(hook) + "/h", payload={"n": 1})
    assert crm.deliver(now=at(0))["retry"] == 1
    stored = row(crm, mid)
    assert stored["status"] == "pending" and "HTTP 500" in stored["last_error"] and stored["attempts"] == 1
    assert crm.deliver(now=at(60))["sent"] == 1
    assert [r["status"] for r in hook.requests] == [500, 200]
    keys = {r["headers"]["Idempotency-Key"] for r in hook.requests}
    assert len(keys) == 1  # the same message: the receiver can tell
    assert row(crm, mid)["attempts"] == 2


def test_backoff_is_capped_and_gives_up_after_max_attempts(crm, http_server) -> None:
    hook = Hook(statuses=[503] * 20)
    mid = put(crm, "webhook", http_server(hook) + "/down", payload={})
    now, waits = T0, []
    for _ in range(5):
        summary = crm.deliver(now=now, max_attempts=5, backoff=60, backoff_cap=200)
        assert len(summary["messages"]) == 1
        stored = row(crm, mid)
        if stored["status"] == "pending":
            waits.append((stored["next_attempt_at"] - now).total_seconds())
            now = stored["next_attempt_at"]
    assert waits == [60, 120, 200, 200]
    stored = row(crm, mid)
    assert stored["status"] == "failed" and stored["attempts"] == 5 and "HTTP 503" in stored["last_error"]
    assert crm.deliver(now=now + dt.timedelta(days=30))["messages"] == []  # kept, never tried again
    assert len(hook.requests) == 5
    assert [m["id"] for m in crm.outbox(status="failed")] == [mid]


def test_permanent_refusals_fail_at_once(crm, http_server, smtp_server) -> None:
    hook = Hook(statuses=[404])
    gone = put(crm, "webhook", http_server(hook) + "/nope", payload={})
    bad_url = put(crm, "webhook", "ftp://example.org/x", payload={})
    inbox = Inbox(rcpt_code="550 5.1.1 no such user")
    nobody = put(crm, "email", "nobody@example.org", subject="s", body="b")
    not_address = put(crm, "email", "not an address", subject="s", body="b")
    summary = crm.deliver(smtp=smtp_server(inbox), now=at(0))
    assert summary["failed"] == 4 and summary["sent"] == 0
    for mid, why in ((gone, "HTTP 404"), (bad_url, "not an http"), (nobody, "550"), (not_address, "not an e-mail")):
        stored = row(crm, mid)
        assert stored["status"] == "failed" and stored["attempts"] == 1 and why in stored["last_error"], stored


def test_unreachable_servers_are_retried(crm) -> None:
    port = free_port()  # nothing listens there
    mail = put(crm, "email", "anna@example.org", subject="s", body="b")
    hooked = put(crm, "webhook", f"http://127.0.0.1:{port}/x", payload={})
    summary = crm.deliver(smtp=f"smtp://127.0.0.1:{port}", now=at(0), timeout=5)
    assert summary["retry"] == 2
    assert row(crm, mail)["status"] == row(crm, hooked)["status"] == "pending"


# -- never lost, never twice -------------------------------------------------------------------------
def test_a_crashed_senders_lease_runs_out_and_the_message_goes_again(crm, http_server) -> None:
    hook = Hook()
    mid = put(crm, "webhook", http_server(hook) + "/h", payload={"x": 1})
    claimed = outbox.claim(crm.engine, crm.storage, now=at(0), limit=10, lease=300)  # then the sender dies
    assert [m["id"] for m in claimed] == [mid] and row(crm, mid)["status"] == "sending"
    assert crm.deliver(now=at(299))["messages"] == []  # still leased: nobody else sends it
    assert hook.requests == []
    assert crm.deliver(now=at(300))["sent"] == 1
    assert len(hook.requests) == 1 and row(crm, mid)["status"] == "sent"
    # the late sender's failure report cannot undo what the next one delivered
    assert outbox.mark_failed(crm.engine, crm.storage, claimed[0], "late", now=at(301)) == "taken"
    assert row(crm, mid)["status"] == "sent"


def test_two_concurrent_deliveries_send_each_message_exactly_once(db_url, model_path, http_server) -> None:
    hook = Hook()
    base = http_server(hook)
    first = metacrm.connect(model_path, db_url)
    first.migrate()
    ids = [put(first, "webhook", f"{base}/m", payload={"n": i}) for i in range(24)]
    second = metacrm.connect(model_path, db_url)
    start = threading.Barrier(2)
    results, errors = [], []

    def run(crm):
        try:
            start.wait()
            results.append(crm.deliver(now=at(0), batch=2))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first.close()
    second.close()
    assert not errors
    received = sorted(int(r["headers"]["X-Metacrm-Message"]) for r in hook.requests)
    assert received == ids  # every message, none twice
    assert sum(r["sent"] for r in results) == 24
    assert sorted(m["id"] for r in results for m in r["messages"]) == ids


def test_limit_and_bad_options(crm, http_server) -> None:
    hook = Hook()
    base = http_server(hook)
    for i in range(5):
        put(crm, "webhook", f"{base}/m", payload={"n": i})
    assert crm.deliver(now=at(0), limit=2)["sent"] == 2
    assert crm.outbox_counts() == {"pending": 3, "sending": 0, "sent": 2, "failed": 0}
    with pytest.raises(metacrm.ValidationError, match="limit must be a whole number > 0"):
        crm.deliver(limit=0)
    with pytest.raises(metacrm.ValidationError, match="status"):
        crm.outbox(status="lost")
    with pytest.raises(metacrm.ValidationError, match="outside any transaction"), crm.transaction():
        crm.deliver()


def test_build_email_is_stable_across_attempts() -> None:
    message = {"id": 7, "recipient": "a@example.org", "subject": "Тема", "body": "Тело", "created_at": T0}
    one, two = build_email(message, "crm@example.org"), build_email(message, "crm@example.org")
    assert one["Message-ID"] == two["Message-ID"] and one["Date"] == two["Date"]


# -- command line ---------------------------------------------------------------------------------
def test_cli_deliver_and_outbox(db_url, model_path, smtp_server, http_server) -> None:
    crm = metacrm.connect(model_path, db_url)
    crm.migrate()
    inbox, hook = Inbox(), Hook(statuses=[500])
    put(crm, "email", "anna@example.org", subject="Задача просрочена", body="Позвонить клиенту")
    put(crm, "webhook", http_server(hook) + "/h", payload={"x": 1})
    crm.close()
    runner = CliRunner()
    common = ["--model", str(model_path), "--db", db_url]
    result = runner.invoke(app, ["deliver", "--smtp", smtp_server(inbox), "--from", "crm@example.org", *common])
    assert result.exit_code == 0, result.output
    assert "sent 1, to retry 1, failed 0" in result.stdout
    result = runner.invoke(app, ["outbox", "--format", "json", *common])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert sorted((r["channel"], r["status"]) for r in rows) == [("email", "sent"), ("webhook", "pending")]
    result = runner.invoke(app, ["outbox", "--status", "pending", "--format", "csv", *common])
    assert result.exit_code == 0 and result.stdout.count("\n") == 2
    result = runner.invoke(app, ["outbox", "--status", "lost", *common])
    assert result.exit_code == 2 and "statuses: pending, sending, sent, failed" in result.output
    result = runner.invoke(app, ["deliver", "--smtp", "http://nope", *common])
    assert result.exit_code == 2 and "SMTP URL" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["deliver", "--format", "json", *common], env={"METACRM_SMTP_URL": ""})
    assert result.exit_code == 0 and json.loads(result.stdout)["sent"] == 0  # the webhook waits for its retry


def test_outbox_rows_claimed_by_postgres_skip_locked(crm) -> None:
    """A claim leaves rows another claimer holds alone (on PostgreSQL through SKIP LOCKED,
    on SQLite through BEGIN IMMEDIATE): claims never overlap."""
    ids = [put(crm, "webhook", "http://127.0.0.1:9/x", payload={}) for _ in range(4)]
    a = outbox.claim(crm.engine, crm.storage, now=at(0), limit=3)
    b = outbox.claim(crm.engine, crm.storage, now=at(0), limit=3)
    assert [m["id"] for m in a] == ids[:3] and [m["id"] for m in b] == ids[3:]
    table = crm.storage.outbox_table
    with crm.engine.begin() as conn:  # a row written without the helper (server defaults)
        conn.execute(
            insert(table),
            {
                "created_at": at(0),
                "channel": "webhook",
                "recipient": "http://127.0.0.1:9/y",
                "body": "",
                "next_attempt_at": at(0),
            },
        )
        conn.execute(update(table).where(table.c.id == ids[0]).values(status="failed"))
    c = outbox.claim(crm.engine, crm.storage, now=at(0), limit=10)
    assert len(c) == 1 and c[0]["attempts"] == 0 and c[0]["status"] == "sending"


def test_failed_messages_can_be_retried(crm, http_server, db_url, model_path) -> None:
    hook = Hook(statuses=[404, 404])
    url = http_server(hook)
    first, second = (put(crm, "webhook", f"{url}/{i}", payload={"i": i}) for i in (1, 2))
    assert crm.deliver(now=at(0))["failed"] == 2
    assert crm.retry_outbox([first], now=at(10)) == 1  # only that one
    stored = row(crm, first)
    assert (stored["status"], stored["attempts"]) == ("pending", 0) and row(crm, second)["status"] == "failed"
    summary = crm.deliver(now=at(10))
    assert summary["sent"] == 1 and row(crm, first)["status"] == "sent"
    assert crm.retry_outbox(now=at(20)) == 1 and crm.retry_outbox(now=at(20)) == 0  # sent ones stay sent
    runner = CliRunner()
    args = ["--model", str(model_path), "--db", db_url]
    assert row(crm, second)["status"] == "pending"
    crm.deliver(now=at(20))
    assert row(crm, second)["status"] == "sent"
    result = runner.invoke(app, ["outbox", "--retry", *args])
    assert result.exit_code == 0 and "requeued 0" in result.output
    result = runner.invoke(app, ["outbox", "--id", "1", *args])
    assert result.exit_code == 2


def test_deliveries_retries_and_failures_are_logged(crm, http_server, caplog) -> None:
    caplog.set_level(logging.INFO, logger="metacrm")
    hook = Hook(statuses=[503, 404])
    mid = put(crm, "webhook", http_server(hook) + "/h", payload={"name": "Иванов"})
    port = free_port()  # nothing listens there
    mail = put(crm, "email", "anna.secret@example.org", subject="s", body="b")
    crm.deliver(now=at(0), smtp=f"smtp://127.0.0.1:{port}", timeout=5)  # 503, refused: both retried
    crm.deliver(now=at(60))  # 404: failed for good (the e-mail waits: no SMTP server this time)
    assert crm.retry_outbox([mid], now=at(70)) == 1
    crm.deliver(now=at(70))  # sent
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "metacrm.notify"]
    assert [level for level, _ in logged] == [
        "WARNING",  # the webhook's 503
        "WARNING",  # the e-mail's refused connection
        "INFO",  # the run
        "ERROR",  # the 404
        "WARNING",  # the e-mail waits for an SMTP server
        "INFO",  # the run
        "INFO",  # requeued
        "INFO",  # sent
        "WARNING",  # the e-mail still waits
        "INFO",  # the run
    ], logged
    messages = [text for _, text in logged]
    assert messages[0].startswith(f"message {mid} (webhook): attempt 1 failed, next at 2026-03-01 09:01:00: webhook")
    assert messages[0].endswith("answered HTTP 503: not now")
    assert messages[1].startswith(f"message {mail} (email): attempt 1 failed, next at 2026-03-01 09:01:00: SMTP")
    assert messages[2] == "delivery run: 0 sent, 2 to retry, 0 failed"
    assert messages[3].startswith(f"message {mid} (webhook): attempt 2 failed for good: webhook")
    assert messages[3].endswith("answered HTTP 404: not now")
    assert messages[4] == "1 due e-mails wait: no SMTP server is set (smtp=, $METACRM_SMTP_URL)"
    assert messages[6] == "1 failed messages queued for a new series of attempts"
    assert messages[7] == f"message {mid} (webhook): sent at attempt 1"
    assert messages[9] == "delivery run: 1 sent, 0 to retry, 0 failed"
    assert not [text for text in messages if "anna.secret" in text or "Иванов" in text]  # no recipient, no payload
