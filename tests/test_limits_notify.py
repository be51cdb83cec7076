"""Outbound limits: webhooks to loopback, link-local and private addresses are refused unless
the model allows them (at check time for literal addresses, at delivery after resolving the
host), and a line break in a mail header is a permanent failure, never a retry; both dialects."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import test_notify
from test_notify import T0, Hook, at, row

import metacrm
from metacrm.model.loader import check_model_file
from metacrm.notify import outbox
from metacrm.notify.senders import DeliveryError, build_email

http_server = test_notify.http_server  # the fixture: a real HTTP server on 127.0.0.1

MODEL = """\
metacrm: 1
name: limits_notify
entities:
  deal:
    fields:
      title: {type: string, required: true}
"""


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def _connect(tmp_path: Path, db_url: str, text: str):
    path = tmp_path / "model.yaml"
    path.write_text(text, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    return crm


def put(crm, channel: str, recipient: str, *, subject=None) -> int:
    with crm.transaction():
        return outbox.enqueue(
            crm._tx,
            crm.storage,
            channel=channel,
            recipient=recipient,
            subject=subject,
            body="b",
            payload={"x": 1},
            automation="test",
            entity="deal",
            record_id=1,
            now=T0,
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_private_webhooks_fail_for_good_without_a_request(tmp_path, db_url, http_server) -> None:
    crm = _connect(tmp_path, db_url, MODEL)
    try:
        hook = Hook()
        served = http_server(hook)  # http://127.0.0.1:PORT: would answer 200
        port = served.rsplit(":", 1)[1]
        targets = [
            served + "/a",
            f"http://localhost:{port}/b",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.1.2.3/x",
            "http://[::1]/x",
            "http://0.0.0.0/x",
        ]
        ids = [put(crm, "webhook", url) for url in targets]
        summary = crm.deliver(now=at(0))
        assert summary["failed"] == len(targets) and summary["sent"] == summary["retry"] == 0
        for mid in ids:
            stored = row(crm, mid)
            assert stored["status"] == "failed" and stored["attempts"] == 1, stored
            assert "allow_private" in stored["last_error"], stored["last_error"]
        assert "169.254.169.254 is a link-local address" in row(crm, ids[2])["last_error"]
        assert hook.requests == []
        assert crm.deliver(now=at(10_000))["messages"] == []  # never retried
    finally:
        crm.close()


def test_allow_private_lets_them_through(tmp_path, db_url, http_server) -> None:
    crm = _connect(tmp_path, db_url, MODEL.replace("entities:", "webhooks: {allow_private: true}\nentities:"))
    try:
        hook = Hook()
        mid = put(crm, "webhook", http_server(hook) + "/a")
        assert crm.deliver(now=at(0))["sent"] == 1
        assert row(crm, mid)["status"] == "sent" and len(hook.requests) == 1
    finally:
        crm.close()


AUTOMATION = """\
metacrm: 1
entities:
  deal:
    fields:
      title: {type: string, required: true}
automations:
  tell:
    when: {entity: deal, created: true}
    do:
      - notify:
          template: "{title}"
          to:
            - https://hooks.example.org/ok
            - http://127.0.0.1:8080/hook
            - http://[fe80::1]/x
            - http://localhost/x
"""


def test_check_refuses_literal_private_hosts(tmp_path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(AUTOMATION, encoding="utf-8")
    problems, model = check_model_file(path)
    assert model is None
    assert [(p.type, p.line) for p in problems] == [("automation.webhook_private", n) for n in (14, 15, 16)], [
        p.format() for p in problems
    ]
    path.write_text("webhooks: {allow_private: true}\n" + AUTOMATION, encoding="utf-8")
    problems, model = check_model_file(path)
    assert model is not None and model.webhooks_allow_private
    assert [p for p in problems if p.is_error] == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subject", "Hello\r\nBcc: victim@example.org"),
        ("subject", "Hello\nX-Evil: 1"),
        ("recipient", "anna@example.org\r\nBcc: victim@example.org"),
    ],
)
def test_header_injection_is_permanent(field, value) -> None:
    message = {"id": 1, "recipient": "anna@example.org", "subject": "s", "body": "b", "created_at": T0}
    message[field] = value
    with pytest.raises(DeliveryError) as info:
        build_email(message, "crm@example.org")
    assert info.value.permanent and "line break" in str(info.value)
    with pytest.raises(DeliveryError) as info:
        build_email({**message, field: "fine" if field == "subject" else "anna@example.org"}, "crm@x.org\nBcc: a@b")
    assert info.value.permanent and "sender" in str(info.value)


def test_header_injection_fails_the_message_without_retry(tmp_path, db_url) -> None:
    crm = _connect(tmp_path, db_url, MODEL)
    try:
        mid = put(crm, "email", "anna@example.org", subject="Сделка\r\nBcc: victim@example.org")
        summary = crm.deliver(smtp=f"smtp://127.0.0.1:{free_port()}", now=at(0), timeout=5)
        assert summary["failed"] == 1 and summary["retry"] == 0
        stored = row(crm, mid)
        assert stored["status"] == "failed" and stored["attempts"] == 1
        assert "line break" in stored["last_error"] and "victim" not in stored["last_error"]
    finally:
        crm.close()
