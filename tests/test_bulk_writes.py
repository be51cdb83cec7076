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


def test_a_batch_that_returns_nothing_journals_what_single_creates_journal(crm) -> None:
    """create_many(..., returning=False) builds its journal rows from the stored rows, not
    from records: the same rows, history and journal (every value, in the same order)."""
    client = crm.create("client", {"name": "ООО Ромашка"})["id"]
    products = [crm.create("product", {"name": f"P{i}"})["id"] for i in range(2)]
    n = bulk.FAST_ROWS + 5
    data = [deal(i, client, products) for i in range(n)]
    crm.add_user("someone")
    data[3] = {**data[3], "owner": "someone"}  # an owner given, the others left empty
    one_by_one = [crm.create("deal", d)["id"] for d in data]
    assert crm.create_many("deal", data, returning=False) == n
    batch_ids = [r["id"] for r in crm.find("deal", order_by="id", limit=n, offset=n)]
    assert stored(crm, batch_ids) == stored(crm, one_by_one)
    table = crm.storage.journal_table
    with crm.engine.connect() as conn:
        changes = dict(conn.execute(select(table.c.record_id, table.c.changes).where(table.c.action == "create")).all())
    for single, batched in zip(one_by_one, batch_ids, strict=True):
        assert list(changes[batched]) == list(changes[single])  # the keys in the same order too


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


def test_a_bulk_create_reports_every_bad_record_values_and_links(crm, monkeypatch) -> None:
    """Issue 16 item 5: the first record has a bad value, the second names a client that does
    not exist, the fourth a product that does not exist: all three are reported, also when the
    link errors are in a later batch than the bad value, and nothing is written."""
    client = crm.create("client", {"name": "ООО Ромашка"})["id"]
    product = crm.create("product", {"name": "P"})["id"]
    records = [
        {"title": "плохая сумма", "amount": "много", "client": client},
        {"title": "чужой клиент", "client": client + 1000},
        {"title": "хорошая", "client": client, "products": [product]},
        {"title": "чужой товар", "client": client, "products": [product, product + 1000]},
    ]
    for batch in (1000, 2):
        monkeypatch.setattr(rec, "BATCH", batch)
        with pytest.raises(metacrm.ValidationError) as refused:
            crm.create_many("deal", records, returning=False)
        issues = refused.value.issues
        assert [(i.index, i.field) for i in issues] == [(0, "amount"), (1, "client"), (3, "products")], batch
        assert f"no client with id {client + 1000}" in issues[1].message
        assert f"no product with id {product + 1000}" in issues[2].message
        assert str(refused.value).startswith("record 0: deal.amount:") and "(and 2 more)" in str(refused.value)
    assert crm.count("deal") == 0


def test_a_move_of_a_record_changed_since_it_was_read_still_moves_it(crm, monkeypatch) -> None:
    """A move reads the row before its transaction and applies itself to that row (compare-
    and-swap on stage and version). When another writer changed the record in between (not
    its stage), the move reads it again in its transaction and moves it as it is now."""
    from metacrm.runtime import moves

    client = crm.create("client", {"name": "ООО Ромашка"})["id"]
    record = crm.create("deal", {"title": "Сделка", "client": client})
    real = moves.read_before

    def edited_meanwhile(*args):
        row = real(*args)
        crm.update("deal", record["id"], {"title": "Сделка (изменена)"})
        return row

    monkeypatch.setattr(moves, "read_before", edited_meanwhile)
    moved = crm.move("deal", record["id"], "won")
    assert (moved["stage"], moved["title"], moved["version"]) == ("won", "Сделка (изменена)", 3)
    assert moved == crm.get("deal", record["id"])
    history = crm.history("deal", record["id"])
    assert [(h["from_stage"], h["to_stage"]) for h in history] == [(None, "new"), ("new", "won")]


def test_a_move_refused_on_the_row_read_before_is_said_as_ever(crm) -> None:
    """A move the row read before its transaction does not allow writes nothing there: it is
    read again and refused with the reason and the moves allowed."""
    client = crm.create("client", {"name": "ООО Ромашка"})["id"]
    record = crm.create("deal", {"title": "Сделка", "client": client})
    crm.move("deal", record["id"], "won")
    with pytest.raises(metacrm.TransitionError, match="already in stage 'won'"):
        crm.move("deal", record["id"], "won")
    with pytest.raises(metacrm.TransitionError, match="it can leave only by a declared reopen"):
        crm.move("deal", record["id"], "new")
    assert crm.get("deal", record["id"])["version"] == 2
    assert len(crm.history("deal", record["id"])) == 2


def test_statements_run_on_the_driver_are_logged_when_slow(db_url, tmp_path, monkeypatch, caplog) -> None:
    """The statements of the hot paths (a create's rows, a move) run straight on the DBAPI
    cursor, past SQLAlchemy's cursor events: they are logged as slow all the same, without
    their values."""
    import logging

    from metacrm.logs import SLOW_ENV

    monkeypatch.setenv(SLOW_ENV, "0")  # every statement is "slow"
    path = tmp_path / "model.yaml"
    path.write_text(MODEL, encoding="utf-8")
    with metacrm.connect(path, db_url) as crm:
        crm.migrate()
        client = crm.create("client", {"name": "Zyxwvut"})["id"]
        caplog.clear()
        caplog.set_level(logging.WARNING, logger="metacrm")
        record = crm.create("deal", {"title": "Secretdeal", "client": client})
        crm.move("deal", record["id"], "won", note="Secretnote")
        crm.create_many("deal", [{"title": f"Hidden{i}", "client": client} for i in range(bulk.FAST_ROWS + 1)])
    texts = [r.getMessage() for r in caplog.records if r.name == "metacrm.sql"]
    assert any("UPDATE deal SET" in t for t in texts), texts
    assert any("INSERT INTO deal" in t or "COPY deal" in t for t in texts)
    for text in texts:
        assert not any(secret in text for secret in ("Zyxwvut", "Secretdeal", "Secretnote", "Hidden"))
