"""Record operations of the runtime against raw SQLAlchemy Core on the same engine and tables.

    python bench/bench_records.py [--db sqlite|postgresql|both] [--rows 100000] [--find-rows 1000000] [--quick]

Model: tests/fixtures/valid/contract.yaml (deal: title, amount money, required link client,
many-link products, stages). Every baseline runs in the same process, on an engine made by
metacrm (so the same SQLite pragmas: WAL, synchronous=NORMAL), on the tables metacrm created,
with the column values already prepared: the ratio measures metacrm's code path, not settings.

1. bulk create of N deals: ``crm.create_many("deal", rows, returning=False)`` against one Core
   executemany of the prepared deal rows in one transaction (goal >= 0.5x raw throughput).
   metacrm also writes a stage-history row per deal; the "raw + history" line does the same
   writes (deal INSERT ... RETURNING id, then the history rows) for a like-for-like reading.
   Peak traced memory (tracemalloc) of the metacrm bulk create for N and N/4 rows fed from a
   generator (goal: bounded by the 1,000-row batch, so both about the same).
2. single create, one transaction per record (goal <= 1.5x raw time per op).
3. get by id of a deal with a client and 2 products: ``crm.get`` against select row + select
   its join rows.
4. find over M deals loaded with raw Core: ``client = :c`` (index on client_id) and
   ``stage = :s`` ordered by ``-amount`` (covering (stage, amount) index), limit 50, against the
   same SELECT plus the join-row SELECT for the 50 ids (what metacrm returns: products too).

Times are medians; every phase runs on a fresh database (a SQLite file in a temporary
directory, or a fresh PostgreSQL schema from METACRM_TEST_PG_URL, dropped afterwards).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

from sqlalchemy import create_engine, insert, make_url, select, text

import metacrm
from metacrm.storage.tables import build_storage

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "fixtures" / "valid" / "contract.yaml"
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
STAGES = ["new", "qualified", "proposal", "invoice", "won", "lost"]


# --------------------------------------------------------------------------- databases


def pg_url() -> str:
    return os.environ.get("METACRM_TEST_PG_URL") or PG_DEFAULT


def shown_pg_url() -> str:
    return make_url(pg_url()).render_as_string(hide_password=True)


def pg_reachable() -> str | None:
    try:
        engine = create_engine(pg_url())
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "skip PostgreSQL"
        return f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}"
    return None


def dialects_to_run(db: str) -> list[str]:
    """The dialects ``--db`` asks for; with ``both``, PostgreSQL is skipped (said) when it is
    unreachable, and with ``postgresql`` an unreachable server ends the run."""
    dialects = ["sqlite", "postgresql"] if db == "both" else [db]
    if "postgresql" in dialects:
        problem = pg_reachable()
        if problem:
            if db == "postgresql":
                sys.exit(f"PostgreSQL at {shown_pg_url()} is unreachable: {problem}")
            print(f"skipping PostgreSQL ({shown_pg_url()} unreachable: {problem})")
            dialects.remove("postgresql")
    return dialects


@contextmanager
def fresh_url(dialect: str, tmp: Path):
    """The URL of an empty database; removed afterwards."""
    if dialect == "sqlite":
        folder = Path(tempfile.mkdtemp(dir=tmp))
        try:
            yield f"sqlite:///{folder / 'bench.db'}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    base = pg_url()
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def fresh_crm(dialect: str, tmp: Path, *, clients: int = 1000, products: int = 100):
    """A migrated CRM on a fresh database with some clients and products; yields (crm, client ids, product ids)."""
    with fresh_url(dialect, tmp) as url, metacrm.connect(MODEL, url) as crm:
        crm.migrate()
        client_ids = [r["id"] for r in crm.create_many("client", ({"name": f"Client {i}"} for i in range(clients)))]
        product_ids = [r["id"] for r in crm.create_many("product", ({"name": f"Product {i}"} for i in range(products)))]
        yield crm, client_ids, product_ids


# --------------------------------------------------------------------------- rows


def amount_text(i: int) -> str:
    return f"{(i * 7919) % 1_000_000}.{(i * 37) % 100:02d}"


def deal_input(i: int, client_ids: list[int]) -> dict:
    """What a caller gives metacrm: strings and ids."""
    return {"title": f"Deal {i}", "amount": amount_text(i), "client": client_ids[i % len(client_ids)]}


def deal_row(i: int, client_ids: list[int], now: dt.datetime, stage: str | None = None) -> dict:
    """The same deal as the stored row metacrm writes: every column value already prepared."""
    stage = stage or INITIAL
    row = {
        "title": f"Deal {i}",
        "amount": Decimal(amount_text(i)),
        "client_id": client_ids[i % len(client_ids)],
        "created_at": now,
        "updated_at": now,
        "version": 1,
        "owner": None,
        "pipeline": PIPELINE,
        "stage": stage,
        "stage_entered_at": now,
        "closed_at": None,
        "lost_reason": None,
    }
    if REACHED is not None:  # the mask of stages entered, when the storage has the column
        row["reached"] = REACHED[stage]
    return row


def history_row(record_id: int, now: dt.datetime) -> dict:
    return {
        "entity": "deal",
        "record_id": record_id,
        "pipeline": PIPELINE,
        "from_stage": None,
        "to_stage": INITIAL,
        "at": now,
        "by": None,
        "note": None,
        "seconds_in_stage": None,
        "source": "create",
    }


_model = metacrm.load_model(MODEL)
PIPELINE = next(iter(_model.entity("deal").pipelines))
INITIAL = _model.entity("deal").pipelines[PIPELINE].initial
REACHED = getattr(build_storage(_model), "reached_bits", {}).get(("deal", PIPELINE))


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------- phases


def bulk_once(dialect: str, tmp: Path, n: int, kind: str) -> float:
    """Seconds for one bulk create of ``n`` deals on a fresh database (inputs prepared beforehand)."""
    with fresh_crm(dialect, tmp) as (crm, clients, _):
        if kind == "meta":
            inputs = [deal_input(i, clients) for i in range(n)]
            gc.collect()
            start = time.perf_counter()
            created = crm.create_many("deal", inputs, returning=False)
            elapsed = time.perf_counter() - start
            assert created == n, created
            return elapsed
        table, history = crm.storage.table("deal"), crm.storage.history_table
        now = now_utc()
        rows = [deal_row(i, clients, now) for i in range(n)]
        gc.collect()
        start = time.perf_counter()
        with crm.engine.begin() as conn:
            if kind == "raw":
                conn.execute(table.insert(), rows)
            else:  # the same writes as metacrm: deal rows (their ids back), then the history rows
                ids = (
                    conn.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows)
                    .scalars()
                    .all()
                )
                conn.execute(insert(history), [history_row(i, now) for i in ids])
        return time.perf_counter() - start


def phase_bulk(dialect: str, tmp: Path, n: int, repeat: int) -> dict:
    times: dict[str, list[float]] = {"meta": [], "raw": [], "raw_history": []}
    for _ in range(repeat):  # interleaved, so that a change in machine load hits all three
        for kind, bucket in times.items():
            bucket.append(bulk_once(dialect, tmp, n, kind))
    return {kind: n / statistics.median(values) for kind, values in times.items()}


def peak_memory(dialect: str, tmp: Path, n: int) -> int:
    """Peak traced bytes above the level before the call, rows fed from a generator."""
    with fresh_crm(dialect, tmp) as (crm, clients, _):
        crm.create_many("deal", (deal_input(i, clients) for i in range(10)), returning=False)  # warm caches
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            crm.create_many("deal", (deal_input(i, clients) for i in range(n)), returning=False)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return peak - base


def per_op_medians(ops: dict, count: int, block: int) -> dict:
    """Run each op ``count`` times, alternating blocks of ``block`` calls; median seconds per op."""
    times: dict[str, list[float]] = {name: [] for name in ops}
    done = 0
    while done < count:
        size = min(block, count - done)
        for name, op in ops.items():
            bucket = times[name]
            for k in range(done, done + size):
                start = time.perf_counter()
                op(k)
                bucket.append(time.perf_counter() - start)
        done += size
    return {name: statistics.median(values) for name, values in times.items()}


def phase_single(dialect: str, tmp: Path, count: int) -> dict:
    with fresh_crm(dialect, tmp) as (crm, clients, _):
        table, history = crm.storage.table("deal"), crm.storage.history_table
        engine = crm.engine
        stmt, stmt_returning, hist_stmt = table.insert(), insert(table).returning(table.c.id), insert(history)

        def meta(k):
            crm.create("deal", deal_input(k, clients))

        def raw(k):
            row = deal_row(k, clients, now_utc())
            with engine.begin() as conn:
                conn.execute(stmt, row)

        def raw_with_history(k):
            now = now_utc()
            row = deal_row(k, clients, now)
            with engine.begin() as conn:
                record_id = conn.execute(stmt_returning, row).scalar_one()
                conn.execute(hist_stmt, history_row(record_id, now))

        for warm in (meta, raw, raw_with_history):
            for k in range(20):
                warm(k)
        medians = per_op_medians({"meta": meta, "raw": raw, "raw_history": raw_with_history}, count, 250)
    return medians


def phase_get(dialect: str, tmp: Path, deals: int, count: int) -> dict:
    with fresh_crm(dialect, tmp) as (crm, clients, products):
        rng = random.Random(1)
        crm.create_many(
            "deal",
            ({**deal_input(i, clients), "products": rng.sample(products, 2)} for i in range(deals)),
            returning=False,
        )
        table, join = crm.storage.table("deal"), crm.storage.join_table("deal", "products")
        with crm.engine.connect() as conn:
            ids = list(conn.execute(select(table.c.id)).scalars())
        picks = [rng.choice(ids) for _ in range(count)]
        engine = crm.engine

        def meta(k):
            record = crm.get("deal", picks[k])
            assert len(record["products"]) == 2

        def raw(k):
            record_id = picks[k]
            with engine.begin() as conn:
                row = conn.execute(select(table).where(table.c.id == record_id)).mappings().first()
                links = (
                    conn.execute(
                        select(join.c.target_id).where(join.c.source_id == record_id).order_by(join.c.target_id)
                    )
                    .scalars()
                    .all()
                )
            assert row is not None and len(links) == 2

        for k in range(50):
            meta(k)
            raw(k)
        return per_op_medians({"meta": meta, "raw": raw}, count, 250)


def load_deals(crm, m: int, clients: list[int], chunk: int = 50_000) -> None:
    """M deals through raw Core executemany (not metacrm), stages spread evenly."""
    table = crm.storage.table("deal")
    now = now_utc()
    with crm.engine.begin() as conn:
        for start in range(0, m, chunk):
            rows = [deal_row(i, clients, now, STAGES[i % len(STAGES)]) for i in range(start, min(m, start + chunk))]
            conn.execute(table.insert(), rows)
    with crm.engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()


def phase_find(dialect: str, tmp: Path, m: int, count: int) -> dict:
    clients_n = max(100, m // 100)  # about 100 deals per client: every query returns 50 rows
    with fresh_crm(dialect, tmp, clients=clients_n) as (crm, clients, _):
        start = time.perf_counter()
        load_deals(crm, m, clients)
        load_s = time.perf_counter() - start
        table, join = crm.storage.table("deal"), crm.storage.join_table("deal", "products")
        engine = crm.engine
        rng = random.Random(2)
        client_picks = [rng.choice(clients) for _ in range(count)]
        stage_picks = [rng.choice(STAGES) for _ in range(count)]

        def raw_select(query) -> list:
            with engine.begin() as conn:
                rows = conn.execute(query).mappings().all()
                ids = [r["id"] for r in rows]
                links = conn.execute(
                    select(join.c.source_id, join.c.target_id)
                    .where(join.c.source_id.in_(ids))
                    .order_by(join.c.source_id, join.c.target_id)
                ).all()
            del links
            return rows

        def meta_client(k):
            rows = crm.find("deal", where="client = :c", params={"c": client_picks[k]}, limit=50)
            assert len(rows) == 50, len(rows)

        def raw_client(k):
            query = select(table).where(table.c.client_id == client_picks[k]).order_by(table.c.id).limit(50)
            assert len(raw_select(query)) == 50

        def meta_stage(k):
            rows = crm.find("deal", where="stage = :s", params={"s": stage_picks[k]}, order_by="-amount", limit=50)
            assert len(rows) == 50, len(rows)

        def raw_stage(k):
            query = (
                select(table)
                .where(table.c.stage == stage_picks[k])
                .order_by(table.c.amount.desc(), table.c.id)
                .limit(50)
            )
            assert len(raw_select(query)) == 50

        ops = {"meta_client": meta_client, "raw_client": raw_client, "meta_stage": meta_stage, "raw_stage": raw_stage}
        for op in ops.values():
            for k in range(20):
                op(k)
        medians = per_op_medians(ops, count, 100)
    medians["load_rows_s"] = m / load_s
    return medians


# --------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def mb(value: int) -> str:
    return f"{value / 1e6:.1f} MB"


def run(dialect: str, args, tmp: Path) -> list[tuple]:
    n, m = args.rows, args.find_rows
    print(
        f"\n== {dialect}: N={n:,} deals (bulk), single creates={args.singles:,}, gets={args.gets:,}, "
        f"find over M={m:,} deals, {args.queries:,} queries each",
        flush=True,
    )
    lines: list[tuple] = []

    t0 = time.perf_counter()
    bulk = phase_bulk(dialect, tmp, n, args.repeat)
    r = bulk["meta"] / bulk["raw"]
    lines.append(
        (
            "1 bulk create, rows/s",
            f"{bulk['meta']:,.0f}",
            f"{bulk['raw']:,.0f}",
            f"{r:.2f}x",
            ">= 0.5x",
            verdict(r >= 0.5),
        )
    )
    r2 = bulk["meta"] / bulk["raw_history"]
    lines.append(("  vs raw + history rows (same writes)", "", f"{bulk['raw_history']:,.0f}", f"{r2:.2f}x", "info", ""))
    print(f"  bulk done in {time.perf_counter() - t0:.1f} s", flush=True)

    t0 = time.perf_counter()
    peak_n, peak_q = peak_memory(dialect, tmp, n), peak_memory(dialect, tmp, max(1, n // 4))
    growth = peak_n / peak_q
    lines.append(
        (
            f"  peak memory N / N/4 ({n:,} / {n // 4:,})",
            f"{mb(peak_n)} / {mb(peak_q)}",
            "",
            f"{growth:.2f}x",
            "<= 1.5x",
            verdict(growth <= 1.5),
        )
    )
    print(f"  memory done in {time.perf_counter() - t0:.1f} s", flush=True)

    t0 = time.perf_counter()
    single = phase_single(dialect, tmp, args.singles)
    r = single["meta"] / single["raw"]
    lines.append(
        (
            "2 single create, ms/op",
            f"{single['meta'] * 1e3:.3f}",
            f"{single['raw'] * 1e3:.3f}",
            f"{r:.2f}x",
            "<= 1.5x",
            verdict(r <= 1.5),
        )
    )
    r2 = single["meta"] / single["raw_history"]
    lines.append(
        ("  vs raw + history row (same writes)", "", f"{single['raw_history'] * 1e3:.3f}", f"{r2:.2f}x", "info", "")
    )
    print(f"  single done in {time.perf_counter() - t0:.1f} s", flush=True)

    t0 = time.perf_counter()
    got = phase_get(dialect, tmp, args.get_rows, args.gets)
    r = got["meta"] / got["raw"]
    lines.append(
        ("3 get with links, ms/op", f"{got['meta'] * 1e3:.3f}", f"{got['raw'] * 1e3:.3f}", f"{r:.2f}x", "info", "")
    )
    print(f"  get done in {time.perf_counter() - t0:.1f} s", flush=True)

    t0 = time.perf_counter()
    found = phase_find(dialect, tmp, m, args.queries)
    r = found["meta_client"] / found["raw_client"]
    lines.append(
        (
            "4a find client = :c limit 50, ms/q",
            f"{found['meta_client'] * 1e3:.3f}",
            f"{found['raw_client'] * 1e3:.3f}",
            f"{r:.2f}x",
            "info",
            "",
        )
    )
    r = found["meta_stage"] / found["raw_stage"]
    lines.append(
        (
            "4b find stage = :s order -amount, ms/q",
            f"{found['meta_stage'] * 1e3:.3f}",
            f"{found['raw_stage'] * 1e3:.3f}",
            f"{r:.2f}x",
            "info",
            "",
        )
    )
    print(
        f"  find done in {time.perf_counter() - t0:.1f} s (raw load of M deals: {found['load_rows_s']:,.0f} rows/s)",
        flush=True,
    )
    return lines


def print_table(dialect: str, lines: list[tuple], *, raw: str = "raw Core") -> None:
    header = ("phase", "metacrm", raw, "ratio", "goal", "")
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(6)]
    print(f"\n{dialect}")
    fmt = "  ".join([f"{{:<{widths[0]}}}"] + [f"{{:>{w}}}" for w in widths[1:5]] + ["{}"])
    print(fmt.format(*header))
    for row in lines:
        print(fmt.format(*row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rows", type=int, default=None, help="N deals for the bulk create (default 100,000)")
    parser.add_argument("--find-rows", type=int, default=None, help="M deals for find (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke check (N=10,000, M=50,000)")
    parser.add_argument("--repeat", type=int, default=3, help="fresh-database runs of each bulk create (median)")
    args = parser.parse_args()
    quick = args.quick
    args.rows = args.rows or (10_000 if quick else 100_000)
    args.find_rows = args.find_rows or (50_000 if quick else 1_000_000)
    args.singles = 500 if quick else 2_000
    args.gets = 1_000 if quick else 5_000
    args.get_rows = 2_000 if quick else 10_000
    args.queries = 200 if quick else 1_000
    if quick:
        args.repeat = min(args.repeat, 1)

    dialects = dialects_to_run(args.db)

    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores; medians; ratio = metacrm / raw "
        "(throughput: higher is better; times: lower is better)"
    )
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
            "\nratio = metacrm / raw. 1: throughput (higher is better); metacrm also writes one stage-history row\n"
            "per deal, the 'raw + history' line does the same writes. Memory: peak traced bytes of the metacrm\n"
            "bulk create above the level before it, rows from a generator; ratio = peak(N) / peak(N/4).\n"
            "2-4: median time per operation (lower is better). 3 and 4 raw = the row SELECT(s) plus the\n"
            "SELECT of the products join rows, in one transaction, as metacrm returns them."
        )


if __name__ == "__main__":
    main()
