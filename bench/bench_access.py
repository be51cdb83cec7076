"""Row-level access through filter paths: a user's find against the same find by the system user.

    python bench/bench_access.py [--db sqlite|postgresql|both] [--rows 1000000] [--queries 200] [--quick]

Issue 15's acceptance: the access-filtered find over 1,000,000 deals with a link-path filter,
as a user with ``team`` scope, within 1.5x the same query as the system user.

Model (written to a temporary directory): ``client`` (owner, name, city indexed) and ``deal``
(owner, title, amount, link ``client``); role ``seller`` reads ``team`` on everything. 60 users
in 12 teams of 5; 20,000 clients in 20 cities, each owned by a user; M deals (default
1,000,000), each owned by a user of the client owner's team 4 times in 5, by anyone otherwise.
Rows are loaded with raw executemany (COPY on PostgreSQL), indexes built after the load, then
ANALYZE. A user of ``team`` scope sees the deals and clients of their team's 5 users (about a
twelfth of each); a filter through ``client`` sees only the clients they may read.

Each query is run as the system user (who gets no access SQL at all) and as a team user, with
the same filter ``client.city = :city and amount > :n`` (city and n vary, the user too):

a. a page: ``crm.find("deal", where, params, limit=50)`` (ordered by id), n = 500,000;
b. the whole answer: ``crm.find("deal", where, params)``, n = 990,000 (about 1% of amounts);
c. ``crm.count("deal", where, params)``, n = 500,000;
d. the cost of the access SQL itself: the user's page (a) against the system's page with the
   same answer, its filter naming the team's users (``... and owner in :team and client.owner
   in :team``), so both return the same deals (checked) and differ only in how access is said.

Times are medians of interleaved runs (system, user, system, ...), ratio = user / system.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from sqlalchemy import insert, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_records import dialects_to_run, fresh_url, now_utc, per_op_medians  # noqa: E402

import metacrm  # noqa: E402

MODEL_YAML = """\
metacrm: 1
name: bench_access
entities:
  client:
    owner: true
    fields:
      name: {type: string, required: true}
      city: {type: string, index: true}
  deal:
    owner: true
    fields:
      title: {type: string, required: true}
      amount: {type: money}
    links:
      client: {to: client, inverse: deals}
roles:
  seller:
    "*": {read: team}
"""
TEAMS, PER_TEAM, CITIES = 12, 5, 20
USERS = [f"u{t:02d}_{k}" for t in range(TEAMS) for k in range(PER_TEAM)]
TEAM_OF = {u: f"team{i // PER_TEAM:02d}" for i, u in enumerate(USERS)}
GOAL = 1.5


def load(crm, m: int, clients_n: int, chunk: int = 50_000) -> float:
    """Users, clients and M deals through raw executemany (COPY on PostgreSQL); indexes built
    after the load; ANALYZE. Returns the seconds it took."""
    start = time.perf_counter()
    for login in USERS:
        crm.add_user(login, roles=["seller"], team=TEAM_OF[login])
    rnd = random.Random(15)
    now = now_utc()
    client, deal = crm.storage.table("client"), crm.storage.table("deal")
    postgres = crm.engine.dialect.name == "postgresql"
    indexes = [ix for t in (client, deal) for ix in t.indexes]
    with crm.engine.begin() as conn:
        for ix in indexes:
            ix.drop(conn)
    system = {"created_at": now, "updated_at": now, "version": 1}
    owners = [USERS[rnd.randrange(len(USERS))] for _ in range(clients_n)]
    clients = [
        {"id": i + 1, "name": f"Client {i}", "city": f"city{i % CITIES:02d}", "owner": owners[i], **system}
        for i in range(clients_n)
    ]
    with crm.engine.begin() as conn:
        _write(conn, client, clients, postgres)
    for first in range(0, m, chunk):
        rows = []
        for i in range(first, min(m, first + chunk)):
            c = rnd.randrange(clients_n)
            team = TEAM_OF[owners[c]]
            owner = f"u{team[4:]}_{rnd.randrange(PER_TEAM)}" if rnd.random() < 0.8 else USERS[rnd.randrange(len(USERS))]
            amount = Decimal(rnd.randrange(100_000_000)).scaleb(-2)
            rows.append(
                {"id": i + 1, "title": f"Deal {i}", "amount": amount, "client_id": c + 1, "owner": owner, **system}
            )
        with crm.engine.begin() as conn:
            _write(conn, deal, rows, postgres)
    with crm.engine.begin() as conn:
        for ix in indexes:
            ix.create(conn)
        if postgres:
            for name in ("client", "deal"):
                conn.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))")
                )
    if postgres:
        with crm.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with crm.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    return time.perf_counter() - start


def _write(conn, table, rows: list[dict], postgres: bool) -> None:
    if not postgres:
        conn.execute(insert(table), rows)
        return
    names = [c.name for c in table.c if c.name in rows[0]]
    cursor = conn.connection.driver_connection.cursor()
    columns = ", ".join(f'"{n}"' for n in names)
    with cursor.copy(f'COPY "{table.name}" ({columns}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row([row[n] for n in names])


WHERE = "client.city = :city and amount > :n"
TEAM_WHERE = WHERE + " and owner in :team and client.owner in :team"


def team(login: str) -> list[str]:
    return [u for u in USERS if TEAM_OF[u] == TEAM_OF[login]]


def run(dialect: str, args, tmp: Path) -> list[tuple]:
    m, count = args.rows, args.queries
    clients_n = max(CITIES * 10, min(20_000, m // 50))
    print(f"\n== {dialect}: M={m:,} deals, {clients_n:,} clients, {count:,} queries per line", flush=True)
    model_path = tmp / "bench_access.yaml"
    model_path.write_text(MODEL_YAML, encoding="utf-8")
    lines: list[tuple] = []
    with fresh_url(dialect, tmp) as url, metacrm.connect(model_path, url) as crm:
        crm.migrate()
        seconds = load(crm, m, clients_n)
        print(f"  loaded in {seconds:.1f} s", flush=True)
        rnd = random.Random(2)
        picks = [(f"city{rnd.randrange(CITIES):02d}", USERS[rnd.randrange(len(USERS))]) for _ in range(count)]
        users = {login: crm.as_user(login) for login in USERS}

        def params(k: int, n: int) -> dict:
            return {"city": picks[k][0], "n": n}

        cases = {
            "a find page (limit 50)": lambda who, k: who.find("deal", WHERE, params(k, 500_000), limit=50),
            "b find all (n = 990,000)": lambda who, k: who.find("deal", WHERE, params(k, 990_000)),
            "c count": lambda who, k: who.count("deal", WHERE, params(k, 500_000)),
            "d page, system saying the team itself": lambda who, k: (
                who.find("deal", WHERE, params(k, 500_000), limit=50)
                if who is not crm
                else crm.find("deal", TEAM_WHERE, {**params(k, 500_000), "team": team(picks[k][1])}, limit=50)
            ),
        }
        sizes = {}
        for name, case in cases.items():
            ops = {
                "system": lambda k, case=case: case(crm, k),
                "user": lambda k, case=case: case(users[picks[k][1]], k),
            }
            for op in ops.values():  # warm up: statement caches, pages in memory
                for k in range(5):
                    op(k)
            sizes[name] = (_size(case(crm, 0)), _size(case(users[picks[0][1]], 0)))
            if name.startswith("d"):  # the same answer
                for k in range(5):
                    assert case(crm, k) == case(users[picks[k][1]], k), k
            medians = per_op_medians(ops, count, 25)
            ratio = medians["user"] / medians["system"]
            lines.append(
                (
                    f"{name}, ms",
                    f"{medians['user'] * 1e3:.2f}",
                    f"{medians['system'] * 1e3:.2f}",
                    f"{ratio:.2f}x",
                    f"<= {GOAL}x",
                    "ok" if ratio <= GOAL else "MISSED",
                )
            )
            print(f"  {name}: done (rows system/user for the first query: {sizes[name]})", flush=True)
    return lines


def print_table(name: str, lines: list[tuple]) -> None:
    header = ("query", "team user", "system", "ratio", "goal", "")
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(6)]
    print(f"\n{name}")
    fmt = "  ".join([f"{{:<{widths[0]}}}"] + [f"{{:>{w}}}" for w in widths[1:5]] + ["{}"])
    for row in [header, *lines]:
        print(fmt.format(*row))


def _size(answer) -> int:
    return answer if isinstance(answer, int) else len(answer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rows", type=int, default=None, help="M deals (default 1,000,000)")
    parser.add_argument("--queries", type=int, default=None, help="queries per line and user (default 200)")
    parser.add_argument("--quick", action="store_true", help="a smoke check: M=50,000, 40 queries")
    args = parser.parse_args()
    args.rows = args.rows or (50_000 if args.quick else 1_000_000)
    args.queries = args.queries or (40 if args.quick else 200)
    dialects = dialects_to_run(args.db)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; medians; ratio = team user / system user")
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
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
        print(f"\nfilter: {WHERE}; user = a seller reading with 'team' scope (5 of {len(USERS)} users' records).")


if __name__ == "__main__":
    main()
