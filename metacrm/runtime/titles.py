"""Titles of linked records as the acting user may see them: one rule for every place that
shows a linked record (cards, task subjects, group and funnel keys, notifications).

A record's title is its title field (else ``"<entity> <id>"``). A linked record the acting
user may not read (its entity's ``read`` scope) is *hidden*: its id may show (the linking
record's own link column holds it), its title never does. In data (Python and JSON) a
reference to it is ``{"entity": "client", "id": 7, "title": None, "hidden": True}``; text
output (tables, CSV, charts, notification messages) shows :data:`HIDDEN` instead of a title.
A record that does not exist is hidden the same way, so that hidden and missing cannot be told
apart. Group keys merge every hidden target into one group (``"value": None, "label": None,
"hidden": True``), so that how records spread over hidden targets cannot be read from a report.

Titles are read with one query per entity and batch of ids (:func:`read_titles`), the
user's row filter (metacrm.runtime.access.row_clause) applied in the same query.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import BigInteger, case, literal_column, select

from ..storage.tables import Storage
from ..types import RecordRef
from .access import Actor, row_clause
from .records import BATCH

HIDDEN = "(hidden)"  # what text output shows for the title of a record the user may not read
HIDDEN_KEY = 0  # the group key of the hidden targets in SQL (ids start at 1 on both dialects)


def title_text(entity: str, record_id: int, value) -> str:
    """A record's title as shown: its title field, else ``"<entity> <id>"``."""
    return str(value) if value not in (None, "") else f"{entity} {record_id}"


def read_titles(conn, storage: Storage, actor: Actor, entity: str, ids: Iterable) -> dict[int, str]:
    """id -> title of the records among ``ids`` that ``actor`` may read; the others (hidden or
    missing) are left out. One query per entity and batch of ids."""
    ent = storage.model.entities[entity]
    wanted = sorted({i for i in ids if isinstance(i, int) and not isinstance(i, bool)})
    if not wanted:
        return {}
    table = storage.table(ent.name)
    column = table.c[ent.title] if ent.title else table.c.id
    allowed = row_clause(storage, ent, actor, archived="include")  # an archived target is still named
    out: dict[int, str] = {}
    for start in range(0, len(wanted), BATCH):
        query = select(table.c.id, column).where(table.c.id.in_(wanted[start : start + BATCH]))
        if allowed is not None:
            query = query.where(allowed)
        out.update((i, title_text(ent.name, i, t)) for i, t in conn.execute(query).all())
    return out


def reference(entity: str, record_id: int, titles: Mapping[int, str]) -> RecordRef:
    """``{"entity", "id", "title", "hidden"}`` of one linked record, from :func:`read_titles`."""
    title = titles.get(record_id)
    return {"entity": entity, "id": record_id, "title": title, "hidden": title is None}


def shown(title: str | None, hidden: bool) -> str | None:
    """A title for text output: :data:`HIDDEN` for a hidden record."""
    return HIDDEN if hidden else title


def visible_key(storage: Storage, actor: Actor, target: str, column):
    """A link column as a group key: the target's id where the actor may read the target,
    :data:`HIDDEN_KEY` for every hidden target (one group), NULL where there is no link."""
    allowed = row_clause(storage, storage.model.entities[target], actor, archived="include")
    if allowed is None:
        return column
    table = storage.table(target)
    readable = select(table.c.id).where(allowed)
    return case(
        (column.is_(None), None), (column.in_(readable), column), else_=literal_column(str(HIDDEN_KEY), BigInteger)
    )


__all__ = ["HIDDEN", "HIDDEN_KEY", "read_titles", "reference", "shown", "title_text", "visible_key"]
