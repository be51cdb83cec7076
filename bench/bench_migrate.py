"""Migrations of a large table against the raw SQL doing the same work, on the same engine.

    python bench/bench_migrate.py [--db sqlite|postgresql|both] [--rows 1000000] [--type-rows 1000000]
                                  [--phase add,require,type] [--quick]

Issue 5's acceptance: adding a nullable field to a 1,000,000-row table takes O(1) time
(ALTER ADD COLUMN, not a rebuild) on both dialects; a change that needs a rebuild of
1,000,000 rows within 1.5x of a raw INSERT ... SELECT.

Model: entity ``item`` (name string, qty integer; phase 3 adds code), written to a temporary directory. Rows are
loaded with raw Core executemany (system columns created_at, updated_at, version=1).

1. add a nullable field (``note: {type: string}``): ``metacrm.connect(new, url).migrate()``
   timed on N and N/10 rows; the ratio of the two must be close to 1 (goal <= 2x). Baseline:
   a raw ``ALTER TABLE item ADD COLUMN note2 TEXT`` on the same N-row table.
2. a rebuild without a type change: making ``qty`` required with ``fill: 0`` (half the rows
   have qty NULL). On SQLite the engine rebuilds the table; the baseline is the same work by
   hand in one transaction (CREATE TABLE item_new with qty NOT NULL, INSERT INTO item_new
   SELECT ... COALESCE(qty, 0) ..., DROP TABLE item, ALTER TABLE item_new RENAME TO item). On
   PostgreSQL the engine runs UPDATE + ALTER COLUMN SET NOT NULL; the baseline is that pair of
   statements. Goal <= 1.5x.
3. a field type change that needs a rebuild: ``code: {type: string, index: true}`` holding
   integers in standard spelling (``-2993``, ``4``; one row in 10 NULL) becomes ``{type:
   integer}``, on M rows. metacrm: the whole ``migrate()`` (plan with its conversion check,
   the SQLite safety copy, apply, record the model). SQLite baseline, one transaction: CREATE
   TABLE item_new with code INTEGER, INSERT INTO item_new SELECT ..., CAST(code AS INTEGER)
   FROM item, DROP TABLE item, ALTER TABLE item_new RENAME TO item, CREATE INDEX ix_item_code.
   The time metacrm spends in its backup copy of the file (``crm.db.pre-migrate``) is measured
   in the same run and shown apart, with the ratio without it. PostgreSQL baseline: ``ALTER
   TABLE item ALTER COLUMN code TYPE BIGINT USING CAST(code AS BIGINT)`` (what a DBA runs, and
   what metacrm runs after its check); also shown: the same as a copy (CREATE TABLE item_new
   (LIKE item INCLUDING DEFAULTS), INSERT ... SELECT ... CAST, DROP, RENAME, primary key and
   index). Goal <= 1.5x. Also shown: ``migrate(dry_run=True)``, the plan alone (its
   conversion check reads every value once). Both sides start from a closed, reopened database.

Every measurement runs on a fresh database (a SQLite file in a temporary directory, or a fresh
PostgreSQL schema from METACRM_TEST_PG_URL, dropped afterwards). ``--quick``: N=M=50,000.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import Column, MetaData, Table, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_records import dialects_to_run, fresh_url, print_table  # noqa: E402

import metacrm  # noqa: E402

HEAD = "metacrm: 1\nname: bench\nentities:\n  item:\n    fields:\n      name: {type: string}\n"
MODELS = {
    "base": HEAD + "      qty: {type: integer}\n",
    "add_note": HEAD + "      qty: {type: integer}\n      note: {type: string}\n",
    "require_qty": HEAD + "      qty: {type: integer, required: true, fill: 0}\n",
    "code_text": HEAD + "      qty: {type: integer}\n      code: {type: string, index: true}\n",
    "code_integer": HEAD + "      qty: {type: integer}\n      code: {type: integer, index: true}\n",
}


def write_models(tmp: Path) -> dict[str, Path]:
    paths = {}
    for name, body in MODELS.items():
        path = tmp / f"{name}.yaml"
        path.write_text(body, encoding="utf-8")
        paths[name] = path
    return paths


def load_items(engine, n: int, *, half_null: bool, code: bool = False, chunk: int = 50_000) -> None:
    """N item rows through raw Core executemany; qty NULL on every other row when ``half_null``;
    with ``code``, a text column holding integers in standard spelling, NULL on one row in 10."""
    table = Table("item", MetaData(), autoload_with=engine)
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        for start in range(0, n, chunk):
            rows = [
                {
                    "name": f"Item {i}",
                    "qty": None if half_null and i % 2 else i % 1000,
                    "created_at": now,
                    "updated_at": now,
                    "version": 1,
                }
                for i in range(start, min(n, start + chunk))
            ]
            if code:
                for i, row in enumerate(rows, start):
                    row["code"] = None if i % 10 == 0 else str(i * 7 - 3000)
            conn.execute(table.insert(), rows)
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()


def prepared(models: dict[str, Path], url: str, n: int, *, half_null: bool, base: str = "base"):
    """A database at the ``base`` model holding N items; returns the crm (open)."""
    crm = metacrm.connect(models[base], url)
    crm.migrate()
    load_items(crm.engine, n, half_null=half_null, code=base == "code_text")
    return crm


def timed_migrate(models: dict[str, Path], url: str, target: str) -> float:
    gc.collect()
    start = time.perf_counter()
    with metacrm.connect(models[target], url) as crm:
        plan = crm.migrate()
    elapsed = time.perf_counter() - start
    assert plan, "the migration did nothing"
    return elapsed


# --------------------------------------------------------------------------- phases


def add_field_meta(dialect: str, tmp: Path, models, n: int) -> float:
    with fresh_url(dialect, tmp) as url:
        crm = prepared(models, url, n, half_null=False)
        crm.close()
        return timed_migrate(models, url, "add_note")


def add_field_raw(dialect: str, tmp: Path, models, n: int) -> float:
    with fresh_url(dialect, tmp) as url:
        crm = prepared(models, url, n, half_null=False)
        try:
            gc.collect()
            start = time.perf_counter()
            with crm.engine.begin() as conn:
                conn.execute(text("ALTER TABLE item ADD COLUMN note2 TEXT"))
            return time.perf_counter() - start
        finally:
            crm.close()


def rebuild_meta(dialect: str, tmp: Path, models, n: int) -> float:
    with fresh_url(dialect, tmp) as url:
        crm = prepared(models, url, n, half_null=True)
        crm.close()
        elapsed = timed_migrate(models, url, "require_qty")
        with metacrm.connect(models["require_qty"], url) as crm, crm.engine.connect() as conn:
            nulls = conn.execute(text("SELECT count(*) FROM item WHERE qty IS NULL")).scalar_one()
        assert nulls == 0, nulls
        return elapsed


def rebuild_raw(dialect: str, tmp: Path, models, n: int) -> float:
    with fresh_url(dialect, tmp) as url:
        crm = prepared(models, url, n, half_null=True)
        try:
            engine = crm.engine
            if dialect == "sqlite":
                old = Table("item", MetaData(), autoload_with=engine)
                new_md = MetaData()
                columns = []
                for col in old.columns:
                    copy = Column(col.name, col.type, primary_key=col.primary_key, nullable=col.nullable)
                    if col.name == "qty":
                        copy.nullable = False
                    columns.append(copy)
                new = Table("item_new", new_md, *columns)
                names = ", ".join(f'"{c.name}"' for c in old.columns)
                exprs = ", ".join("COALESCE(qty, 0)" if c.name == "qty" else f'"{c.name}"' for c in old.columns)
                gc.collect()
                start = time.perf_counter()
                with engine.begin() as conn:
                    new.create(conn)
                    conn.execute(text(f"INSERT INTO item_new ({names}) SELECT {exprs} FROM item"))
                    conn.execute(text("DROP TABLE item"))
                    conn.execute(text("ALTER TABLE item_new RENAME TO item"))
                return time.perf_counter() - start
            gc.collect()
            start = time.perf_counter()
            with engine.begin() as conn:
                conn.execute(text("UPDATE item SET qty = 0 WHERE qty IS NULL"))
                conn.execute(text("ALTER TABLE item ALTER COLUMN qty SET NOT NULL"))
            return time.perf_counter() - start
        finally:
            crm.close()


class BackupTimer:
    """Times metacrm's SQLite safety copy (``apply._backup``) during a migration."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        from metacrm.migrate import apply

        self._apply, self._original = apply, apply._backup

        def timed(path):
            start = time.perf_counter()
            try:
                return self._original(path)
            finally:
                self.seconds += time.perf_counter() - start

        apply._backup = timed
        return self

    def __exit__(self, *exc):
        self._apply._backup = self._original


def check_converted(engine) -> None:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            kinds = dict(conn.execute(text("SELECT typeof(code), count(*) FROM item GROUP BY 1")).all())
            assert set(kinds) <= {"integer", "null"}, kinds
        else:
            kind = conn.execute(
                text(
                    "SELECT data_type FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'item' AND column_name = 'code'"
                )
            ).scalar_one()
            assert kind == "bigint", kind
        got = conn.execute(text("SELECT code FROM item WHERE id = 2")).scalar_one()
        assert got == 1 * 7 - 3000, got  # ids start at 1: row i has id i + 1


def type_change_meta(dialect: str, tmp: Path, models, m: int) -> tuple[float, float, float]:
    """(whole migrate(), of which the backup copy, migrate(dry_run=True)) on M rows."""
    with fresh_url(dialect, tmp) as url:
        crm = prepared(models, url, m, half_null=False, base="code_text")
        crm.close()
        with metacrm.connect(models["code_integer"], url) as crm:
            gc.collect()
            start = time.perf_counter()
            plan = crm.migrate(dry_run=True)
            dry = time.perf_counter() - start
        assert any(step.kind == "change_type" for step in plan), plan
        with BackupTimer() as backup:
            elapsed = timed_migrate(models, url, "code_integer")
        with metacrm.connect(models["code_integer"], url) as crm:
            check_converted(crm.engine)
        return elapsed, backup.seconds, dry


def type_change_raw(dialect: str, tmp: Path, models, m: int, *, copy: bool = False) -> float:
    """The same conversion by hand. SQLite: a copy into a new table; PostgreSQL: ALTER COLUMN
    TYPE ... USING (or, ``copy``, INSERT ... SELECT into a new table)."""
    with fresh_url(dialect, tmp) as url:
        prepared(models, url, m, half_null=False, base="code_text").close()
        crm = metacrm.connect(models["code_text"], url)  # reopened, as migrate() finds it
        try:
            engine = crm.engine
            old = Table("item", MetaData(), autoload_with=engine)
            names = ", ".join(f'"{c.name}"' for c in old.columns)
            target = "INTEGER" if dialect == "sqlite" else "BIGINT"
            exprs = ", ".join(f"CAST(code AS {target})" if c.name == "code" else f'"{c.name}"' for c in old.columns)
            if dialect == "sqlite":
                from sqlalchemy import Integer

                columns = [
                    Column(
                        c.name,
                        Integer() if c.name == "code" else c.type,
                        primary_key=c.primary_key,
                        nullable=c.nullable,
                        server_default=c.server_default,
                    )
                    for c in old.columns
                ]
                new = Table("item_new", MetaData(), *columns)
                statements = [
                    new,
                    f"INSERT INTO item_new ({names}) SELECT {exprs} FROM item",
                    "DROP TABLE item",
                    "ALTER TABLE item_new RENAME TO item",
                    "CREATE INDEX ix_item_code ON item (code)",
                ]
            elif not copy:
                statements = ["ALTER TABLE item ALTER COLUMN code TYPE BIGINT USING CAST(code AS BIGINT)"]
            else:
                statements = [
                    "CREATE TABLE item_new (LIKE item INCLUDING DEFAULTS)",
                    "ALTER TABLE item_new ALTER COLUMN code TYPE BIGINT USING NULL",
                    f"INSERT INTO item_new ({names}) SELECT {exprs} FROM item",
                    "DO $$ BEGIN EXECUTE format('ALTER SEQUENCE %s OWNED BY item_new.id', "
                    "pg_get_serial_sequence('item', 'id')); END $$",
                    "DROP TABLE item",
                    "ALTER TABLE item_new RENAME TO item",
                    "ALTER TABLE item ADD CONSTRAINT item_pkey PRIMARY KEY (id)",
                    "CREATE INDEX ix_item_code ON item (code)",
                ]
            gc.collect()
            start = time.perf_counter()
            with engine.begin() as conn:
                for statement in statements:
                    if isinstance(statement, Table):
                        statement.create(conn)
                    else:
                        conn.execute(text(statement))
            elapsed = time.perf_counter() - start
            check_converted(engine)
            return elapsed
        finally:
            crm.close()


def median_of(fn, repeat: int, *args) -> float:
    return statistics.median(fn(*args) for _ in range(repeat))


# --------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def run(dialect: str, args, tmp: Path, models) -> list[tuple]:
    n, small, repeat = args.rows, max(1, args.rows // 10), args.repeat
    print(f"\n== {dialect}: N={n:,} items, N/10={small:,}, M={args.type_rows:,}, {repeat} run(s) each", flush=True)
    lines: list[tuple] = []
    if "add" in args.phase:
        lines += add_phase(dialect, args, tmp, models, n, small, repeat)
    if "require" in args.phase:
        lines += require_phase(dialect, args, tmp, models, n, repeat)
    if "type" in args.phase:
        lines += type_phase(dialect, args, tmp, models, args.type_rows, repeat)
    return lines


def add_phase(dialect: str, args, tmp: Path, models, n: int, small: int, repeat: int) -> list[tuple]:
    lines: list[tuple] = []
    t0 = time.perf_counter()
    times: dict[str, list[float]] = {"big": [], "little": [], "raw": []}
    for _ in range(repeat):  # interleaved, so a change in machine load hits all three
        times["big"].append(add_field_meta(dialect, tmp, models, n))
        times["little"].append(add_field_meta(dialect, tmp, models, small))
        times["raw"].append(add_field_raw(dialect, tmp, models, n))
    big, little, raw = (statistics.median(times[k]) for k in ("big", "little", "raw"))
    growth = big / little
    lines.append(
        (
            f"1 add nullable field, N={n:,} vs N/10",
            f"{ms(big)} / {ms(little)}",
            "",
            f"{growth:.2f}x",
            "<= 2x",
            verdict(growth <= 2),
        )
    )
    lines.append((f"  migrate() vs raw ALTER ADD COLUMN, N={n:,}", ms(big), ms(raw), f"{big / raw:.1f}x", "info", ""))
    print(f"  add field done in {time.perf_counter() - t0:.1f} s", flush=True)
    return lines


def require_phase(dialect: str, args, tmp: Path, models, n: int, repeat: int) -> list[tuple]:
    lines: list[tuple] = []
    t0 = time.perf_counter()
    meta_t, raw_t = [], []
    for _ in range(repeat):
        meta_t.append(rebuild_meta(dialect, tmp, models, n))
        raw_t.append(rebuild_raw(dialect, tmp, models, n))
    meta, raw = statistics.median(meta_t), statistics.median(raw_t)
    r = meta / raw
    label = "rebuild" if dialect == "sqlite" else "UPDATE + SET NOT NULL"
    lines.append(
        (f"2 require qty, fill 0 ({label}), N={n:,}", ms(meta), ms(raw), f"{r:.2f}x", "<= 1.5x", verdict(r <= 1.5))
    )
    print(f"  rebuild done in {time.perf_counter() - t0:.1f} s", flush=True)
    return lines


def type_phase(dialect: str, args, tmp: Path, models, m: int, repeat: int) -> list[tuple]:
    t0 = time.perf_counter()
    times: dict[str, list[float]] = {"meta": [], "backup": [], "dry": [], "raw": [], "copy": []}
    for _ in range(repeat):  # interleaved
        meta, backup, dry = type_change_meta(dialect, tmp, models, m)
        times["meta"].append(meta)
        times["backup"].append(backup)
        times["dry"].append(dry)
        times["raw"].append(type_change_raw(dialect, tmp, models, m))
        if dialect == "postgresql":
            times["copy"].append(type_change_raw(dialect, tmp, models, m, copy=True))
    med = {k: statistics.median(v) for k, v in times.items() if v}
    meta, raw = med["meta"], med["raw"]
    r = meta / raw
    if dialect == "sqlite":
        label, base = "rebuild", "raw copy + CAST"
    else:
        label, base = "ALTER TYPE USING", "raw ALTER TYPE USING"
    lines: list[tuple] = [
        (
            f"3 type change string -> integer ({label}), M={m:,}",
            ms(meta),
            ms(raw),
            f"{r:.2f}x",
            "<= 1.5x",
            verdict(r <= 1.5),
        ),
    ]
    if dialect == "sqlite":
        # the backup is timed inside each migrate(); the median of (migrate - its backup) per run
        without = statistics.median(a - b for a, b in zip(times["meta"], times["backup"], strict=True))
        share = statistics.median(b / a for a, b in zip(times["meta"], times["backup"], strict=True))
        lines.append((f"  of which the backup copy ({share:.0%})", ms(med["backup"]), "", "", "info", ""))
        lines.append(("  migrate() without the backup copy", ms(without), ms(raw), f"{without / raw:.2f}x", "info", ""))
    else:
        lines.append(
            (
                "  vs raw INSERT ... SELECT into a new table",
                ms(meta),
                ms(med["copy"]),
                f"{meta / med['copy']:.2f}x",
                "info",
                "",
            )
        )
    lines.append(("  plan alone: migrate(dry_run=True)", ms(med["dry"]), "", "", "info", ""))
    print(f"  type change done in {time.perf_counter() - t0:.1f} s ({base} baseline)", flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rows", type=int, default=None, help="N items (default 1,000,000)")
    parser.add_argument("--type-rows", type=int, default=None, help="M items for the type change (default 1,000,000)")
    parser.add_argument(
        "--phase", default="add,require,type", help="comma-separated phases to run: add, require, type (default all)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke check (N=M=50,000)")
    parser.add_argument("--repeat", type=int, default=3, help="fresh-database runs of each measurement (median)")
    args = parser.parse_args()
    args.rows = args.rows or (50_000 if args.quick else 1_000_000)
    args.type_rows = args.type_rows or (50_000 if args.quick else 1_000_000)
    args.phase = {p.strip() for p in args.phase.split(",") if p.strip()}
    unknown = args.phase - {"add", "require", "type"}
    if unknown:
        parser.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    if args.quick:
        args.repeat = min(args.repeat, 1)

    dialects = dialects_to_run(args.db)

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; medians; ratio = metacrm / raw (times)")
    print(f"load average at start: {os.getloadavg()[0]:.1f} (other processes on the machine skew absolute numbers)")
    tables = []
    with tempfile.TemporaryDirectory(prefix="metacrm-bench-") as tmp:
        models = write_models(Path(tmp))
        for dialect in dialects:
            started = time.perf_counter()
            lines = run(dialect, args, Path(tmp), models)
            tables.append((f"{dialect} ({time.perf_counter() - started:.0f} s)", lines))
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    for name, lines in tables:
        print_table(name, lines, raw="raw SQL")
    if tables:
        print(
            "\n1: whole migrate() (connect, plan, ALTER ADD COLUMN, record the model) on N rows and on N/10;\n"
            "ratio = time(N) / time(N/10), about 1 when no rebuild happens. The raw line is the bare ALTER.\n"
            "2: ratio = metacrm / raw time of making a field required with a fill.\n"
            "3: ratio = metacrm / raw time of a string -> integer type change; on SQLite the backup copy of\n"
            "the file that metacrm makes before any rebuild is timed apart (share of migrate())."
        )


if __name__ == "__main__":
    main()
