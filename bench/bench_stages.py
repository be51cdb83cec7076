"""Stage moves, the funnel and the board against raw SQL on the same engine and tables.

    python bench/bench_stages.py [--db sqlite|postgresql|both] [--deals 1000000] [--quick]

Model: tests/fixtures/valid/contract.yaml (deal: title, amount money, lost_reason, required link
client, stages new > qualified > proposal | invoice > won / lost; proposal and invoice require
the amount, lost requires lost_reason). Every baseline runs in the same process, on the engine
metacrm made (same SQLite pragmas: WAL, synchronous=NORMAL) and on the tables it created.

1. move: ``crm.move("deal", id, stage)`` (reads the record, checks the edge, ``requires``,
   roles; compare-and-swap UPDATE with the ``reached`` bit; history row; returns the record
   read again) against a raw Core transaction of the same UPDATE (``WHERE id AND stage AND
   version``) + history INSERT, the caller knowing stage and version. Each deal walks
   new > qualified > proposal > invoice > won, one move per operation; median per op.
   Goal <= 2x.
2. funnel over M deals (default 1,000,000) with realistic histories (about 2.8 history rows
   per deal: creation + moves, skips, losses at every stage, 20 owners), loaded with raw
   executemany (COPY on PostgreSQL), masks included, indexes built after the load; then
   ANALYZE (VACUUM ANALYZE on PostgreSQL). ``crm.funnel("deal")`` against the faster of two
   hand-written SQL forms computing the same numbers (checked equal first): GROUP BY stage,
   reached (bits summed in Python) + medians by count and OFFSET over the history index; or
   one GROUP BY stage with a sum(CASE WHEN reached & bit ...) per stage + percentile_cont
   (PostgreSQL) / a row_number() window (SQLite). Goal <= 1.5x. Also shown: the ratio against
   the bare ``SELECT stage, count(*), sum(amount) ... GROUP BY stage`` (which computes much
   less), the funnel ``by="owner"``, and the old way of counting reached from the history (a
   per-record pass over every history row).
3. board of B deals (default 10,000): ``crm.board("deal")`` (20 per stage, by amount
   descending) against raw Core: the GROUP BY for counts and sums plus one UNION ALL of a
   per-stage ``ORDER BY amount DESC, id DESC LIMIT 20``.

Times are medians of interleaved runs; each phase runs on a fresh database (a SQLite file in a
temporary directory, or a fresh PostgreSQL schema from METACRM_TEST_PG_URL, dropped after).
``--quick`` is a smoke run (M=50,000, fewer repeats) that takes well under a minute.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from sqlalchemy import bindparam, func, insert, select, text, union_all, update

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_records import (  # noqa: E402
    MODEL,
    dialects_to_run,
    fresh_url,
    per_op_medians,  # noqa: E402
)
from bench_records import print_table as records_table  # noqa: E402

import metacrm  # noqa: E402

UTC = dt.UTC
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)
OWNERS = [f"user{i:02d}" for i in range(20)]
# (share in 100, path): about 2.8 history rows per deal, a loss at every stage, a skip
PATHS = [
    (20, ("new",)),
    (10, ("new", "lost")),
    (15, ("new", "qualified")),
    (10, ("new", "qualified", "lost")),
    (10, ("new", "qualified", "proposal")),
    (5, ("new", "qualified", "proposal", "lost")),
    (8, ("new", "qualified", "invoice")),
    (7, ("new", "qualified", "proposal", "invoice")),
    (5, ("new", "qualified", "proposal", "invoice", "lost")),
    (10, ("new", "qualified", "proposal", "invoice", "won")),
]
PATH_OF = [path for share, path in PATHS for _ in range(share)]
assert len(PATH_OF) == 100


def _mix(i: int) -> int:
    """A cheap deterministic scramble of i (the same data on every run and database)."""
    return (i * 2654435761) % 4294967296


# --------------------------------------------------------------------------- timing


def median_s(fns: dict, repeat: int) -> dict:
    """Run each function ``repeat`` times, interleaved; median seconds of each."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


# --------------------------------------------------------------------------- data


def deal_rows(start: int, stop: int, clients: list[int], bits: dict[str, int], closed: set[str]):
    """Deals ``start`` .. ``stop - 1`` (ids start + 1 ..) as stored rows, and their history rows."""
    deals, history = [], []
    for i in range(start, stop):
        h = _mix(i)
        path = PATH_OF[h % 100]
        record_id = i + 1
        at = T0 + dt.timedelta(seconds=i * 30)  # a deal every 30 s: about a year per million
        created = at
        history.append(
            {
                "entity": "deal",
                "record_id": record_id,
                "pipeline": "default",
                "from_stage": None,
                "to_stage": path[0],
                "at": at,
                "by": None,
                "note": None,
                "seconds_in_stage": None,
                "source": "create",
            }
        )
        reached = bits[path[0]]
        for step, (a, b) in enumerate(zip(path, path[1:], strict=False)):
            seconds = 3600 + (h >> (step * 3)) % 40 * 7200 + step * 86400
            at = at + dt.timedelta(seconds=seconds)
            reached |= bits[b]
            history.append(
                {
                    "entity": "deal",
                    "record_id": record_id,
                    "pipeline": "default",
                    "from_stage": a,
                    "to_stage": b,
                    "at": at,
                    "by": OWNERS[h % 20],
                    "note": None,
                    "seconds_in_stage": seconds,
                    "source": "move",
                }
            )
        stage = path[-1]
        deals.append(
            {
                "id": record_id,
                "title": f"Deal {i}",
                "amount": Decimal(f"{h % 1_000_000}.{i % 100:02d}"),
                "lost_reason": "-" if stage == "lost" else None,
                "client_id": clients[i % len(clients)],
                "created_at": created,
                "updated_at": at,
                "version": len(path),
                "owner": OWNERS[h % 20],
                "pipeline": "default",
                "stage": stage,
                "stage_entered_at": at,
                "closed_at": at if stage in closed else None,
                "reached": reached,
            }
        )
    return deals, history


def load_deals(crm, m: int, clients: list[int], chunk: int = 50_000) -> float:
    """M deals with histories through raw executemany (COPY on PostgreSQL), indexes built
    after the load; returns the seconds it took."""
    table, hist = crm.storage.table("deal"), crm.storage.history_table
    pipeline = crm.model.entity("deal").pipelines["default"]
    bits = crm.storage.reached_bits[("deal", "default")]
    closed = {s for s, stage in pipeline.stages.items() if stage.closed}
    postgres = crm.engine.dialect.name == "postgresql"
    indexes = [ix for t in (table, hist) for ix in t.indexes]
    start = time.perf_counter()
    with crm.engine.begin() as conn:
        for ix in indexes:
            ix.drop(conn)
    for first in range(0, m, chunk):
        deals, history = deal_rows(first, min(m, first + chunk), clients, bits, closed)
        with crm.engine.begin() as conn:
            if postgres:
                _copy(conn, table, deals)
                _copy(conn, hist, history, skip=("id",))
            else:
                conn.execute(insert(table), deals)
                conn.execute(insert(hist), history)
    with crm.engine.begin() as conn:
        for ix in indexes:
            ix.create(conn)
        if postgres:
            conn.execute(text("SELECT setval(pg_get_serial_sequence('deal', 'id'), (SELECT max(id) FROM deal))"))
    analyze(crm.engine)
    return time.perf_counter() - start


def _copy(conn, table, rows: list[dict], skip=()) -> None:
    names = [c.name for c in table.c if c.name not in skip]
    cursor = conn.connection.driver_connection.cursor()
    columns = ", ".join(f'"{n}"' for n in names)
    with cursor.copy(f'COPY "{table.name}" ({columns}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row([row[n] for n in names])


def analyze(engine) -> None:
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()


def fresh_crm(dialect: str, tmp: Path, clients: int = 1000):
    """A migrated CRM on a fresh database with some clients (a context manager)."""
    from contextlib import contextmanager

    @contextmanager
    def manager():
        with fresh_url(dialect, tmp) as url, metacrm.connect(MODEL, url) as crm:
            crm.migrate()
            ids = [r["id"] for r in crm.create_many("client", ({"name": f"Client {i}"} for i in range(clients)))]
            yield crm, ids

    return manager()


# --------------------------------------------------------------------------- 1. moves

WALK = ("new", "qualified", "proposal", "invoice", "won")


def phase_move(dialect: str, tmp: Path, count: int) -> dict:
    deals = -(-count // (len(WALK) - 1))  # every deal makes 4 moves
    with fresh_crm(dialect, tmp, clients=100) as (crm, clients):
        make = (
            {"title": f"Deal {i}", "amount": "1500.00", "client": clients[i % len(clients)]} for i in range(2 * deals)
        )
        ids = [r["id"] for r in crm.create_many("deal", make)]
        meta_ids, raw_ids = ids[:deals], ids[deals:]
        table, hist = crm.storage.table("deal"), crm.storage.history_table
        bits = crm.storage.reached_bits[("deal", "default")]
        engine = crm.engine
        cas = (
            update(table)
            .where(
                table.c.id == bindparam("_id"), table.c.stage == bindparam("_from"), table.c.version == bindparam("_v")
            )
            .values(
                stage=bindparam("_to"),
                version=table.c.version + 1,
                updated_at=bindparam("_now"),
                stage_entered_at=bindparam("_now"),
                closed_at=bindparam("_closed"),
                reached=table.c.reached.op("|")(bindparam("_bit")),
            )
        )
        add = insert(hist)
        created = {}

        def meta(k):
            step, record_id = divmod(k, deals)
            crm.move("deal", meta_ids[record_id], WALK[step + 1])

        def raw(k):
            step, index = divmod(k, deals)
            record_id, source, target = raw_ids[index], WALK[step], WALK[step + 1]
            now = dt.datetime.now(UTC)
            with engine.begin() as conn:
                done = conn.execute(
                    cas,
                    {
                        "_id": record_id,
                        "_from": source,
                        "_v": step + 1,
                        "_to": target,
                        "_now": now,
                        "_closed": now if target == "won" else None,
                        "_bit": bits[target],
                    },
                )
                assert done.rowcount == 1
                entered = created.get(record_id)
                conn.execute(
                    add,
                    {
                        "entity": "deal",
                        "record_id": record_id,
                        "pipeline": "default",
                        "from_stage": source,
                        "to_stage": target,
                        "at": now,
                        "by": None,
                        "note": None,
                        "seconds_in_stage": int((now - entered).total_seconds()) if entered else 0,
                        "source": "move",
                    },
                )
                created[record_id] = now

        total = deals * (len(WALK) - 1)
        medians = per_op_medians({"meta": meta, "raw": raw}, total, max(1, deals // 4))
        with engine.connect() as conn:  # both walks ended in won, with the same masks
            masks = conn.execute(select(table.c.stage, table.c.reached).distinct()).all()
        assert masks == [("won", sum(bits[s] for s in WALK))], masks
    medians["count"] = total
    return medians


# --------------------------------------------------------------------------- 2. funnel


MEDIAN_WHERE = (
    "entity = 'deal' AND pipeline = 'default' AND source IN ('move', 'reopen') "
    "AND from_stage IS NOT NULL AND seconds_in_stage IS NOT NULL"
)


def ahead_masks(bits: dict[str, int]) -> dict[str, int]:
    """Per open stage, the bits of the forward stages reachable from it, lost excepted."""
    b = bits
    return {
        "new": b["qualified"] | b["proposal"] | b["invoice"] | b["won"],
        "qualified": b["proposal"] | b["invoice"] | b["won"],
        "proposal": b["invoice"] | b["won"],
        "invoice": b["won"],
    }


def plain_sql_funnel(conn, bits: dict[str, int]) -> tuple[list, list]:
    """The funnel's numbers in plain SQL, the way one writes it by hand: one GROUP BY stage
    with a sum(CASE) per stage for reached and moved-on (from the mask), and the medians
    (percentile_cont on PostgreSQL; a row_number() window on SQLite, which has no median)."""
    reached = ", ".join(f"sum(CASE WHEN reached & {bit} <> 0 THEN 1 ELSE 0 END) AS r_{s}" for s, bit in bits.items())
    moved = ", ".join(
        f"sum(CASE WHEN reached & {bits[s]} <> 0 AND reached & {mask} <> 0 THEN 1 ELSE 0 END) AS a_{s}"
        for s, mask in ahead_masks(bits).items()
    )
    counts = conn.exec_driver_sql(
        f"SELECT stage, count(*), sum(amount), {reached}, {moved} FROM deal GROUP BY stage"
    ).all()
    if conn.dialect.name == "postgresql":
        medians = conn.exec_driver_sql(
            "SELECT from_stage, percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds_in_stage) "
            f"FROM metacrm_history WHERE {MEDIAN_WHERE} GROUP BY from_stage"
        ).all()
    else:
        medians = conn.exec_driver_sql(
            "SELECT from_stage, avg(s) FROM (SELECT from_stage, seconds_in_stage AS s, "
            "row_number() OVER (PARTITION BY from_stage ORDER BY seconds_in_stage) AS rn, "
            f"count(*) OVER (PARTITION BY from_stage) AS n FROM metacrm_history WHERE {MEDIAN_WHERE}) "
            "WHERE rn IN ((n + 1) / 2, (n + 2) / 2) GROUP BY from_stage"
        ).all()
    return counts, medians


def best_sql_funnel(conn, bits: dict[str, int]) -> tuple[list, list]:
    """The same numbers by the fastest hand-written route known: GROUP BY stage, reached (the
    bits summed in Python) and the medians by count + OFFSET over the history index."""
    pairs = conn.exec_driver_sql("SELECT stage, reached, count(*), sum(amount) FROM deal GROUP BY stage, reached").all()
    ahead = ahead_masks(bits)
    rows: dict = {}
    for stage, mask, n, amount in pairs:
        row = rows.setdefault(stage, [stage, 0, 0] + [0] * (len(bits) + len(ahead)))
        row[1] += n
        row[2] += amount or 0
        for k, bit in enumerate(bits.values()):
            row[3 + k] += n if mask & bit else 0
        for k, (s, later) in enumerate(ahead.items()):
            row[3 + len(bits) + k] += n if mask & bits[s] and mask & later else 0
    medians = []
    counts = conn.exec_driver_sql(
        f"SELECT from_stage, count(*) FROM metacrm_history WHERE {MEDIAN_WHERE} GROUP BY from_stage"
    ).all()
    for stage, n in counts:
        middle = (
            conn.exec_driver_sql(
                f"SELECT seconds_in_stage FROM metacrm_history WHERE {MEDIAN_WHERE} AND from_stage = '{stage}' "
                f"ORDER BY seconds_in_stage LIMIT {2 - n % 2} OFFSET {(n - 1) // 2}"
            )
            .scalars()
            .all()
        )
        medians.append((stage, sum(middle) / len(middle)))
    return [tuple(r) for r in rows.values()], medians


def from_history(conn) -> list:
    """Reached per stage the old way: a per-record pass over every history row."""
    flags = ", ".join(
        f"max(CASE WHEN to_stage = '{s}' THEN 1 ELSE 0 END) AS f_{s}"
        for s in ("qualified", "proposal", "invoice", "won", "lost")
    )
    sums = ", ".join(f"sum(r.f_{s})" for s in ("qualified", "proposal", "invoice", "won", "lost"))
    return conn.exec_driver_sql(
        f"SELECT d.stage, {sums} FROM (SELECT record_id, {flags} FROM metacrm_history "
        "WHERE entity = 'deal' AND pipeline = 'default' AND to_stage <> 'new' GROUP BY record_id) r "
        "JOIN deal d ON d.id = r.record_id GROUP BY d.stage"
    ).all()


def check_funnel(doc: dict, counts: list, medians: list) -> None:
    """The funnel and a hand-written query agree on every number."""
    by_stage = {row[0]: row for row in counts}
    stages = {s["stage"]: s for s in doc["stages"]}
    total = sum(row[1] for row in counts)
    for name, s in stages.items():
        assert s["now"] == (by_stage[name][1] if name in by_stage else 0), name
    declared = ["new", "qualified", "proposal", "invoice", "won", "lost"]
    for k, name in enumerate(declared):
        assert stages[name]["reached"] == sum(row[3 + k] for row in counts), name
    for k, name in enumerate(["new", "qualified", "proposal", "invoice"]):
        moved_on = sum(row[3 + len(declared) + k] for row in counts)
        assert stages[name]["conversion_next"] == round(moved_on / stages[name]["reached"], 4), name
    assert stages["new"]["reached"] == total and next(iter(stages)) == "new"
    got = {s: v["median_seconds"] for s, v in stages.items() if v["median_seconds"] is not None}
    assert got == {s: float(v) for s, v in medians}, (got, medians)


def phase_funnel(dialect: str, tmp: Path, m: int, repeat: int, history_repeat: int) -> dict:
    with fresh_crm(dialect, tmp) as (crm, clients):
        load_s = load_deals(crm, m, clients)
        engine = crm.engine
        bits = crm.storage.reached_bits[("deal", "default")]
        doc = crm.funnel("deal")
        with engine.connect() as conn:
            check_funnel(doc, *plain_sql_funnel(conn, bits))
            check_funnel(doc, *best_sql_funnel(conn, bits))

        def meta():
            crm.funnel("deal")

        def by_owner():
            assert len(crm.funnel("deal", by="owner")) == len(OWNERS)

        def plain():
            with engine.begin() as conn:
                plain_sql_funnel(conn, bits)

        def best():
            with engine.begin() as conn:
                best_sql_funnel(conn, bits)

        table = crm.storage.table("deal")
        bare_query = select(table.c.stage, func.count(), func.sum(table.c.amount)).group_by(table.c.stage)

        def bare():
            with engine.begin() as conn:
                conn.execute(bare_query).all()

        def history():
            with engine.begin() as conn:
                from_history(conn)

        for fn in (meta, best, plain, bare):  # warm the caches
            fn()
        out = median_s({"meta": meta, "best": best, "plain": plain, "bare": bare}, repeat)
        out.update(median_s({"by_owner": by_owner}, max(1, repeat // 2)))
        out.update(median_s({"history": history}, history_repeat))
        with engine.connect() as conn:
            out["history_rows"] = conn.execute(select(func.count()).select_from(crm.storage.history_table)).scalar()
    out["load_s"] = load_s
    return out


# --------------------------------------------------------------------------- 3. board


def phase_board(dialect: str, tmp: Path, b: int, repeat: int) -> dict:
    with fresh_crm(dialect, tmp, clients=100) as (crm, clients):
        load_deals(crm, b, clients, chunk=10_000)
        table, engine = crm.storage.table("deal"), crm.engine
        stages = ["new", "qualified", "proposal", "invoice", "won", "lost"]
        counts = select(table.c.stage, func.count().label("n"), func.sum(table.c.amount).label("amount")).group_by(
            table.c.stage
        )
        columns = [table.c.id, table.c.stage, table.c.stage_entered_at, table.c.title, table.c.amount, table.c.owner]
        parts = [
            select(*columns)
            .where(table.c.stage == s, table.c.amount.is_not(None))
            .order_by(table.c.amount.desc(), table.c.id.desc())
            .limit(20)
            for s in stages
        ]
        cards = union_all(*[select(p.subquery()) for p in parts])

        def meta():
            board = crm.board("deal")
            assert board["count"] == b

        def raw():
            with engine.begin() as conn:
                totals = conn.execute(counts).all()
                rows = conn.execute(cards).all()
            assert sum(t.n for t in totals) == b and rows

        for fn in (meta, raw):
            fn()
        return median_s({"meta": meta, "raw": raw}, repeat)


# --------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def run(dialect: str, args, tmp: Path) -> list[tuple]:
    print(
        f"\n== {dialect}: {args.moves:,} moves, funnel over {args.deals:,} deals, board of {args.board:,}", flush=True
    )
    lines: list[tuple] = []

    t0 = time.perf_counter()
    moved = phase_move(dialect, tmp, args.moves)
    r = moved["meta"] / moved["raw"]
    lines.append(
        (
            "1 move, ms/op",
            f"{moved['meta'] * 1e3:.3f}",
            f"{moved['raw'] * 1e3:.3f}",
            f"{r:.2f}x",
            "<= 2x",
            verdict(r <= 2),
        )
    )
    print(f"  moves done in {time.perf_counter() - t0:.1f} s", flush=True)

    t0 = time.perf_counter()
    f = phase_funnel(dialect, tmp, args.deals, args.repeat, args.history_repeat)
    print(
        f"  funnel done in {time.perf_counter() - t0:.1f} s (load of {args.deals:,} deals + "
        f"{f['history_rows']:,} history rows: {f['load_s']:.1f} s)",
        flush=True,
    )
    hand = min(f["best"], f["plain"])
    r = f["meta"] / hand
    lines.append(
        ("2 funnel, ms", f"{f['meta'] * 1e3:.1f}", f"{hand * 1e3:.1f}", f"{r:.2f}x", "<= 1.5x", verdict(r <= 1.5))
    )
    for name, key in (
        ("  vs GROUP BY stage, reached + OFFSET", "best"),
        ("  vs plain SQL: sum(CASE) + median", "plain"),
    ):
        lines.append((name, "", f"{f[key] * 1e3:.1f}", f"{f['meta'] / f[key]:.2f}x", "info", ""))
    lines.append(
        ("  vs bare GROUP BY stage", "", f"{f['bare'] * 1e3:.1f}", f"{f['meta'] / f['bare']:.2f}x", "info", "")
    )
    lines.append(("  funnel by owner (20), ms", f"{f['by_owner'] * 1e3:.1f}", "", "", "info", ""))
    lines.append(
        (
            "  reached from history (old way)",
            "",
            f"{f['history'] * 1e3:.1f}",
            f"{f['meta'] / f['history']:.2f}x",
            "info",
            "",
        )
    )

    t0 = time.perf_counter()
    board = phase_board(dialect, tmp, args.board, args.board_repeat)
    r = board["meta"] / board["raw"]
    lines.append(("3 board, ms", f"{board['meta'] * 1e3:.2f}", f"{board['raw'] * 1e3:.2f}", f"{r:.2f}x", "info", ""))
    print(f"  board done in {time.perf_counter() - t0:.1f} s", flush=True)
    return lines


def print_table(dialect: str, lines: list[tuple]) -> None:
    records_table(dialect, lines, raw="raw")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--deals", type=int, default=None, help="M deals for the funnel (default 1,000,000)")
    parser.add_argument("--board", type=int, default=10_000, help="B deals for the board (default 10,000)")
    parser.add_argument("--moves", type=int, default=None, help="moves of each kind (default 4,000)")
    parser.add_argument("--repeat", type=int, default=None, help="funnel runs of each kind (median; default 7)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: M=50,000, 800 moves, fewer repeats")
    args = parser.parse_args()
    quick = args.quick
    args.deals = args.deals or (50_000 if quick else 1_000_000)
    args.moves = args.moves or (800 if quick else 4_000)
    args.repeat = args.repeat or (3 if quick else 7)
    args.history_repeat = 1 if quick else 3
    args.board_repeat = 20 if quick else 100

    dialects = dialects_to_run(args.db)

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; medians; ratio = metacrm / raw (lower is better)")
    print(f"load average at start: {os.getloadavg()[0]:.1f} (other processes on the machine skew absolute numbers)")
    tables = []
    with tempfile.TemporaryDirectory(prefix="metacrm-bench-") as tmp:
        for dialect in dialects:
            started = time.perf_counter()
            lines = run(dialect, args, Path(tmp))
            tables.append((f"{dialect} ({time.perf_counter() - started:.0f} s)", lines))
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    for name, lines in tables:
        print_table(name, lines)
    if tables:
        print(
            "\n1: median per move (guards + compare-and-swap + history, record read back) vs the raw UPDATE + INSERT\n"
            "transaction. 2: median funnel vs the faster of two hand-written SQL forms computing the same\n"
            "numbers (now, amounts, reached and conversions from the mask, medians): GROUP BY stage, reached +\n"
            "medians by OFFSET over the history index, or one GROUP BY stage with a sum(CASE) per stage +\n"
            "percentile_cont / a row_number() window. 'bare GROUP BY' computes only now and amounts; 'old way'\n"
            "is the per-record history pass the funnel used before the mask. 3: board (counts, sums, 20 cards\n"
            "per stage) vs the same two statements in raw Core."
        )


if __name__ == "__main__":
    main()
