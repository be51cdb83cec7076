"""A real streaming replica (issue 17, item 3): the Debian PostgreSQL binaries make a primary
cluster (initdb) and a hot standby of it (pg_basebackup -R) in a temporary directory, each on a
free 127.0.0.1 port, stopped at the end (also when a test fails). metacrm runs with
url=primary and read_url=standby: the funnel and the list the standby serves equal the
primary's once it has replayed the primary's WAL; with replay paused the standby's answers
lag while a request that wrote reads its write; with the primary stopped the standby still
answers; `metacrm dump` reads its snapshot off the standby; a tenant's CRM reads the tenant's
schema on the standby. Nothing is timed: catch-up is awaited by comparing WAL positions. Each
test has its own pair of clusters (a few seconds).

The binaries run as the ``postgres`` OS user when the tests run as root (PostgreSQL refuses
root). Without the binaries the tests skip, except under CI=true, where they fail."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import in_ci
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

import metacrm
from metacrm import DatabaseUnavailable
from metacrm.cli.typer_app import app

DESK = """\
metacrm: 1
name: desk
entities:
  ticket:
    title: subject
    fields:
      subject: {type: string, required: true}
      amount: {type: money}
    stages:
      initial: open
      states:
        open: {}
        doing: {}
        done: {kind: won}
        dropped: {kind: lost}
      transitions:
        open: [doing, dropped]
        doing: [done, dropped]
"""
CATCH_UP = 60.0  # seconds to wait at most for the standby to replay the primary's WAL (a deadline, not a check)


def _binaries() -> Path:
    """The directory of initdb, pg_ctl and pg_basebackup: $METACRM_PG_BIN, else the newest
    /usr/lib/postgresql/*/bin holding them."""
    given = os.environ.get("METACRM_PG_BIN")
    candidates = [Path(given)] if given else sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for path in candidates:
        if all((path / name).is_file() for name in ("initdb", "pg_ctl", "pg_basebackup")):
            return path
    reason = f"the PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) are not in {given or '/usr/lib/postgresql/*/bin'}"
    if in_ci():
        pytest.fail(f"CI requires {reason}", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Clusters:
    """A primary and its standby in ``root``, run as ``user`` (None: this process's user)."""

    def __init__(self, bin_dir: Path, root: Path, user: str | None):
        self.bin, self.root, self.user = bin_dir, root, user
        self.primary_port, self.standby_port = _free_port(), _free_port()
        self.started: list[Path] = []

    def run(self, name: str, *args: str) -> None:
        command = [str(self.bin / name), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def start(self, data: Path, port: int) -> None:
        options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} -c fsync=off"
        self.run("pg_ctl", "-D", str(data), "-l", str(data) + ".log", "-w", "-t", "60", "-o", options, "start")
        self.started.append(data)

    def stop(self, data: Path) -> None:
        if data in self.started:
            self.started.remove(data)
            self.run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")

    def up(self) -> None:
        primary, standby = self.root / "primary", self.root / "standby"
        self.run(
            "initdb", "-D", str(primary), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"
        )
        self.start(primary, self.primary_port)
        self.run(
            "pg_basebackup",
            "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
            "-D", str(standby), "-R", "-X", "stream", "--checkpoint=fast", "--no-sync",
        )  # fmt: skip
        self.start(standby, self.standby_port)

    def url(self, port: int) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def down(self) -> None:
        for data in list(self.started):
            try:
                self.stop(data)
            except Exception:  # noqa: BLE001 - stop the other one all the same
                self.run("pg_ctl", "-D", str(data), "-m", "immediate", "stop")


@pytest.fixture
def clusters():
    bin_dir = _binaries()
    user = "postgres" if os.geteuid() == 0 else None  # PostgreSQL refuses to run as root
    entry = None
    if user is not None:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            reason = "running as root, the server must run as the 'postgres' OS user, which does not exist"
            pytest.fail(f"CI requires {reason}", pytrace=False) if in_ci() else pytest.skip(reason)
    # as root, in /tmp: $TMPDIR may be a directory the postgres user cannot enter
    root = Path(tempfile.mkdtemp(prefix="metacrm-replica-", dir="/tmp" if entry is not None else None))
    if entry is not None:
        os.chown(root, entry.pw_uid, entry.pw_gid)
    made = Clusters(bin_dir, root, user)
    try:
        made.up()
        yield made
    finally:
        made.down()
        shutil.rmtree(root, ignore_errors=True)


def _scalar(url: str, sql: str, **params):
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()
    finally:
        engine.dispose()


def caught_up(clusters: Clusters) -> None:
    """Wait until the standby replayed the primary's WAL as it stands now."""
    lsn = _scalar(clusters.url(clusters.primary_port), "SELECT pg_current_wal_lsn()::text")
    deadline = time.monotonic() + CATCH_UP
    standby = clusters.url(clusters.standby_port)
    while not _scalar(standby, "SELECT pg_last_wal_replay_lsn() >= CAST(:lsn AS pg_lsn)", lsn=lsn):
        if time.monotonic() > deadline:
            pytest.fail(f"the standby did not replay up to {lsn} within {CATCH_UP:.0f} s")
        time.sleep(0.05)


def _summary(funnel: dict) -> list[tuple]:
    return [(s["stage"], s["now"], s["reached"], str(s["amount"])) for s in funnel["stages"]]


def test_a_streaming_replica_serves_the_reads(clusters: Clusters, tmp_path: Path) -> None:
    model = tmp_path / "desk.yaml"
    model.write_text(DESK, encoding="utf-8")
    primary, standby = clusters.url(clusters.primary_port), clusters.url(clusters.standby_port)
    assert _scalar(standby, "SELECT pg_is_in_recovery()") is True  # a hot standby, read-only
    crm = metacrm.connect(model, primary, read_url=standby)
    try:
        crm.migrate()  # on the primary: the standby refuses any write
        for n, stage in enumerate(["open", "doing", "done", "dropped", "doing", "done"], start=1):
            record = crm.create("ticket", {"subject": f"Ticket {n}", "amount": str(n * 10)})
            if stage != "open":
                crm.move("ticket", record["id"], "doing" if stage != "dropped" else "dropped")
            if stage == "done":
                crm.move("ticket", record["id"], "done")
        caught_up(clusters)

        # once caught up, the funnel and the list the standby serves are the primary's
        served = crm.funnel("ticket")
        with crm.primary():
            on_primary = crm.funnel("ticket")
            listed_primary = crm.find("ticket", order_by="id")
        assert crm.reads_replica and _summary(served) == _summary(on_primary)
        assert [s["now"] for s in served["stages"]] == [1, 2, 2, 1]
        assert crm.find("ticket", order_by="id") == listed_primary and len(listed_primary) == 6
        assert crm.board("ticket")["columns"][1]["count"] == 2
        from metacrm.io.dump import dump  # a backup read off the standby (REPEATABLE READ works there)

        manifest = dump(standby, tmp_path / "dump")
        assert manifest["tables"]["ticket"]["rows"] == 6 and manifest["model"]["sha256"] == crm.model.sha256

        # replay paused: the standby's answers lag, a request that wrote reads its write
        _scalar(standby, "SELECT pg_wal_replay_pause()")
        try:
            new = crm.create("ticket", {"subject": "Ticket 7", "amount": "70"})["id"]
            assert crm.count("ticket") == 6 and _summary(crm.funnel("ticket")) == _summary(on_primary)
            with crm.request():
                assert crm.count("ticket") == 6  # nothing written yet in this request: the standby
                crm.move("ticket", new, "doing")
                assert crm.count("ticket") == 7 and crm.get("ticket", new)["stage"] == "doing"
                assert [s["now"] for s in crm.funnel("ticket")["stages"]] == [1, 3, 2, 1]
            assert crm.count("ticket") == 6  # the next request reads the standby again
            cli = CliRunner().invoke(  # the command line: the same routing
                app,
                ["report", "funnel", "ticket", "-f", "json", "-m", str(model), "--db", primary, "--read-db", standby],
            )
            assert cli.exit_code == 0, cli.output
            assert [s["now"] for s in json.loads(cli.output)["stages"]] == [1, 2, 2, 1]
        finally:
            _scalar(standby, "SELECT pg_wal_replay_resume()")
        caught_up(clusters)
        assert crm.count("ticket") == 7
        with crm.primary():
            on_primary = crm.funnel("ticket")
        assert _summary(crm.funnel("ticket")) == _summary(on_primary)

        # the primary stopped: the standby still answers the reads, the primary's fail
        clusters.stop(clusters.root / "primary")
        assert _summary(crm.funnel("ticket")) == _summary(on_primary)
        assert len(crm.find("ticket")) == 7
        with pytest.raises(DatabaseUnavailable), crm.primary():
            crm.count("ticket")
    finally:
        crm.close()


def test_a_tenant_reads_its_schema_on_the_standby(clusters: Clusters, tmp_path: Path) -> None:
    from metacrm.runtime import tenants
    from metacrm.runtime.engine import make_engine

    model = tmp_path / "desk.yaml"
    model.write_text(DESK, encoding="utf-8")
    primary, standby = clusters.url(clusters.primary_port), clusters.url(clusters.standby_port)
    engine = make_engine(primary)
    try:
        for name in ("acme", "beta"):
            tenants.create(engine, name)
            with metacrm.connect(model, engine, tenant=name) as crm:
                crm.migrate()
                for n in range(3 if name == "acme" else 1):
                    crm.create("ticket", {"subject": f"{name} {n}"})
        caught_up(clusters)
        acme = metacrm.connect(model, engine, tenant="acme", read_url=standby)
        beta = metacrm.connect(model, engine, tenant="beta", read_url=standby)
        try:
            assert (acme.count("ticket"), beta.count("ticket")) == (3, 1)  # each its own schema, on the standby
            _scalar(standby, "SELECT pg_wal_replay_pause()")
            try:
                acme.create("ticket", {"subject": "acme 3"})
                assert acme.count("ticket") == 3  # the standby lags: it served the read
                with acme.primary():
                    assert acme.count("ticket") == 4
            finally:
                _scalar(standby, "SELECT pg_wal_replay_resume()")
            caught_up(clusters)
            assert [t["subject"] for t in acme.find("ticket", order_by="id")][-1] == "acme 3"
            assert [t["subject"] for t in beta.find("ticket")] == ["beta 0"]
        finally:
            acme.close()
            beta.close()
    finally:
        engine.dispose()
