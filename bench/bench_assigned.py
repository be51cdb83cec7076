"""Row-level access through links to users: the ``assigned`` scope against ``own``.

    python bench/bench_assigned.py [--db sqlite|postgresql|both] [--rows 100000] [--queries 50]

Model: ``deal`` (owner, title, ``manager: {to: user}``, ``assignees: {to: user, many: true}``);
role ``mine`` reads ``own``, role ``rep`` reads ``assigned``. 50 users; N deals (default
100,000), each with a random owner, a random manager and two random assignees: a user owns
about 2% of the deals and is named by about 6%. Loaded with ``create_many`` as the system user.

Each query is run as an ``own`` user and as an ``assigned`` user (the user varies):
a. a page: ``find("deal", limit=50)`` (ordered by id);
b. ``count("deal")``;
c. "my records": ``find("deal", "manager = :me or assignees contains :me", limit=50)``.
Times are medians of interleaved runs; ratio = assigned / own. The ``assigned`` condition is
``owner = :me OR manager = :me OR <assignees holds :me>``: the owner and manager columns are
indexed, the JSON list of assignees is read row by row (SQLite ``json_each``, PostgreSQL
``@>``), so the count is a scan on both databases.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import metacrm  # noqa: E402

MODEL = """\
metacrm: 1
name: bench_assigned
entities:
  deal:
    owner: true
    fields:
      title: {type: string, required: true}
    links:
      manager: {to: user}
      assignees: {to: user, many: true}
roles:
  mine: {deal: {read: own}}
  rep: {deal: {read: assigned}}
"""
USERS = [f"u{i:02d}" for i in range(50)]


def load(url: str, rows: int, folder: Path):
    path = folder / "model.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(path, url)
    crm.migrate()
    for login in USERS:
        crm.add_user(login, roles=["mine"])
        crm.add_user(f"r_{login}", roles=["rep"])
    rnd = random.Random(7)
    batch = []
    for i in range(rows):
        owner, manager = rnd.choice(USERS), rnd.choice(USERS)
        batch.append(
            {
                "title": f"d{i}",
                "owner": owner,
                "manager": f"r_{manager}",
                "assignees": [f"r_{u}" for u in rnd.sample(USERS, 2)],
            }
        )
        if len(batch) == 5000:
            crm.create_many("deal", batch, automations=False)
            batch = []
    if batch:
        crm.create_many("deal", batch, automations=False)
    return crm


def timed(case, view) -> float:
    start = time.perf_counter()
    case(view)
    return time.perf_counter() - start


def run(url: str, rows: int, queries: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        crm = load(url, rows, Path(folder))
        print(f"{url.split(':')[0]}: {rows} deals loaded in {time.perf_counter() - start:.1f} s")
        views = {login: crm.as_user(login) for login in USERS}
        reps = {login: crm.as_user(f"r_{login}") for login in USERS}
        cases = {
            "a. page": lambda v: v.find("deal", limit=50),
            "b. count": lambda v: v.count("deal"),
            "c. my records": lambda v: v.find("deal", "manager = :me or assignees contains :me", limit=50),
        }
        for name, case in cases.items():
            own, assigned = [], []
            for i in range(queries):
                login = USERS[i % len(USERS)]
                own.append(timed(case, views[login]))
                assigned.append(timed(case, reps[login]))
            a, b = statistics.median(own), statistics.median(assigned)
            print(f"  {name:15} own {a * 1000:8.2f} ms   assigned {b * 1000:8.2f} ms   ratio {b / a:5.2f}")
        crm.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    if args.db in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as folder:
            run(f"sqlite:///{folder}/bench.db", args.rows, args.queries)
    if args.db in ("postgresql", "both"):
        url = os.environ.get("METACRM_BENCH_PG_URL") or os.environ.get("METACRM_TEST_PG_URL")
        if not url:
            sys.exit("set METACRM_BENCH_PG_URL (or METACRM_TEST_PG_URL) for PostgreSQL")
        from sqlalchemy import create_engine, text

        schema = f"bench_assigned_{os.getpid()}"  # its own schema, dropped afterwards
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        try:
            run(f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}", args.rows, args.queries)
        finally:
            with engine.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            engine.dispose()


if __name__ == "__main__":
    main()
