"""Reads from a replica (issue 17, item 3), the routing on SQLite and PostgreSQL without
replication: the "replica" is a second database (an SQLite file, another PostgreSQL schema)
holding what the primary held when the two were set up alike, so a read that answers with
the primary's later writes went to the primary and one that does not went to the replica.
The streaming replica itself: tests/test_replica_streaming.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import pg_schema_url
from typer.testing import CliRunner

import metacrm
from metacrm import DatabaseUnavailable, NotFound, SetupError
from metacrm.runtime.crm import CRM
from metacrm.runtime.replica import READS

DESK = """\
metacrm: 1
name: desk
entities:
  ticket:
    owner: true
    title: subject
    fields:
      subject: {type: string, required: true}
      amount: {type: money}
      kind:
        type: choice
        options: [bug, question]
    links:
      watchers: {to: user, many: true}
    search: [subject]
    stages:
      initial: open
      states:
        open: {}
        done: {kind: won}
        dropped: {kind: lost}
      transitions:
        open: [done, dropped]
roles:
  admin:
    "*": all
"""


def set_up(model: Path, url: str) -> None:
    """The state both databases start from: the model, a user and two tickets."""
    with metacrm.connect(model, url) as crm:
        crm.migrate()
        crm.add_user("ann", roles=["admin"])
        crm.create("ticket", {"subject": "Printer jam", "amount": "10", "kind": "bug", "owner": "ann"})
        crm.create("ticket", {"subject": "Password reset", "amount": "5", "kind": "question"})


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "desk.yaml"
    path.write_text(DESK, encoding="utf-8")
    return path


@pytest.fixture
def urls(db_url, tmp_path: Path, model: Path):
    """(primary, replica): two databases of the fixture's dialect, set up alike."""
    if db_url.startswith("sqlite"):
        replica = f"sqlite:///{tmp_path / 'replica.db'}"
        set_up(model, db_url)
        set_up(model, replica)
        yield db_url, replica
        return
    with pg_schema_url() as replica:
        set_up(model, db_url)
        set_up(model, replica)
        yield db_url, replica


@pytest.fixture
def crm(model: Path, urls):
    crm = metacrm.connect(model, urls[0], read_url=urls[1])
    yield crm
    crm.close()


def test_plain_reads_go_to_the_replica_and_writes_to_the_primary(crm) -> None:
    new = crm.create("ticket", {"subject": "Printer on fire", "amount": "100", "kind": "bug"})
    assert new["id"] == 3  # written on the primary...
    assert crm.count("ticket") == 2  # ...which the replica has not (yet) seen
    assert [t["subject"] for t in crm.find("ticket", order_by="id")] == ["Printer jam", "Password reset"]
    with pytest.raises(NotFound):
        crm.get("ticket", 3)
    assert crm.search("printer") and all(hit["id"] != 3 for hit in crm.search("printer"))
    assert crm.funnel("ticket")["stages"][0]["now"] == 2
    assert crm.board("ticket")["columns"][0]["count"] == 2
    groups = {row["value"]: row["count"] for row in crm.report_group("ticket", "kind")["rows"]}
    assert groups == {"bug": 1, "question": 1}
    with crm.primary():  # the primary has it
        assert crm.count("ticket") == 3 and crm.get("ticket", 3)["subject"] == "Printer on fire"
        assert crm.funnel("ticket")["stages"][0]["now"] == 3
    assert crm.count("ticket") == 2  # and the block's end sends reads back to the replica


RECORD_READS = {
    "get": lambda crm, rid: crm.get("ticket", rid),
    "card": lambda crm, rid: crm.card("ticket", rid),
    "history": lambda crm, rid: crm.history("ticket", rid),
    "timeline": lambda crm, rid: crm.timeline("ticket", rid),
    "allowed_moves": lambda crm, rid: crm.allowed_moves("ticket", rid),
    "files": lambda crm, rid: crm.files("ticket", rid),
}


def test_each_read_of_a_record_reads_the_replica(crm) -> None:
    """A record only the primary holds is not found by the reads of one record, until they
    are told to read the primary."""
    rid = crm.create("ticket", {"subject": "Only on the primary"})["id"]
    for name, read in RECORD_READS.items():
        with pytest.raises(NotFound):
            read(crm, rid)
            pytest.fail(f"{name} read the primary")
        with crm.primary():
            read(crm, rid)
    assert crm.titles("ticket", [rid]) == {} and crm.search("primary") == []
    with crm.primary():
        assert crm.titles("ticket", [rid]) == {rid: "Only on the primary"} and crm.search("primary")


def test_a_write_decides_on_the_primary(crm) -> None:
    """Records the replica has not seen are updated, moved, deleted: a write and the reads
    it makes first (through get, find...) go to the primary."""
    new = crm.create("ticket", {"subject": "Scanner", "kind": "bug"})["id"]
    assert crm.update("ticket", new, {"amount": "7"})["amount"] == 7
    assert crm.move("ticket", new, "done")["stage"] == "done"
    crm.add_user("bob", roles=["admin"])
    assert crm.as_user("bob").user == "bob"  # a user just made acts at once (looked up on the primary)
    assert crm.user_info("bob")["login"] == "bob" and "bob" in [u["login"] for u in crm.users()]
    assert crm.update("ticket", new, {"owner": "bob"})["owner"] == "bob"
    assert crm.link("ticket", new, "watchers", "bob")["watchers"] == ["bob"]  # reads the record first
    assert crm.link("ticket", new, "watchers", "ann")["watchers"] == ["bob", "ann"]  # the list it adds to
    assert crm.delete("ticket", new)
    with crm.primary():
        assert crm.count("ticket") == 2


def test_a_request_reads_its_own_writes(crm) -> None:
    with crm.request():
        assert crm.count("ticket") == 2 and crm.reads_replica  # nothing written yet: the replica
        created = crm.create("ticket", {"subject": "Monitor", "kind": "question"})
        assert not crm.reads_replica
        assert crm.get("ticket", created["id"])["subject"] == "Monitor"
        assert crm.count("ticket") == 3 and crm.funnel("ticket")["stages"][0]["now"] == 3
        with crm.request():  # nested: the same request
            assert crm.count("ticket") == 3
    assert crm.count("ticket") == 2  # each call outside a request is its own
    with crm.request():
        assert crm.count("ticket") == 2


def test_concurrent_requests_keep_their_own_state(crm) -> None:
    """A request's write sends its own later reads to the primary, never another thread's
    request running at the same time (each request is a ContextVar of its thread or task)."""
    import threading

    written, checked = threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def writer() -> None:
        with crm.request():
            crm.create("ticket", {"subject": "Concurrent"})
            written.set()
            checked.wait(10)
            seen["writer"] = crm.count("ticket")

    def reader() -> None:
        with crm.request():
            written.wait(10)
            seen["reader"] = crm.count("ticket")
            checked.set()

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert seen == {"writer": 3, "reader": 2}


def test_a_transaction_reads_the_primary(crm) -> None:
    with crm.transaction():
        assert crm.count("ticket") == 2 and not crm.reads_replica
        crm.create("ticket", {"subject": "Keyboard"})
        assert crm.count("ticket") == 3 and crm.find("ticket", where="subject = 'Keyboard'")
    assert crm.count("ticket") == 2


def test_views_keep_the_replica_and_only_the_owner_disposes_it(crm, monkeypatch) -> None:
    crm.create("ticket", {"subject": "Mouse"})
    view = crm.as_user("ann")
    assert view.read_engine is crm.read_engine and view.count("ticket") == 2
    with view.primary():
        assert view.count("ticket") == 3
    disposed: list[str] = []
    monkeypatch.setattr(type(crm.read_engine), "dispose", lambda engine, *a, **k: disposed.append(str(engine.url)))
    view.close()
    assert disposed == []
    crm.close()
    assert sorted(disposed) == sorted([str(crm.engine.url), str(crm.read_engine.url)])


def test_the_hosts_engine_on_the_replica_is_shared_and_kept(model: Path, urls, monkeypatch) -> None:
    """read_url may be the host's own engine on the replica: CRMs share its pool and never
    dispose it."""
    from sqlalchemy import create_engine

    replica = create_engine(urls[1])
    disposed: list[str] = []
    real = type(replica).dispose
    monkeypatch.setattr(type(replica), "dispose", lambda engine, *a, **k: disposed.append(str(engine.url)))
    crms = [metacrm.connect(model, urls[0], read_url=replica) for _ in range(2)]
    try:
        crms[0].create("ticket", {"subject": "Tablet"})
        assert [crm.count("ticket") for crm in crms] == [2, 2]
        assert all(crm.read_engine is replica for crm in crms)
    finally:
        for crm in crms:
            crm.close()
    assert str(replica.url) not in disposed and str(urls[0]) in [str(url) for url in disposed]
    real(replica)


def test_every_read_named_is_a_method_and_every_other_operation_reads_the_primary() -> None:
    public = {name for name in dir(CRM) if not name.startswith("_") and callable(getattr(CRM, name))}
    assert READS <= public, READS - public
    for name in ("create", "update", "move", "delete", "tick", "deliver", "user_info", "migrate", "recorded_model"):
        assert getattr(CRM, name)._on_primary, name
    assert not hasattr(CRM.find, "_on_primary") and not hasattr(CRM.funnel, "_on_primary")


def test_a_subclass_operation_reads_the_primary(model: Path, urls) -> None:
    """A host application's own operation on a subclass of CRM reads the primary: what it
    finds is what it then writes on."""
    from metacrm.runtime.engine import make_engine
    from metacrm.runtime.replica import open_replica

    class Desk(CRM):
        def close_open(self) -> int:
            found = self.find("ticket", where="stage = 'open'")
            for ticket in found:
                self.move("ticket", ticket["id"], "done")
            return len(found)

    engine = make_engine(urls[0])
    desk = Desk(metacrm.load_model(model), engine)
    desk.read_engine, desk._owns_read_engine = open_replica(engine, urls[1])
    try:
        desk.create("ticket", {"subject": "Only on the primary"})
        assert desk.count("ticket", "stage = 'open'") == 2  # the replica's
        assert desk.close_open() == 3  # the primary's three open tickets
    finally:
        desk.close()


def test_the_replica_serves_the_crms_tenant(model: Path, tmp_path: Path) -> None:
    """SQLite: a tenant's replica is its file beside the replica's (PostgreSQL, where it is
    the tenant's schema on the standby: tests/test_replica_streaming.py)."""
    from metacrm.runtime import tenants
    from metacrm.runtime.engine import make_engine

    primary, replica = f"sqlite:///{tmp_path / 'crm.db'}", f"sqlite:///{tmp_path / 'copy.db'}"
    for url in (primary, replica):
        engine = make_engine(url)
        tenants.create(engine, "acme")
        engine.dispose()
        with metacrm.connect(model, url, tenant="acme") as crm:
            crm.migrate()
            crm.create("ticket", {"subject": "Acme's first"})
    with metacrm.connect(model, primary, tenant="acme", read_url=replica) as crm:
        assert Path(crm.read_engine.url.database).name == "copy.acme.db"
        crm.create("ticket", {"subject": "Acme's second"})
        assert crm.count("ticket") == 1
        with crm.primary():
            assert crm.count("ticket") == 2
    with metacrm.connect(model, primary) as root:  # the database itself holds no ticket table
        assert root.recorded_model() is None


def test_the_model_version_check_reads_the_primary(model: Path, urls) -> None:
    """connect() then the first operation check the version the primary holds: a replica
    still on the previous model does not make a migrated database look stale."""
    changed = model.read_text(encoding="utf-8").replace(
        "      amount: {type: money}\n", "      amount: {type: money}\n      note: {type: text}\n"
    )
    model.write_text(changed, encoding="utf-8")
    with metacrm.connect(model, urls[0]) as crm:
        crm.migrate()
    with metacrm.connect(model, urls[0], read_url=urls[1]) as crm:
        assert crm.recorded_model()["sha256"] == crm.model.sha256
        crm.create("ticket", {"subject": "With a note", "note": "x"})  # writes pass the check


def test_a_replica_of_another_dialect_or_in_memory_is_refused(model: Path, urls, tmp_path: Path) -> None:
    primary = urls[0]
    other = (
        "postgresql+psycopg://nobody@127.0.0.1:1/none"
        if primary.startswith("sqlite")
        else f"sqlite:///{tmp_path / 'x.db'}"
    )
    with pytest.raises(SetupError) as refused:
        metacrm.connect(model, primary, read_url=other)
    message = str(refused.value)
    assert "\n" not in message and "read_url" in message and "must be" in message
    if primary.startswith("sqlite"):
        with pytest.raises(SetupError, match="in-memory"):
            metacrm.connect(model, primary, read_url="sqlite:///:memory:")
    with pytest.raises(DatabaseUnavailable, match="not a database URL"):
        metacrm.connect(model, primary, read_url="nonsense")


def test_a_replica_that_is_down_fails_the_reads_naming_it(model: Path, urls, tmp_path: Path) -> None:
    """No silent fallback: the reads fail naming the replica, the writes go on."""
    down = (
        f"sqlite:///{tmp_path / 'missing' / 'replica.db'}"
        if urls[0].startswith("sqlite")
        else "postgresql+psycopg://postgres@127.0.0.1:1/test"
    )
    with metacrm.connect(model, urls[0], read_url=down) as crm:
        with pytest.raises(DatabaseUnavailable) as failed:
            crm.count("ticket")
        message = str(failed.value)
        assert message.startswith("read replica: cannot open the database") and (
            "missing" in message or ":1/test" in message
        )
        assert "\n" not in message
        assert crm.create("ticket", {"subject": "Still written"})["id"] == 3
        with crm.primary():
            assert crm.count("ticket") == 3


def test_a_replica_without_the_models_tables_is_named(model: Path, urls, tmp_path: Path) -> None:
    """A replica that has not replayed a migration yet (here: one that never had the model)
    fails the reads naming it, in one line, rather than with the driver's traceback."""
    from contextlib import nullcontext

    empty = pg_schema_url() if urls[0].startswith("postgresql") else nullcontext(f"sqlite:///{tmp_path / 'empty.db'}")
    with empty as replica, metacrm.connect(model, urls[0], read_url=replica) as crm:
        with pytest.raises(DatabaseUnavailable) as failed:
            crm.find("ticket")
        message = str(failed.value)
        assert message.startswith("read replica ") and "does not hold this model's tables yet" in message
        assert "\n" not in message
        assert crm.create("ticket", {"subject": "Written"})["id"] == 3


# -- the command line ---------------------------------------------------------------------------
def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_cli_read_db_root_option_and_environment(model: Path, urls, monkeypatch) -> None:
    from metacrm.cli.typer_app import app

    monkeypatch.delenv("METACRM_READ_DB", raising=False)
    primary, replica = urls
    runner = CliRunner()
    base = ["--model", str(model), "--db", primary]
    made = runner.invoke(app, ["--read-db", replica, "create", "ticket", "subject=Webcam", *base])
    assert made.exit_code == 0, made.output
    listed = runner.invoke(app, ["--read-db", replica, "list", "ticket", "-f", "csv", *base])
    assert listed.exit_code == 0 and "Webcam" not in listed.output and "Printer jam" in listed.output
    plain = runner.invoke(app, ["list", "ticket", "-f", "csv", *base])  # the option is per command line
    assert plain.exit_code == 0 and "Webcam" in plain.output
    after = runner.invoke(app, ["search", "webcam", *base, "--read-db", replica])  # after the command, as --db
    assert after.exit_code == 0 and "Webcam" not in after.output
    assert "Webcam" in runner.invoke(app, ["search", "webcam", *base]).output
    monkeypatch.setenv("METACRM_READ_DB", replica)
    funnel = runner.invoke(app, ["report", "funnel", "ticket", "-f", "json", *base])
    assert funnel.exit_code == 0, funnel.output
    assert json.loads(funnel.output)["stages"][0]["now"] == 2  # the replica's two open tickets, not three
    other = "sqlite:///x.db" if primary.startswith("postgresql") else "postgresql://nobody@127.0.0.1:1/none"
    refused = runner.invoke(app, ["--read-db", other, "list", "ticket", *base])
    assert refused.exit_code == 2 and len(_lines(refused.output)) == 1 and "read_url" in refused.output


def test_group_commands_take_read_db_and_tenant(model: Path, urls, tmp_path: Path, monkeypatch) -> None:
    """The commands of a group (`report funnel`, `user list`...) take --read-db and --tenant
    after the command, as every command with --db does."""
    from metacrm.cli.typer_app import app
    from metacrm.runtime import tenants
    from metacrm.runtime.engine import make_engine

    monkeypatch.delenv("METACRM_READ_DB", raising=False)
    monkeypatch.delenv("METACRM_TENANT", raising=False)
    primary, replica = urls
    with metacrm.connect(model, primary) as crm:
        crm.create("ticket", {"subject": "Not yet replicated"})
    runner = CliRunner()
    base = ["-m", str(model), "--db", primary]
    funnel = runner.invoke(app, ["report", "funnel", "ticket", "-f", "json", *base, "--read-db", replica])
    assert funnel.exit_code == 0, funnel.output
    assert json.loads(funnel.output)["stages"][0]["now"] == 2
    assert (
        json.loads(runner.invoke(app, ["report", "funnel", "ticket", "-f", "json", *base]).output)["stages"][0]["now"]
        == 3
    )
    if primary.startswith("sqlite"):  # a tenant: a file beside the database (PostgreSQL: tests/test_tenants.py)
        engine = make_engine(primary)
        tenants.create(engine, "acme")
        engine.dispose()
        with metacrm.connect(model, primary, tenant="acme") as crm:
            crm.migrate()
            crm.add_user("zed", roles=["admin"])
        users = runner.invoke(app, ["user", "list", "-f", "json", *base, "--tenant", "acme"])
        assert users.exit_code == 0, users.output
        assert [u["login"] for u in json.loads(users.output)] == ["zed"]


def test_cli_dump_reads_the_replica(model: Path, urls, tmp_path: Path, monkeypatch) -> None:
    """`metacrm dump` is a read: with --read-db its snapshot is the replica's (REPEATABLE READ
    works on a hot standby), keeping a backup's load off the database."""
    from metacrm.cli.typer_app import app

    monkeypatch.delenv("METACRM_READ_DB", raising=False)
    primary, replica = urls
    with metacrm.connect(model, primary) as crm:
        crm.create("ticket", {"subject": "Not yet replicated"})
    runner = CliRunner()
    for name, extra, rows in (("from-replica", ["--read-db", replica], 2), ("from-primary", [], 3)):
        out = tmp_path / name
        done = runner.invoke(app, ["dump", str(out), "--db", primary, *extra])
        assert done.exit_code == 0, done.output
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        tickets = [info["rows"] for table, info in manifest["tables"].items() if table.endswith("ticket")]
        assert tickets == [rows], manifest["tables"]


def test_cli_fast_path_honours_read_db(model: Path, urls, monkeypatch, capsys) -> None:
    """The typer-free path of get/list/create/move takes the root option before the command
    and $METACRM_READ_DB."""
    from metacrm.cli import fast
    from metacrm.cli.main import main

    monkeypatch.delenv("METACRM_READ_DB", raising=False)
    monkeypatch.delenv("METACRM_LOG", raising=False)
    primary, replica = urls
    with metacrm.connect(model, primary) as crm:
        crm.create("ticket", {"subject": "Headset"})
    base = ["--model", str(model), "--db", primary, "-f", "csv"]
    for line in (["--read-db", replica, "list", "ticket", *base], [f"--read-db={replica}", "list", "ticket", *base]):
        assert fast.parse(line) is not None and fast.root_options(line)[0] == replica
    assert fast.parse(["--read-db"]) is None and fast.parse(["--read-dbx", "u", "list", "ticket"]) is None

    def run(args: list[str]) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["metacrm", *args])
        with pytest.raises(SystemExit) as stop:
            main()
        return stop.value.code or 0, capsys.readouterr().out

    code, out = run(["--read-db", replica, "list", "ticket", *base])
    assert code == 0 and "Headset" not in out and "Printer jam" in out
    code, out = run(["list", "ticket", *base])
    assert code == 0 and "Headset" in out
    line = ["list", "ticket", *base, "--read-db", replica]  # after the command, as --db
    assert fast.parse(line) is not None
    code, out = run(line)
    assert code == 0 and "Headset" not in out and "Printer jam" in out
    monkeypatch.setenv("METACRM_READ_DB", replica)
    code, out = run(["get", "ticket", "3", *base])
    assert code == 1  # the replica has no ticket 3
    code, out = run(["get", "ticket", "1", *base])
    assert code == 0 and "Printer jam" in out


def test_serve_refuses_a_replica_that_does_not_answer(model: Path, urls, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from metacrm.cli.typer_app import app

    down = (
        f"sqlite:///{tmp_path / 'missing' / 'r.db'}"
        if urls[0].startswith("sqlite")
        else "postgresql+psycopg://postgres@127.0.0.1:1/test"
    )
    result = CliRunner().invoke(app, ["serve", "--read-db", down, "--model", str(model), "--db", urls[0]])
    assert result.exit_code == 2 and "read replica: cannot open the database" in result.output
    assert len(_lines(result.output)) == 1
