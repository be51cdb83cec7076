"""Start-up of the command line: whole `metacrm` processes against `python -c "import sqlite3; ..."`
doing the same query, on the demo database.

    python bench/bench_cli.py [--runs 5] [--rows 10000]

Builds the demo (`metacrm demo --dir TMP/demo`), then times, as whole processes (wall clock,
median of ``--runs``), each of:

- ``get deal 1``, ``list deal --limit 20``, ``create deal title=... client=1``,
  ``move deal ID qualified`` (a fresh deal per run, created before the timed run) on the
  demo's trade.db;
- ``list deal`` of ``--rows`` deals (default 10,000) on a copy of trade.db that holds them;

each with a cold cache (an empty METACRM_CACHE_DIR per run: the model is read and checked
from its YAML files, the grammar tables built) and a warm one (the cache filled by a run
before), and the raw baseline: ``python -c "import sqlite3; ..."`` running the same SELECT,
INSERT or UPDATE and printing the rows. Also shown: the import floor of the libraries every
data command needs (``python -c "import sqlalchemy, typer, pydantic"``), which metacrm cannot
go under. Python's bytecode cache is on for every process (PYTHONDONTWRITEBYTECODE is dropped,
PYTHONPYCACHEPREFIX points into the temporary directory) and warmed first, as an installed
package has it. Ratios are metacrm / raw; goal: warm get, list, create, move <= 0.3 s and
the 10,000-row list <= 0.5 s on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


CPU: list[float] = []  # the CPU seconds (user + sys) of the last process run


def run(args: list[str], env: dict, *, check: bool = True) -> float:
    """Wall seconds of one whole process (its CPU seconds go to CPU[-1])."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # run outside any checkout: `python -m metacrm` would import ./metacrm of the working
    # directory before PYTHONPATH (--source)
    done = subprocess.run(args, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:6])} ... failed ({done.returncode}): {done.stderr.strip()[:500]}")
    return elapsed


def raw(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument(
        "--source",
        type=Path,
        default=ROOT,
        help="the metacrm checkout to time (another one: a before/after comparison)",
    )
    opts = parser.parse_args()
    source = opts.source.resolve()

    tmp = Path(tempfile.mkdtemp(prefix="metacrm-bench-cli-"))
    env = {**os.environ, "PYTHONPATH": str(source), "PYTHONPYCACHEPREFIX": str(tmp / "pycache"), "COLUMNS": "200"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("METACRM_NO_CACHE", None)
    try:
        demo = tmp / "demo"
        run(
            [sys.executable, "-m", "metacrm", "demo", "--dir", str(demo)], {**env, "METACRM_CACHE_DIR": str(tmp / "c0")}
        )
        model, db = demo / "trade.yaml", demo / "trade.db"
        big = tmp / "big.db"
        shutil.copy(db, big)
        sys.path.insert(0, str(source))
        import metacrm

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with metacrm.connect(str(model), f"sqlite:///{big}") as crm:
                crm.create_many(
                    "deal",
                    [
                        {"title": f"Сделка {i}", "amount": f"{1000 + i}.00", "client": 1 + i % 30}
                        for i in range(opts.rows)
                    ],
                )
                big_count = crm.count("deal")

        def cli(*args: str, database: Path = db) -> list[str]:
            return [sys.executable, "-m", "metacrm", *args, "--model", str(model), "--db", f"sqlite:///{database}"]

        def fresh_deal() -> int:
            with metacrm.connect(str(model), f"sqlite:///{db}") as crm:
                return crm.create("deal", {"title": "bench", "client": 1})["id"]

        connect = f"import sqlite3; c = sqlite3.connect({str(db)!r}); "
        connect_big = f"import sqlite3; c = sqlite3.connect({str(big)!r}); "
        cases = [
            (
                "get deal 1",
                lambda: cli("get", "deal", "1"),
                connect + "print(c.execute('select * from deal where id = 1').fetchall())",
                None,
            ),
            (
                "list deal --limit 20",
                lambda: cli("list", "deal", "--limit", "20"),
                connect + "[print(r) for r in c.execute('select * from deal order by id limit 20')]",
                None,
            ),
            (
                "create deal",
                lambda: cli("create", "deal", "title=bench", "client=1"),
                connect + 'c.execute("insert into deal (created_at, updated_at, pipeline, stage, stage_entered_at, '
                "title, client_id) values (datetime(), datetime(), 'default', 'new', datetime(), 'raw', 1)\"); "
                "c.commit(); print(c.execute('select * from deal order by id desc limit 1').fetchall())",
                None,
            ),
            (
                "move deal ID qualified",
                None,
                connect + "i = c.execute('select max(id) from deal').fetchone()[0]; "
                "c.execute(\"update deal set stage = 'qualified', version = version + 1 where id = ? and stage = 'new'\", (i,)); "
                "c.commit(); print(c.execute('select * from deal where id = ?', (i,)).fetchall())",
                fresh_deal,
            ),
            (
                f"list deal ({big_count:,} rows)",
                lambda: cli("list", "deal", database=big),
                connect_big + "[print(' '.join(map(str, r))) for r in c.execute('select * from deal order by id')]",
                None,
            ),
        ]
        floor = raw("import sqlalchemy, typer, pydantic")
        for warm_up in (floor, raw("pass"), cli("get", "deal", "1")):  # fill the bytecode cache
            run(warm_up, {**env, "METACRM_CACHE_DIR": str(tmp / "c0")})

        rows = []
        warm_dir = tmp / "warm"
        for name, make, baseline, setup in cases:
            times: dict[str, list[float]] = {"cold": [], "warm": [], "raw": []}
            cpu: dict[str, list[float]] = {"cold": [], "warm": [], "raw": []}
            for i in range(opts.runs):
                for mode in ("cold", "warm", "raw"):
                    if mode == "raw":
                        times["raw"].append(run(raw(baseline), env))
                        cpu["raw"].append(CPU[-1])
                        continue
                    args = make() if make else cli("move", "deal", str(setup()), "qualified")
                    cache = tmp / f"cold-{name.split()[0]}-{i}" if mode == "cold" else warm_dir
                    if mode == "warm" and not warm_dir.exists():
                        run(cli("get", "deal", "1"), {**env, "METACRM_CACHE_DIR": str(warm_dir)})
                    times[mode].append(run(args, {**env, "METACRM_CACHE_DIR": str(cache)}))
                    cpu[mode].append(CPU[-1])
            rows.append(
                (name, *(statistics.median(times[m]) for m in ("cold", "warm", "raw")))
                + tuple(statistics.median(cpu[m]) for m in ("warm", "raw"))
            )
        floor_s = statistics.median(run(floor, env) for _ in range(opts.runs))
        python_s = statistics.median(run(raw("pass"), env) for _ in range(opts.runs))

        print(f"metacrm CLI start-up ({source}), whole processes, median of {opts.runs}, seconds; demo trade.db")
        print(
            f"python -c pass: {python_s:.3f} s wall; import sqlalchemy, typer, pydantic: {floor_s:.3f} s wall (the floor)"
        )
        print(
            f"{'command':30} {'cold':>7} {'warm':>7} {'raw':>7} {'warm/raw':>9} {'cold/raw':>9}"
            f" {'warm-floor':>10} {'cpu warm':>9} {'cpu raw':>8} {'cpu ratio':>9}"
        )
        for name, cold, warm, base, cpu_warm, cpu_raw in rows:
            print(
                f"{name:30} {cold:7.3f} {warm:7.3f} {base:7.3f} {warm / base:8.1f}x {cold / base:8.1f}x"
                f" {warm - floor_s:10.3f} {cpu_warm:9.3f} {cpu_raw:8.3f} {cpu_warm / cpu_raw:8.1f}x"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
