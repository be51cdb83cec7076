"""Tenants (issue 17, docs/scaling.md): a PostgreSQL schema or an SQLite file per tenant, one
pool for every tenant on PostgreSQL, nothing of one tenant reachable from another."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.errors import ConflictError, NotFound, PermissionDenied, SetupError
from metacrm.runtime import tenants
from metacrm.runtime.engine import make_engine

ROOT = Path(__file__).resolve().parents[1]
TRADE = ROOT / "examples" / "trade.yaml"


@pytest.fixture
def names(db_url):
    """Fresh tenant names (schemas are database-wide on PostgreSQL: unique per test), whose
    schemas are dropped afterwards whatever the test did."""
    made = [f"t{uuid.uuid4().hex[:10]}_{n}" for n in ("a", "b")]
    yield made
    if db_url.startswith("postgresql"):
        engine = make_engine(db_url)
        with engine.begin() as conn:
            for name in made:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        engine.dispose()


@pytest.fixture
def two(db_url, names):
    """Two migrated tenants of the trade example on one engine (PostgreSQL: one pool of one
    connection, so every operation of both runs on the same session)."""
    model = metacrm.load_model(TRADE)
    engine = make_engine(db_url, pool_size=1) if db_url.startswith("postgresql") else make_engine(db_url)
    crms = []
    for name in names:
        tenants.create(engine, name)
        crm = metacrm.connect(model, engine, tenant=name)
        crm.migrate()
        crms.append(crm)
    yield engine, crms
    for crm in crms:
        crm.close()
    engine.dispose()


def test_each_tenant_sees_only_its_own_records(two):
    engine, (a, b) = two
    client = a.create("client", {"name": "Ромашка"})
    deal = a.create("deal", {"title": "A's deal", "amount": "100.00", "client": client["id"]})
    assert b.count("client") == 0 and b.count("deal") == 0
    assert b.find("deal") == [] and b.funnel("deal")["count"] == 0
    with pytest.raises(NotFound) as guessed:
        b.get("deal", deal["id"])
    with pytest.raises(NotFound) as wrong:
        b.get("deal", deal["id"] + 1000)
    assert str(guessed.value).replace(str(deal["id"]), "N") == str(wrong.value).replace(str(deal["id"] + 1000), "N")
    # ids, sequences and history are per tenant: B's first client is 1 too
    other = b.create("client", {"name": "Other"})
    assert other["id"] == client["id"] == 1
    assert [r["name"] for r in a.find("client")] == ["Ромашка"]
    assert [r["name"] for r in b.find("client")] == ["Other"]
    assert [hit["title"] for hit in a.search("Ромашка")] == ["Ромашка"]
    assert b.search("Ромашка") == []
    a.move("deal", deal["id"], "qualified")
    assert [h["to_stage"] for h in a.history("deal", deal["id"])] == ["new", "qualified"]
    with pytest.raises(NotFound):
        b.move("deal", deal["id"], "qualified")


def test_users_and_tokens_belong_to_one_tenant(two):
    from metacrm.runtime.tokens import authenticate, create_token

    engine, (a, b) = two
    a.add_user("ann", roles=["manager"])
    token = create_token(a, "ann")
    assert authenticate(a, token["token"]) == "ann"
    assert authenticate(b, token["token"]) is None  # the same answer as a made-up token
    assert authenticate(b, token["token"]) == authenticate(b, token["token"][:-4] + "abcd")
    with pytest.raises((NotFound, PermissionDenied)):
        metacrm.connect(a.model, engine, tenant=tenants.tenant_of(b.engine), user="ann")
    assert [u["login"] for u in b.users()] == []


def test_one_pooled_connection_never_carries_a_tenant_into_another(db_url, two):
    """Two tenants interleaved on a pool of one connection, with failures and rollbacks in
    between: every operation sees its own tenant, and a checkout without a tenant sees the
    database's own schema."""
    engine, (a, b) = two
    for i in range(3):
        a.create("client", {"name": f"A{i}"})
        assert b.count("client") == i
        with pytest.raises(metacrm.ValidationError):
            a.create("client", {"name": ""})  # refused inside A's transaction: rolled back
        b.create("client", {"name": f"B{i}"})
        with pytest.raises(metacrm.ValidationError), b.transaction():
            b.create("client", {"name": f"B-lost{i}"})
            b.create("deal", {"title": "", "amount": "x"})
        assert a.count("client") == i + 1
        deal = a.create("deal", {"title": f"d{i}", "amount": "1.00", "client": 1})
        a.move("deal", deal["id"], "qualified")  # its stage is read on a raw checkout
        assert b.count("deal") == 0
    assert sorted(r["name"] for r in b.find("client")) == ["B0", "B1", "B2"]
    if engine.dialect.name == "postgresql":
        assert engine.pool.size() == 1
        with engine.connect() as conn:  # no tenant: the URL's own schema, which has no client table
            assert conn.execute(text("SELECT to_regclass('client')")).scalar_one() is None
            assert conn.execute(text("SELECT to_regclass('metacrm_tenants')")).scalar_one() is not None
        with a.engine.connect() as conn:
            assert conn.execute(text("SELECT current_schema()")).scalar_one() == tenants.tenant_of(a.engine)


def test_a_tenant_that_does_not_exist_is_refused(db_url, names):
    model = metacrm.load_model(TRADE)
    engine = make_engine(db_url)
    try:
        with pytest.raises(NotFound, match=f"no tenant '{names[0]}'.*has no tenants"):
            metacrm.connect(model, engine, tenant=names[0])
        tenants.create(engine, names[0])
        with pytest.raises(NotFound, match=f"tenants: {names[0]}"):
            metacrm.connect(model, engine, tenant=names[1])
        with pytest.raises(ConflictError, match="already exists"):
            tenants.create(engine, names[0])
        for bad in ("Acme", "1acme", "public", "pg_x", "a-b", "a" * 49, ""):
            with pytest.raises(SetupError, match="not a tenant name"):
                tenants.create(engine, bad)
        assert tenants.names(engine) == [names[0]]
    finally:
        engine.dispose()


def test_drop_refuses_a_tenant_with_data_unless_forced(two):
    engine, (a, b) = two
    name_a, name_b = tenants.tenant_of(a.engine), tenants.tenant_of(b.engine)
    a.create("client", {"name": "kept"})
    with pytest.raises(ConflictError, match=r"holds 2 rows .*--force"):
        tenants.drop(engine, name_a)
    assert a.count("client") == 1
    assert tenants.drop(engine, name_b) == 0  # empty: dropped without asking
    assert tenants.names(engine) == [name_a]
    a.close()
    assert tenants.drop(engine, name_a, force=True) == 2
    assert tenants.names(engine) == []


def test_sqlite_tenant_is_a_file_beside_the_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    assert tenants.tenant_url(url, "acme") == f"sqlite:///{tmp_path / 'crm.acme.db'}"
    with pytest.raises(SetupError, match="need a database file"):
        tenants.tenant_url("sqlite://", "acme")


def test_files_are_stored_per_tenant(two, tmp_path):
    engine, (a, b) = two
    a._files_location = b._files_location = str(tmp_path / "files")
    roots = {crm.file_store.root for crm in (a, b)}
    assert len(roots) == 2 and all(root.parent == tmp_path / "files" for root in roots)


# -- the command line ---------------------------------------------------------------------------


def _cli(*args: str, code: int = 0, env: dict | None = None) -> str:
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == code, (args, result.output)
    return result.output


def test_cli_tenant_create_list_drop_and_tenant_option(db_url, names):
    a, b = names
    common = ["--model", str(TRADE), "--db", db_url]
    out = _cli("tenant", "create", a, *common)
    assert out.startswith(f"created tenant {a}: trade (")
    _cli("tenant", "create", b, *common)
    assert "already exists" in _cli("tenant", "create", a, *common, code=1)
    assert "not a tenant name" in _cli("tenant", "create", "Bad", *common, code=2)
    listed = json.loads(_cli("tenant", "list", "--db", db_url, "--format", "json"))
    assert [t["tenant"] for t in listed] == sorted([a, b]) and {t["model"] for t in listed} == {"trade"}

    created = json.loads(_cli("create", "client", "name=Acme", *common, "--tenant", a, "--format", "json"))
    assert created["id"] == 1
    assert json.loads(_cli("list", "client", *common, "--format", "json", env={"METACRM_TENANT": b})) == []
    assert [r["name"] for r in json.loads(_cli("list", "client", *common, "--tenant", a, "--format", "json"))] == [
        "Acme"
    ]
    # the typer path (history) and the fast path (get) both honour it
    assert "Acme" in _cli("history", "client", "1", *common, "--tenant", a)
    assert "not found" in _cli("get", "client", "1", *common, "--tenant", b, code=1).lower()
    assert "no tenant 'nope'" in _cli("list", "client", *common, "--tenant", "nope", code=1)

    assert "--force" in _cli("tenant", "drop", a, "--db", db_url, code=1)
    assert _cli("tenant", "drop", b, "--db", db_url).strip() == f"dropped tenant {b}"
    assert _cli("tenant", "drop", a, "--db", db_url, "--force").startswith(f"dropped tenant {a} with ")
    assert _cli("tenant", "list", "--db", db_url).strip() == "(no tenants)"


def test_cli_fast_path_runs_tenant_commands(db_url, names, monkeypatch, capsys):
    from metacrm.cli.fast import parse

    assert parse(["list", "client", "--tenant", "acme"]) == ("list", {"entity": "client", "tenant": "acme"})
    monkeypatch.setenv("METACRM_TENANT", "globex")
    assert parse(["get", "client", "1"])[1]["tenant"] == "globex"


def test_tenants_file_maps_each_tenant_to_its_model(tmp_path, monkeypatch):
    from metacrm.errors import ModelError

    file = tmp_path / "tenants.yaml"
    file.write_text("default: trade.yaml\ntenants:\n  acme: trade.yaml\n  seaways: ../logistics.yaml\n")
    mapping = tenants.TenantMap.load(file)
    assert mapping.model_for("acme") == str(tmp_path / "trade.yaml")
    assert mapping.model_for("seaways") == str(tmp_path.parent / "logistics.yaml")
    assert mapping.model_for("other", "given.yaml") == str(tmp_path / "trade.yaml")
    assert tenants.TenantMap().model_for("other", "given.yaml") == "given.yaml"
    file.write_text("tenants:\n  acme: trade.yaml\n  Bad: x.yaml\nextra: 1\n")
    with pytest.raises(ModelError) as refused:
        tenants.TenantMap.load(file)
    lines = sorted(p.format() for p in refused.value.problems)
    assert lines == [
        f"{file}:3:3: error: tenants: 'Bad' is not a tenant name (lower-case letters, digits and _)",
        f"{file}:4:1: error: unknown key 'extra': a tenants file has `tenants:` and `default:`",
    ]
    monkeypatch.chdir(tmp_path)
    file.write_text("tenants:\n  acme: a.yaml\n")
    assert tenants.TenantMap.find().models == {"acme": str(tmp_path / "a.yaml")}
    monkeypatch.setenv("METACRM_TENANTS_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(ModelError, match="no such file"):
        tenants.TenantMap.find()


def test_a_command_in_a_tenant_takes_its_model_from_the_tenants_file(db_url, names, tmp_path, monkeypatch):
    """With tenants of two businesses, `metacrm list ... --tenant T` without --model works with
    T's model from ./tenants.yaml; a --model naming another business is refused by the CRM."""
    a, b = names
    logistics = ROOT / "examples" / "logistics.yaml"
    (tmp_path / "tenants.yaml").write_text(f"tenants:\n  {a}: {TRADE}\n  {b}: {logistics}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("METACRM_MODEL", raising=False)
    _cli("tenant", "create", a, "--db", db_url)
    _cli("tenant", "create", b, "--db", db_url)
    assert json.loads(_cli("list", "client", "--db", db_url, "--tenant", a, "--format", "json")) == []
    entity = next(iter(metacrm.load_model(logistics).entities))
    assert json.loads(_cli("list", entity, "--db", db_url, "--tenant", b, "--format", "json")) == []
    refused = _cli("list", "client", "--db", db_url, "--tenant", b, "--model", str(TRADE), code=1)
    assert "migrate" in refused
    (tmp_path / "tenants.yaml").write_text("tenants: [1]\n")
    assert "tenants.yaml:1:" in _cli("list", "client", "--db", db_url, "--tenant", a, code=2)
