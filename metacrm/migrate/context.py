"""What the model diff shares: both models, both storages, the live schema, step factories.

Everything here is pure (no database): counts are *measures*, closures the plan runs later on
a live connection, and SQL is produced by running the steps' actions (``execute.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import CheckConstraint, Column, func, or_, select
from sqlalchemy.sql import column as sql_column
from sqlalchemy.sql import table as sql_table

from ..model.metamodel import Model
from ..storage.tables import Storage, build_storage
from .steps import DESTRUCTIVE, NEEDS_DATA, SAFE, Phase, Step

__all__ = ["DESTRUCTIVE", "NEEDS_DATA", "SAFE", "Phase", "Step", "Ctx", "Live", "match"]

# contribution order inside one ALTER phase / rebuild: drop constraints before columns
DROP_CONSTRAINT, DROP_COLUMN, ALTER_COLUMN, ADD_CONSTRAINT = 0, 1, 2, 3


@dataclass
class Live:
    """The tables and columns the database holds (from the inspector, or the old model), and
    the SQLite tables created without AUTOINCREMENT (``plain_ids``, see ``ids.py``)."""

    tables: dict[str, set[str]] = field(default_factory=dict)
    plain_ids: set[str] = field(default_factory=set)
    lengths: dict[tuple[str, str], int] = field(default_factory=dict)  # (table, column) -> n of VARCHAR(n)

    @classmethod
    def from_connection(cls, conn) -> Live:
        from sqlalchemy import inspect

        from ..runtime.earlier import plain_id_tables

        insp = inspect(conn)
        tables: dict[str, set[str]] = {}
        lengths: dict[tuple[str, str], int] = {}
        for name in insp.get_table_names():
            columns = insp.get_columns(name)
            tables[name] = {c["name"] for c in columns}
            for c in columns:
                if getattr(c["type"], "length", None):
                    lengths[(name, c["name"])] = c["type"].length
        return cls(tables, plain_id_tables(conn), lengths)

    @classmethod
    def from_storage(cls, storage: Storage | None) -> Live:
        if storage is None:
            return cls()
        return cls({t.name: set(t.c.keys()) for t in storage.metadata.sorted_tables})


def old_storage(old: Model | None) -> Storage | None:
    """The tables of the recorded model. It is rebuilt from canonical JSON, whose keys are
    sorted: its declaration order (of stages, fields...) is not the file's. It must not take
    the place of the loaded model in build_storage's cache (keyed by sha256), so it is
    built under a key of its own."""
    if old is None:
        return None
    from dataclasses import replace

    return build_storage(replace(old, sha256=f"recorded:{old.sha256}"))


def match(old: Iterable[str], new: Mapping[str, object], renamed_from: Callable[[object], tuple]) -> dict[str, str]:
    """new name -> old name for the elements present in both versions (same name, or a
    ``renamed_from`` naming an old element that the new version no longer has)."""
    old = list(old)
    result: dict[str, str] = {}
    claimed = set()
    for name in new:
        if name in old:
            result[name] = name
            claimed.add(name)
    for name, item in new.items():
        if name in result:
            continue
        for previous in renamed_from(item) or ():
            if previous in old and previous not in new and previous not in claimed:
                result[name] = previous
                claimed.add(previous)
                break
    return result


class Ctx:
    def __init__(
        self,
        old: Model | None,
        new: Model,
        *,
        dialect: str,
        allow_data_loss: bool,
        live: Live | None,
        user: str | None,
        now: dt.datetime,
    ):
        self.old = old
        self.new = new
        self.so: Storage | None = old_storage(old)
        self.sn: Storage = build_storage(new)
        self.dialect = dialect
        self.allow_data_loss = allow_data_loss
        self.live = live if live is not None else Live.from_storage(self.so)
        self.user = user
        self.now = now
        self.steps: list[Step] = []
        self.vacated: set[str] = set()  # old table names renamed away in this migration
        self.entity_names: dict[str, str] = {}  # old entity name -> new name, for matched entities
        self.replaced_checks: set[tuple[str, str]] = set()  # (table, column) whose CHECK is re-created
        self.replaced_fks: set[tuple[str, str]] = set()  # (table, column) whose foreign key is re-created
        self.new_columns: set[tuple[str, str, bool]] = set()  # (table, column, has fill) added here

    @property
    def sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        return step

    def step(self, kind: str, entity, target, klass: str, description: str) -> Step:
        return self.add(Step(kind, entity, target, klass, description))

    def unsupported(self, kind: str, entity, target, what: str, measure=None) -> Step:
        step = self.step(kind, entity, target, DESTRUCTIVE, f"not supported yet: {what}")
        step.refusal = f"not supported yet: {what}"
        step.measure = measure
        return step

    # -- the live schema ---------------------------------------------------------------------
    def live_has_table(self, name: str) -> bool:
        return name in self.live.tables

    def live_columns(self, table: str) -> set[str]:
        return self.live.tables.get(table, set())

    def clash(self, step: Step, table: str, columns: Iterable[str], expected: Iterable[str] = ()) -> None:
        """Refuse ``step`` when the database already has one of ``columns`` in ``table`` (a
        column kept from an earlier version of the model)."""
        present = [c for c in columns if c in self.live_columns(table) and c not in set(expected)]
        if present:
            names = ", ".join(f"{table}.{c}" for c in present)
            step.refusal = (
                f"not supported yet: column {names} already exists in the database (kept from an earlier "
                "model version); give the new one another name"
            )
            step.klass = DESTRUCTIVE

    # -- measures (run later, on the live database, before anything changes) -----------------
    @staticmethod
    def count_rows(table: str, where=None) -> Callable:
        def measure(conn, step: Step) -> None:
            query = select(func.count()).select_from(sql_table(table))
            if where is not None:
                query = query.where(where)
            step.count = conn.execute(query).scalar_one()

        return measure

    @staticmethod
    def count_values(table: str, columns: Iterable[str]) -> Callable:
        """Records with a value in any of ``columns``."""
        columns = list(columns)

        def measure(conn, step: Step) -> None:
            t = sql_table(table, *[sql_column(c) for c in columns])
            clause = or_(*[t.c[c].is_not(None) for c in columns])
            step.count = conn.execute(select(func.count()).select_from(t).where(clause)).scalar_one()

        return measure

    # -- SQL helpers ----------------------------------------------------------------------------
    def new_column(self, entity_table: str, name: str) -> Column:
        return self.sn.metadata.tables[entity_table].c[name]

    def check_of(self, storage: Storage, table: str, name: str) -> CheckConstraint | None:
        for c in storage.metadata.tables[table].constraints:
            if isinstance(c, CheckConstraint) and c.name == name:
                return c
        return None


def counted(count: int, noun: str = "record", verbs: tuple[str, str] | None = None) -> str:
    """``1 record is``, ``2 records are``: a count with its noun (and verb) in the right number."""
    text = f"{count} {noun}{'' if count == 1 else 's'}"
    return f"{text} {verbs[count != 1]}" if verbs else text


def values_table(name: str, *columns: Column):
    """A lightweight table for UPDATE/INSERT statements, with the columns' types (so that bound
    values are stored the way the runtime stores them)."""
    return sql_table(name, *[sql_column(c.name, c.type) for c in columns])


def quoted(ex, name: str) -> str:
    return ex.op.impl.dialect.identifier_preparer.quote(name)


__all__ += ["counted", "values_table", "quoted", "DROP_CONSTRAINT", "DROP_COLUMN", "ALTER_COLUMN", "ADD_CONSTRAINT", "SAFE"]
