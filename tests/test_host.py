"""Joining the host application (issue 19, item 3): metacrm.connect() on the host's own
SQLAlchemy Engine, crm.joined(conn) running metacrm's operations in the host's connection and
transaction, the pool and busy-timeout options, and sqlite:///:memory: shared by threads."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import StaticPool

import metacrm
from metacrm.errors import ConflictError, SetupError, ValidationError
from metacrm.runtime.engine import make_engine

MODEL = """\
metacrm: 1
name: host
entities:
  client:
    fields:
      name: {type: string, required: true}
      open_deals: {type: integer, rollup: "count(deals where stage = 'new')"}
  deal:
    fields:
      title: {type: string, required: true}
      amount: {type: money, min: 0}
    links:
      client: {to: client, required: true, inverse: deals}
    stages:
      initial: new
      states:
        new: {}
        won: {kind: won}
        lost: {kind: lost}
      transitions:
        - {from: new, to: [won, lost]}
"""


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "host.yaml"
    path.write_text(MODEL, encoding="utf-8")
    return metacrm.load_model(path)


@pytest.fixture
def host(db_url):
    """The host application's engine, made by the host with plain create_engine()."""
    engine = create_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def crm(model, host):
    crm = metacrm.connect(model, host)
    crm.migrate()
    yield crm
    crm.close()


def _titles(crm) -> list[str]:
    return sorted(d["title"] for d in crm.find("deal"))


def _in_thread(work):
    """work() run in another thread; its result (or its exception, raised here)."""
    out: list = []

    def run():
        try:
            out.append(("ok", work()))
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out.append(("error", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert out, "the thread still runs after 60 s"
    kind, value = out[0]
    if kind == "error":
        raise value
    return value


# -- a host engine ------------------------------------------------------------------------------


def test_host_engine_is_set_up_for_metacrm(model, host) -> None:
    """A connection the host's pool already holds gets metacrm's SQL functions too: a
    case-insensitive `contains` beyond ASCII (metacrm's casefold on SQLite) and a report work;
    closing the CRM leaves the host's engine (and its pool) alone."""
    with host.connect() as conn:  # the host used its engine before metacrm: a pooled connection
        conn.execute(text("SELECT 1"))
    pool = host.pool
    with metacrm.connect(model, host) as crm:
        crm.migrate()
        client = crm.create("client", {"name": "ООО РОМАШКА"})
        crm.create("deal", {"title": "Поставка", "amount": "100.50", "client": client["id"]})
        assert [c["name"] for c in crm.find("client", where="name contains 'ромаш'")] == ["ООО РОМАШКА"]
        assert crm.find("client", where="name contains 'лютик'") == []
        funnel = crm.funnel("deal")
        assert [(s["stage"], s["now"]) for s in funnel["stages"]][:1] == [("new", 1)]
        assert crm.get("client", client["id"])["open_deals"] == 1
    assert host.pool is pool  # not disposed: the host's
    with host.connect() as conn:  # and still the host's to use
        assert conn.execute(text("SELECT count(*) FROM deal")).scalar_one() == 1


def test_two_crms_share_one_host_engine(model, host) -> None:
    with metacrm.connect(model, host) as first:
        first.migrate()
        client = first.create("client", {"name": "Клиент"})
        with metacrm.connect(model, host) as second:
            assert second.get("client", client["id"])["name"] == "Клиент"
        assert first.find("client", where="name contains 'клиент'")  # still set up once, still working


def test_host_transactions_still_roll_back(model, host) -> None:
    """Set up through an engine.execution_options() copy, the host's own engine still runs real
    transactions (on SQLite metacrm turns the driver's implicit BEGIN off and emits BEGIN itself)."""
    with metacrm.connect(model, host.execution_options(logging_token="metacrm")) as crm:
        crm.migrate()
        crm.create("client", {"name": "Клиент"})
        with host.connect() as conn:
            conn.execute(text("UPDATE client SET name = 'changed'"))
            with conn.begin_nested():
                conn.execute(text("DELETE FROM client"))
            conn.rollback()
        assert [c["name"] for c in crm.find("client")] == ["Клиент"]


# -- joined() -----------------------------------------------------------------------------------


def test_joined_host_commit_decides(crm, host) -> None:
    """metacrm's writes in joined() are the host's: invisible to others until the host commits."""
    client = crm.create("client", {"name": "Клиент"})["id"]
    with host.connect() as conn:
        with crm.joined(conn):
            crm.create("deal", {"title": "joined", "client": client})
            assert _titles(crm) == ["joined"]  # metacrm sees its own writes in the host's transaction
        assert _in_thread(lambda: _titles(crm)) == []  # nothing committed by metacrm
        assert _in_thread(lambda: crm.get("client", client)["open_deals"]) == 0
        conn.commit()
    assert _titles(crm) == ["joined"]
    assert crm.get("client", client)["open_deals"] == 1


def test_joined_host_rollback_undoes_metacrm_and_host_writes(crm, host) -> None:
    client = crm.create("client", {"name": "Клиент"})["id"]
    with host.connect() as conn:
        conn.execute(text("CREATE TABLE host_audit (note VARCHAR(40))"))
        conn.commit()
        with crm.joined(conn):
            deal = crm.create("deal", {"title": "doomed", "client": client})
            crm.move("deal", deal["id"], "won")
        conn.execute(text("INSERT INTO host_audit VALUES ('doomed')"))
        conn.rollback()  # the host changes its mind: its row and metacrm's go together
        assert conn.execute(text("SELECT count(*) FROM host_audit")).scalar_one() == 0
    assert _titles(crm) == []
    assert crm.get("client", client)["open_deals"] == 0


def test_joined_operations_are_savepoints(crm, host) -> None:
    """A refused operation, or a crm.transaction() that fails, undoes only itself; the host's
    transaction goes on and commits the rest."""
    client = crm.create("client", {"name": "Клиент"})["id"]
    with host.begin() as conn, crm.joined(conn):
        crm.create("deal", {"title": "kept", "client": client})
        with pytest.raises(ValidationError):
            crm.create("deal", {"title": "negative", "amount": "-1", "client": client})
        with pytest.raises(ZeroDivisionError), crm.transaction():
            crm.create("deal", {"title": "in a failed transaction", "client": client})
            1 / 0  # noqa: B018 - the failure
        with crm.transaction():
            crm.create("deal", {"title": "in a transaction", "client": client})
        assert _titles(crm) == ["in a transaction", "kept"]
    assert _titles(crm) == ["in a transaction", "kept"]
    assert crm.get("client", client)["open_deals"] == 2


def test_joined_belongs_to_its_thread(crm, host) -> None:
    """Another thread using the same CRM meanwhile works in its own transaction."""
    client, other = (crm.create("client", {"name": name})["id"] for name in ("Клиент", "Другой"))
    with host.connect() as conn:
        with crm.joined(conn):
            crm.create("deal", {"title": "host's", "client": client})
            if host.dialect.name == "postgresql":  # SQLite: the other writer would wait for the host's lock
                # (another client: the host's transaction holds the row lock of the first one's roll-up)
                _in_thread(lambda: crm.create("deal", {"title": "other thread's", "client": other}))
        conn.rollback()
    assert _titles(crm) == (["other thread's"] if host.dialect.name == "postgresql" else [])


def test_joined_refusals(crm, model, host, tmp_path) -> None:
    with pytest.raises(SetupError, match="takes a SQLAlchemy Connection, not Engine"), crm.joined(host):
        pass
    other = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    with other.connect() as conn, pytest.raises(SetupError, match="connection of the CRM's own engine"):
        with crm.joined(conn):
            pass
    other.dispose()
    conn = host.connect()
    conn.close()
    with pytest.raises(SetupError, match="closed connection"), crm.joined(conn):
        pass
    with host.connect() as conn, pytest.raises(SetupError, match="AUTOCOMMIT: there is no transaction"):
        with crm.joined(conn.execution_options(isolation_level="AUTOCOMMIT")):
            pass
    with host.connect() as first, host.connect() as second, crm.joined(first):
        with pytest.raises(SetupError, match="inside another transaction"), crm.joined(second):
            pass


def test_connection_opened_before_adoption_is_refused(model, tmp_path) -> None:
    """SQLite: a connection checked out before metacrm set the engine up lacks its functions."""
    engine = create_engine(f"sqlite:///{tmp_path / 'early.db'}")
    with engine.connect() as early:
        crm = metacrm.connect(model, engine)
        with pytest.raises(SetupError, match="opened before metacrm.connect"), crm.joined(early):
            pass
    engine.dispose()


# -- refused engines ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: create_engine("mysql+pymysql://u@h/db", module=sqlite3), "driver mysql\\+pymysql: use sqlite"),
        (lambda: create_engine("postgresql+pg8000://u@h/db", module=sqlite3), "driver postgresql\\+pg8000: use"),
        (lambda: create_engine("postgresql+psycopg_async://u@h/db"), "driver postgresql\\+psycopg \\(async\\): use"),
        (lambda: create_engine("sqlite://"), "SingletonThreadPool cannot be shared between threads"),
        (lambda: create_engine("sqlite://", poolclass=StaticPool), "StaticPool cannot be shared between threads"),
        (lambda: create_engine("sqlite:///x.db", isolation_level="AUTOCOMMIT"), "AUTOCOMMIT"),
        (lambda: create_engine("sqlite:///x.db").execution_options(isolation_level="AUTOCOMMIT"), "AUTOCOMMIT"),
        (lambda: 42, "a database URL or a SQLAlchemy Engine, not int"),
    ],
)
def test_engines_metacrm_cannot_use_are_refused(model, make, message) -> None:
    engine = make()
    with pytest.raises(SetupError, match=message) as caught:
        metacrm.connect(model, engine)
    assert "\n" not in str(caught.value)


def test_pool_options_with_a_host_engine_are_refused(model, host) -> None:
    with pytest.raises(SetupError, match="a host engine keeps the pool it was made with"):
        metacrm.connect(model, host, pool_size=3)


# -- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"busy_timeout": -1}, "busy_timeout must be a number of seconds from 0 to 86400, not -1"),
        ({"busy_timeout": 90000}, "busy_timeout must be"),
        ({"busy_timeout": "5"}, "busy_timeout must be"),
        ({"busy_timeout": True}, "busy_timeout must be"),
        ({"busy_timeout": float("nan")}, "busy_timeout must be"),
        ({"busy_timeout": "soon"}, "busy_timeout must be a number of seconds from 0 to 86400, not 'soon'"),
        ({"pool_size": True}, "pool_size must be a whole number from 1 to 1000, not True"),
        ({"pool_size": "4"}, "pool_size must be"),
        ({"pool_size": 0}, "pool_size must be a whole number from 1 to 1000, not 0"),
        ({"pool_size": 2.5}, "pool_size must be"),
        ({"pool_size": 1001}, "pool_size must be"),
        ({"max_overflow": -1}, "max_overflow must be a whole number from 0 to 1000, not -1"),
        ({"max_overflow": "2"}, "max_overflow must be"),
    ],
)
def test_bad_options_are_refused(model, db_url, options, message) -> None:
    with pytest.raises(SetupError, match=message) as caught:
        metacrm.connect(model, db_url, **options)
    assert "\n" not in str(caught.value)


def test_busy_timeout_is_sqlite_only(model, db_url) -> None:
    if db_url.startswith("sqlite"):
        metacrm.connect(model, db_url, busy_timeout=1).close()
        return
    with pytest.raises(SetupError, match="busy_timeout applies to SQLite only.*lock_timeout"):
        metacrm.connect(model, db_url, busy_timeout=1)


def test_pool_size_is_honoured(model, db_url) -> None:
    with metacrm.connect(model, db_url, pool_size=3) as crm:
        assert crm.engine.pool.size() == 3
        assert crm.engine.pool._max_overflow == 0  # only pool_size given: no overflow
        crm.migrate()
        client = crm.create("client", {"name": "Клиент"})["id"]
    with metacrm.connect(model, db_url, pool_size=1, max_overflow=2) as crm:
        assert (crm.engine.pool.size(), crm.engine.pool._max_overflow) == (1, 2)
        # one pooled connection: the threads queue for it and all get through
        threads = [
            threading.Thread(target=crm.create, args=("deal", {"title": f"d{n}", "client": client})) for n in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert _titles(crm) == ["d0", "d1", "d2", "d3"]
        assert crm.engine.pool.checkedout() == 0


def test_pool_options_on_memory_are_refused(model) -> None:
    with pytest.raises(SetupError, match="do not apply to sqlite:///:memory:"):
        metacrm.connect(model, "sqlite:///:memory:", pool_size=2)


def _busy_ms(engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()


def test_busy_timeout_is_honoured_on_sqlite(model, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    with metacrm.connect(model, url) as crm:
        assert _busy_ms(crm.engine) == 30000  # the default
        crm.migrate()
        client = crm.create("client", {"name": "Клиент"})["id"]
    with metacrm.connect(model, url + "?timeout=5") as crm:
        assert _busy_ms(crm.engine) == 5000
    with metacrm.connect(model, url + "?timeout=5", busy_timeout=0.2) as crm:
        assert _busy_ms(crm.engine) == 200  # the option overrides the URL
        crm.migrate()  # a no-op migration keeps the engine's timeout
        assert _busy_ms(crm.engine) == 200
        # another process holds the write lock: metacrm gives up after its busy timeout
        blocker = sqlite3.connect(tmp_path / "busy.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(ConflictError, match="is locked by another process"):
                crm.create("deal", {"title": "blocked", "client": client})
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert _titles(crm) == []
    host = create_engine(url)
    with metacrm.connect(model, host, busy_timeout=2) as crm:
        assert _busy_ms(crm.engine) == 2000
    host.dispose()


# -- sqlite:///:memory: ---------------------------------------------------------------------------


def test_memory_database_is_one_database_for_every_thread(model) -> None:
    with metacrm.connect(model, "sqlite:///:memory:") as crm:
        crm.migrate()
        client = crm.create("client", {"name": "Клиент"})["id"]
        made = _in_thread(lambda: crm.create("deal", {"title": "from a thread", "client": client}))
        assert crm.get("deal", made["id"])["title"] == "from a thread"
        # a transaction held by this thread: another thread waits for it, then sees its outcome
        with crm.transaction():
            crm.create("deal", {"title": "in a transaction", "client": client})
            waiting = threading.Thread(target=lambda: crm.create("deal", {"title": "waited", "client": client}))
            waiting.start()
        waiting.join(60)
        assert not waiting.is_alive()
        assert _titles(crm) == ["from a thread", "in a transaction", "waited"]
        # metacrm's own in-memory engine may be shared with another CRM object
        with metacrm.connect(model, crm.engine) as second:
            assert len(second.find("deal")) == 3
