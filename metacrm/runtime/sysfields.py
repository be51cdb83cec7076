"""System-managed fields: ``readonly`` and ``autonumber`` (see docs/sysfields.md).

* :func:`refuse_readonly_values` / :func:`refuse_readonly_changes`: a user (a CRM acting as a
  login: ``as_user``, the CLI's ``--as``, HTTP) may not give a readonly field a value on create,
  nor change it on update. The system (a CRM without a user), automations (which act as the
  system) and imports (``permission="import"``) may.
* :func:`number_rows`: fills the autonumber fields of new rows from ``metacrm_sequence``,
  incremented atomically (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``, one statement per
  sequence and batch) in the transaction that inserts the rows: a concurrent create waits for
  the row lock (PostgreSQL) or the write lock (SQLite), so numbers are distinct and
  consecutive, and a rolled-back create gives its numbers back unseen.
* :func:`fill_existing`: what a migration that adds an autonumber does to the rows already there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, column, select, table

from ..errors import FieldIssue
from ..model.autonumber import prefix, render
from ..model.metamodel import Entity, Field, Model
from ..storage import naming
from . import records as rec

READONLY = "is readonly: it is set by the system, automations and imports; leave it out"


def _readonly(ent: Entity) -> list[str]:
    return [f.name for f in ent.fields.values() if f.readonly]


def user_bound(user: str | None, permission: str = "create") -> bool:
    """Whether readonly fields are closed to this write: a user's own create or update (an
    import, ``permission="import"``, and the system may set them)."""
    return user is not None and permission != "import"


def refuse_readonly_values(ent: Entity, batch: Sequence[Mapping], *, indexed: bool) -> None:
    """Refuse the records of a user's create that give a readonly field a value (an empty
    value, as a form sends for a field it shows, is ignored)."""
    names = _readonly(ent)
    if not names:
        return
    issues = [
        FieldIssue(ent.name, name, READONLY, data[name], index if indexed else None)
        for index, data in enumerate(batch)
        if isinstance(data, Mapping)
        for name in names
        if data.get(name) not in (None, "")
    ]
    if issues:
        raise rec.refused(issues)


def refuse_readonly_changes(ent: Entity, values: Mapping, current: Mapping) -> None:
    """Refuse a user's update that changes a readonly field (giving its stored value is fine)."""
    issues = [
        FieldIssue(ent.name, name, READONLY, values[name])
        for name in _readonly(ent)
        if name in values
        and values[name] != current.get(name)
        and not (values[name] == "" and current.get(name) is None)
    ]
    if issues:
        raise rec.refused(issues)


def _day(moment: dt.datetime, zone: str | None) -> dt.date:
    if zone and zone != "UTC" and moment.tzinfo is not None:
        moment = moment.astimezone(ZoneInfo(zone))
    return moment.date()


def sequence_key(ent_name: str, f: Field, prefixed: str) -> str:
    """The row of ``metacrm_sequence`` a prefix of a field counts in."""
    return f"{ent_name}.{f.name}:{prefixed}"


def take(conn, seq_table, key: str, count: int) -> int:
    """Reserve ``count`` numbers of sequence ``key`` atomically; returns the first."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(seq_table).values(name=key, value=count)
    stmt = stmt.on_conflict_do_update(
        index_elements=[seq_table.c.name], set_={"value": seq_table.c.value + stmt.excluded.value}
    ).returning(seq_table.c.value)
    last = conn.execute(stmt).scalar_one()
    return last - count + 1


def number_rows(conn, storage, ent: Entity, rows: Sequence[dict], zone: str | None) -> None:
    """Give the new rows without a value their autonumbers (a value given by the system or an
    import is kept)."""
    for f in ent.fields.values():
        if f.autonumber is None:
            continue
        groups: dict[str, list[dict]] = {}
        for row in rows:
            if row.get(f.name) in (None, ""):
                groups.setdefault(prefix(f.autonumber, _day(row["created_at"], zone)), []).append(row)
        for prefixed, members in groups.items():
            first = take(conn, storage.sequence_table, sequence_key(ent.name, f, prefixed), len(members))
            for offset, row in enumerate(members):
                row[f.name] = render(prefixed, first + offset)


def fill_existing(conn, model: Model, entity: str, f: Field) -> int:
    """Number the rows of ``entity`` that have no ``f`` value, in id order, by their creation
    date; the sequences continue from where they are. Returns how many were numbered."""
    t = table(naming.table_name(entity), column("id"), column("created_at"), column(f.name))
    rows = conn.execute(select(t.c.id, t.c.created_at).where(t.c[f.name].is_(None)).order_by(t.c.id)).all()
    if not rows:
        return 0
    from ..storage.tables import build_storage

    seq = build_storage(model).sequence_table
    ent = model.entities[entity]
    groups: dict[str, list[int]] = {}
    for record_id, created_at in rows:
        created = created_at if isinstance(created_at, dt.datetime) else dt.datetime.fromisoformat(str(created_at))
        if created.tzinfo is None:
            created = created.replace(tzinfo=dt.UTC)
        groups.setdefault(prefix(f.autonumber or "", _day(created, model.timezone)), []).append(record_id)
    changes = []
    for prefixed, ids in groups.items():
        first = take(conn, seq, sequence_key(ent.name, f, prefixed), len(ids))
        changes += [{"_id": i, "_v": render(prefixed, first + n)} for n, i in enumerate(ids)]
    conn.execute(t.update().where(t.c.id == bindparam("_id")).values({f.name: bindparam("_v")}), changes)
    return len(changes)



__all__ = [
    "READONLY",
    "fill_existing",
    "number_rows",
    "refuse_readonly_changes",
    "refuse_readonly_values",
    "sequence_key",
    "take",
    "user_bound",
]
