"""Databases made by an earlier metacrm, told apart on connecting with a query or two (nothing of
metacrm.migrate is imported for it): SQLite entity tables created without AUTOINCREMENT (a
new record could get a deleted one's id: metacrm.migrate.ids) and entity tables without the
``created_by`` / ``updated_by`` columns (metacrm.migrate.audit). The CRM refuses to work on
such a database until ``metacrm migrate`` mends it, as it does for a model that changed."""

from __future__ import annotations

from sqlalchemy import text

from ..model.metamodel import Model
from ..storage import naming


def plain_id_tables(conn) -> set[str]:
    """SQLite: the tables whose CREATE TABLE has no AUTOINCREMENT (empty on other dialects)."""
    if conn.dialect.name != "sqlite":
        return set()
    rows = conn.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite~_%' ESCAPE '~'"
    ).all()
    return {name for name, sql in rows if sql and "AUTOINCREMENT" not in sql.upper()}


def reusing_tables(conn, model: Model) -> list[str]:
    """The model's entity tables that can give a deleted record's id to a new one (SQLite
    tables created by an earlier metacrm, without AUTOINCREMENT), in model order."""
    plain = plain_id_tables(conn)
    if not plain:
        return []
    return [t for t in (naming.table_name(e) for e in model.entities) if t in plain]


AUDIT_COLUMNS = ("created_by", "updated_by")


def missing_audit_columns(conn, model: Model, *, first_only: bool = False) -> list[str]:
    """The entity tables of ``model`` in the database that lack the audit columns
    (``first_only``: look at one table, enough to tell an earlier metacrm's database). One
    catalogue query per table, on the connection given (no inspector: it costs more queries)."""
    if conn.dialect.name == "sqlite":
        query = text("SELECT name FROM pragma_table_info(:t)")
    else:
        query = text(  # this table's catalogue rows only (information_schema reads every table's)
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(quote_ident(current_schema()) || '.' || quote_ident(:t)) "
            "AND attnum > 0 AND NOT attisdropped"
        )
    out = []
    for entity in model.entities:
        table = naming.table_name(entity)
        columns = set(conn.execute(query, {"t": table}).scalars())
        if not columns:  # not created yet
            continue
        if not set(AUDIT_COLUMNS) <= columns:
            out.append(table)
        if first_only:
            break
    return out


__all__ = ["AUDIT_COLUMNS", "missing_audit_columns", "plain_id_tables", "reusing_tables"]
