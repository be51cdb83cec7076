"""Issue 16's write workload, metacrm against raw SQLAlchemy Core, in one process run.

    python bench/bench_writes.py [--db sqlite|postgresql|both] [--quick] [--repeat 3]
    python bench/bench_writes.py --db sqlite --profile bulk      # cProfile of metacrm's side of a phase
    python bench/bench_writes.py --memory [--memory-rows 100000,1000000]   # peak memory of a bulk create

Model: tests/fixtures/valid/contract.yaml. A deal has a foreign key (the required link
``client``) and an N:M link (``products``), money, and a stages pipeline. Every run starts on a
fresh database (a SQLite file, WAL, or a fresh PostgreSQL schema) with 1,000 clients and 100
products, on the engine and tables metacrm made, so both sides use the same settings.

1. bulk: N deals (20,000), each with a client and 2 products. metacrm:
   ``create_many("deal", inputs, returning=False)`` (validation, link checks, stage history,
   journal). raw: the deal rows and their join rows prepared beforehand (ids taken after the
   largest one), two executemany INSERTs in one transaction, no validation.
2. single: S creates (2,000), one transaction each (the median time of one, so that pauses
   caused by other processes do not count; the same for moves), each deal with a client and 1 product.
   raw: ``INSERT ... RETURNING id`` and the join row INSERT in one transaction.
3. moves: S guarded moves ``new -> qualified`` of bulk-created deals. metacrm: ``crm.move``
   (reads the record, checks the edge, requires and roles, compare-and-swap UPDATE, history
   row). raw: the compare-and-swap UPDATE (``WHERE id AND stage AND version``, the caller
   knowing both) and the history INSERT in one transaction.
4. funnel: ``crm.funnel("deal")`` after the above, against ``SELECT stage, count(*),
   sum(amount) GROUP BY stage`` (which computes far less; informational).

Each run of metacrm and raw alternates (``--repeat`` runs each, median of the runs). Phase 1
prints rows/s, 2 and 3 operations/s, 4 ms; a ratio is metacrm / raw (throughput: higher is
better). "raw + history" lines add the stage-history rows metacrm writes (like for like but the
journal).

``--memory``: peak memory of ``create_many(..., returning=False)`` of deals fed from a
generator, each size in its own process: peak RSS growth (``ru_maxrss``) over the level
before the call, and the tracemalloc peak in a second process. Both should stay about equal
between 100,000 and 1,000,000 rows (bounded by the batch, not by the row count).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import io
import json
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from sqlalchemy import bindparam, func, insert, select, text, update

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_records import (  # noqa: E402 - the shared database helpers of the benches
    INITIAL,
    PIPELINE,
    REACHED,
    amount_text,
    dialects_to_run,
    fresh_crm,
    print_table,
)

PHASES = ("bulk", "single", "moves", "funnel")
GOALS = {  # issue 16: (SQLite, PostgreSQL) ratio of throughput to raw Core
    "bulk": (0.5, 0.75),
    "single": (0.5, 0.75),
    "moves": (0.5, 0.8),
}


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def deal_input(i: int, clients: list[int], products: list[int], many: int) -> dict:
    """What a caller gives metacrm: strings and ids."""
    chosen = [products[(i * 7 + k * 13) % len(products)] for k in range(many)]
    return {
        "title": f"Shipment {i}",
        "amount": amount_text(i),
        "client": clients[i % len(clients)],
        "products": chosen,
    }


def deal_row(i: int, clients: list[int], now: dt.datetime) -> dict:
    """The same deal as the stored row, every column value prepared (what raw Core inserts)."""
    row = {
        "title": f"Shipment {i}",
        "amount": Decimal(amount_text(i)),
        "client_id": clients[i % len(clients)],
        "created_at": now,
        "updated_at": now,
        "version": 1,
        "created_by": None,
        "updated_by": None,
        "owner": None,
        "pipeline": PIPELINE,
        "stage": INITIAL,
        "stage_entered_at": now,
        "closed_at": None,
        "lost_reason": None,
    }
    if REACHED is not None:
        row["reached"] = REACHED[INITIAL]
    return row


def history_row(record_id: int, now: dt.datetime, frm: str | None, to: str, source: str, seconds=None) -> dict:
    return {
        "entity": "deal",
        "record_id": record_id,
        "pipeline": PIPELINE,
        "from_stage": frm,
        "to_stage": to,
        "at": now,
        "by": None,
        "note": None,
        "seconds_in_stage": seconds,
        "source": source,
    }


def new_ids(conn, table, n: int) -> list[int]:
    """``n`` ids: from the sequence on PostgreSQL (one statement), after the largest on SQLite."""
    if conn.dialect.name == "postgresql":
        query = text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)")
        return list(conn.execute(query, {"t": table.name, "n": n}).scalars())
    first = conn.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one() + 1
    return list(range(first, first + n))


def per_op(op: Callable, items: list) -> float:
    """``op`` on each item; the median time of one call times the number of items (a median
    is robust to the pauses other processes cause on a shared machine)."""
    times = []
    clock = time.perf_counter
    for item in items:
        start = clock()
        op(item)
        times.append(clock() - start)
    return statistics.median(times) * len(items)


class Side:
    """One side (metacrm or raw) of the workload on its own fresh database."""

    def __init__(self, crm, clients: list[int], products: list[int], history: bool = False) -> None:
        self.crm, self.clients, self.products, self.history = crm, clients, products, history
        self.table = crm.storage.table("deal")
        self.join = crm.storage.join_table("deal", "products")
        self.hist = crm.storage.history_table
        self.ids: list[int] = []

    # -- metacrm
    def meta_bulk(self, n: int) -> float:
        inputs = [deal_input(i, self.clients, self.products, 2) for i in range(n)]
        gc.collect()
        start = time.perf_counter()
        created = self.crm.create_many("deal", inputs, returning=False)
        elapsed = time.perf_counter() - start
        assert created == n, created
        with self.crm.engine.connect() as conn:
            self.ids = list(conn.execute(select(self.table.c.id).order_by(self.table.c.id)).scalars())
        return elapsed

    def meta_single(self, count: int) -> float:
        inputs = [deal_input(100_000 + i, self.clients, self.products, 1) for i in range(count)]
        create = self.crm.create
        return per_op(lambda data: create("deal", data), inputs)

    def meta_moves(self, count: int) -> float:
        ids = self.ids[:count]
        move = self.crm.move
        return per_op(lambda record_id: move("deal", record_id, "qualified"), ids)

    def meta_funnel(self) -> float:
        start = time.perf_counter()
        self.crm.funnel("deal")
        return time.perf_counter() - start

    # -- raw Core
    def raw_bulk(self, n: int) -> float:
        now = now_utc()
        rows = [deal_row(i, self.clients, now) for i in range(n)]
        products = [deal_input(i, self.clients, self.products, 2)["products"] for i in range(n)]
        gc.collect()
        start = time.perf_counter()
        with self.crm.engine.begin() as conn:
            ids = new_ids(conn, self.table, n)  # the keys of the join rows, known before the insert
            for row, record_id in zip(rows, ids, strict=True):
                row["id"] = record_id
            conn.execute(insert(self.table), rows)
            pairs = [
                {"source_id": record_id, "target_id": t}
                for record_id, chosen in zip(ids, products, strict=True)
                for t in chosen
            ]
            conn.execute(insert(self.join), pairs)
            if self.history:
                conn.execute(insert(self.hist), [history_row(i, now, None, INITIAL, "create") for i in ids])
        elapsed = time.perf_counter() - start
        self.ids = ids
        return elapsed

    def raw_single(self, count: int) -> float:
        engine = self.crm.engine
        returning = insert(self.table).returning(self.table.c.id)
        link, hist = insert(self.join), insert(self.hist)
        inputs = [deal_input(100_000 + i, self.clients, self.products, 1)["products"][0] for i in range(count)]

        def create(pair) -> None:
            i, product = pair
            now = now_utc()
            row = deal_row(100_000 + i, self.clients, now)
            with engine.begin() as conn:
                record_id = conn.execute(returning, row).scalar_one()
                conn.execute(link, {"source_id": record_id, "target_id": product})
                if self.history:
                    conn.execute(hist, history_row(record_id, now, None, INITIAL, "create"))

        return per_op(create, list(enumerate(inputs)))

    def raw_moves(self, count: int) -> float:
        engine, table = self.crm.engine, self.table
        bit = REACHED["qualified"] if REACHED is not None else 0
        values = dict(
            stage="qualified",
            version=table.c.version + 1,
            updated_at=bindparam("_now"),
            stage_entered_at=bindparam("_now"),
            closed_at=None,
        )
        if REACHED is not None:
            values["reached"] = table.c.reached.op("|")(bit)
        cas = (
            update(table)
            .where(
                table.c.id == bindparam("_id"), table.c.stage == bindparam("_from"), table.c.version == bindparam("_v")
            )
            .values(**values)
        )
        hist = insert(self.hist)
        ids = self.ids[:count]

        def move(record_id) -> None:
            now = now_utc()
            with engine.begin() as conn:
                done = conn.execute(cas, {"_id": record_id, "_from": INITIAL, "_v": 1, "_now": now})
                assert done.rowcount == 1
                conn.execute(hist, history_row(record_id, now, INITIAL, "qualified", "move", 0))

        return per_op(move, ids)

    def raw_funnel(self) -> float:
        table = self.table
        query = select(table.c.stage, func.count(), func.sum(table.c.amount)).group_by(table.c.stage)
        start = time.perf_counter()
        with self.crm.engine.connect() as conn:
            conn.execute(query).all()
        return time.perf_counter() - start


def one_run(dialect: str, tmp: Path, kind: str, sizes: dict, profile: str | None = None, phases=PHASES) -> dict:
    """The whole workload on one fresh database: seconds per phase."""
    with fresh_crm(dialect, tmp) as (crm, clients, products):
        if dialect == "postgresql" and ASYNC_COMMIT:
            no_fsync_wait(crm.engine)
        side = Side(crm, clients, products, history=kind == "raw_history")
        prefix = "meta" if kind == "meta" else "raw"
        out = {}
        for phase in PHASES:
            if phase not in phases and not (phase == "bulk" and "moves" in phases):  # moves need the deals
                continue
            method: Callable = getattr(side, f"{prefix}_{phase}")
            args = () if phase == "funnel" else (sizes[phase],)
            if profile == phase and kind == "meta":
                out[phase] = profiled(method, args)
            else:
                out[phase] = method(*args)
        return out


ASYNC_COMMIT = False  # --async-commit


def no_fsync_wait(engine) -> None:
    """Every new connection of the engine with ``synchronous_commit = off`` (this session
    only), and the pooled ones replaced: a commit then does not wait for its WAL flush."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _off(dbapi_conn, record):
        with dbapi_conn.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO off")
        dbapi_conn.commit()

    engine.dispose()


def profiled(method: Callable, args: tuple) -> float:
    profiler = cProfile.Profile()
    profiler.enable()
    elapsed = method(*args)
    profiler.disable()
    for order in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).strip_dirs().sort_stats(order).print_stats(28)
        print(f"\n-- profile of metacrm's {method.__name__} by {order} ({elapsed:.3f} s)\n{text.getvalue()}")
    return elapsed


def run(dialect: str, args, tmp: Path) -> list[tuple]:
    sizes = {"bulk": args.rows, "single": args.singles, "moves": args.singles}
    print(
        f"\n== {dialect}: bulk {args.rows:,} deals (client + 2 products), {args.singles:,} single creates, "
        f"{args.singles:,} moves, funnel; {args.repeat} runs each",
        flush=True,
    )
    kinds = ("meta", "raw", "raw_history")
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    for r in range(args.repeat):
        for kind in kinds:  # interleaved: a change of machine load hits every side
            t0 = time.perf_counter()
            runs[kind].append(one_run(dialect, tmp, kind, sizes, args.profile if r == 0 else None, args.phases))
            print(f"  run {r + 1} {kind}: {time.perf_counter() - t0:.1f} s", flush=True)
    med = {k: {p: statistics.median(run[p] for run in v) for p in v[0]} for k, v in runs.items()}
    goal_at = 0 if dialect == "sqlite" else 1
    lines = []
    for phase, unit, count in (
        ("bulk", "rows/s", args.rows),
        ("single", "creates/s", args.singles),
        ("moves", "moves/s", args.singles),
    ):
        if phase not in args.phases:
            continue
        meta, raw, raw_h = (count / med[k][phase] for k in kinds)
        goal = GOALS[phase][goal_at]
        ratio = meta / raw
        lines.append(
            (
                f"{phase}, {unit}",
                f"{meta:,.0f}",
                f"{raw:,.0f}",
                f"{ratio:.2f}x",
                f">= {goal}x",
                "ok" if ratio >= goal else "MISSED",
            )
        )
        lines.append(("  vs raw + history rows", "", f"{raw_h:,.0f}", f"{meta / raw_h:.2f}x", "info", ""))
    if "funnel" not in args.phases:
        return lines
    meta, raw = med["meta"]["funnel"] * 1e3, med["raw"]["funnel"] * 1e3
    lines.append(("funnel, ms (vs bare GROUP BY stage)", f"{meta:.1f}", f"{raw:.1f}", f"{meta / raw:.2f}x", "info", ""))
    return lines


# --------------------------------------------------------------------------- memory


def memory_child(dialect: str, n: int, trace: bool) -> None:
    """In a process of its own: peak memory of one bulk create of ``n`` deals from a generator."""
    with (
        tempfile.TemporaryDirectory(prefix="metacrm-bench-") as tmp,
        fresh_crm(dialect, Path(tmp)) as (crm, clients, products),
    ):
        crm.create_many("deal", (deal_input(i, clients, products, 2) for i in range(10)), returning=False)  # warm
        gc.collect()
        rss_before = _rss_now()
        if trace:
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
        start = time.perf_counter()
        crm.create_many("deal", (deal_input(i, clients, products, 2) for i in range(n)), returning=False)
        elapsed = time.perf_counter() - start
        out = {
            "n": n,
            "seconds": elapsed,
            "rss_growth": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before,
        }
        if trace:
            out["traced_peak"] = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.stop()
    print(json.dumps(out))


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory(dialects: list[str], sizes: list[int]) -> None:
    for dialect in dialects:
        print(f"\n== {dialect}: peak memory of create_many(..., returning=False), deals from a generator", flush=True)
        for trace in (False, True):
            for n in sizes:
                cmd = [sys.executable, __file__, "--memory-child", f"{dialect}:{n}:{int(trace)}"]
                got = json.loads(
                    subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
                )
                what = (
                    f"tracemalloc peak {got['traced_peak'] / 1e6:6.1f} MB"
                    if trace
                    else f"peak RSS growth {got['rss_growth'] / 1e6:6.1f} MB"
                )
                print(f"  {n:>9,} rows: {what} ({n / got['seconds']:,.0f} rows/s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="smoke check: bulk 5,000, 500 singles and moves")
    parser.add_argument("--rows", type=int, default=None, help="deals of the bulk create (default 20,000)")
    parser.add_argument("--singles", type=int, default=None, help="single creates and moves (default 2,000)")
    parser.add_argument("--repeat", type=int, default=3, help="fresh-database runs of each side (median)")
    parser.add_argument("--profile", choices=["bulk", "single", "moves", "funnel"], help="cProfile metacrm's phase")
    parser.add_argument("--phases", default=",".join(PHASES), help="which phases (default: all)")
    parser.add_argument(
        "--async-commit",
        action="store_true",
        help="PostgreSQL sessions with synchronous_commit=off, both sides (commit fsync latency left out)",
    )
    parser.add_argument("--memory", action="store_true", help="peak memory of bulk creates instead")
    parser.add_argument("--memory-rows", default="100000,1000000")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        dialect, n, trace = args.memory_child.split(":")
        memory_child(dialect, int(n), trace == "1")
        return
    global ASYNC_COMMIT
    ASYNC_COMMIT = args.async_commit
    args.phases = tuple(p.strip() for p in args.phases.split(","))
    dialects = dialects_to_run(args.db)
    if args.memory:
        memory(dialects, [int(x) for x in args.memory_rows.split(",")])
        return
    args.rows = args.rows or (5_000 if args.quick else 20_000)
    args.singles = args.singles or (500 if args.quick else 2_000)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.1f}")
    tables = []
    with tempfile.TemporaryDirectory(prefix="metacrm-bench-") as tmp:
        for dialect in dialects:
            started = time.perf_counter()
            lines = run(dialect, args, Path(tmp))
            tables.append((f"{dialect} ({time.perf_counter() - started:.0f} s)", lines))
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    for name, lines in tables:
        print_table(name, lines)
    print("\nratio = metacrm / raw Core throughput (higher is better); funnel: time (lower is better)")


if __name__ == "__main__":
    main()
