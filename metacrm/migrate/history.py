"""The models a database has held: the ``metacrm_model`` table, one row per applied version.

Each row keeps the canonical JSON of the model, so the model a database holds can be rebuilt
exactly (``model_from_record``) and compared with the one being loaded.
"""

from __future__ import annotations

import json

from sqlalchemy import inspect, select

from ..model.metamodel import Model
from ..storage import naming
from ..storage.types import now_utc


def recorded_row(conn) -> dict | None:
    """The last model version recorded in the database (a dict of the row), or None."""
    if not inspect(conn).has_table(naming.MODEL_TABLE):
        return None
    table = _system_storage().model_table
    row = conn.execute(select(table).order_by(table.c.id.desc()).limit(1)).mappings().first()
    return dict(row) if row else None


def recorded_rows(conn) -> list[dict]:
    """Every recorded version, oldest first."""
    if not inspect(conn).has_table(naming.MODEL_TABLE):
        return []
    table = _system_storage().model_table
    return [dict(r) for r in conn.execute(select(table).order_by(table.c.id)).mappings()]


def model_from_record(row: dict) -> Model:
    """The model a recorded row describes, rebuilt from its canonical JSON."""
    from ..model.builder import build_model
    from ..model.loader import Locator

    canonical = row["canonical"]
    model, _problems = build_model(json.loads(canonical), Locator(root_file="<recorded model>"), canonical=canonical)
    return model


def record(conn, model: Model, *, user: str | None, now=None) -> None:
    """Record ``model`` as the version the database holds (inside the caller's transaction)."""
    from .. import __version__

    table = _system_storage().model_table
    conn.execute(
        table.insert(),
        {
            "sha256": model.sha256,
            "name": model.name,
            "canonical": model.canonical,
            "applied_at": now or now_utc(),
            "applied_by": user,
            "metacrm_version": __version__,
        },
    )


_SYSTEM = []


def _system_storage():
    """The system tables alone (they are the same for every model)."""
    if not _SYSTEM:
        from sqlalchemy import MetaData

        from ..storage.tables import Storage, _system_tables

        storage = Storage(model=None, metadata=MetaData())  # type: ignore[arg-type]
        _system_tables(storage)
        _SYSTEM.append(storage)
    return _SYSTEM[0]
