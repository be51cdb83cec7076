"""One CRM object shared by threads and asyncio tasks (issue 19): the open transaction belongs
to the thread or task that opened it, never to the shared object.

The stress test runs worker threads on one ``crm``: creates, moves (an automation creates a
task when a deal is won), updates and relinks of deals whose client holds roll-ups, some of
them inside ``crm.transaction()`` blocks, some of which fail on purpose. Then every stored
roll-up is checked against a recomputation from the rows, every successful call against
exactly one row, every failed transaction against no row at all, and on PostgreSQL no session
is left idle in a transaction. Each workload runs under a timeout, so a hang fails the test."""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from sqlalchemy import text

import metacrm
from metacrm.errors import ConflictError, TransitionError

MODEL = """\
metacrm: 1
name: threads
entities:
  client:
    fields:
      name: {type: string, required: true}
      open_deals: {type: integer, rollup: "count(deals where closed_at is null)"}
      won_total: {type: money, rollup: "sum(deals.amount where stage = 'won')"}
  deal:
    fields:
      title: {type: string, required: true}
      amount: {type: money, min: 0}
      tasks_count: {type: integer, rollup: "count(tasks)"}
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
  task:
    fields:
      title: {type: string, required: true}
    links:
      deal: {to: deal, inverse: tasks, on_delete: cascade}
automations:
  ship:
    when: {entity: deal, enters: won}
    do:
      - create: task
        values: {title: Отгрузить, deal: $record}
"""

THREADS = 6
OPERATIONS = 40  # per thread
CLIENTS = 3  # few clients: the roll-ups of each are written by many threads at once
APP = f"metacrm_threads_{uuid.uuid4().hex[:8]}"
TIMEOUT = 120  # seconds for a whole workload; a hang fails the test instead of blocking CI


class Doomed(Exception):
    """Raised inside a transaction on purpose: it must leave nothing behind."""


@pytest.fixture
def crm(db_url, tmp_path):
    path = tmp_path / "threads.yaml"
    path.write_text(MODEL, encoding="utf-8")
    if db_url.startswith("postgresql"):  # this test's sessions, told from other tests' on the same server
        db_url += f"&application_name={APP}"
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    yield crm
    crm.close()


def _run(workers, timeout: float = TIMEOUT) -> None:
    """Run the workers in threads; fail (instead of hanging) when one does not finish in time."""
    errors: list[BaseException] = []

    def guarded(work):
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), f"a worker thread still runs after {timeout} s: a hang"
    if errors:
        raise errors[0]


class Ledger:
    """What the workers were told: titles of deals created, won and lost; titles that a
    failed transaction created (must be absent)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.created: list[str] = []
        self.won: set[int] = set()
        self.doomed: list[str] = []
        self.refused: list[str] = []
        self.deals: list[int] = []

    def add(self, **kw) -> None:
        with self.lock:
            for name, value in kw.items():
                target = getattr(self, name)
                target.add(value) if isinstance(target, set) else target.append(value)


def _steps(crm, clients: list[int], ledger: Ledger, who: int):
    """The operations of one worker: ``step(n)`` does its n-th (the same sequence for a seed)."""
    rng = random.Random(who)

    def step(n: int) -> None:
        title = f"t{who}-{n}"
        kind = rng.choice(("create", "create", "move", "update", "relink", "tx", "doomed"))
        with ledger.lock:
            known = list(ledger.deals)
        if kind in ("move", "update", "relink") and not known:
            kind = "create"
        try:
            if kind == "create":
                deal = crm.create(
                    "deal", {"title": title, "amount": rng.randint(1, 100), "client": rng.choice(clients)}
                )
                ledger.add(created=title, deals=deal["id"])
            elif kind == "move":
                deal_id = rng.choice(known)
                target = rng.choice(("won", "lost"))
                crm.move("deal", deal_id, target)
                if target == "won":
                    ledger.add(won=deal_id)
            elif kind == "update":
                crm.update("deal", rng.choice(known), {"amount": rng.randint(1, 100)})
            elif kind == "relink":
                crm.update("deal", rng.choice(known), {"client": rng.choice(clients)})
            elif kind == "tx":  # two operations as one, committed
                with crm.transaction():
                    deal = crm.create("deal", {"title": title, "amount": 5, "client": rng.choice(clients)})
                    crm.move("deal", deal["id"], "won")
                ledger.add(created=title, deals=deal["id"], won=deal["id"])
            else:  # a transaction that writes (reactors and automation included), then fails
                try:
                    with crm.transaction():
                        deal = crm.create("deal", {"title": title, "amount": 7, "client": rng.choice(clients)})
                        crm.move("deal", deal["id"], "won")  # the automation creates its task
                        crm.update("deal", deal["id"], {"amount": 1})
                        raise Doomed(title)
                except Doomed:
                    ledger.add(doomed=title)
        except (TransitionError, ConflictError) as exc:  # the only expected refusal: a lost race to move
            assert kind == "move", exc
            ledger.add(refused=str(exc))

    return step


def _worker(crm, clients: list[int], ledger: Ledger, who: int):
    step = _steps(crm, clients, ledger, who)
    return lambda: [step(n) for n in range(OPERATIONS)]


def _check(crm, ledger: Ledger) -> None:
    deals = crm.find("deal")
    titles = [d["title"] for d in deals]
    # every successful create is exactly one row; nothing else was written
    assert sorted(titles) == sorted(ledger.created)
    # every failed transaction left no row
    assert not set(titles) & set(ledger.doomed)
    # every deal won (by a move or in a transaction) has exactly one task from the automation
    tasks = crm.find("task")
    per_deal: dict[int, int] = {}
    for task in tasks:
        per_deal[task["deal"]] = per_deal.get(task["deal"], 0) + 1
    won = {d["id"] for d in deals if d["stage"] == "won"}
    assert won == ledger.won
    assert per_deal == dict.fromkeys(won, 1)
    # every stored roll-up equals a recomputation from the rows
    for deal in deals:
        assert deal["tasks_count"] == per_deal.get(deal["id"], 0), deal
    for client in crm.find("client"):
        mine = [d for d in deals if d["client"] == client["id"]]
        assert client["open_deals"] == sum(1 for d in mine if d["stage"] == "new"), client
        won_total = sum((Decimal(d["amount"]) for d in mine if d["stage"] == "won"), Decimal(0))
        assert Decimal(client["won_total"] or 0) == won_total, client


def _idle_in_transaction(crm) -> list:
    """This test's PostgreSQL sessions left idle inside a transaction."""
    with crm.engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT pid, state, query FROM pg_stat_activity WHERE application_name = :app "
                "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
            ),
            {"app": APP},
        ).all()


def stress(crm) -> Ledger:
    """The shared-object thread stress on a migrated, empty ``crm``, checked (tools/stress.py runs it too)."""
    clients = [crm.create("client", {"name": f"Клиент {i}"})["id"] for i in range(CLIENTS)]
    ledger = Ledger()
    _run([_worker(crm, clients, ledger, who) for who in range(THREADS)])
    assert ledger.created and ledger.doomed and ledger.won  # the workload did what it is meant to
    _check(crm, ledger)
    if crm.engine.dialect.name == "postgresql":
        assert crm.engine.pool.checkedout() == 0  # every connection went back to the pool
        assert _idle_in_transaction(crm) == []
    # the object is still sound for a plain single-threaded call
    assert crm.create("deal", {"title": "after", "client": clients[0]})["client"] == clients[0]
    return ledger


def test_threads_share_one_crm(crm) -> None:
    stress(crm)


@pytest.fixture
def memory_crm(tmp_path):
    path = tmp_path / "threads.yaml"
    path.write_text(MODEL, encoding="utf-8")
    with metacrm.connect(path, "sqlite:///:memory:") as crm:
        crm.migrate()
        yield crm


def test_threads_share_one_memory_crm(memory_crm) -> None:
    """sqlite:///:memory: is one connection: the threads take turns on it, and see one database."""
    stress(memory_crm)


def test_tasks_share_one_crm(crm) -> None:
    """asyncio tasks doing the same through asyncio.to_thread, while one task holds failing
    transactions across awaits (its calls, run by to_thread in its context, join them)."""
    clients = [crm.create("client", {"name": f"Клиент {i}"})["id"] for i in range(CLIENTS)]
    ledger = Ledger()

    async def worker(who: int) -> None:
        step = _steps(crm, clients, ledger, who)
        for n in range(OPERATIONS):
            await asyncio.to_thread(step, n)

    async def holder() -> None:
        for n in range(OPERATIONS // 4):
            title = f"held-{n}"
            try:
                with crm.transaction():
                    deal = await asyncio.to_thread(crm.create, "deal", {"title": title, "client": clients[n % CLIENTS]})
                    await asyncio.sleep(0)
                    await asyncio.to_thread(crm.move, "deal", deal["id"], "won")
                    raise Doomed(title)
            except Doomed:
                ledger.add(doomed=title)

    async def scenario() -> None:
        # a thread for every task at once: the holder's calls must not queue behind writers
        # waiting (on SQLite) for the lock its transaction holds
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(THREADS + 2))
        await asyncio.gather(*(worker(who) for who in range(THREADS)), holder())

    _run([lambda: asyncio.run(scenario())])
    assert ledger.created and ledger.won and any(t.startswith("held-") for t in ledger.doomed)
    _check(crm, ledger)
    if crm.engine.dialect.name == "postgresql":
        assert crm.engine.pool.checkedout() == 0
        assert _idle_in_transaction(crm) == []


def test_tasks_share_one_memory_crm(memory_crm) -> None:
    """The same on sqlite:///:memory:: the holder's thread keeps the one connection while its
    transaction is open; the workers' threads wait for their turn."""
    test_tasks_share_one_crm(memory_crm)


def test_a_task_holding_a_transaction_absorbs_no_other_write(crm) -> None:
    """Task A opens a transaction, writes, awaits; task B reads on the event loop (it must not
    see A's uncommitted deal) and creates a deal through asyncio.to_thread; A rolls back: B's
    deal is there, A's is not, and the roll-up counts B's only."""
    client = crm.create("client", {"name": "Клиент"})["id"]

    async def scenario():
        started = asyncio.Event()
        tasks: dict[str, asyncio.Task] = {}

        async def holder():
            try:
                with crm.transaction():
                    crm.create("deal", {"title": "held", "client": client})
                    started.set()
                    # let B run meanwhile (on SQLite its write waits for this transaction's lock)
                    await asyncio.wait({tasks["other"]}, timeout=0.5)
                    raise Doomed("held")
            except Doomed:
                return "rolled back"

        async def other():
            await started.wait()
            seen = [d["title"] for d in crm.find("deal")]
            made = await asyncio.to_thread(crm.create, "deal", {"title": "other", "client": client})
            return seen, made

        tasks["other"] = asyncio.create_task(other())
        tasks["holder"] = asyncio.create_task(holder())
        return await asyncio.wait_for(asyncio.gather(tasks["holder"], tasks["other"]), TIMEOUT)

    outcome, (seen, made) = asyncio.run(scenario())
    assert outcome == "rolled back"
    assert seen == []  # A's uncommitted deal is A's alone
    assert [(d["id"], d["title"]) for d in crm.find("deal")] == [(made["id"], "other")]
    assert crm.get("client", client)["open_deals"] == 1


def test_a_view_joins_its_thread_transaction(crm) -> None:
    """An as_user() view used inside crm.transaction() in the same thread joins it (and rolls
    back with it); the same view in another thread works in its own transaction."""
    client = crm.create("client", {"name": "Клиент"})["id"]
    view = crm.as_user(None)
    with pytest.raises(Doomed), crm.transaction():
        view.create("deal", {"title": "joined", "client": client})
        raise Doomed("joined")
    assert crm.find("deal") == []
    with crm.transaction():
        crm.create("deal", {"title": "mine", "client": client})
    _run([lambda: view.create("deal", {"title": "elsewhere", "client": client})])
    assert sorted(d["title"] for d in crm.find("deal")) == ["elsewhere", "mine"]
