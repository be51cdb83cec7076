"""Links that carry data (issue 13): a bulk create of records with 3 link rows carrying fields,
metacrm against raw SQLAlchemy Core doing the same inserts, in one process run.

    python bench/bench_linkfields.py [--db sqlite|postgresql|both] [--rows 20000] [--repeat 3]

Model (below): an order links 3 products through ``lines``, a many-link whose join table holds
``qty`` (integer, min 1, default 1) and ``price`` (money). Every run starts on a fresh database
(a SQLite file, or a fresh PostgreSQL schema of METACRM_TEST_PG_URL, by default the local test database) with
100 products, on the engine and tables metacrm made, so both sides use the same settings.

- metacrm: ``create_many("order", inputs, returning=False)``, each input
  ``{"title": ..., "lines": [{"id": p, "qty": q, "price": "9.90"}, ...]}`` as a caller gives it
  (text and ids): validation of every value and link field, the check that the products exist,
  the order rows, the join rows with their fields, the journal.
- raw: the order rows and the join rows prepared beforehand (ids taken after the largest one,
  values already typed), two executemany INSERTs in one transaction; no validation, no journal.

The runs alternate (``--repeat`` runs of each, the median); the ratio is metacrm's rows/s over
raw's (higher is better). "raw + journal" adds the journal rows metacrm writes (like for like).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_records import dialects_to_run, fresh_url  # noqa: E402 - the shared database helpers

import metacrm  # noqa: E402

MODEL = """\
metacrm: 1
name: orders
entities:
  product:
    fields:
      name: {type: string, required: true}
  order:
    fields:
      title: {type: string, required: true}
    links:
      lines:
        to: product
        many: true
        fields:
          qty: {type: integer, min: 1, default: 1}
          price: {type: money, min: 0}
"""
PRODUCTS = 100


def inputs(n: int, products: list[int]) -> list[dict]:
    """What a caller gives metacrm: text and ids."""
    out = []
    for i in range(n):
        picked = [products[(i + k * 37) % len(products)] for k in range(3)]
        lines = [
            {"id": p, "qty": 1 + (i + k) % 9, "price": f"{(i * 7 + k) % 1000}.{k * 5:02d}"}
            for k, p in enumerate(picked)
        ]
        out.append({"title": f"Order {i}", "lines": lines})
    return out


def raw_rows(n: int, products: list[int], first_id: int, now: dt.datetime) -> tuple[list[dict], list[dict]]:
    """The same orders as the stored rows metacrm writes, every value already typed."""
    orders, lines = [], []
    for i, data in enumerate(inputs(n, products)):
        rid = first_id + i
        orders.append(
            {
                "id": rid,
                "title": data["title"],
                "created_at": now,
                "updated_at": now,
                "version": 1,
                "created_by": None,
                "updated_by": None,
            }
        )
        for line in data["lines"]:
            lines.append(
                {"source_id": rid, "target_id": line["id"], "qty": line["qty"], "price": Decimal(line["price"])}
            )
    return orders, lines


def journal_rows(orders: list[dict], lines: list[dict], now: dt.datetime) -> list[dict]:
    by = {}
    for line in lines:
        by.setdefault(line["source_id"], []).append(line)
    return [
        {
            "entity": "order",
            "record_id": o["id"],
            "action": "create",
            "at": now,
            "by": None,
            "changes": {"title": [None, o["title"]], "lines": [None, [x["target_id"] for x in by[o["id"]]]]},
            "kind": None,
            "text": None,
        }
        for o in orders
    ]


def run_metacrm(crm, n: int, products: list[int]) -> float:
    data = inputs(n, products)
    gc.collect()
    start = time.perf_counter()
    crm.create_many("order", data, returning=False)
    return time.perf_counter() - start


def run_raw(crm, n: int, products: list[int], *, journal: bool) -> float:
    table = crm.storage.table("order")
    join = crm.storage.join_table("order", "lines")
    with crm.engine.connect() as conn:
        first = conn.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one() + 1
    now = dt.datetime.now(dt.UTC)
    orders, lines = raw_rows(n, products, first, now)
    extra = journal_rows(orders, lines, now) if journal else []
    gc.collect()
    start = time.perf_counter()
    with crm.engine.begin() as conn:
        conn.execute(insert(table), orders)
        conn.execute(insert(join), lines)
        if extra:
            conn.execute(insert(crm.storage.journal_table), extra)
        if conn.dialect.name == "postgresql":  # the sequence past the ids taken, as metacrm's allocation leaves it
            conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('\"order\"', 'id'), {first + n - 1})")
    return time.perf_counter() - start


def bench(dialect: str, n: int, repeat: int) -> dict[str, float]:
    times: dict[str, list[float]] = {"metacrm": [], "raw": [], "raw + journal": []}
    model_dir = Path(tempfile.mkdtemp())
    model = model_dir / "orders.yaml"
    model.write_text(MODEL, encoding="utf-8")
    for _ in range(repeat):
        for side in times:  # alternating, each on a fresh database
            with fresh_url(dialect, model_dir) as url, metacrm.connect(model, url) as crm:
                crm.migrate()
                products = [r["id"] for r in crm.create_many("product", ({"name": f"P{i}"} for i in range(PRODUCTS)))]
                if side == "metacrm":
                    elapsed = run_metacrm(crm, n, products)
                    stored = crm.count("order")
                    assert stored == n, stored
                    sample = crm.get("order", crm.find("order", limit=1)[0]["id"])["lines.link"]
                    assert len(sample) == 3 and all(r["qty"] and r["price"] is not None for r in sample)
                else:
                    elapsed = run_raw(crm, n, products, journal=side == "raw + journal")
                times[side].append(elapsed)
    return {side: n / statistics.median(values) for side, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rows", type=int, default=20_000, help="orders per bulk create (each with 3 link rows)")
    parser.add_argument("--repeat", type=int, default=3, help="fresh-database runs of each side (median)")
    args = parser.parse_args()
    print(
        f"bulk create of {args.rows:,} records with 3 link rows carrying fields (qty, price) each; median of {args.repeat}"
    )
    for dialect in dialects_to_run(args.db):
        rates = bench(dialect, args.rows, args.repeat)
        print(f"\n{dialect}")
        print(f"  {'side':<14}{'records/s':>12}{'link rows/s':>14}{'ratio':>8}")
        for side, rate in rates.items():
            ratio = "" if side == "metacrm" else f"{rates['metacrm'] / rate:.2f}"
            print(f"  {side:<14}{rate:>12,.0f}{rate * 3:>14,.0f}{ratio:>8}")


if __name__ == "__main__":
    main()
