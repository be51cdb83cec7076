"""The lookup index of multi-value fields (``emails``, ``phones``) and of links to many users
(``assignees: {to: user, many: true}``, their logins). Pure: tables and DDL text.

A record's addresses (or numbers) are stored as a JSON list on its row, the primary first:
reading a record needs no join. Each value is also a row of the field's index table
``metacrm_values_<entity>__<field>`` (``record_id``, ``position``, ``value``; indexed by
``value``), which filters (``emails contains 'a@b.org'``), search and duplicate rules read. The
index holds the lookup key: an e-mail address lower-cased by the database (``lower()``), a
phone number as stored (E.164).

Like the search index (:mod:`metacrm.storage.tables`), the database keeps it: triggers on the
entity's table rewrite a record's rows on insert, on update and on delete, so every write path
(the API, imports, automations, merges, migrations' data steps, a restore) keeps it current.

SQLite
    three triggers ``<index>_ai`` / ``_au`` / ``_ad`` reading the list with ``json_each``.
PostgreSQL
    one trigger ``<index>_sync`` (``AFTER INSERT OR DELETE OR UPDATE OF <column>``) calling
    the index's own plpgsql function ``<index>_fn`` (static SQL, planned once).

The tables and triggers are derived: not in the model's ``MetaData`` (migrations and dumps
leave them out); :func:`metacrm.migrate.valueindex.sync_value_indexes` drops the triggers
before a migration changes tables and recreates tables, triggers and rows after it.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, MetaData, PrimaryKeyConstraint, Table, Text, func, literal, select

from ..model.field_types import MULTI_VALUE_TYPES
from ..model.metamodel import Entity, Field, Model
from . import naming
from .types import id_type

PREFIX = "metacrm_values_"


def index_table_name(entity: str, field: str) -> str:
    return naming.short(f"{PREFIX}{entity}__{field}")


# multi-value fields, and the `to: user` many-links (logins: "my records" and the `assigned` scope)
INDEXED_TYPES = MULTI_VALUE_TYPES | {"users"}


def value_fields(entity: Entity) -> list[Field]:
    """The entity's multi-value fields and links to users with ``many`` (stored fields only)."""
    return [f for f in entity.fields.values() if f.type in INDEXED_TYPES and not f.derived]


def is_index_table(name: str) -> bool:
    return name.startswith(PREFIX)


_METADATA = MetaData()
_TABLES: dict[str, Table] = {}


def index_table(entity: str, field: str) -> Table:
    """The Core table of a field's index (one shared MetaData, outside any model's)."""
    name = index_table_name(entity, field)
    table = _TABLES.get(name)
    if table is None:
        table = Table(
            name,
            _METADATA,
            Column("record_id", id_type(), nullable=False),
            Column("position", Integer(), nullable=False),
            Column("value", Text(), nullable=False),
            PrimaryKeyConstraint("record_id", "position", name=naming.pk_name(name)),
            Index(naming.index_name(name, ["value"]), "value"),
        )
        _TABLES[name] = table
    return table


def expected(model: Model) -> dict[str, tuple[Entity, Field]]:
    """index table name -> (entity, field), for every multi-value field of the model."""
    return {index_table_name(e.name, f.name): (e, f) for e in model.entities.values() for f in value_fields(e)}


def _key(f_type: str, expr: str) -> str:
    return f"lower({expr})" if f_type == "emails" else expr


def trigger_ddl(dialect: str, index: str, table: str, column: str, f_type: str) -> dict[str, str]:
    """trigger name -> its CREATE statement."""
    if dialect == "sqlite":
        fill = (
            f'INSERT OR IGNORE INTO "{index}"(record_id, position, value) '
            f"SELECT new.id, key, {_key(f_type, 'value')} FROM json_each(new.\"{column}\") "
            f"WHERE json_valid(new.\"{column}\") AND json_type(new.\"{column}\") = 'array' AND value IS NOT NULL;"
        )
        clear = f'DELETE FROM "{index}" WHERE record_id = old.id;'
        return {
            f"{index}_ai": f'CREATE TRIGGER "{index}_ai" AFTER INSERT ON "{table}" BEGIN {fill} END',
            f"{index}_au": f'CREATE TRIGGER "{index}_au" AFTER UPDATE OF "{column}", id ON "{table}" '
            f"BEGIN {clear} {fill} END",
            f"{index}_ad": f'CREATE TRIGGER "{index}_ad" AFTER DELETE ON "{table}" BEGIN {clear} END',
        }
    if dialect == "postgresql":
        return {
            f"{index}_sync": f'CREATE TRIGGER "{index}_sync" AFTER INSERT OR DELETE OR UPDATE OF "{column}" '
            f'ON "{table}" FOR EACH ROW EXECUTE FUNCTION "{pg_function_name(index)}"()'
        }
    return {}


def pg_function_name(index: str) -> str:
    """PostgreSQL: the trigger function of one index (its SQL names the table and column, so
    its plan is prepared once: no dynamic SQL per row)."""
    return naming.short(f"{index}_fn")


def pg_function_ddl(index: str, column: str, f_type: str) -> str:
    """The trigger function keeping one index: a changed list's rows rewritten, an unchanged
    one left alone. It names the column: migrations drop the triggers first and recreate the
    functions after (migrate/valueindex.py), so a renamed or dropped column never meets it."""
    value = _key(f_type, "o.v")
    return f"""CREATE OR REPLACE FUNCTION "{pg_function_name(index)}"() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  IF TG_OP = 'UPDATE' AND OLD."{column}" IS NOT DISTINCT FROM NEW."{column}" THEN
    RETURN NULL;
  END IF;
  IF TG_OP <> 'INSERT' THEN
    DELETE FROM "{index}" WHERE record_id = OLD.id;
  END IF;
  IF TG_OP <> 'DELETE' AND jsonb_typeof(NEW."{column}") = 'array' THEN
    INSERT INTO "{index}" (record_id, position, value)
    SELECT NEW.id, o.n - 1, {value} FROM jsonb_array_elements_text(NEW."{column}") WITH ORDINALITY AS o(v, n)
    WHERE o.v IS NOT NULL ON CONFLICT DO NOTHING;
  END IF;
  RETURN NULL;
END
$fn$"""


def fill_sql(dialect: str, index: str, table: str, column: str, f_type: str) -> str:
    """INSERT ... SELECT filling an (empty) index table from every row of the entity table."""
    if dialect == "sqlite":
        return (
            f'INSERT OR IGNORE INTO "{index}"(record_id, position, value) '
            f'SELECT t.id, j.key, {_key(f_type, "j.value")} FROM "{table}" AS t, json_each(t."{column}") AS j '
            f"WHERE json_valid(t.\"{column}\") AND json_type(t.\"{column}\") = 'array' AND j.value IS NOT NULL"
        )
    return (
        f'INSERT INTO "{index}"(record_id, position, value) '
        f'SELECT t.id, o.n - 1, {_key(f_type, "o.v")} FROM "{table}" AS t '
        f'CROSS JOIN LATERAL jsonb_array_elements_text(t."{column}") WITH ORDINALITY AS o(v, n) '
        f"WHERE jsonb_typeof(t.\"{column}\") = 'array' AND o.v IS NOT NULL ON CONFLICT DO NOTHING"
    )


def lookup_key(f: Field, value):
    """The SQL expression of ``value`` as the index holds it (addresses lower-cased by the
    database, as the triggers do)."""
    return func.lower(literal(value)) if f.type == "emails" else literal(value)


def holds_value(table, entity: str, f: Field, value, *, suffix: bool = False):
    """``table.id IN (the records whose field f holds value)``: one subquery on the index's
    ``value`` B-tree, never a scan of the JSON lists; ``suffix``: a number ending with the
    digits ``value`` (a phone number written without its country)."""
    index = index_table(entity, f.name)
    test = index.c.value.like("%" + value) if suffix else index.c.value == lookup_key(f, value)
    return table.c.id.in_(select(index.c.record_id).where(test))


__all__ = [
    "INDEXED_TYPES",
    "PREFIX",
    "expected",
    "fill_sql",
    "holds_value",
    "index_table",
    "index_table_name",
    "is_index_table",
    "lookup_key",
    "pg_function_ddl",
    "pg_function_name",
    "trigger_ddl",
    "value_fields",
]
