"""Tables built from the model: created on both dialects, exact money, UTC datetimes, CHECKs."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, insert, select
from sqlalchemy.exc import IntegrityError

import metacrm
from metacrm.storage.tables import build_storage

CONTRACT = Path(__file__).parent / "fixtures" / "valid" / "contract.yaml"
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _system(**values):
    return {"created_at": NOW, "updated_at": NOW, **values}


def test_built_once_per_model_version() -> None:
    model = metacrm.load_model(CONTRACT)
    assert build_storage(model) is build_storage(metacrm.load_model(CONTRACT))


def test_tables_on_both_dialects(db_url: str) -> None:
    model = metacrm.load_model(CONTRACT)
    storage = build_storage(model)
    engine = create_engine(db_url)
    storage.metadata.create_all(engine)
    client, deal, product = storage.table("client"), storage.table("deal"), storage.table("product")
    with engine.begin() as conn:
        cid = conn.execute(
            insert(client).returning(client.c.id), _system(name="ООО Ромашка", source="site")
        ).scalar_one()
        for amount in ("0.10", "0.20", "99999999999999.99"):
            conn.execute(
                insert(deal),
                _system(
                    title="Поставка",
                    amount=Decimal(amount),
                    client_id=cid,
                    pipeline="default",
                    stage="new",
                    stage_entered_at=NOW,
                ),
            )
        conn.execute(insert(product), _system(name="Сервер", price=Decimal("1.05")))
    with engine.connect() as conn:
        assert conn.execute(select(client.c.name)).scalar_one() == "ООО Ромашка"
        total = conn.execute(select(func.sum(deal.c.amount)).where(deal.c.amount < Decimal("1"))).scalar_one()
        assert total == Decimal("0.30") and isinstance(total, Decimal)
        assert conn.execute(select(func.max(deal.c.amount))).scalar_one() == Decimal("99999999999999.99")
        created = conn.execute(select(client.c.created_at)).scalar_one()
        assert created == NOW and created.tzinfo is not None
    with pytest.raises(IntegrityError), engine.begin() as conn:  # CHECK on choice
        conn.execute(insert(client), _system(name="x", source="web"))
    with pytest.raises(IntegrityError), engine.begin() as conn:  # UNIQUE
        conn.execute(insert(client), [_system(name="a", email="a@x.ru"), _system(name="b", email="a@x.ru")])
    engine.dispose()
