"""Support for the migration tests (no tests here): a base model, data, model edits, dumps and
schema snapshots."""

from __future__ import annotations

import copy
import os
import uuid
from pathlib import Path

import yaml
from sqlalchemy import MetaData, create_engine, inspect, select, text

import metacrm

BASE_YAML = """
metacrm: 1
name: shop
entities:
  client:
    owner: true
    fields:
      name: {type: string, required: true, max_length: 100}
      email: {type: email, unique: true}
      city: {type: string}
      source: {type: choice, options: [site, call]}
      note: {type: text}
  product:
    fields:
      name: {type: string, required: true}
      price: {type: money}
  deal:
    fields:
      title: {type: string, required: true}
      amount: {type: money}
    links:
      client: {to: client, required: true, inverse: deals}
      products: {to: product, many: true, inverse: deals}
    stages:
      initial: new
      states:
        new: {}
        proposal: {}
        won: {kind: won}
        lost: {kind: lost}
      transitions:
        new: [proposal, lost]
        proposal: [won, lost]
  task:
    fields:
      title: {type: string, required: true}
    links:
      subject: {to: [deal, client]}
"""


def base() -> dict:
    return yaml.safe_load(BASE_YAML)


def edit(doc: dict) -> dict:
    return copy.deepcopy(doc)


def write_model(tmp_path: Path, doc: dict, name: str | None = None):
    path = tmp_path / f"{name or 'm_' + uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return metacrm.load_model(path), path


def seed(crm) -> None:
    a = crm.create("client", {"name": "Alpha", "email": "a@example.com", "city": "Moscow", "source": "site"})
    b = crm.create("client", {"name": "Beta", "email": "b@example.com", "source": "call"})
    c = crm.create("client", {"name": "Gamma", "city": "Kazan", "note": "vip"})
    p1 = crm.create("product", {"name": "Pump", "price": "100.50"})
    p2 = crm.create("product", {"name": "Valve", "price": "7.25"})
    d1 = crm.create(
        "deal", {"title": "Pumps", "amount": "1000.00", "client": a["id"], "products": [p1["id"], p2["id"]]}
    )
    d2 = crm.create("deal", {"title": "Valves", "client": b["id"], "products": [p2["id"]]})
    d3 = crm.create("deal", {"title": "Service", "amount": "250.00", "client": a["id"]})
    crm.create("deal", {"title": "Audit", "client": c["id"]})
    crm.move("deal", d1["id"], "proposal")
    crm.move("deal", d3["id"], "proposal")
    crm.move("deal", d3["id"], "won")
    crm.create("task", {"title": "Call Alpha", "subject": {"entity": "client", "id": a["id"]}})
    crm.create("task", {"title": "Send offer", "subject": {"entity": "deal", "id": d2["id"]}})


def start(db_url: str, tmp_path: Path, doc: dict | None = None, *, data: bool = True):
    """A database migrated to ``doc`` (default: the base model), with the seed data."""
    model, _ = write_model(tmp_path, doc or base(), "old")
    crm = metacrm.connect(model, db_url)
    crm.migrate()
    if data:
        seed(crm)
    crm.close()
    return model


def migrate(db_url: str, tmp_path: Path, doc: dict, **kw):
    """Migrate the database to ``doc``; returns (crm on the new model, the plan)."""
    model, _ = write_model(tmp_path, doc)
    crm = metacrm.connect(model, db_url)
    plan = crm.migrate(**kw)
    return crm, plan


def dump(db_url: str) -> dict[str, list[dict]]:
    """Every row of every table, raw, ordered by primary key."""
    from metacrm.runtime.engine import make_engine

    engine = make_engine(db_url)
    try:
        md = MetaData()
        with engine.connect() as conn:
            md.reflect(conn)
            out = {}
            for name, table in md.tables.items():
                key = list(table.primary_key.columns) or list(table.c)
                out[name] = [dict(r) for r in conn.execute(select(table).order_by(*key)).mappings()]
            return out
    finally:
        engine.dispose()


def schema(db_url: str, *, names: bool = True) -> dict:
    """The schema as the inspector sees it, normalised for comparison."""
    from metacrm.runtime.engine import make_engine

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            insp = inspect(conn)
            out = {}
            for t in sorted(insp.get_table_names()):
                cols = {c["name"]: (_type(c["type"]), c["nullable"]) for c in insp.get_columns(t)}
                indexes = sorted(
                    ((ix["name"] if names else "", tuple(ix["column_names"]), bool(ix["unique"])))
                    for ix in insp.get_indexes(t)
                    if not (ix.get("name") or "").startswith("sqlite_")
                )
                uniques = sorted(
                    (uq["name"] if names else "", tuple(uq["column_names"])) for uq in insp.get_unique_constraints(t)
                )
                fks = sorted(
                    (
                        tuple(fk["constrained_columns"]),
                        fk["referred_table"],
                        (fk.get("options") or {}).get("ondelete", "").upper() or "NO ACTION",
                    )
                    for fk in insp.get_foreign_keys(t)
                )
                if db_url.startswith("sqlite"):  # what SQLite enforces, inline REFERENCES included
                    fks = sorted(
                        ((row[3],), row[2], row[6])
                        for row in conn.exec_driver_sql(f'PRAGMA foreign_key_list("{t}")').all()
                    )
                checks = sorted(
                    (ck["name"] if names else "", _check(ck["sqltext"])) for ck in insp.get_check_constraints(t)
                )
                out[t] = {"columns": cols, "indexes": indexes, "uniques": uniques, "fks": fks, "checks": checks}
            return out
    finally:
        engine.dispose()


def _type(t) -> str:
    text_ = str(t).upper()
    return {"VARCHAR": "TEXT"}.get(text_, text_)


def _check(sqltext: str) -> str:
    """CHECK text without dialect noise, so that the values listed compare."""
    import re

    return ",".join(sorted(re.findall(r"'([^']*)'", sqltext or "")))


def fresh_schema(db_url: str, tmp_path: Path, model) -> dict:
    """The schema of a new database created directly from ``model``, on the same dialect."""
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / ('fresh_' + uuid.uuid4().hex[:8] + '.db')}"
        crm = metacrm.connect(model, url)
        crm.migrate()
        crm.close()
        return schema(url, names=True)
    pg = os.environ["METACRM_TEST_PG_URL"]
    name = f"f_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    try:
        url = f"{pg}{'&' if '?' in pg else '?'}options=-csearch_path%3D{name}"
        crm = metacrm.connect(model, url)
        crm.migrate()
        crm.close()
        return schema(url, names=True)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


def without(snapshot: dict, *, tables=(), columns=()) -> dict:
    """A schema snapshot without some tables and columns (kept ones), for comparison."""
    out = copy.deepcopy(snapshot)
    for t in tables:
        out.pop(t, None)
    for t, c in columns:
        out[t]["columns"].pop(c, None)
        out[t]["indexes"] = [ix for ix in out[t]["indexes"] if c not in ix[1]]
        out[t]["uniques"] = [uq for uq in out[t]["uniques"] if c not in uq[1]]
        out[t]["fks"] = [fk for fk in out[t]["fks"] if c not in fk[0]]
    return out


def assert_schema_like_fresh(db_url, tmp_path, crm, *, kept_tables=(), kept_columns=()) -> None:
    """The migrated database has the schema a new database of the model would have (SQLite
    keeps constraint names from before a rename, so names are compared on PostgreSQL only)."""
    fresh = fresh_schema(db_url, tmp_path, crm.model)
    migrated = without(schema(db_url), tables=kept_tables, columns=kept_columns)
    if db_url.startswith("sqlite"):
        migrated, fresh = _unnamed_constraints(migrated), _unnamed_constraints(fresh)
    migrated.pop("metacrm_model", None)
    fresh.pop("metacrm_model", None)
    assert migrated == fresh


def _unnamed_constraints(snapshot: dict) -> dict:
    out = copy.deepcopy(snapshot)
    for t in out.values():
        t["uniques"] = sorted(("", cols) for _, cols in t["uniques"])
        t["checks"] = sorted(("", c) for _, c in t["checks"])
    return out


def untouched(before: dict, after: dict, *, but=()) -> None:
    """Every table not in ``but`` holds exactly the same rows (the model table gains one)."""
    for name, rows in before.items():
        if name in but or name == "metacrm_model":
            continue
        assert after.get(name) == rows, f"table {name} changed"
    assert len(after["metacrm_model"]) == len(before["metacrm_model"]) + 1
