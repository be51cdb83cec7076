"""Ids are never given twice: a record created after a delete never gets the deleted record's id
(and with it its journal, notes, stage history and tasks).

PostgreSQL: an entity's ``id`` is a BIGSERIAL; a sequence never hands out a value twice.

SQLite: without ``AUTOINCREMENT`` a new row gets ``max(rowid) + 1``, so deleting the record
with the highest id gives that id to the next record. Entity tables are created with
``AUTOINCREMENT`` (``storage/tables.py``): SQLite then remembers the highest id ever used in
``sqlite_sequence``. Three things keep that memory right through migrations:

- a database whose entity tables were created without it (an earlier metacrm) gets a
  ``never_reuse_ids`` step per such table: the table is rebuilt with ``AUTOINCREMENT`` (SQLite
  cannot ALTER it in); until then the runtime refuses data operations, saying to migrate;
- every rebuild of an entity table (this one, or any batch-mode rebuild) ends by setting the
  table's sequence to the highest id ever used: the sequence it had, the highest id it holds,
  and the highest id the journal, the stage history, the outbox, the fired triggers and the
  polymorphic links name for the entity (so an id deleted before the migration is not
  reused either);
- an entity added to a database whose journal already names it (an entity of that name
  dropped with --allow-data-loss) starts its sequence after those ids, on both dialects.

The other tables keep plain rowids: their rows are never deleted (the stage history of an
entity dropped with --allow-data-loss goes with it, and nothing refers to a history row).
"""

from __future__ import annotations

from ..model.metamodel import Model
from ..storage import naming
from .steps import SAFE, Phase

# metacrm's tables that name records by (entity, record_id)
_SYSTEM_REFERENCES = (
    naming.JOURNAL_TABLE,
    naming.HISTORY_TABLE,
    naming.OUTBOX_TABLE,
    naming.FIRED_TABLE,
)


def references(model: Model, entity: str) -> list[tuple[str, str, str]]:
    """(table, entity column, id column) of every place naming a record of ``entity`` by id
    without a foreign key: metacrm's tables and the polymorphic links that may point at it."""
    out = [(table, "entity", "record_id") for table in _SYSTEM_REFERENCES]
    for source in model.entities.values():
        for link in source.links.values():
            if link.polymorphic and entity in link.targets:
                out.append(
                    (
                        naming.table_name(source.name),
                        naming.link_entity_column(link.name),
                        naming.link_column(link.name),
                    )
                )
    return out


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _s(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def highest_used_sql(conn, table: str, entity: str, refs, *, floor: int = 0, own: bool = True) -> str:
    """An SQL expression: the highest id ever used by a record of ``entity`` as far as the
    database tells (``table``'s own ids unless ``own`` is False, every reference in ``refs``
    present in the database, and ``floor``); 0 when none. Columns the database does not have
    (yet) are skipped."""
    from sqlalchemy import inspect

    insp = inspect(conn)
    present = set(insp.get_table_names())
    parts = [str(int(floor))] if floor else []
    if own and table in present:
        parts.append(f"(SELECT max(id) FROM {_q(table)})")
    for ref_table, entity_col, id_col in refs:
        if ref_table not in present:
            continue
        columns = {c["name"] for c in insp.get_columns(ref_table)}
        if entity_col in columns and id_col in columns:
            parts.append(f"(SELECT max({_q(id_col)}) FROM {_q(ref_table)} WHERE {_q(entity_col)} = {_s(entity)})")
    items = [f"coalesce({p}, 0)" for p in parts] or ["0"]
    if len(items) == 1:  # max() of one argument is an aggregate on SQLite
        return items[0]
    return ("max(" if conn.dialect.name == "sqlite" else "greatest(") + ", ".join(items) + ")"


def sequence_value(conn, table: str) -> int:
    """SQLite: the table's entry in sqlite_sequence (0 when it has none)."""
    exists = conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'")
    if exists.first() is None:
        return 0
    value = conn.exec_driver_sql("SELECT max(seq) FROM sqlite_sequence WHERE name = ?", (table,)).scalar()
    return int(value or 0)


def seed_sqlite(ex, table: str, entity: str, refs, *, floor: int = 0) -> None:
    """SQLite: set ``table``'s sequence (an AUTOINCREMENT table) to the highest id ever used."""
    from sqlalchemy import text

    highest = highest_used_sql(ex.conn, table, entity, refs, floor=floor)
    ex.execute(text(f"DELETE FROM sqlite_sequence WHERE name = {_s(table)}"))
    ex.execute(text(f"INSERT INTO sqlite_sequence (name, seq) SELECT {_s(table)}, {highest}"))


def seed_new_entity(ctx, step, entity: str) -> None:
    """An entity added to a database that already names records of that entity (the journal
    of an entity of that name dropped with --allow-data-loss): its sequence starts after the
    highest id named, measured before the migration. Nothing on a new database."""
    if ctx.old is None:
        return
    table = naming.table_name(entity)
    refs = references(ctx.new, entity)
    counted = step.measure
    step.past_ids = 0  # type: ignore[attr-defined]

    def measure(conn, step) -> None:
        if counted is not None:
            counted(conn, step)
        highest = highest_used_sql(conn, table, entity, refs, own=False)
        step.past_ids = int(conn.exec_driver_sql(f"SELECT {highest}").scalar() or 0)

    def seed(ex) -> None:
        past = step.past_ids
        if not past:
            return
        if ex.sqlite:
            seed_sqlite(ex, table, entity, (), floor=past)
        else:
            from sqlalchemy import text

            ex.execute(text(f"SELECT setval(pg_get_serial_sequence({_s(_q(table))}, 'id'), {int(past)})"))

    step.measure = measure
    step.act(Phase.DATA, seed)


def plan_steps(ctx) -> None:
    """SQLite: a ``never_reuse_ids`` step per entity table the database holds without
    AUTOINCREMENT; ``diff._finish`` gathers it into the table's one rebuild."""
    if not ctx.sqlite or not ctx.live.plain_ids:
        return
    for old_name, new_name in ctx.entity_names.items():
        old_table, new_table = naming.table_name(old_name), naming.table_name(new_name)
        if old_table not in ctx.live.plain_ids:
            continue
        step = ctx.step(
            "never_reuse_ids",
            new_name,
            None,
            SAFE,
            f"ids of deleted {new_name} records are never given again: table {new_table} is rebuilt with "
            "AUTOINCREMENT, its sequence set after the highest id used (records, journal, stage history)",
        )
        step.contribute(new_table, old_table, "AUTOINCREMENT", lambda batch, ex: None)
        step.measure = ctx.count_rows(old_table)
