"""The browser app's main pages rendered in-process, against the same page's SQL run directly with
SQLAlchemy Core and a trivial string render, in the same run.

    python bench/bench_pages.py [--quick] [--rows 100000] [--repeat 30]

SQLite (a WAL file in a temporary directory; ``--db postgresql`` or ``both``: a fresh schema in
``METACRM_TEST_PG_URL``, dropped afterwards, as bench/bench_records.py does), model tests/fixtures/valid/contract.yaml, the data
of bench/bench_http.py: 1,000 clients, 100 products, ``--rows`` deals (each with two products and
a client), then spread over the pipeline's stages with one UPDATE (so the board has six columns).
The director ``bench`` signs in through ``/login`` (a real session, its cookie and CSRF token);
every page is then asked for ``--repeat`` times with Starlette's TestClient (the whole app:
routing, the session's check, the library's access rules, Jinja2).

Printed per page: the median ms, the SQL statements per request (a ``before_cursor_execute``
listener on the engine, the session's own check included), the baseline's median ms and
statements, and the ratio. Goals (issue 12): each main page <= 50 ms median with 100,000 deals;
no N+1: a list costs one query for its rows plus one per linked entity, never one per row.
Not part of the test suite (it measures, it asserts nothing but the pages' status 200).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_http import prepare  # noqa: E402
from bench_records import dialects_to_run, fresh_url  # noqa: E402
from sqlalchemy import MetaData, event, func, select, union_all, update  # noqa: E402

import metacrm  # noqa: E402
from metacrm.runtime.passwords import set_password  # noqa: E402
from metacrm.web import create_app  # noqa: E402
from metacrm.web.pages import COUNT_CAP  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

MODEL = ROOT / "tests" / "fixtures" / "valid" / "contract.yaml"
PASSWORD = "bench pages password"
STAGES = ("new", "qualified", "proposal", "invoice", "won", "lost")
PAGE = 50  # the list's page size
BOARD = 50  # cards per column


class Counter:
    """SQL queries sent on an engine since the last reset (``BEGIN`` not counted)."""

    def __init__(self, engine):
        self.n = 0
        event.listen(engine, "before_cursor_execute", self.count)

    def count(self, conn, cursor, statement, *args):
        if statement.strip().upper() != "BEGIN":  # the transaction's start is not a query
            self.n += 1


def median_ms(fn, repeat: int, counter: Counter) -> tuple[float, int]:
    fn()  # warm: templates compiled, caches filled
    times = []
    counter.n = 0
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), round(counter.n / repeat)


def esc(value) -> str:
    return str(value).replace("&", "&amp;").replace("<", "&lt;")


def baselines(engine, deal_id: int, client_id: int) -> dict:
    """The same pages' data read with Core in the fewest statements, rendered by joining strings."""
    md = MetaData()
    md.reflect(engine, only=["client", "deal", "product", "deal__products"])
    client, deal, product, links = (md.tables[t] for t in ("client", "deal", "product", "deal__products"))

    def rows_html(rows) -> str:
        return "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in r) + "</tr>" for r in rows)

    def listing(order=None, where=None):
        def page():
            with engine.connect() as c:
                q = select(deal).limit(PAGE + 1).order_by(*(order or (deal.c.id,)))
                counted = select(deal.c.id).limit(COUNT_CAP + 1)  # the page counts up to its cap too
                if where is not None:
                    q, counted = q.where(where), counted.where(where)
                rows = c.execute(q).all()
                total = c.execute(select(func.count()).select_from(counted.subquery())).scalar()
                names = dict(
                    c.execute(
                        select(client.c.id, client.c.name).where(client.c.id.in_({r.client_id for r in rows}))
                    ).all()
                )
            return f"<p>{total}</p><table>{rows_html((*r, names[r.client_id]) for r in rows)}</table>"

        return page

    def card():
        with engine.connect() as c:
            row = c.execute(select(deal).where(deal.c.id == deal_id)).one()
            name = c.execute(select(client.c.name).where(client.c.id == row.client_id)).scalar()
            products = c.execute(
                select(product.c.id, product.c.name)
                .join(links, links.c.target_id == product.c.id)
                .where(links.c.source_id == deal_id)
            ).all()
        return f"<dl>{rows_html([row])}<dd>{esc(name)}</dd>{rows_html(products)}</dl>"

    def client_card():
        with engine.connect() as c:
            row = c.execute(select(client).where(client.c.id == client_id)).one()
            deals = c.execute(select(deal.c.id, deal.c.title, deal.c.stage).where(deal.c.client_id == client_id)).all()
        return f"<dl>{rows_html([row])}</dl><ul>{rows_html(deals)}</ul>"

    def form(record: bool):
        def page():
            with engine.connect() as c:
                row = c.execute(select(deal).where(deal.c.id == deal_id)).one() if record else None
                clients = c.execute(select(client.c.id, client.c.name).order_by(client.c.id).limit(200)).all()
                products = c.execute(select(product.c.id, product.c.name).order_by(product.c.id).limit(200)).all()
            return f"<form>{rows_html([row] if row else [])}{rows_html(clients)}{rows_html(products)}</form>"

        return page

    def board():
        with engine.connect() as c:
            sums = c.execute(select(deal.c.stage, func.count(), func.sum(deal.c.amount)).group_by(deal.c.stage)).all()
            columns = [
                select(deal.c.id, deal.c.title, deal.c.amount, deal.c.stage, deal.c.owner)
                .where(deal.c.stage == stage)
                .order_by(deal.c.amount.desc(), deal.c.id.desc())
                .limit(BOARD)
                .subquery()
                for stage in STAGES
            ]
            cards = c.execute(union_all(*(select(column) for column in columns))).all()
        return f"<div>{rows_html(sums)}{rows_html(cards)}</div>"

    return {
        "list": listing(),
        "list sorted": listing(order=(deal.c.amount.desc(), deal.c.id.desc())),
        "list filtered": listing(where=deal.c.amount > 500_000),
        "card": card,
        "client card": client_card,
        "new form": form(False),
        "edit form": form(True),
        "board": board,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 deals, 5 requests per page: a smoke check")
    parser.add_argument("--rows", type=int, default=None, help="deals in the database (default 100,000)")
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="sqlite", help="default sqlite")
    parser.add_argument("--repeat", type=int, default=None, help="requests per page (default 30)")
    args = parser.parse_args()
    rows = args.rows or (10_000 if args.quick else 100_000)
    repeat = args.repeat or (5 if args.quick else 30)

    with tempfile.TemporaryDirectory() as tmp:
        for dialect in dialects_to_run(args.db):
            with fresh_url(dialect, Path(tmp)) as url:
                run(url, dialect, rows, repeat)


def run(url: str, dialect: str, rows: int, repeat: int) -> None:
    prepare(url, rows)
    with metacrm.connect(MODEL, url) as crm:
        with crm.engine.begin() as conn:  # the stages spread: the board's six columns
            deal = MetaData()
            deal.reflect(crm.engine, only=["deal"])
            table = deal.tables["deal"]
            for i, stage in enumerate(STAGES[1:], 1):
                conn.execute(update(table).where(table.c.id % len(STAGES) == i).values(stage=stage))
        if dialect == "postgresql":  # what autovacuum does after a bulk load and a mass UPDATE: stale
            # statistics mislead the planner, and until a VACUUM sets the visibility map no index-only
            # scan skips the table (the test server runs with autovacuum off)
            with crm.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        set_password(crm, "bench", PASSWORD)
        deal_id = rows // 2
        client_id = crm.get("deal", deal_id)["client"]
        app = create_app(crm)
        browser = TestClient(app, follow_redirects=False)
        form = browser.get("/login").text
        csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        signed = browser.post("/login", data={"login": "bench", "password": PASSWORD, "csrf": csrf, "next": "/"})
        if signed.status_code != 303:
            sys.exit(f"bench: sign-in answered {signed.status_code}")
        pages = {
            "home": "/",
            "list": "/deal",
            "list sorted": "/deal?order_by=-amount",
            "list filtered": "/deal?where=amount%20%3E%20500000",
            "card": f"/deal/{deal_id}",
            "client card": f"/client/{client_id}",
            "new form": "/deal/new",
            "edit form": f"/deal/{deal_id}/edit",
            "board": "/deal/board",
        }
        counter = Counter(crm.engine)
        base = baselines(crm.engine, deal_id, client_id)

        def get(path):
            def ask():
                response = browser.get(path)
                if response.status_code != 200:
                    sys.exit(f"bench: {path} answered {response.status_code}")

            return ask

        print(f"{rows:,} deals on {dialect}, {repeat} requests per page; median ms and SQL statements per request")
        print(f"{'page':<14} {'metacrm ms':>10} {'queries':>7} {'baseline ms':>11} {'queries':>7} {'ratio':>6}")
        for name, path in pages.items():
            ms, queries = median_ms(get(path), repeat, counter)
            if name in base:
                raw_ms, raw_queries = median_ms(base[name], repeat, counter)
                print(f"{name:<14} {ms:>10.1f} {queries:>7} {raw_ms:>11.1f} {raw_queries:>7} {ms / raw_ms:>5.1f}x")
            else:
                print(f"{name:<14} {ms:>10.1f} {queries:>7} {'':>11} {'':>7} {'':>6}")


if __name__ == "__main__":
    main()
