"""Keeping the lookup indexes of multi-value fields (``emails``, ``phones``) in step with the
model: see :mod:`metacrm.storage.valueindex` for what they are.

A migration calls :func:`drop_value_triggers` before it changes tables (so that no trigger
names a column being renamed, converted or dropped, and SQLite's table rebuilds copy rows
without them) and :func:`sync_value_indexes` after, in the same transaction: index tables of
removed fields are dropped, new ones created, every trigger created anew and every index
refilled from the rows (one INSERT ... SELECT per field: a migration already reads the tables it
changes). A restore calls the latter on the new, empty tables, before the rows go in.
"""

from __future__ import annotations

from sqlalchemy import text

from ..model.metamodel import Model
from ..storage import naming
from ..storage.valueindex import (
    expected,
    fill_sql,
    index_table,
    is_index_table,
    pg_function_ddl,
    trigger_ddl,
)

_PG_SCHEMA = "c.relnamespace = to_regnamespace(current_schema())"


def _present_tables(conn) -> set[str]:
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'").scalars()
    else:
        rows = conn.execute(text(f"SELECT c.relname FROM pg_class c WHERE {_PG_SCHEMA} AND c.relkind = 'r'")).scalars()
    return {n for n in rows if is_index_table(n)}


def _present_triggers(conn) -> list[tuple[str, str]]:
    """(trigger, table) of every value-index trigger of the current schema."""
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql("SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'").all()
    else:
        rows = conn.execute(
            text(
                "SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                f"WHERE {_PG_SCHEMA} AND NOT t.tgisinternal"
            )
        ).all()
    return [(name, table) for name, table in rows if is_index_table(name)]


def drop_value_triggers(conn) -> int:
    """Drop every value-index trigger; returns how many there were."""
    if conn.dialect.name not in ("sqlite", "postgresql"):
        return 0
    found = _present_triggers(conn)
    for name, table in found:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(f'DROP TRIGGER IF EXISTS "{name}"')
        else:
            conn.exec_driver_sql(f'DROP TRIGGER IF EXISTS "{name}" ON "{table}"')
    return len(found)


def sync_value_indexes(conn, model: Model) -> list[str]:
    """Bring the value indexes to ``model``: orphans dropped, missing tables created, triggers
    (re)created, every index refilled from its rows. Returns the index tables kept."""
    dialect = conn.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        return []
    drop_value_triggers(conn)
    want = expected(model)
    present = _present_tables(conn)
    for name in sorted(present - set(want)):
        conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')
    if dialect == "postgresql":  # the trigger functions of indexes the model no longer has
        functions = conn.execute(
            text("SELECT p.proname FROM pg_proc p WHERE p.pronamespace = to_regnamespace(current_schema())")
        ).scalars()
        for name in sorted(n for n in functions if is_index_table(n)):
            conn.exec_driver_sql(f'DROP FUNCTION IF EXISTS "{name}"()')
    for name, (entity, f) in sorted(want.items()):
        table, column = naming.table_name(entity.name), f.name
        index = index_table(entity.name, f.name)
        if name in present:
            conn.execute(index.delete())
        else:
            index.create(conn)
        if dialect == "postgresql":
            conn.execute(text(pg_function_ddl(name, column, f.type)))
        for statement in trigger_ddl(dialect, name, table, column, f.type).values():
            conn.exec_driver_sql(statement)
        conn.exec_driver_sql(fill_sql(dialect, name, table, column, f.type))
    return sorted(want)


def fill_rich_texts(conn, model: Model, *, batch: int = 1000) -> int:
    """Fill the plain text (``<field>.text``) of every rich_text value that has none: after a
    migration that converted a text field to rich_text or filled a new one. One read of the
    rows concerned; the texts computed in Python (the sanitiser's own text extraction) and
    written in batches. Returns how many were filled."""
    from sqlalchemy import bindparam, select

    from ..storage.tables import build_storage
    from ..validation.values import html_text

    storage = build_storage(model)
    done = 0
    for entity in model.entities.values():
        for f in entity.fields.values():
            if not f.text_of:
                continue
            table = storage.table(entity.name)
            html, plain = table.c[f.text_of], table.c[f.name]
            rows = conn.execute(select(table.c.id, html).where(html.is_not(None), plain.is_(None))).all()
            update = table.update().where(table.c.id == bindparam("_id")).values({f.name: bindparam("_text")})
            changes = [{"_id": rid, "_text": html_text(value)} for rid, value in rows]
            for start in range(0, len(changes), batch):
                conn.execute(update, changes[start : start + batch])
            done += len(changes)
    return done


__all__ = ["drop_value_triggers", "fill_rich_texts", "sync_value_indexes"]
