"""The fast write paths of issue 16, on SQLite and PostgreSQL: a batch of records goes to the
driver as tuples (COPY on PostgreSQL), a single record by a prepared INSERT, a PostgreSQL
move as one statement. What they store must be exactly what the ordinary path stores (rows,
join rows, stage history, journal), a constraint the database refuses must still be refused
as before, and the memory of a bulk create must not grow with the number of records."""

from __future__ import annotations

import datetime as dt
import gc
import tracemalloc
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

import metacrm
from metacrm.runtime import bulk
from metacrm.runtime import records as rec

MODEL = """
metacrm: 1
name: fast
entities:
  client:
    fields:
      name: {type: string, required: true}
  product:
    fields:
      name: {type: string, required: true}
  deal:
    owner: true
    fields:
      title:    {type: string, required: true}
      note:     {type: text}
      qty:      {type: integer}
      rate:     {type: decimal}
      amount:   {type: money}
      share:    {type: percent}
      urgent:   {type: boolean}
      due:      {type: date}
      at:       {type: datetime}
      kind:     {type: choice, options: [a, b]}
      tags:     {type: multichoice, options: [x, y, z]}
      extra:    {type: json}
      email:    {type: email}
    links:
      client:   {to: client, required: true}
      products: {to: product, many: true}
    stages:
      initial: new
      states:
        new: {}
        won: {kind: won}
      transitions:
        new: [won]
"""


@pytest.fixture
def crm(db_url, tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    yield crm
    crm.close()


def deal(i: int, client: int, products: list[int]) -> dict:
    return {
        "title": f"Сделка {i}",
        "note": "многострочный\nтекст" if i % 2 else None,
        "qty": i,
        "rate": "1.234567",
        "amount": f"{i}.5{i % 10}",
        "share": "12.5",
        "urgent": i % 3 == 0,
        "due": "2026-12-06",
        "at": "2026-12-06T10:11:12+03:00",
        "kind": "b" if i % 2 else "a",
        "tags": ["z", "x"] if i % 2 else [],
        "extra": {"n": i, "nested": [1, "два", None]} if i % 4 else None,
        "email": f"user{i}@example.com",
        "client": client,
        "products": products[: i % 3],
    }


VOLATILE = {"id", "created_at", "updated_at", "stage_entered_at", "record_id", "at"}


def stored(crm, ids: list[int]) -> list[tuple]:
    """Each record, its stage history and its journal, without ids and times."""
    out = []
    for record_id in ids:
        record = {k: v for k, v in crm.get("deal", record_id).items() if k not in VOLATILE}
        history = [{k: v for k, v in h.items() if k not in VOLATILE} for h in crm.history("deal", record_id)]
        journal = [{k: v for k, v in e.items() if k not in VOLATILE} for e in crm.timeline("deal", record_id)]
        out.append((record, history, journal))
    return out


def test_a_batch_stores_what_single_creates_store(crm) -> None:
    client = crm.create("client", {"name": "ООО Ромашка"})["id"]
    products = [crm.create("product", {"name": f"P{i}"})["id"] for i in range(2)]
    n = bulk.FAST_ROWS * 2 + 3  # past the threshold of the fast path, and a partial batch
    data = [deal(i, client, products) for i in range(n)]
    one_by_one = [crm.create("deal", d)["id"] for d in data]
    created = crm.create_many("deal", data)
    assert [r["title"] for r in created] == [d["title"] for d in data]
    batch_ids = [r["id"] for r in created]
    assert stored(crm, batch_ids) == stored(crm, one_by_one)
    first = crm.get("deal", batch_ids[5])
    assert first["amount"] == Decimal("5.55") and first["rate"] == Decimal("1.234567")
    assert first["at"] == dt.datetime(2026, 12, 6, 7, 11, 12, tzinfo=dt.UTC)
    assert first["tags"] == ["x", "z"] and first["extra"] == {"n": 5, "nested": [1, "два", None]}
    assert first["products"] == sorted(products[:2])
    assert crm.count("deal") == 2 * n


def test_the_database_still_refuses_what_it_refused(crm) -> None:
    """A constraint violation in a fast batch is SQLAlchemy's IntegrityError, as for an
    INSERT (so create_many translates it as before), and the transaction writes nothing."""
    client = crm.create("client", {"name": "ООО Ромашка"})["id"]
    table = crm.storage.table("client")
    rows = [{"id": client + 1 + i, "name": f"C{i}"} for i in range(bulk.FAST_ROWS)]
    rows.append({"id": client, "name": "a second row with a taken id"})
    with pytest.raises(IntegrityError), crm.engine.begin() as conn:
        bulk.insert_rows(conn, table, rows)
    links = crm.storage.join_table("deal", "products")
    pairs = [{"source_id": 999_999, "target_id": 999_999}] * bulk.FAST_ROWS  # no such deal: foreign key
    with pytest.raises(IntegrityError), crm.engine.begin() as conn:
        bulk.insert_rows(conn, links, pairs)
    assert crm.count("client") == 1


def test_a_move_writes_its_history_once_and_refuses_a_stale_version(crm) -> None:
    client = crm.create("client", {"name": "ООО Ромашка"})["id"]
    record = crm.create("deal", {"title": "Сделка", "client": client})
    with pytest.raises(metacrm.ConflictError):
        crm.move("deal", record["id"], "won", version=record["version"] + 1)
    moved = crm.move("deal", record["id"], "won", version=record["version"], note="подписано")
    assert moved["stage"] == "won" and moved["version"] == 2
    history = crm.history("deal", record["id"])
    assert [(h["from_stage"], h["to_stage"], h["note"], h["source"]) for h in history] == [
        (None, "new", None, "create"),
        ("new", "won", "подписано", "move"),
    ]
    with crm.engine.connect() as conn:
        table = crm.storage.table("deal")
        reached, closed = conn.execute(select(table.c.reached, table.c.closed_at)).one()
    assert reached == 3 and closed is not None  # new and won; won closes the deal


def test_bulk_create_memory_does_not_grow_with_the_record_count(crm, monkeypatch) -> None:
    """Peak traced memory of create_many(..., returning=False) fed by a generator is bounded by
    the batch: with batches of 50, 1,000 records peak about as high as 200."""
    monkeypatch.setattr(rec, "BATCH", 50)
    client = crm.create("client", {"name": "ООО Ромашка"})["id"]
    products = [crm.create("product", {"name": f"P{i}"})["id"] for i in range(2)]

    def peak(n: int) -> int:
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            made = crm.create_many("deal", (deal(i, client, products) for i in range(n)), returning=False)
            assert made == n
            return tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()

    peak(100)  # warm: statements and validators built, caches filled
    small, large = peak(200), peak(1000)
    assert large <= small * 1.5 + 64_000, (small, large)
