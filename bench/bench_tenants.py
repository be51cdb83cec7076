"""Many tenants on one PostgreSQL (issue 17): create, catalog, migrate, a request mix on one pool.

    python bench/bench_tenants.py                 # 1,000 tenants (~15-20 min on 2 cores)
    python bench/bench_tenants.py --quick         # 50 tenants
    python bench/bench_tenants.py --tenants 200 --ops 4000 --threads 4 --pool-size 10

PostgreSQL only (the catalog, one pool and ``search_path`` are what is measured): the URL is
``METACRM_TEST_PG_URL``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``. Everything
lives in schemas named ``mcb<8 hex>_...`` (the registry ``metacrm_tenants`` in ``..._root``, the
URL's own schema through ``search_path``; tenants ``..._t0001``...; the one-tenant baseline
``..._one``), each dropped at the end, also after a failure or Ctrl-C.

Phases (each prints its figures; a tenant that fails is named and left out of later phases):

1. create: ``metacrm.runtime.tenants.create`` + ``connect(model, engine, tenant=T).migrate()``
   of examples/trade.yaml, then a few hundred records with ``create_many`` (5 suppliers, 20
   products, 50 clients, 200 deals each with a client, a supplier and 2 products) and 20 moves
   ``new -> qualified`` in one transaction. Total time, and the per-tenant median of create +
   migrate and of the records.
2. catalog: rows of pg_class / pg_attribute / pg_index / pg_depend and the size on disk
   (``pg_total_relation_size``) of those four catalogs, before and after phase 1, and the
   pg_class / pg_attribute rows of the bench's schemas exactly (other sessions on a shared
   server change the totals, not these).
3. migrate: every tenant to trade.yaml with one more deal field (written to a temporary
   directory) with ``metacrm.runtime.tenants.migrate_all`` (what ``metacrm migrate
   --all-tenants`` runs: each tenant under its own lock, in its own transaction), or a loop of
   ``connect(..., tenant=T).migrate()`` on a metacrm without it (the run says which). Total and
   per-tenant median (each tenant's own time).
4. mix: ``--ops`` operations in ``--threads`` threads through ONE engine (``--pool-size``
   connections, no overflow), each on a random tenant: get a deal, find deals of a client,
   the deal funnel, create a deal, move a deal ``new -> qualified``. ops/s and p50/p99 latency,
   overall and per operation; ``search_path`` switches counted by wrapping
   ``tenants.apply_path``; then the private memory of the pool's PostgreSQL backends
   (``pg_backend_memory_contexts``, the catalog caches apart), the pool having been emptied
   before the mix. Then the same mix (same seed) on ONE tenant holding as many records as
   all tenants together: the cost of tenancy is the ratio.
5. memory: RSS of a fresh process after connecting a CRM per tenant (the first one, used,
   before counting: what all share) with one shared ``Model``, then after each has read
   (``count``) and built its validators and reactors; and the same with the model's path given
   to each ``connect`` (loaded each time; ``--memory-path N`` caps that count).

Before the mix every CRM has done that too (a server keeps its CRMs), so no operation pays for a
CRM's first use.

Times are wall-clock on a shared machine: the load average is printed at the start and at the
end. bench/README.md has the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import metacrm
from metacrm.runtime import tenants
from metacrm.runtime.engine import make_engine

ROOT = Path(__file__).resolve().parents[1]
TRADE = ROOT / "examples" / "trade.yaml"
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CATALOGS = ("pg_class", "pg_attribute", "pg_index", "pg_depend")
CITIES = ("Москва", "Казань", "Тверь", "Омск", "Сочи")
OPS = ("get", "find", "funnel", "create", "move")
# one record kind each, per tenant ("a few hundred records")
SIZES = {"suppliers": 5, "products": 20, "clients": 50, "deals": 200, "moves": 20}
ADDED_FIELD = "      bench_note: {type: string, label: Bench note, max_length: 100}\n"


def pg_url() -> str:
    return os.environ.get("METACRM_TEST_PG_URL") or PG_DEFAULT


def with_path(url: str, schema: str) -> str:
    """``url`` whose sessions start with ``search_path`` = ``schema``."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


def rss_mb() -> float:
    """The resident set size of this process now (not the peak), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000 if values else float("nan")


def percentile_ms(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def changed_model(folder: Path) -> Path:
    """trade.yaml with one more deal field (``bench_note``), written into ``folder``."""
    source = TRADE.read_text(encoding="utf-8")
    anchor = "      lost_reason: {type: text, label: Причина проигрыша}\n"
    if anchor not in source:
        raise SystemExit(f"cannot add a field: {TRADE} no longer has the line {anchor.strip()!r} in deal")
    path = folder / "trade_plus.yaml"
    path.write_text(source.replace(anchor, anchor + ADDED_FIELD, 1).replace("../schemas/", f"{ROOT}/schemas/"))
    return path


# --------------------------------------------------------------------------- the database


class Bench:
    """The bench's schemas on one server and the one engine (pool) every tenant shares."""

    def __init__(self, url: str, pool_size: int = 10, prefix: str | None = None) -> None:
        self.prefix = prefix or f"mcb{uuid.uuid4().hex[:8]}"
        self.admin = create_engine(url, isolation_level="AUTOCOMMIT")
        self.root = f"{self.prefix}_root"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.root}"'))
        self.url = with_path(url, self.root)
        self.engine = make_engine(self.url, pool_size=pool_size, max_overflow=0)
        self.model = metacrm.load_model(TRADE)
        self.failures: list[tuple[str, str, str]] = []  # (phase, tenant, error)

    def name(self, i: int) -> str:
        return f"{self.prefix}_t{i:04d}"

    def fail(self, phase: str, tenant: str, exc: BaseException) -> None:
        message = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        self.failures.append((phase, tenant, message))
        print(f"  FAILED {phase} {tenant}: {message}", flush=True)

    def schemas(self) -> list[str]:
        with self.admin.connect() as conn:
            return list(
                conn.execute(
                    text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p ORDER BY nspname"),
                    {"p": f"{self.prefix}\\_%"},
                ).scalars()
            )

    def cleanup(self) -> int:
        """Drop every schema of this bench, each in its own transaction (one DROP of a thousand
        schemas would need more locks than a server allows by default)."""
        self.engine.dispose()
        dropped = 0
        for schema in self.schemas():
            with self.admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            dropped += 1
        self.admin.dispose()
        return dropped

    def catalog(self) -> dict:
        """Rows and sizes of the catalogs, the server's and the bench's own schemas' rows."""
        with self.admin.connect() as conn:
            out = {}
            for name in CATALOGS:
                out[f"{name} rows"] = conn.execute(text(f"SELECT count(*) FROM pg_catalog.{name}")).scalar_one()
                out[f"{name} bytes"] = conn.execute(
                    text(f"SELECT pg_total_relation_size('pg_catalog.{name}')")
                ).scalar_one()
            like = {"p": f"{self.prefix}\\_%"}
            out["bench pg_class rows"] = conn.execute(
                text(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname LIKE :p"
                ),
                like,
            ).scalar_one()
            out["bench pg_attribute rows"] = conn.execute(
                text(
                    "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname LIKE :p"
                ),
                like,
            ).scalar_one()
            out["database bytes"] = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
        return out


def seed(crm, copies: int = 1, sizes: dict = SIZES) -> int:
    """``copies`` times the records of one tenant into ``crm`` (bulk, create_many); the first
    ``moves`` deals of each copy moved ``new -> qualified`` in one transaction per 500. Returns
    the records created."""
    s = {k: v * copies for k, v in sizes.items()}
    suppliers = [
        r["id"] for r in crm.create_many("supplier", ({"name": f"Supplier {j}"} for j in range(s["suppliers"])))
    ]
    products = [
        r["id"]
        for r in crm.create_many(
            "product",
            (
                {
                    "name": f"Product {j}",
                    "sku": f"SKU-{j:07d}",
                    "price": f"{10 + j % 90}.50",
                    "supplier": suppliers[j % len(suppliers)],
                }
                for j in range(s["products"])
            ),
        )
    ]
    clients = [
        r["id"]
        for r in crm.create_many(
            "client", ({"name": f"Client {j}", "city": CITIES[j % 5]} for j in range(s["clients"]))
        )
    ]
    deals = (
        {
            "title": f"Deal {j}",
            "amount": f"{1000 + (j * 7919) % 900_000}.00",
            "client": clients[j % len(clients)],
            "supplier": suppliers[j % len(suppliers)],
            "products": [products[j % len(products)], products[(j * 7 + 3) % len(products)]],
        }
        for j in range(s["deals"])
    )
    created = crm.create_many("deal", deals, returning=False)
    with crm.engine.connect() as conn:
        ids = list(conn.execute(text("SELECT id FROM deal ORDER BY id")).scalars())
    per = sizes["deals"]
    moving = [ids[c * per + k] for c in range(copies) for k in range(sizes["moves"])]
    for start in range(0, len(moving), 500):
        with crm.transaction():
            for record_id in moving[start : start + 500]:
                crm.move("deal", record_id, "qualified")
    return len(suppliers) + len(products) + len(clients) + created


def phase_create(bench: Bench, count: int) -> tuple[list[str], dict]:
    """Create, migrate and fill ``count`` tenants; the names of those that succeeded."""
    made, t_migrate, t_seed = [], [], []
    records = 0
    start = time.perf_counter()
    for i in range(1, count + 1):
        name = bench.name(i)
        try:
            t0 = time.perf_counter()
            tenants.create(bench.engine, name)
            crm = metacrm.connect(bench.model, bench.engine, tenant=name)
            crm.migrate()
            t1 = time.perf_counter()
            records += seed(crm)
            t_seed.append(time.perf_counter() - t1)
            t_migrate.append(t1 - t0)
            made.append(name)
        except Exception as exc:  # noqa: BLE001 - a tenant that fails is reported, the bench goes on
            bench.fail("create", name, exc)
        if i % 100 == 0 or i == count:
            print(f"  {i}/{count} tenants, {time.perf_counter() - start:.0f} s, load {load()}", flush=True)
    total = time.perf_counter() - start
    return made, {
        "tenants": len(made),
        "total s": total,
        "create+migrate median ms": median_ms(t_migrate),
        "records median ms": median_ms(t_seed),
        "records per tenant": records / len(made) if made else 0,
    }


def phase_migrate(bench: Bench, names: list[str], model_path: Path) -> tuple[list[str], dict]:
    """Every tenant to the model at ``model_path`` (one added field)."""
    model = metacrm.load_model(model_path)
    times: list[float] = []
    ok: list[str] = []
    migrate_all = getattr(tenants, "migrate_all", None)
    start = time.perf_counter()
    how = "loop of connect(model, engine, tenant=T).migrate()"
    if migrate_all is not None:
        how = "metacrm.runtime.tenants.migrate_all"
        for result in migrate_all(bench.engine, None, model, only=names):
            times.append(result.seconds)
            if result.status != "applied":  # "up to date" would mean the field was not added
                bench.fail("migrate", result.tenant, RuntimeError(result.error or result.status))
            else:
                ok.append(result.tenant)
    else:
        for name in names:
            t0 = time.perf_counter()
            try:
                plan = metacrm.connect(model, bench.engine, tenant=name).migrate()
                if not plan:
                    raise RuntimeError("empty plan: the field was not added")
                ok.append(name)
            except Exception as exc:  # noqa: BLE001 - reported, the others go on
                bench.fail("migrate", name, exc)
            times.append(time.perf_counter() - t0)
    bench.model = model
    return ok, {
        "how": how,
        "tenants": len(ok),
        "total s": time.perf_counter() - start,
        "per tenant median ms": median_ms(times),
    }


# --------------------------------------------------------------------------- the request mix


class Target:
    """What the mix needs to know of one tenant: its CRM, client ids, deal ids, deals still new."""

    def __init__(self, crm) -> None:
        self.crm = crm
        warm(crm)
        with crm.engine.connect() as conn:
            self.clients = list(conn.execute(text("SELECT id FROM client")).scalars())
            rows = conn.execute(text("SELECT id, stage FROM deal")).all()
        self.deals = [r[0] for r in rows]
        self.new = [r[0] for r in rows if r[1] == "new"]
        self.lock = threading.Lock()

    def take_new(self) -> int | None:
        with self.lock:
            return self.new.pop() if self.new else None


def run_op(op: str, target: Target, rnd: random.Random) -> None:
    crm = target.crm
    if op == "get":
        crm.get("deal", rnd.choice(target.deals))
    elif op == "find":
        crm.find("deal", where="client = :c", params={"c": rnd.choice(target.clients)}, order_by="-amount", limit=20)
    elif op == "funnel":
        crm.funnel("deal")
    elif op == "create":
        crm.create("deal", {"title": "Mix deal", "amount": "1500.00", "client": rnd.choice(target.clients)})
    elif op == "move":
        record_id = target.take_new()
        if record_id is None:
            crm.get("deal", rnd.choice(target.deals))
        else:
            crm.move("deal", record_id, "qualified")


class SwitchCounter:
    """Counts the checkouts and the ``search_path`` changes, wrapping tenants.apply_path."""

    def __init__(self) -> None:
        self.calls = self.switches = 0
        self.lock = threading.Lock()
        self.original: Callable | None = None

    def __enter__(self):
        original = self.original = tenants.apply_path

        def counting(record, tenant):
            with self.lock:
                self.calls += 1
                if record.info.get(tenants._PATH) != tenant:
                    self.switches += 1
            return original(record, tenant)

        tenants.apply_path = counting
        return self

    def __exit__(self, *exc) -> None:
        tenants.apply_path = self.original


def phase_mix(targets: list[Target], ops: int, threads: int, seed_value: int = 17) -> dict:
    """``ops`` operations, each on a random target, spread over ``threads`` threads."""
    rnd = random.Random(seed_value)
    plan = [(OPS[i % len(OPS)], rnd.randrange(len(targets))) for i in range(ops)]
    rnd.shuffle(plan)
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    cursor = iter(range(ops))
    take = threading.Lock()

    def worker(k: int) -> None:
        own = random.Random(seed_value * 100 + k)
        mine: dict[str, list[float]] = defaultdict(list)
        while True:
            with take:
                i = next(cursor, None)
            if i is None:
                break
            op, t = plan[i]
            t0 = time.perf_counter()
            try:
                run_op(op, targets[t], own)
            except Exception as exc:  # noqa: BLE001 - counted and named once, the mix goes on
                with take:
                    errors[f"{op}: {exc.__class__.__name__}: {str(exc).splitlines()[0][:120]}"] += 1
                continue
            mine[op].append(time.perf_counter() - t0)
        with take:
            for op, values in mine.items():
                latencies[op].extend(values)

    with SwitchCounter() as counter:
        start = time.perf_counter()
        pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        elapsed = time.perf_counter() - start
    every = [v for values in latencies.values() for v in values]
    out = {
        "ops": len(every),
        "ops/s": len(every) / elapsed,
        "p50 ms": percentile_ms(every, 0.5),
        "p99 ms": percentile_ms(every, 0.99),
        "checkouts": counter.calls,
        "search_path switches": counter.switches,
        "errors": dict(errors),
    }
    for op in OPS:
        out[f"{op} p50 ms"] = percentile_ms(latencies[op], 0.5)
        out[f"{op} p99 ms"] = percentile_ms(latencies[op], 0.99)
    return out


def backend_memory(engine, connections: int) -> dict:
    """What the pool's PostgreSQL backends hold in private memory (pg_backend_memory_contexts):
    in all, and in CacheMemoryContext with its children (the relation and catalog caches, which
    grow with every table a backend has opened: in every tenant it served)."""
    query = text(
        "SELECT sum(total_bytes), sum(total_bytes) FILTER (WHERE name = 'CacheMemoryContext' "
        "OR parent = 'CacheMemoryContext') FROM pg_backend_memory_contexts"
    )
    held = [engine.connect() for _ in range(connections)]  # each pooled connection once
    try:
        rows = [conn.execute(query).one() for conn in held]
    finally:
        for conn in held:
            conn.close()
    total = [float(r[0]) / 2**20 for r in rows]  # numeric: Decimal
    cache = [float(r[1]) / 2**20 for r in rows]
    return {  # the mix's threads use fewer connections than the pool holds: the others are fresh
        "backends": len(rows),
        "backend MB sum": sum(total),
        "backend MB max": max(total),
        "catalog cache MB sum": sum(cache),
        "catalog cache MB max": max(cache),
    }


# --------------------------------------------------------------------------- memory


def memory_child(url: str, names: list[str], model_path: str, shared: bool) -> dict:
    """In a fresh process: RSS before, after connecting a CRM per tenant, after each has read
    and built its validators."""
    engine = make_engine(url, pool_size=2, max_overflow=0)
    model = metacrm.load_model(model_path)
    first = metacrm.connect(model if shared else model_path, engine, tenant=names[0])
    warm(first)  # what every CRM shares (the tables of the model, imports) is counted before
    before = rss_mb()
    crms = [metacrm.connect(model if shared else model_path, engine, tenant=name) for name in names[1:]]
    built = rss_mb()
    for crm in crms:
        warm(crm)
    used = rss_mb()
    engine.dispose()
    return {"crms": len(crms), "before MB": before, "built MB": built, "used MB": used}


def warm(crm) -> None:
    """What a served CRM has done once: checked the recorded model, built its validators and
    reactors (on its first read and first write)."""
    crm.count("deal")
    crm.validators  # noqa: B018 - built on the first write; built here so that no op pays for it
    crm._reactors  # noqa: B018


def phase_memory(bench: Bench, names: list[str], model_path: Path, path_cap: int) -> dict:
    out = {}
    for shared, subset in ((True, names), (False, names[:path_cap])):
        if not subset:
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(subset, f)
        command = [sys.executable, __file__, "--memory-child", f.name, str(model_path), "shared" if shared else "path"]
        env = dict(os.environ, BENCH_TENANTS_URL=bench.url)
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
        os.unlink(f.name)
        if done.returncode != 0:
            print(f"  memory child failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        crms = max(figures["crms"], 1)
        figures["per CRM KB (connect)"] = (figures["built MB"] - figures["before MB"]) * 1024 / crms
        figures["per CRM KB (used)"] = (figures["used MB"] - figures["before MB"]) * 1024 / crms
        out["one Model shared" if shared else "path to each connect"] = figures
    return out


# --------------------------------------------------------------------------- main


def show(title: str, figures: dict) -> None:
    print(f"\n{title}")
    for key, value in figures.items():
        if isinstance(value, float):
            value = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
        elif isinstance(value, int):
            value = f"{value:,}"
        print(f"  {key:<28} {value}")


def run(args) -> int:
    url = pg_url()
    try:
        probe = create_engine(url)
        with probe.connect() as conn:
            conn.execute(text("SELECT 1"))
        probe.dispose()
    except Exception as exc:  # noqa: BLE001
        sys.exit(f"PostgreSQL at {make_url(url).render_as_string(hide_password=True)} is unreachable: {exc}")
    print(f"bench_tenants.py {' '.join(sys.argv[1:])}")
    print(
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, python {sys.version.split()[0]}"
    )
    bench = Bench(url, pool_size=args.pool_size)
    with bench.admin.connect() as conn:
        print(conn.execute(text("SELECT version()")).scalar_one().split(" on ")[0])
    print(f"schemas {bench.prefix}_*; load average at start {load()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            before = bench.catalog()
            made, created = phase_create(bench, args.tenants)
            show("1. create + migrate + records", created)
            after = bench.catalog()
            n = max(len(made), 1)
            rows = {}
            for key in before:
                rows[key] = f"{before[key]:,} -> {after[key]:,} (+{(after[key] - before[key]) / n:,.0f} per tenant)"
            show("2. catalog (before -> after)", rows)
            plus = changed_model(Path(tmp))
            made, migrated = phase_migrate(bench, made, plus)
            show("3. migrate to a model with one more field", migrated)
            if made:
                crms = [metacrm.connect(bench.model, bench.engine, tenant=name) for name in made]
                targets = [Target(crm) for crm in crms]
                bench.engine.dispose()  # fresh backends: their caches hold what the mix opened
                spread = phase_mix(targets, args.ops, args.threads)
                spread.update(backend_memory(bench.engine, args.pool_size))
                show(
                    f"4a. mix over {len(targets)} tenants, one pool of {args.pool_size}, {args.threads} threads", spread
                )
                one = f"{bench.prefix}_one"
                tenants.create(bench.engine, one)
                single = metacrm.connect(bench.model, bench.engine, tenant=one)
                single.migrate()
                t0 = time.perf_counter()
                seed(single, copies=len(made))
                print(f"\n  one tenant with {len(made)} tenants' records filled in {time.perf_counter() - t0:.0f} s")
                links = single.storage.join_table("deal", "products").name
                with bench.admin.connect() as conn:  # its big tables' statistics, as autovacuum would
                    conn.execute(text(f'ANALYZE "{one}".deal, "{one}".client, "{one}"."{links}"'))
                alone_target = Target(single)
                bench.engine.dispose()
                alone = phase_mix([alone_target], args.ops, args.threads)
                alone.update(backend_memory(bench.engine, args.pool_size))
                show(f"4b. the same mix on ONE tenant holding {len(made)} tenants' records", alone)
                ratio = {
                    "ops/s tenants / one": spread["ops/s"] / alone["ops/s"],
                    "p50 tenants / one": spread["p50 ms"] / alone["p50 ms"],
                    "p99 tenants / one": spread["p99 ms"] / alone["p99 ms"],
                }
                for op in OPS:
                    ratio[f"{op} p50 tenants / one"] = spread[f"{op} p50 ms"] / alone[f"{op} p50 ms"]
                show("4c. cost of tenancy (ratio)", ratio)
                show("5a. this process", {"RSS MB after the mix": rss_mb(), "CRMs": len(crms)})
                del crms, targets
                memory = phase_memory(bench, made, plus, args.memory_path)
                for label, figures in memory.items():
                    show(f"5b. memory of a fresh process: {label}", figures)
        finally:
            print(f"\nload average at end {load()}")
            if bench.failures:
                print(f"{len(bench.failures)} failure(s):")
                for phase, tenant, message in bench.failures:
                    print(f"  {phase} {tenant}: {message}")
            t0 = time.perf_counter()
            dropped = bench.cleanup()
            print(f"dropped {dropped} schemas {bench.prefix}_* in {time.perf_counter() - t0:.0f} s")
    return 1 if bench.failures else 0


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--memory-child":
        names = json.loads(Path(sys.argv[2]).read_text())
        print(json.dumps(memory_child(os.environ["BENCH_TENANTS_URL"], names, sys.argv[3], sys.argv[4] == "shared")))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=None, help="how many tenants (default 1,000)")
    parser.add_argument("--quick", action="store_true", help="50 tenants, 1,000 operations")
    parser.add_argument("--ops", type=int, default=None, help="operations of each request mix (default 5,000)")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--pool-size", type=int, default=10)
    parser.add_argument(
        "--memory-path", type=int, default=200, help="CRMs connected with the model's path (loaded each time)"
    )
    args = parser.parse_args()
    args.tenants = args.tenants or (50 if args.quick else 1000)
    args.ops = args.ops or (1000 if args.quick else 5000)
    if args.tenants < 1 or args.ops < 1 or args.threads < 1 or args.pool_size < 1:
        parser.error("--tenants, --ops, --threads and --pool-size must be at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the schemas are dropped on a kill too
    sys.exit(run(args))


if __name__ == "__main__":
    main()
