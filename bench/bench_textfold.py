"""The cost of reading ``ё`` as ``е`` in ``contains`` filters: ``crm.count(where="name
contains '...'")`` (SQL ``metacrm_casefold`` on SQLite, ``translate(lower(x), 'ё', 'е')`` on
PostgreSQL) against the raw query with the folding it replaced (SQLite: a Python casefold
function; PostgreSQL: ``lower(x) LIKE``), on the same table of N names.

    python bench/bench_textfold.py [--rows 100000] [--db sqlite|postgresql|both]

Prints the median of 5 runs of each and the ratio (metacrm / raw).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import metacrm  # noqa: E402

MODEL = """\
metacrm: 1
name: fold
entities:
  client:
    fields:
      name: {type: string, required: true}
"""
PG = os.environ.get("METACRM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
WORDS = ["Алёна", "Петрова", "Ёлкин", "Сергей", "Ромашка", "Берёза", "Иванов", "Орлова", "Acme", "Ltd"]


def median_ms(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def run(url: str, rows: int, model: Path) -> None:
    from sqlalchemy import text

    rng = random.Random(7)
    with metacrm.connect(model, url) as crm:
        crm.migrate()
        names = [" ".join(rng.sample(WORDS, 3)) + f" {i}" for i in range(rows)]
        crm.create_many("client", [{"name": n} for n in names])
        dialect = crm.engine.dialect.name
        if dialect == "sqlite":
            raw_sql = "SELECT count(*) FROM client WHERE raw_casefold(name) LIKE raw_casefold(:p) ESCAPE '/'"
        else:
            raw_sql = "SELECT count(*) FROM client WHERE lower(name) LIKE lower(:p) ESCAPE '/'"
        with crm.engine.connect() as conn:
            if dialect == "sqlite":
                conn.connection.driver_connection.create_function(
                    "raw_casefold", 1, lambda v: v.casefold() if isinstance(v, str) else v, deterministic=True
                )
            raw = median_ms(lambda: conn.execute(text(raw_sql), {"p": "%алёна петрова%"}).scalar())
        ours = median_ms(lambda: crm.count("client", where="name contains 'алена петрова'"))
        found = crm.count("client", where="name contains 'алена петрова'")
        print(
            f"{dialect:10} rows={rows:,} found={found:,}  raw {raw:8.1f} ms  metacrm {ours:8.1f} ms  ratio {ours / raw:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "fold.yaml"
        model.write_text(MODEL, encoding="utf-8")
        if args.db in ("sqlite", "both"):
            run(f"sqlite:///{tmp}/fold.db", args.rows, model)
        if args.db in ("postgresql", "both"):
            from sqlalchemy import create_engine, text

            schema = f"b_{uuid.uuid4().hex[:10]}"
            admin = create_engine(PG, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            sep = "&" if "?" in PG else "?"
            try:
                run(f"{PG}{sep}options=-csearch_path%3D{schema}", args.rows, model)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()


if __name__ == "__main__":
    main()
