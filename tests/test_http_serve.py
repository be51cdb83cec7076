"""A real ``metacrm serve`` process (issue 11): started on a free 127.0.0.1 port, driven over
TCP, stopped with SIGTERM. Graceful shutdown (the request in flight finishes, exit 0), two
workers writing concurrently (no 500, every 2xx is exactly one row), a held SQLite write lock
(503 with Retry-After, nothing written), the PostgreSQL pool size, and the refusals before
anything listens (exit 2, one line)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import dump_database, require_module
from sqlalchemy import create_engine, text

import metacrm
from metacrm.runtime.tokens import create_token

require_module("fastapi", why="the HTTP API is the [web] extra")
require_module("uvicorn", why="metacrm serve runs on uvicorn (the [web] extra)")
httpx = require_module("httpx", why="the tests talk to the server with httpx")

TRADE = Path(__file__).parent.parent / "examples" / "trade.yaml"
START = 90.0  # seconds a server may take to answer /healthz (a loaded CI machine)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "metacrm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def prepare(url: str, *, by_cli: bool) -> str:
    """A migrated trade database with the director ann; her token (made by the CLI or the library)."""
    with metacrm.connect(TRADE, url) as crm:
        crm.migrate()
        crm.add_user("ann", roles=["director"])
        if not by_cli:
            return create_token(crm, "ann")["token"]
    made = cli("token", "create", "ann", "--format", "json", env={"METACRM_MODEL": str(TRADE), "METACRM_DB": url})
    assert made.returncode == 0, made.stderr
    return json.loads(made.stdout)["token"]


class Server:
    """``metacrm serve`` in a subprocess, ready when /healthz answers 200."""

    def __init__(self, url: str, log: Path, *options: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "METACRM_MODEL": str(TRADE), "METACRM_DB": url}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "metacrm", "serve", "--port", str(self.port), *options],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + START
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"metacrm serve exited {self.proc.returncode}: {log.read_text()}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"metacrm serve did not answer /healthz in {START} s: {log.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
            return True
        except OSError:
            return False


@pytest.fixture
def served(db_url, tmp_path):
    """Start servers on a prepared database; every one still running is stopped at the end."""
    started: list[Server] = []

    def start(*options: str, url: str | None = None, token_by_cli: bool = False) -> Server:
        token = prepare(db_url, by_cli=token_by_cli)
        server = Server(url or db_url, tmp_path / f"serve{len(started)}.log", *options)
        server.token = token
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def headers(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def recv_until(sock: socket.socket, marker: bytes, data: bytes = b"") -> bytes:
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_sigterm_lets_the_request_in_flight_finish(served, db_url):
    server = served(token_by_cli=True)
    body = "name,city\nСигтерм Один,Тула\nСигтерм Два,Тверь\n".encode()
    head = (
        f"POST /api/v1/client/import HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {server.token}\r\nContent-Type: text/csv\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(head)
        # "100 Continue" comes when the handler starts reading the body: the request is in flight
        assert b" 100 " in recv_until(sock, b"\r\n\r\n").split(b"\r\n")[0]
        server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while server.listening():  # the server is shutting down: it accepts no new connection
            assert time.monotonic() < deadline, "the server kept accepting connections after SIGTERM"
            time.sleep(0.05)
        assert server.proc.poll() is None  # ... yet waits for the request in flight
        sock.sendall(body)
        reply = recv_until(sock, b"}", b"")
        while True:  # Connection: close: read to the end
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    status, _, rest = reply.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 200"), reply.decode(errors="replace")
    report = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert report["created"] == 2, report
    assert server.stop() == 0, server.log.read_text()
    with metacrm.connect(TRADE, db_url) as crm:
        assert {c["name"] for c in crm.find("client")} == {"Сигтерм Один", "Сигтерм Два"}


def test_two_workers_write_concurrently_without_errors(served, db_url):
    server = served("--workers", "2")
    with httpx.Client(base_url=server.base, headers=headers(server.token), timeout=60) as client:
        made = client.post("/api/v1/client", json={"name": "Конкурент"})
        assert made.status_code in (200, 201), made.text
        client_id = made.json()["id"]
    outcomes: list[tuple[str, str, int | None, int]] = []  # (kind, title, id, status)
    lock = threading.Lock()

    def writer(n: int) -> None:
        with httpx.Client(base_url=server.base, headers=headers(server.token), timeout=60) as client:
            for i in range(5):
                title = f"w{n}-{i}"
                r = client.post("/api/v1/deal", json={"title": title, "client": client_id})
                deal_id = r.json().get("id") if r.status_code in (200, 201) else None
                seen = [("create", title, deal_id, r.status_code, r.headers.get("retry-after"))]
                if deal_id is not None:
                    m = client.post(f"/api/v1/deal/{deal_id}/move", json={"stage": "qualified"})
                    seen.append(("move", title, deal_id, m.status_code, m.headers.get("retry-after")))
                with lock:
                    outcomes.extend(seen)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.stop() == 0, server.log.read_text()
    assert len(outcomes) >= 30
    # a write that cannot proceed may answer 503 with Retry-After; nothing else may fail
    assert all(s < 300 or (s == 503 and retry) for *_, s, retry in outcomes), outcomes
    created = {title: deal_id for kind, title, deal_id, s, _ in outcomes if kind == "create" and s < 300}
    moved = {deal_id for kind, _, deal_id, s, _ in outcomes if kind == "move" and s < 300}
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, title, stage FROM deal WHERE title LIKE 'w%'")).all()
            history = conn.execute(
                text("SELECT record_id, count(*) FROM metacrm_history WHERE entity = 'deal' AND source = 'move' GROUP BY record_id")
            ).all()
    finally:
        engine.dispose()
    assert sorted((r.title, r.id) for r in rows) == sorted(created.items())  # one row per 2xx create
    assert {r.id for r in rows if r.stage == "qualified"} == moved
    assert dict(history) == dict.fromkeys(moved, 1)  # one history row per 2xx move


def test_a_held_sqlite_write_lock_answers_503_and_writes_nothing(served, db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("a SQLite file lock")
    server = served("--busy-timeout", "0.3")
    path = db_url.removeprefix("sqlite:///")
    with httpx.Client(base_url=server.base, headers=headers(server.token), timeout=60) as client:
        assert client.get("/api/v1/me").status_code == 200  # the token's last use is written now
        engine = create_engine(db_url)
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            before = dump_database(engine)
            r = client.post("/api/v1/client", json={"name": "Заблокирован"})
            assert r.status_code == 503, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert int(r.headers["retry-after"]) >= 1
            assert "locked" in r.json()["detail"]
            assert dump_database(engine) == before
        finally:
            blocker.rollback()
            blocker.close()
            engine.dispose()
        assert client.post("/api/v1/client", json={"name": "Свободен"}).status_code in (200, 201)
    assert server.stop() == 0


def test_postgresql_pool_size_bounds_each_worker(served, db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("counts PostgreSQL sessions")
    app_name = f"mcrm_{uuid.uuid4().hex[:12]}"
    server = served("--pool-size", "2", url=f"{db_url}&application_name={app_name}")
    engine = create_engine(db_url)
    peak = 0

    def reader() -> None:
        with httpx.Client(base_url=server.base, headers=headers(server.token), timeout=60) as client:
            for _ in range(15):
                assert client.get("/api/v1/deal", params={"limit": 5}).status_code == 200

    try:
        threads = [threading.Thread(target=reader) for _ in range(8)]
        for t in threads:
            t.start()
        with engine.connect() as conn:
            query = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name")
            while any(t.is_alive() for t in threads):
                peak = max(peak, conn.execute(query, {"name": app_name}).scalar_one())
                conn.commit()
            for t in threads:
                t.join()
            after = conn.execute(query, {"name": app_name}).scalar_one()
    finally:
        engine.dispose()
    assert server.stop() == 0
    assert 1 <= after <= 2 and peak <= 2, (peak, after)


@pytest.mark.parametrize(
    ("options", "model_text", "db", "message"),
    [
        ((), "metacrm: 1\nname: x\nentities: {}\nbogus: 1\n", None, "bogus"),
        (("--busy-timeout", "-1"), None, "sqlite:///{tmp}/crm.db", "busy_timeout must be a number of seconds"),
        ((), None, "sqlite:///{tmp}/no/such/dir/crm.db", "cannot open the database"),
        (("--token-ttl", "-1"), None, None, "--token-ttl: -1.0 is not between 0 and 3600 seconds"),
    ],
)
def test_serve_refuses_before_listening(tmp_path, options, model_text, db, message):
    model = tmp_path / "model.yaml"
    if model_text is not None:
        model.write_text(model_text)
    port = free_port()
    done = cli(
        "serve",
        "--port",
        str(port),
        *options,
        env={
            "METACRM_MODEL": str(model if model_text is not None else TRADE),
            "METACRM_DB": (db or "sqlite:///{tmp}/crm.db").format(tmp=tmp_path),
        },
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
