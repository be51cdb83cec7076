"""The hand-written baseline of bench/bench_http.py: a plain Starlette app serving the same four
requests as ``metacrm serve`` with the raw SQLAlchemy Core queries metacrm runs, on the same
tables, the same engine settings (metacrm's make_engine: WAL, synchronous=NORMAL, BEGIN
IMMEDIATE for writes) and the same bearer-token check (a hash lookup, trusted for 5 s).

    BENCH_DB=sqlite:///bench.db BENCH_MODEL=tests/fixtures/valid/contract.yaml \\
        uvicorn bench.http_baseline:create --factory --port 8001

No validation, no access rules, no automations, no expression language: what a developer
would write by hand for exactly these four endpoints. Handlers run in the thread pool, as
metacrm's do.

- ``GET /deal/{id}``: the row and its products' ids.
- ``GET /deal?min=N``: 50 deals with ``amount > N`` ordered by id (51 fetched to know whether
  there is a next page) and their products' ids.
- ``POST /deal`` ``{"title", "amount", "client"}``: checks the client, inserts the deal, its
  stage-history row and its journal row; 201 with the record.
- ``POST /deal/{id}/move`` ``{"stage"}``: reads the row, checks the transition, updates it
  (version, stage, reached bits) and inserts the history row; 200 with the record, 409 refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from decimal import Decimal, InvalidOperation

from sqlalchemy import insert, select, update
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import Route

import metacrm
from metacrm.runtime.engine import WRITE, make_engine
from metacrm.storage.tables import build_storage

TTL = 5.0


def create() -> Starlette:
    model = metacrm.load_model(os.environ["BENCH_MODEL"])
    engine = make_engine(os.environ["BENCH_DB"])
    storage = build_storage(model)
    deal, client, join = storage.table("deal"), storage.table("client"), storage.join_table("deal", "products")
    history, journal, tokens = storage.history_table, storage.journal_table, storage.token_table
    pipeline = next(iter(model.entity("deal").pipelines))
    graph = model.entity("deal").pipelines[pipeline]
    transitions: dict[str, set[str]] = {}
    for edge in graph.transitions:
        transitions.setdefault(edge.source, set()).add(edge.target)
    bits = storage.reached_bits[("deal", pipeline)]
    trusted: dict[str, tuple[float, str]] = {}

    def now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def reply(data, status: int = 200) -> Response:
        return Response(json.dumps(data, default=str), status_code=status, media_type="application/json")

    def error(status: int, detail: str) -> Response:
        return Response(json.dumps({"status": status, "detail": detail}), status, media_type="application/json")

    def user_of(request) -> str | None:
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secret:
            return None
        key = hashlib.sha256(secret.encode()).hexdigest()
        hit = trusted.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        with engine.connect() as conn:
            row = conn.execute(select(tokens.c.login, tokens.c.revoked_at).where(tokens.c.hash == key)).first()
        if row is None or row.revoked_at is not None:
            return None
        trusted[key] = (time.monotonic() + TTL, row.login)
        return row.login

    def out(row, products: list[int]) -> dict:
        return {
            "id": row.id,
            "title": row.title,
            "amount": str(row.amount) if row.amount is not None else None,
            "lost_reason": row.lost_reason,
            "client": row.client_id,
            "products": products,
            "owner": row.owner,
            "stage": row.stage,
            "created_at": row.created_at.isoformat(),
            "updated_at": row.updated_at.isoformat(),
            "version": row.version,
        }

    def products_of(conn, ids: list[int]) -> dict[int, list[int]]:
        found: dict[int, list[int]] = {i: [] for i in ids}
        query = select(join.c.source_id, join.c.target_id).where(join.c.source_id.in_(ids))
        for source, target in conn.execute(query.order_by(join.c.source_id, join.c.target_id)):
            found[source].append(target)
        return found

    def writing():
        return engine.connect().execution_options(**{WRITE: True})

    def get_one(record_id: int):
        with engine.connect() as conn, conn.begin():
            row = conn.execute(select(deal).where(deal.c.id == record_id)).first()
            if row is None:
                return error(404, f"deal {record_id} not found")
            return reply(out(row, products_of(conn, [record_id])[record_id]))

    def list_some(minimum: Decimal):
        with engine.connect() as conn, conn.begin():
            rows = conn.execute(select(deal).where(deal.c.amount > minimum).order_by(deal.c.id).limit(51)).all()
            page = rows[:50]
            linked = products_of(conn, [r.id for r in page])
            items = [out(r, linked[r.id]) for r in page]
        return reply({"next": f"/deal?after={page[-1].id}" if len(rows) > 50 else None, "items": items})

    def create_one(body: dict, login: str):
        at = now()
        values = {
            "created_at": at,
            "updated_at": at,
            "version": 1,
            "owner": login,
            "pipeline": pipeline,
            "stage": graph.initial,
            "stage_entered_at": at,
            "closed_at": None,
            "reached": bits[graph.initial],
            "title": body["title"],
            "amount": Decimal(body["amount"]),
            "lost_reason": None,
            "client_id": body["client"],
        }
        with writing() as conn, conn.begin():
            if conn.execute(select(client.c.id).where(client.c.id == body["client"])).first() is None:
                return error(422, "client: no such client")
            record_id = conn.execute(insert(deal).values(values).returning(deal.c.id)).scalar_one()
            conn.execute(insert(history).values(entity="deal", record_id=record_id, pipeline=pipeline, to_stage=graph.initial, at=at, by=login, source="create"))  # noqa: E501
            conn.execute(insert(journal).values(entity="deal", record_id=record_id, action="create", at=at, by=login))
            row = conn.execute(select(deal).where(deal.c.id == record_id)).first()
        return reply(out(row, []), 201)

    def move_one(record_id: int, stage: str, login: str):
        at = now()
        with writing() as conn, conn.begin():
            row = conn.execute(select(deal).where(deal.c.id == record_id)).first()
            if row is None:
                return error(404, f"deal {record_id} not found")
            if stage not in transitions.get(row.stage, ()):
                return error(409, f"deal {record_id}: {row.stage} -> {stage} is not allowed")
            conn.execute(
                update(deal)
                .where(deal.c.id == record_id, deal.c.version == row.version)
                .values(
                    updated_at=at,
                    version=deal.c.version + 1,
                    stage=stage,
                    stage_entered_at=at,
                    reached=deal.c.reached.op("|")(bits[stage]),
                )
            )
            seconds = int((at - row.stage_entered_at).total_seconds()) if row.stage_entered_at else None
            conn.execute(insert(history).values(entity="deal", record_id=record_id, pipeline=pipeline, from_stage=row.stage, to_stage=stage, at=at, by=login, seconds_in_stage=seconds, source="move"))  # noqa: E501
            row = conn.execute(select(deal).where(deal.c.id == record_id)).first()
            products = products_of(conn, [record_id])[record_id]
        return reply(out(row, products))

    async def one(request):
        if await run_in_threadpool(user_of, request) is None:
            return error(401, "bad token")
        return await run_in_threadpool(get_one, int(request.path_params["id"]))

    async def many(request):
        if await run_in_threadpool(user_of, request) is None:
            return error(401, "bad token")
        try:
            minimum = Decimal(request.query_params.get("min", "0"))
        except InvalidOperation:
            return error(400, "min: not a number")
        return await run_in_threadpool(list_some, minimum)

    async def make(request):
        login = await run_in_threadpool(user_of, request)
        if login is None:
            return error(401, "bad token")
        return await run_in_threadpool(create_one, json.loads(await request.body()), login)

    async def move(request):
        login = await run_in_threadpool(user_of, request)
        if login is None:
            return error(401, "bad token")
        body = json.loads(await request.body())
        return await run_in_threadpool(move_one, int(request.path_params["id"]), body["stage"], login)

    return Starlette(
        routes=[
            Route("/deal/{id:int}", one, methods=["GET"]),
            Route("/deal", many, methods=["GET"]),
            Route("/deal", make, methods=["POST"]),
            Route("/deal/{id:int}/move", move, methods=["POST"]),
        ]
    )
