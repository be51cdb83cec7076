"""Soft delete: an entity with ``archive: true`` keeps a deleted record, archived (docs/archive.md).

* :func:`archive` is what ``crm.delete`` does on such an entity: it sets the record's
  ``archived_at`` and ``archived_by`` system columns (and a new version), journals an
  ``archive`` entry, and touches nothing else: the record's links stay as they are and no
  ``on_delete`` rule runs (nothing points at a missing record); ``purge`` applies them.
* :func:`restore` clears the two columns (journaled ``restore``); it is refused for a record
  that is not archived, or that a ``block`` duplicate rule matches against a live record.
* Reads leave archived records out (``row_clause`` in metacrm.runtime.access) unless asked
  for; a write on an archived record (update, move, link, a second delete) is refused by
  :func:`refuse_archived`, saying to restore it first.

Both run in the caller's transaction and need the ``delete`` right on the record.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import update

from ..errors import ConflictError
from ..model.metamodel import Entity
from ..storage.types import now_utc
from . import journal
from . import records as rec


def refuse_archived(ent: Entity, row: Mapping, action: str) -> None:
    """Refuse ``action`` on an archived record (ConflictError): only read, restore and
    purge apply to it."""
    rid = row["id"]
    if action == "delete":
        message = (
            f"{ent.name} {rid} is already archived: purge removes it for good "
            f"(crm.purge / metacrm purge {ent.name} {rid}), restore brings it back"
        )
    else:
        message = (
            f"{ent.name} {rid} is archived: it cannot {action}; restore it first "
            f"(crm.restore / metacrm restore {ent.name} {rid})"
        )
    raise ConflictError(message, entity=ent.name, record_id=rid)


def _stamp(crm, conn, ent: Entity, row: Mapping, at, by) -> dict:
    """Set (or clear) the archive columns of one record; returns the record as stored. The
    UPDATE holds only while the record is still as read (live to archive, archived to restore):
    a concurrent delete or restore that got there first makes it refuse, not write twice."""
    table = crm.storage.table(ent.name)
    now = now_utc()
    still = table.c.archived_at.is_(None) if at is not None else table.c.archived_at.is_not(None)
    done = conn.execute(
        update(table)
        .where(table.c.id == row["id"], still)
        .values(archived_at=at, archived_by=by, updated_at=now, updated_by=crm.user, version=table.c.version + 1)
    )
    if done.rowcount != 1:
        state = "archived" if at is not None else "restored"
        raise ConflictError(
            f"{ent.name} {row['id']} was {state} (or removed) by someone else meanwhile; read it again",
            entity=ent.name,
            record_id=row["id"],
        )
    fresh = conn.execute(rec.row_by_id(table), {"_id": row["id"]}).mappings().one()
    return rec.rows_to_records(conn, crm.storage, ent, [fresh])[0]


def archive(crm, conn, ent: Entity, record_id) -> dict[str, list[int]]:
    """Archive one live record (``crm.delete`` on an entity with ``archive: true``)."""
    row = crm._get_row(conn, ent, record_id, "delete")
    now = now_utc()
    after = _stamp(crm, conn, ent, row, now, crm.user)
    entry = journal.entry(ent.name, row["id"], "archive", after["updated_at"], crm.user, {"archived_at": [None, now]})
    crm._log(conn, [{**entry, "changes": journal.safe(entry["changes"])}])
    return {ent.name: [row["id"]]}


def restore(crm, conn, ent: Entity, record_id) -> dict:
    """Bring one archived record back; returns it."""
    if not ent.archive:
        from ..errors import ValidationError

        raise ValidationError(
            f"{ent.name} has no archive (the entity does not declare archive: true): there is nothing to restore"
        )
    row = crm._get_row(conn, ent, record_id, "delete", archived=True)
    if row["archived_at"] is None:
        raise ConflictError(f"{ent.name} {row['id']} is not archived: nothing to restore", entity=ent.name, record_id=row["id"])
    after = _stamp(crm, conn, ent, row, None, None)
    if ent.duplicates:  # a live record may have taken its place meanwhile
        crm._check_duplicates(conn, ent, [after], True, exclude=row["id"])
    changes = {"archived_at": [journal.safe(row["archived_at"]), None]}
    crm._log(conn, [journal.entry(ent.name, row["id"], "restore", after["updated_at"], crm.user, changes)])
    crm._derived_values(conn, ent, [after])
    return after


__all__ = ["archive", "refuse_archived", "restore"]
