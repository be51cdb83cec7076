"""Every tenant in turn (issue 17): ``migrate --all-tenants`` migrates each tenant to its own model
under its own lock and in its own transaction, goes on after one that fails (which keeps every
row) and exits 1 naming it; ``tick`` and ``deliver --all-tenants`` fire and send per tenant. Both
dialects."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import dump_database
from sqlalchemy import text
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.runtime import tenants
from metacrm.runtime.engine import make_engine

ROOT = Path(__file__).resolve().parents[1]
TRADE = ROOT / "examples" / "trade.yaml"
LOGISTICS = ROOT / "examples" / "logistics.yaml"
T0 = dt.datetime(2030, 3, 4, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def three(db_url):
    """Three fresh tenant names, in name order (schemas are database-wide on PostgreSQL: unique
    per test), whose schemas are dropped afterwards whatever the test did."""
    stem = f"t{uuid.uuid4().hex[:10]}"
    made = [f"{stem}_{n}" for n in ("a", "b", "c")]
    yield made
    if db_url.startswith("postgresql"):
        engine = make_engine(db_url)
        with engine.begin() as conn:
            for name in made:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        engine.dispose()


def _cli(*args: str, code: int = 0, env: dict | None = None):
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    assert result.exit_code == code, (args, result.output)
    return result


def _lines(result) -> list[str]:
    return result.stdout.strip().splitlines()


def _variant(tmp_path: Path, name: str, old: str, new: str, source: Path = TRADE) -> Path:
    """A copy of an example with one line changed (a new version of its model)."""
    body = source.read_text(encoding="utf-8")
    assert old in body
    path = tmp_path / name
    path.write_text(body.replace(old, new, 1), encoding="utf-8")
    return path


CONTACT = "      contact_person: {type: string, label: Контактное лицо}\n"
CITY = "      city: {type: string, label: Город, index: true, max_length: 100}"
UNIQUE_CITY = "      city: {type: string, label: Город, index: true, max_length: 100, unique: true}"
NOTES = "      notes: {type: text, label: Заметки}\n"
KPP = NOTES + "      kpp: {type: string, label: КПП}\n"


def _made(db_url: str, names, model=TRADE) -> None:
    """The tenants ``names``, each migrated to ``model``."""
    engine = make_engine(db_url)
    loaded = metacrm.load_model(model)
    try:
        for name in names:
            tenants.create(engine, name)
            with metacrm.connect(loaded, db_url, tenant=name) as crm:
                crm.migrate()
    finally:
        engine.dispose()


def _recorded(db_url: str, name: str) -> str:
    """The sha256 of the model tenant ``name`` records."""
    listed = json.loads(_cli("tenant", "list", "--db", db_url, "--format", "json").stdout)
    return next(t["sha256"] for t in listed if t["tenant"] == name)


def test_migrate_all_goes_on_after_a_tenant_whose_data_refuses_the_new_model(db_url, three, tmp_path):
    a, b, c = three
    _made(db_url, three)
    with metacrm.connect(TRADE, db_url, tenant=b) as crm:  # two clients of one city: a unique city is refused
        crm.create("client", {"name": "Ромашка", "city": "Омск"})
        crm.create("client", {"name": "Лютик", "city": "Омск"})
        crm.add_user("ann", roles=["manager"])
        engine = crm.engine
        before = dump_database(engine)
    new = _variant(tmp_path, "trade.yaml", CITY, UNIQUE_CITY)
    sha = metacrm.load_model(new).sha256[:12]

    result = _cli("migrate", "--all-tenants", "--model", new, "--db", db_url, code=1)
    lines = _lines(result)
    assert [line.split(":")[0] for line in lines] == [a, b, c]  # one line per tenant, in name order
    for line in (lines[0], lines[2]):
        assert " steps applied (" in line and line.endswith("record model"), line
    assert lines[1].startswith(f"{b}: FAILED: migration refused (1 step): client.city: needs data: ")
    assert "'Омск' ×2" in lines[1]
    assert result.stderr.strip() == f"error: 1 of 3 tenants failed: {b}"
    assert _recorded(db_url, a) == _recorded(db_url, c) == sha != _recorded(db_url, b)
    with metacrm.connect(TRADE, db_url, tenant=b) as crm:
        assert dump_database(crm.engine) == before  # its old schema and every row
        assert crm.count("client") == 2

    again = _cli("migrate", "--all-tenants", "--model", new, "--db", db_url, "--format", "json", code=1)
    results = json.loads(again.stdout)
    assert [(r["tenant"], r["status"]) for r in results] == [(a, "up to date"), (b, "failed"), (c, "up to date")]
    assert results[1]["error"].startswith("migration refused") and results[1]["result"] is None
    assert results[0]["model"] == "trade" and results[0]["result"]["steps"] == []


def test_a_failure_while_applying_rolls_that_tenant_back_alone(db_url, three, tmp_path, monkeypatch):
    """A step that fails once the DDL of the others has run (here: recording the model of the
    second tenant): that tenant's transaction is rolled back whole, the others are migrated."""
    from metacrm.migrate import apply

    a, b, c = three
    _made(db_url, three)
    with metacrm.connect(TRADE, db_url, tenant=b) as crm:
        crm.create("client", {"name": "Ромашка"})
        before = dump_database(crm.engine)
    real, calls = apply.record, []

    def record(conn, model, **kwargs):
        calls.append(model.name)
        if len(calls) == 2:
            raise RuntimeError("the disk is full")
        return real(conn, model, **kwargs)

    monkeypatch.setattr(apply, "record", record)
    new = metacrm.load_model(_variant(tmp_path, "trade.yaml", NOTES, KPP))
    heard = []  # each result as its turn ends, its status settled
    results = tenants.migrate_all(db_url, None, new, on_result=lambda r: heard.append((r.tenant, r.status)))
    assert [(r.tenant, r.status) for r in results] == heard == [(a, "applied"), (b, "failed"), (c, "applied")]
    assert results[1].error == "RuntimeError: the disk is full"  # not a metacrm error: named by its class
    assert [step.kind for step in results[0].value] == ["add_field", "record_model"]
    with metacrm.connect(TRADE, db_url, tenant=b) as crm:
        assert dump_database(crm.engine) == before
    with metacrm.connect(new, db_url, tenant=c) as crm:
        assert crm.create("client", {"name": "Новый", "kpp": "770101001"})["kpp"] == "770101001"


def test_dry_run_plans_each_tenant_and_changes_nothing(db_url, three, tmp_path):
    a, b, c = three
    _made(db_url, three)
    with metacrm.connect(TRADE, db_url, tenant=c) as crm:
        crm.create("client", {"name": "Ромашка", "city": "Омск"})
        crm.create("client", {"name": "Лютик", "city": "Омск"})
    new = _variant(tmp_path, "trade.yaml", CITY, UNIQUE_CITY)
    shas = [_recorded(db_url, name) for name in three]
    result = _cli("migrate", "--all-tenants", "--dry-run", "--model", new, "--db", db_url, code=1)
    lines = _lines(result)
    assert lines[0].startswith(f"{a}: ") and " steps to apply (dry run) (" in lines[0]
    assert lines[1].startswith(f"{b}: ") and " steps to apply (dry run) (" in lines[1]
    assert lines[2].startswith(f"{c}: FAILED: migration refused (1 step): client.city")
    assert result.stderr.strip() == f"error: 1 of 3 tenants failed: {c}"
    assert [_recorded(db_url, name) for name in three] == shas
    planned = json.loads(
        _cli("migrate", "--all-tenants", "--dry-run", "-m", new, "--db", db_url, "-f", "json", code=1).stdout
    )
    assert planned[0]["status"] == "planned" and planned[0]["result"]["refused"] == []
    assert planned[2]["status"] == "failed" and planned[2]["error"].startswith("migration refused (1 step)")
    assert planned[2]["result"]["refused"][0].startswith("client.city: needs data")  # the plan that says why
    assert any(step["sql"] for step in planned[0]["result"]["steps"])  # the plan with its SQL


def test_a_tenants_file_gives_each_tenant_its_own_model(db_url, three, tmp_path):
    a, b, ghost = three
    file = tmp_path / "tenants.yaml"
    file.write_text(f"tenants:\n  {a}: {TRADE}\n  {b}: {LOGISTICS}\n  {ghost}: {TRADE}\n", encoding="utf-8")
    # `tenant create` takes the model the file gives (no --model: the default model.yaml is not there)
    assert _cli("tenant", "create", a, "--db", db_url, "--tenants-file", file).stdout.startswith(
        f"created tenant {a}: trade ("
    )
    env = {"METACRM_TENANTS_FILE": str(file)}
    assert _cli("tenant", "create", b, "--db", db_url, env=env).stdout.startswith(f"created tenant {b}: logistics (")
    listed = json.loads(_cli("tenant", "list", "--db", db_url, "--format", "json").stdout)
    assert {t["tenant"]: t["model"] for t in listed} == {a: "trade", b: "logistics"}

    result = _cli("migrate", "--all-tenants", "--db", db_url, "--tenants-file", file)
    assert _lines(result) == [f"{a}: up to date", f"{b}: up to date"]
    assert f"note: the tenants file lists {ghost}, which is not a tenant of the database" in result.stderr

    # a new version of one business's model: only its tenant migrates
    newer = _variant(tmp_path, "logistics.yaml", CONTACT, CONTACT + "      vat: {type: string}\n", LOGISTICS)
    file.write_text(f"tenants:\n  {a}: {TRADE}\n  {b}: {newer.name}\n", encoding="utf-8")
    result = _cli("migrate", "--all-tenants", "--db", db_url, env=env)
    lines = _lines(result)
    assert lines[0] == f"{a}: up to date"
    assert lines[1].startswith(f"{b}: 2 steps applied (") and lines[1].endswith("): add field, record model")
    assert _recorded(db_url, b) == metacrm.load_model(newer).sha256[:12]

    # a tenant of a model that does not load fails alone, said as FILE:LINE:COL
    broken = tmp_path / "broken.yaml"
    broken.write_text("metacrm: 1\nname: broken\nentities: 7\n", encoding="utf-8")
    file.write_text(f"tenants:\n  {a}: broken.yaml\n  {b}: {newer.name}\n", encoding="utf-8")
    result = _cli("migrate", "--all-tenants", "--db", db_url, env=env, code=1)
    lines = _lines(result)
    assert lines[0].startswith(f"{a}: FAILED: ") and lines[1] == f"{b}: up to date"
    assert lines[0].endswith("broken.yaml:3:11: error: entities: expected a mapping, got the number 7")
    assert result.stderr.strip().endswith(f"1 of 2 tenants failed: {a}")


def test_all_tenants_usage(db_url, three, tmp_path):
    a = three[0]
    _made(db_url, [a])
    common = ["--model", TRADE, "--db", db_url]
    for command in (["migrate"], ["tick"], ["deliver"]):
        refused = _cli(*command, "--all-tenants", "--tenant", a, *common, code=2)
        assert "--all-tenants runs every tenant: leave out --tenant" in refused.stderr
        refused = _cli(*command, "--all-tenants", *common, env={"METACRM_TENANT": a}, code=2)
        assert "leave out --tenant (and $METACRM_TENANT)" in refused.stderr
    assert "prints table or json" in _cli("deliver", "--all-tenants", *common, "-f", "csv", code=2).stderr
    bad = tmp_path / "tenants.yaml"
    bad.write_text("tenants:\n  Bad: x.yaml\n", encoding="utf-8")
    assert f"{bad}:2:3: error:" in _cli("migrate", "--all-tenants", *common, "--tenants-file", bad, code=2).stderr
    if db_url.startswith("sqlite"):
        missing = f"sqlite:///{tmp_path / 'none.db'}"
        assert "no database at" in _cli("migrate", "--all-tenants", "-m", TRADE, "--db", missing, code=1).stderr
        assert not (tmp_path / "none.db").exists()


def test_no_tenants_says_so(db_url):
    if db_url.startswith("sqlite"):
        Path(db_url.removeprefix("sqlite:///")).touch()  # a database, empty: no tenants in it
    assert _lines(_cli("migrate", "--all-tenants", "--model", TRADE, "--db", db_url)) == ["(no tenants)"]
    assert json.loads(_cli("tick", "--all-tenants", "--model", TRADE, "--db", db_url, "-f", "json").stdout) == []


def test_a_migration_lock_held_in_one_tenant_does_not_block_another(db_url, three, tmp_path):
    """Tenant A's lock is held (by another session, or a lock row of another process); the
    migration of every tenant waits for A's alone, gives A up, and migrates B."""
    from metacrm.migrate.lock import holder_text, pg_lock, sqlite_lock

    a, b = three[:2]
    _made(db_url, [a, b])
    other = make_engine(db_url)  # another session than the migration's
    held = tenants.for_tenant(other, a)
    new = metacrm.load_model(_variant(tmp_path, "trade.yaml", NOTES, KPP))
    try:
        if other.dialect.name == "postgresql":
            with held.connect() as conn, conn.begin():
                pg_lock(conn, "someone else", wait=0)
                results = tenants.migrate_all(db_url, None, new, lock_wait=0.2)
        else:
            with sqlite_lock(held, holder_text("someone"), wait=0):
                results = tenants.migrate_all(db_url, None, new, lock_wait=0.2)
    finally:
        held.dispose()
        other.dispose()
    assert [(r.tenant, r.status) for r in results] == [(a, "failed"), (b, "applied")]
    assert results[0].error.startswith("another migration is running: the migration lock is held by ")
    assert "someone" in results[0].error
    assert _recorded(db_url, b) == new.sha256[:12] != _recorded(db_url, a)
    # the lock released, A migrates
    assert [r.status for r in tenants.migrate_all(db_url, None, new)] == ["applied", "up to date"]


# -- tick and deliver -----------------------------------------------------------------------------

LATE = """\
metacrm: 1
name: late_{which}
webhooks: {{allow_private: true}}  # the test server listens on 127.0.0.1
entities:
  task:
    title: title
    fields:
      title: {{type: string, required: true}}
      due: {{type: datetime}}
automations:
  late:
    when: {{entity: task, overdue: due}}
    do:
      - notify: {{to: ["{url}/{which}"], template: "late: {{title}}"}}
"""


@pytest.fixture
def hooks(monkeypatch):
    """A webhook receiver on 127.0.0.1: (its URL, the requests it got)."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            got.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body)})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", got
    server.shutdown()
    server.server_close()


def test_tick_and_deliver_run_per_tenant(db_url, three, tmp_path, hooks):
    """A and B hold different models (each posting to its own path); A has an overdue task, B
    none; C is registered but was never migrated, so its turn fails and the others still run."""
    url, got = hooks
    a, b, c = three
    models = {}
    for name, which in ((a, "a"), (b, "b")):
        models[name] = tmp_path / f"late_{which}.yaml"
        models[name].write_text(LATE.format(which=which, url=url), encoding="utf-8")
    file = tmp_path / "tenants.yaml"
    file.write_text(f"tenants:\n  {a}: late_a.yaml\n  {b}: late_b.yaml\n", encoding="utf-8")
    _made(db_url, [a], models[a])
    _made(db_url, [b], models[b])
    engine = make_engine(db_url)
    tenants.create(engine, c)
    engine.dispose()
    for name in (a, b):
        with metacrm.connect(models[name], db_url, tenant=name) as crm:
            crm.create("task", {"title": f"{name} later", "due": T0 + dt.timedelta(days=1)})
            if name == a:
                crm.create("task", {"title": "Позвонить", "due": T0 - dt.timedelta(hours=1)})
    common = ["--db", db_url, "--tenants-file", file, "--model", TRADE]

    ticked = _cli("tick", "--all-tenants", "--now", T0.isoformat(), "--no-deliver", *common, code=1)
    lines = _lines(ticked)
    assert lines[:2] == [f"{a}: fired 1", f"{b}: fired 0"]
    assert lines[2].startswith(f"{c}: FAILED: ") and "migrate" in lines[2]
    assert ticked.stderr.strip() == f"error: 1 of 3 tenants failed: {c}"
    assert got == []  # --no-deliver: the message waits in A's outbox
    with metacrm.connect(models[b], db_url, tenant=b) as crm:
        assert crm.outbox() == []

    delivered = _cli("deliver", "--all-tenants", *common, code=1)
    assert _lines(delivered)[:2] == [f"{a}: sent 1, to retry 0, failed 0", f"{b}: sent 0, to retry 0, failed 0"]
    assert _lines(delivered)[2].startswith(f"{c}: FAILED: ")
    (request,) = got
    assert request["path"] == "/a" and request["json"]["text"] == "late: Позвонить"
    assert request["headers"]["X-Metacrm-Tenant"] == a
    assert request["headers"]["Idempotency-Key"].startswith(f"metacrm.{a}.1.")

    # ticking again fires nothing new; B's task falls due a day later, in B alone
    later = (T0 + dt.timedelta(days=2)).isoformat()
    result = json.loads(_cli("tick", "--all-tenants", "--now", later, *common, "-f", "json", code=1).stdout)
    assert [r["tenant"] for r in result] == [a, b, c]
    fired = {r["tenant"]: [f["record_id"] for f in r["result"]["fired"]] for r in result[:2]}
    assert fired == {a: [1], b: [1]}  # A's later task (id 1), B's only task (id 1): ids per tenant
    assert result[1]["result"]["delivered"]["sent"] == 1 and result[2]["status"] == "failed"
    assert sorted(r["path"] for r in got) == ["/a", "/a", "/b"]
    assert len({r["headers"]["Idempotency-Key"] for r in got}) == 3


def test_a_tenants_message_names_its_tenant_in_its_identity():
    """Ids and times repeat across tenants (a tenant restored from another's dump holds the
    same): the identity a receiver de-duplicates by names the tenant; without one it is as before."""
    from metacrm.notify.senders import build_email, message_key

    message = {"id": 7, "created_at": T0, "recipient": "ann@example.ru", "subject": "s", "body": "b"}
    assert message_key(message) == f"metacrm.7.{int(T0.timestamp() * 1_000_000)}"
    mail = build_email({**message, "tenant": "acme"}, "crm@example.ru")
    assert mail["Message-ID"] == f"<metacrm.acme.7.{int(T0.timestamp() * 1_000_000)}@example.ru>"
    assert mail["X-Metacrm-Tenant"] == "acme" and mail["X-Metacrm-Message"] == "7"
    assert "X-Metacrm-Tenant" not in build_email(message, "crm@example.ru")


def test_a_token_used_in_one_tenant_does_not_hold_back_another_tenants_stamp(db_url, three):
    """Token ids are per tenant (both first tokens are 1): using A's token must not stop the
    stamp of B's token 1, which the process writes at most once a minute per token."""
    from metacrm.runtime.tokens import authenticate, create_token, list_tokens

    a, b = three[:2]
    _made(db_url, [a, b])
    crms = [metacrm.connect(TRADE, db_url, tenant=name) for name in (a, b)]
    try:
        secrets = []
        for crm in crms:
            crm.add_user("ann", roles=["manager"])
            made = create_token(crm, "ann")
            assert made["id"] == 1
            secrets.append(made["token"])
        now = dt.datetime.now(dt.UTC)
        for crm, secret in zip(crms, secrets, strict=True):
            assert authenticate(crm, secret, now) == "ann"
        assert [list_tokens(crm)[0]["last_used_at"] is not None for crm in crms] == [True, True]
    finally:
        for crm in crms:
            crm.close()


def test_one_tenant_migrates_to_its_model_from_the_tenants_file(db_url, three, tmp_path):
    """`tenant create NAME` and `migrate --tenant NAME` take the model the tenants file gives
    NAME; a --model typed on the command line naming another file is refused (exit 2)."""
    a, b = three[:2]
    file = tmp_path / "tenants.yaml"
    file.write_text(f"default: {TRADE}\ntenants:\n  {b}: {LOGISTICS}\n", encoding="utf-8")
    env = {"METACRM_TENANTS_FILE": str(file)}
    refused = _cli("tenant", "create", b, "--model", TRADE, "--db", db_url, env=env, code=2)
    assert f"tenant {b} holds {LOGISTICS} (tenants file {file}), not --model {TRADE}" in refused.stderr
    engine = make_engine(db_url)
    try:
        assert tenants.names(engine) == []  # nothing made
    finally:
        engine.dispose()
    assert (
        f"created tenant {b}: logistics ("
        in _cli("tenant", "create", b, "-m", LOGISTICS, "--db", db_url, env=env).stdout
    )
    assert f"created tenant {a}: trade (" in _cli("tenant", "create", a, "--db", db_url, env=env).stdout  # the default

    newer = _variant(tmp_path, "logistics.yaml", CONTACT, CONTACT + "      vat: {type: string}\n", LOGISTICS)
    file.write_text(f"default: {TRADE}\ntenants:\n  {b}: logistics.yaml\n", encoding="utf-8")
    before = _recorded(db_url, b)
    refused = _cli("migrate", "--tenant", b, "--model", TRADE, "--db", db_url, env=env, code=2)
    assert f"tenant {b} holds {newer} (tenants file {file}), not --model {TRADE}" in refused.stderr
    assert _recorded(db_url, b) == before
    out = _cli("migrate", "--tenant", b, "--db", db_url, env=env).stdout
    assert out.strip().endswith("2 steps applied")
    assert _recorded(db_url, b) == metacrm.load_model(newer).sha256[:12]
    assert "nothing to do" in _cli("migrate", "--tenant", a, "--db", db_url, "--tenants-file", file).stdout
