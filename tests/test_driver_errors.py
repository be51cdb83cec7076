"""Driver failures are metacrm errors, on SQLite and PostgreSQL: a lock wait that runs out
(SQLite's busy timeout, PostgreSQL's lock_timeout) and two transactions taking rows in
opposite order (a real deadlock on PostgreSQL, a lock wait on SQLite) raise the same
ConflictError(retryable=True); a PostgreSQL backend killed under an open transaction raises
ConnectionLost; ``crm.retrying`` retries exactly those, logging each retry, and gives up after
its attempts; the command line prints one line and exits 1 for a lost connection."""

from __future__ import annotations

import logging
import sqlite3
import threading

import pytest
import typer
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

import metacrm
from metacrm.cli.common import refusals
from metacrm.runtime.engine import translate

MODEL = """\
metacrm: 1
name: drv
entities:
  deal:
    fields:
      title: {type: string, required: true}
      amount: {type: money}
"""


def short_waits(db_url: str) -> str:
    """The URL with a 0.2 s lock wait: SQLite's busy timeout, PostgreSQL's lock_timeout."""
    if db_url.startswith("sqlite"):
        return db_url + "?timeout=0.2"
    assert "options=-csearch_path" in db_url  # conftest's schema URL
    return db_url.replace("options=-csearch_path", "options=-clock_timeout%3D200%20-csearch_path")


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "drv.yaml"
    path.write_text(MODEL, encoding="utf-8")
    return str(path)


@pytest.fixture
def crm(db_url, model_path):
    crm = metacrm.connect(model_path, short_waits(db_url))
    crm.migrate()
    yield crm
    crm.close()


class Holder:
    """Another connection holding the write lock of the deal table: BEGIN IMMEDIATE on SQLite,
    LOCK TABLE on PostgreSQL (in the same schema, through the same URL)."""

    def __init__(self, crm, db_url: str):
        self.sqlite = db_url.startswith("sqlite")
        self.table = crm.storage.table("deal").name
        if self.sqlite:
            self.conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        else:
            self.engine = create_engine(db_url)
            self.conn = self.engine.connect()
        self.held = False

    def hold(self) -> None:
        if self.sqlite:
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            self.conn.begin()
            self.conn.execute(text(f'LOCK TABLE "{self.table}" IN ACCESS EXCLUSIVE MODE'))
        self.held = True

    def release(self) -> None:
        if self.held:
            self.conn.execute("COMMIT") if self.sqlite else self.conn.commit()
            self.held = False

    def close(self) -> None:
        self.release()
        self.conn.close()
        if not self.sqlite:
            self.engine.dispose()


@pytest.fixture
def racing(crm, db_url, model_path):
    """A CRM on the same database for two transactions taking rows in opposite order: SQLite
    with the short busy timeout, PostgreSQL without a lock_timeout (the deadlock detector, after
    its deadlock_timeout of 1 s, must be what ends the wait)."""
    other = metacrm.connect(model_path, short_waits(db_url) if db_url.startswith("sqlite") else db_url)
    yield other
    other.close()


@pytest.fixture
def holder(crm, db_url):
    holder = Holder(crm, db_url)
    yield holder
    holder.close()


def test_a_lock_wait_that_runs_out_is_a_retryable_conflict(crm, holder) -> None:
    crm.create("deal", {"title": "первая"})
    holder.hold()
    with pytest.raises(metacrm.ConflictError) as info:
        crm.create("deal", {"title": "вторая"})
    assert info.value.retryable is True
    assert "try again" in str(info.value) and "\n" not in str(info.value)
    holder.release()
    assert [d["title"] for d in crm.find("deal")] == ["первая"]  # nothing was written
    crm.create("deal", {"title": "третья"})  # and the CRM goes on working
    assert crm.count("deal") == 2


def test_rows_taken_in_opposite_order_give_the_same_error_on_both_dialects(racing) -> None:
    """PostgreSQL: a real deadlock (40P01), one transaction is chosen to fail. SQLite: the
    second writer waits for the first one's BEGIN IMMEDIATE until its busy timeout. Either
    way exactly one of the two fails, with ConflictError(retryable=True), and writes nothing."""
    crm = racing
    one = crm.create("deal", {"title": "один"})["id"]
    two = crm.create("deal", {"title": "два"})["id"]
    a_has_first, b_has_first = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def worker(name, first, second, wait_for, signal):
        try:
            if name == "b":
                a_has_first.wait(10)
            with crm.transaction():
                crm.update("deal", first, {"amount": "1"})
                signal.set()
                wait_for.wait(10)
                crm.update("deal", second, {"amount": "2"})
            outcome[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome[name] = exc
        finally:
            signal.set()

    threads = [
        threading.Thread(target=worker, args=("a", one, two, b_has_first, a_has_first)),
        threading.Thread(target=worker, args=("b", two, one, a_has_first, b_has_first)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    failures = [v for v in outcome.values() if v != "ok"]
    assert len(outcome) == 2 and len(failures) == 1, outcome
    assert isinstance(failures[0], metacrm.ConflictError) and failures[0].retryable is True, failures[0]
    if crm.engine.dialect.name == "postgresql":
        assert "deadlock" in str(failures[0]) and "40P01" in str(failures[0])
    else:
        assert "locked" in str(failures[0])
    versions = sorted(crm.get("deal", i)["version"] for i in (one, two))
    assert versions == [2, 2]  # the winner's two updates; the loser's first one was rolled back


def test_retrying_makes_both_writers_succeed(racing) -> None:
    crm = racing
    one = crm.create("deal", {"title": "один"})["id"]
    two = crm.create("deal", {"title": "два"})["id"]
    a_has_first, b_has_first = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def work(first, second, wait_for, signal):
        try:
            with crm.transaction():
                crm.update("deal", first, {"amount": "1"})
                signal.set()
                wait_for.wait(10)
                crm.update("deal", second, {"amount": "2"})
        except metacrm.ConflictError:
            signal.set()  # lost: let the other one go on (it would wait for this one's first update)
            raise

    def worker(name, first, second, wait_for, signal):
        try:
            if name == "b":
                a_has_first.wait(10)
            crm.retrying(work, first, second, wait_for, signal, attempts=20, delay=0.05)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)
        finally:
            signal.set()

    threads = [
        threading.Thread(target=worker, args=("a", one, two, b_has_first, a_has_first)),
        threading.Thread(target=worker, args=("b", two, one, a_has_first, b_has_first)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads) and errors == []
    assert [crm.get("deal", i)["version"] for i in (one, two)] == [3, 3]  # both transactions wrote both


class Calls:
    def __init__(self, fn):
        self.fn, self.count = fn, 0
        self.__qualname__ = "create"

    def __call__(self, *args, **kw):
        self.count += 1
        return self.fn(*args, **kw)


def test_retrying_succeeds_after_a_transient_conflict(crm, holder, caplog) -> None:
    """The lock is released by the first retry's log record: the first call must fail, a
    later one succeeds, whatever the timing."""

    class ReleaseOnRetry(logging.Handler):
        def emit(self, record):
            holder.release()

    retry_log = logging.getLogger("metacrm.retry")
    handler = ReleaseOnRetry(level=logging.WARNING)
    retry_log.addHandler(handler)
    holder.hold()
    create = Calls(crm.create)
    try:
        with caplog.at_level(logging.WARNING, logger="metacrm.retry"):
            deal = crm.retrying(create, "deal", {"title": "после"}, attempts=3, delay=0.01)
    finally:
        retry_log.removeHandler(handler)
    assert deal["title"] == "после" and crm.count("deal") == 1
    assert create.count == 2
    warnings = [r for r in caplog.records if r.name == "metacrm.retry"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "attempt 1 of 3" in warnings[0].getMessage() and "ConflictError" in warnings[0].getMessage()


def test_retrying_gives_up_after_its_attempts(crm, holder, caplog) -> None:
    holder.hold()
    create = Calls(crm.create)
    with caplog.at_level(logging.WARNING, logger="metacrm.retry"), pytest.raises(metacrm.ConflictError) as info:
        crm.retrying(create, "deal", {"title": "никогда"}, attempts=3, delay=0.01, max_delay=0.02)
    assert info.value.retryable and create.count == 3
    assert len([r for r in caplog.records if r.name == "metacrm.retry"]) == 2
    holder.release()
    assert crm.count("deal") == 0


def test_retrying_does_not_retry_what_the_caller_must_fix(crm, caplog) -> None:
    deal = crm.create("deal", {"title": "раз"})
    crm.update("deal", deal["id"], {"amount": "1"})
    update = Calls(crm.update)
    with caplog.at_level(logging.WARNING, logger="metacrm.retry"), pytest.raises(metacrm.ConflictError) as info:
        crm.retrying(update, "deal", deal["id"], {"amount": "2"}, version=1)  # a stale version: read again
    assert info.value.retryable is False and update.count == 1
    with pytest.raises(metacrm.ValidationError):
        crm.retrying(update, "deal", deal["id"], {"amount": "много"})
    assert update.count == 2 and not [r for r in caplog.records if r.name == "metacrm.retry"]
    with pytest.raises(ValueError, match="attempts must be a whole number >= 1"):
        crm.retrying(update, "deal", deal["id"], {}, attempts=0)
    with pytest.raises(ValueError, match="delay must be a number of seconds"):
        crm.retrying(update, "deal", deal["id"], {}, delay=-1)


def test_retrying_inside_a_transaction_calls_once(crm) -> None:
    """Inside crm.transaction() a transient failure aborted the whole transaction: only its
    opener can retry it, so retrying() inside one calls once; outside, up to ``attempts``."""
    calls = []

    def flaky():
        calls.append(1)
        raise metacrm.ConflictError("deadlock detected", retryable=True)

    with pytest.raises(metacrm.ConflictError):
        with crm.transaction():
            crm.create("deal", {"title": "внутри"})
            crm.retrying(flaky, attempts=5, delay=0)
    assert len(calls) == 1 and crm.count("deal") == 0
    with pytest.raises(metacrm.ConflictError):
        crm.retrying(flaky, attempts=4, delay=0)
    assert len(calls) == 5


# -- a lost connection ------------------------------------------------------------------------------
def test_a_killed_backend_is_connection_lost(crm, db_url) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("a server backend to kill exists on PostgreSQL only")
    crm.create("deal", {"title": "до"})
    admin = create_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        with pytest.raises(metacrm.ConnectionLost) as info:
            with crm.transaction():
                crm.create("deal", {"title": "в транзакции"})
                pid = crm._tx.exec_driver_sql("select pg_backend_pid()").scalar()
                with admin.connect() as conn:
                    assert conn.execute(text("select pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
                crm.create("deal", {"title": "после"})
    finally:
        admin.dispose()
    error = info.value
    assert isinstance(error, metacrm.DatabaseUnavailable) and error.retryable
    assert "lost" in str(error) and "\n" not in str(error)
    assert [d["title"] for d in crm.find("deal")] == ["до"]  # the transaction was not committed
    crm.create("deal", {"title": "снова"})  # a new connection serves the next operation
    assert crm.count("deal") == 2


def test_driver_errors_are_translated() -> None:
    """Each PostgreSQL state and driver message maps to its metacrm error (the real deadlock,
    lock wait and killed backend are above; a serialization failure needs REPEATABLE READ,
    which metacrm does not use, so its state is checked here)."""

    class Orig(Exception):
        def __init__(self, message, sqlstate=None):
            super().__init__(message)
            self.sqlstate = sqlstate

    def error(message, sqlstate=None, invalidated=False):
        return OperationalError("SELECT 1", {}, Orig(message, sqlstate), connection_invalidated=invalidated)

    for state in ("40P01", "40001", "55P03"):
        mapped = translate(error("could not do it", state))
        assert type(mapped) is metacrm.ConflictError and mapped.retryable and state in str(mapped)
    for exc in (
        error("server closed the connection unexpectedly"),
        error("the connection is closed"),
        error("terminating connection due to administrator command", "57P01"),
        error("could not receive data from server: Connection reset by peer"),
        error("whatever", invalidated=True),
    ):
        assert type(translate(exc)) is metacrm.ConnectionLost
    assert type(translate(error("database is locked"))) is metacrm.ConflictError
    assert type(translate(error('database "x" does not exist', "3D000"))) is metacrm.DatabaseUnavailable
    assert translate(error("syntax error at or near", "42601")) is None  # a bug propagates


def test_the_command_line_prints_one_line_for_a_lost_connection(capsys) -> None:
    lost = OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    for raised in (metacrm.ConnectionLost("the connection to the database was lost; try again"), lost):
        with pytest.raises(typer.Exit) as info:
            with refusals():
                raise raised
        assert info.value.exit_code == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
