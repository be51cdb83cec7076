"""Running the actions of a plan with alembic's ``Operations``: for real, or to show the SQL.

The same action code runs three ways:

- **apply**: online, on the migration's connection, inside its one transaction;
- **render on PostgreSQL**: alembic's offline mode (``as_sql``), which writes the SQL instead
  of running it; no database needed;
- **render on SQLite**: a rehearsal on an in-memory database holding the same schema (copied
  from ``sqlite_master``, or built from the old model) and no rows. SQLite's table rebuilds
  (alembic batch mode) reflect the table as it is at that moment, which offline mode cannot
  do; the rehearsal runs them for real on empty tables and records every statement, so the
  dry run shows exactly the SQL the migration will run.

Changes SQLite cannot make with ALTER TABLE (NOT NULL, UNIQUE, CHECK, dropping a foreign key
or a column) are *contributions*: on PostgreSQL each is an ALTER in place, on SQLite all the
contributions to one table become one rebuild of that table (``batch_alter_table``), run with
foreign keys off; the table's triggers are put back after it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable
from contextlib import contextmanager

from sqlalchemy import create_engine, event, inspect, literal_column, text
from sqlalchemy.pool import StaticPool

from ..storage.valueindex import is_index_table
from .steps import Contribution, Phase, Plan, Step

# Names SQLite gives the constraints it reflects without one (a column added with an inline
# REFERENCES has an unnamed foreign key): the same convention as storage/naming.py.
NAMING = {
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
}


class Exec:
    """What an action needs: alembic operations, the connection (None offline), the dialect."""

    def __init__(self, op, conn, dialect: str):
        self.op = op
        self.conn = conn
        self.dialect = dialect
        self.conversions: dict[str, str] = {}  # SQLite rebuild: column -> conversion SQL

    @property
    def sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def execute(self, statement) -> None:
        self.op.execute(statement)

    # -- the names the database really uses (they may predate a rename on SQLite) -------------
    def unique_name(self, table: str, columns: tuple[str, ...], expected: str) -> str:
        if self.conn is None:
            return expected
        for uq in inspect(self.conn).get_unique_constraints(table):
            if tuple(uq["column_names"]) == tuple(columns) and uq.get("name"):
                return uq["name"]
        return expected

    def check_name(self, table: str, column: str, expected: str) -> str | None:
        if self.conn is None:
            return expected
        pattern = re.compile(rf'^\W*"?{re.escape(column)}"?\W', re.IGNORECASE)
        for ck in inspect(self.conn).get_check_constraints(table):
            if ck.get("name") == expected:
                return expected
        for ck in inspect(self.conn).get_check_constraints(table):
            if ck.get("name") and pattern.match(ck.get("sqltext") or ""):
                return ck["name"]
        return None

    def fk_name(self, table: str, column: str, expected: str) -> str | None:
        if self.conn is None:
            return expected
        for fk in inspect(self.conn).get_foreign_keys(table):
            if fk.get("constrained_columns") == [column]:
                return fk.get("name") or expected  # unnamed ones get NAMING in batch mode
        return None


class TableOps:
    """Alembic's batch operations API bound to one table, for PostgreSQL (ALTER in place)."""

    def __init__(self, op, table: str):
        self.op = op
        self.table = table

    def alter_column(self, column: str, **kw) -> None:
        self.op.alter_column(self.table, column, **kw)

    def drop_column(self, column: str) -> None:
        self.op.drop_column(self.table, column)

    def create_unique_constraint(self, name: str, columns) -> None:
        self.op.create_unique_constraint(name, self.table, list(columns))

    def create_check_constraint(self, name: str, condition) -> None:
        self.op.create_check_constraint(name, self.table, condition)

    def drop_constraint(self, name: str, type_: str) -> None:
        self.op.drop_constraint(name, self.table, type_=type_)

    def create_foreign_key(self, name: str, referent: str, local_cols, remote_cols, **kw) -> None:
        self.op.create_foreign_key(name, self.table, referent, list(local_cols), list(remote_cols), **kw)

    def drop_index(self, name: str) -> None:
        self.op.drop_index(name, table_name=self.table)


def rebuild_step(table: str, entity: str | None, contributions: list[Contribution], *, ids_of=None) -> Step:
    """The one SQLite rebuild of ``table`` carrying every contribution made to it.

    ``ids_of`` (an entity's table: the entity and the places naming its records by id, see
    ``ids.references``): the table is rebuilt with AUTOINCREMENT and its sequence set to the
    highest id ever used, so that a rebuild never lets a deleted record's id be given again."""
    from . import ids
    from .steps import SAFE

    reasons = "; ".join(dict.fromkeys(c.why for c in contributions))
    step = Step(
        "rebuild_table",
        entity,
        None if table == entity else table,
        SAFE,
        f"rebuild table {table} (SQLite cannot ALTER this in place): {reasons}",
    )
    old = next((c.old_table for c in contributions if c.old_table), None)
    step.rebuild_of = old  # type: ignore[attr-defined]

    def run(ex: Exec) -> None:
        triggers = (
            ex.conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (table,))
            .scalars()
            .all()
        )
        ex.conversions = {}  # column -> the SQL converting its values in the copy (a type change)
        impl = ex.op.impl
        plain_cast = impl.cast_for_batch_migrate

        def convert(existing, transfer, new_type):
            expr = ex.conversions.get(existing.name)
            if expr is None:
                plain_cast(existing, transfer, new_type)
            else:
                transfer["expr"] = literal_column(expr)

        impl.cast_for_batch_migrate = convert
        used = ids.sequence_value(ex.conn, table) if ids_of else 0  # dropped with the old table
        try:
            with ex.op.batch_alter_table(
                table,
                recreate="always",
                naming_convention=NAMING,
                reflect_args=_foreign_key_columns(ex.conn, table),
                table_kwargs={"sqlite_autoincrement": True} if ids_of else {},
            ) as batch:
                for c in sorted(contributions, key=lambda c: c.order):
                    c.run(batch, ex)
        finally:
            del impl.cast_for_batch_migrate  # back to the class's method
            ex.conversions = {}
        for sql in triggers:
            ex.conn.exec_driver_sql(sql)
        if ids_of:
            ids.seed_sqlite(ex, table, *ids_of, floor=used)

    step.act(Phase.ALTER, run)
    return step


def _foreign_key_columns(conn, table: str) -> list:
    """The table's foreign key columns as SQLite really has them (``PRAGMA foreign_key_list``).

    SQLAlchemy reflects ON DELETE only from table-level FOREIGN KEY clauses, not from the
    inline REFERENCES of a column added by ALTER TABLE ADD COLUMN; batch mode would re-create
    such a key without its ON DELETE. Overriding the columns keeps it (and names the key).
    """
    from sqlalchemy import Column, ForeignKey

    insp = inspect(conn)
    columns = {c["name"]: c for c in insp.get_columns(table)}
    named = {tuple(fk["constrained_columns"]): fk.get("name") for fk in insp.get_foreign_keys(table)}
    primary = set(insp.get_pk_constraint(table).get("constrained_columns") or ())
    rows = conn.exec_driver_sql(f"PRAGMA foreign_key_list({_quote(table)})").all()
    ids = [row[0] for row in rows]
    out = []
    for row in rows:
        fk_id, _seq, target, source, to, _on_update, on_delete = row[:7]
        if ids.count(fk_id) != 1 or source not in columns:
            continue  # composite keys: left to reflection
        info = columns[source]
        name = named.get((source,)) or f"fk_{table}_{source}"
        ondelete = None if on_delete in (None, "NO ACTION") else on_delete
        out.append(
            Column(
                source,
                info["type"],
                ForeignKey(f"{target}.{to}", ondelete=ondelete, name=name),
                nullable=info["nullable"],
                server_default=info.get("default"),
                primary_key=source in primary,
                autoincrement=False,
            )
        )
    return out


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def inline_contributions(step: Step) -> None:
    """PostgreSQL: run a step's contributions in place, in its ALTER phase."""
    for c in step.contributions:
        step.act(Phase.ALTER, lambda ex, c=c: c.run(TableOps(ex.op, c.table), ex), sub=c.order)


def ordered_actions(steps: Iterable[Step]) -> list[tuple[tuple, int, Callable]]:
    actions = []
    for index, step in enumerate(steps):
        for seq, (key, fn) in enumerate(step.actions):
            actions.append(((key[0], key[1], index, seq), index, fn))
    actions.sort(key=lambda item: item[0])
    return actions


def run_actions(steps: list[Step], ex: Exec, *, before: Callable | None = None) -> None:
    """Run every action of ``steps`` in phase order (``before(index, step)`` is called first)."""
    for _, index, fn in ordered_actions(steps):
        if before is not None:
            before(index, steps[index])
        fn(ex)


# -- rendering --------------------------------------------------------------------------------


def render(plan: Plan, *, conn=None, old_metadata=None) -> None:
    """Fill in ``step.sql`` (and ``plan.ordered_sql``) for the plan's dialect."""
    if plan.dialect == "sqlite":
        _render_sqlite(plan, conn, old_metadata)
    else:
        _render_offline(plan)


def _render_offline(plan: Plan) -> None:
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name=plan.dialect, opts={"as_sql": True, "output_buffer": buffer, "literal_binds": True}
    )
    ex = Exec(Operations(context), None, plan.dialect)
    ordered: list[str] = []
    for _, index, fn in ordered_actions(plan):
        buffer.seek(0)
        buffer.truncate()
        fn(ex)
        for statement in _split(buffer.getvalue()):
            plan[index].sql.append(statement)
            ordered.append(statement)
    plan.ordered_sql = ordered


def _split(output: str) -> list[str]:
    return [part.strip() for part in output.split(";\n\n") if part.strip()]


_REFLECTION = re.compile(
    r"^\s*(SELECT\b|PRAGMA\s+(main|temp)\.|PRAGMA\s+(table_x?info|index_list|index_x?info|foreign_key_list)\b)", re.I
)


def _render_sqlite(plan: Plan, conn, old_metadata) -> None:
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    engine = create_engine("sqlite://", poolclass=StaticPool)
    ordered: list[str] = []
    current: list[int] = [-1]

    @event.listens_for(engine, "before_cursor_execute")
    def _capture(_conn, _cursor, statement, parameters, _context, _many):
        if current[0] < 0 or _REFLECTION.match(statement):
            return
        shown = _inline(statement, parameters)
        plan[current[0]].sql.append(shown)
        ordered.append(shown)

    try:
        with engine.connect() as rehearsal:
            rehearsal.exec_driver_sql("PRAGMA foreign_keys=OFF")
            _clone_schema(rehearsal, conn, old_metadata)
            rehearsal.commit()
            ex = Exec(Operations(MigrationContext.configure(rehearsal)), rehearsal, "sqlite")

            def before(index, _step):
                current[0] = index

            run_actions(list(plan), ex, before=before)
            current[0] = -1
            rehearsal.rollback()
    finally:
        engine.dispose()
    plan.ordered_sql = ordered


def _clone_schema(rehearsal, conn, old_metadata) -> None:
    """The live database's schema (or the old model's) in the rehearsal database, no rows."""
    if conn is not None:
        rows = conn.exec_driver_sql(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"
        ).all()
        # a virtual table (the FTS5 search index) creates its own shadow tables: skip theirs
        virtual = [name for _type, name, sql in rows if sql.upper().startswith("CREATE VIRTUAL TABLE")]
        rows = [r for r in rows if not (r[0] == "table" and any(r[1].startswith(f"{v}_") for v in virtual))]
        # the value indexes' triggers are dropped before a migration runs (migrate/valueindex.py)
        rows = [r for r in rows if not (r[0] == "trigger" and is_index_table(r[1]))]
        order = {"table": 0, "index": 1, "view": 2, "trigger": 3}
        for _type, _name, sql in sorted(rows, key=lambda r: order.get(r[0], 4)):
            rehearsal.exec_driver_sql(sql)
        has_sequence = "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'"
        if conn.exec_driver_sql(has_sequence).first() and rehearsal.exec_driver_sql(has_sequence).first():
            sequences = conn.exec_driver_sql("SELECT name, seq FROM sqlite_sequence").all()
            if sequences:  # the highest ids ever used, which a rebuild keeps (see ids.py)
                rehearsal.exec_driver_sql("DELETE FROM sqlite_sequence")
                rows = [tuple(r) for r in sequences]
                rehearsal.exec_driver_sql("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", rows)
    elif old_metadata is not None:
        old_metadata.create_all(rehearsal)


def _inline(statement: str, parameters) -> str:
    """A statement with its bound parameters written in, for display."""
    statement = statement.strip()
    if not parameters:
        return statement
    if isinstance(parameters, dict):
        return re.sub(r":(\w+)", lambda m: _literal(parameters.get(m.group(1))), statement)
    values = iter(parameters)
    return re.sub(r"\?", lambda _m: _literal(next(values, None)), statement)


def _literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


@contextmanager
def online(conn):
    """An :class:`Exec` on a live connection (the caller owns the transaction)."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(conn)
    yield Exec(Operations(context), conn, conn.dialect.name)


def sqlite_pragma(ex: Exec, pragma: str) -> None:
    """A PRAGMA on SQLite (run for real in the rehearsal too, so it shows in the SQL)."""
    if ex.sqlite:
        ex.execute(text(f"PRAGMA {pragma}"))
