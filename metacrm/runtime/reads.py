"""Reading records: ``get``, ``find``, ``count``, ``related``, ``titles`` and the record's
``card``; a mixin of the CRM facade (metacrm.runtime.crm). Every read applies the acting
user's row-level access, and reads a page of records with one query per table (many-links
and inverse lists batched)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, select

from ..model.metamodel import Entity
from ..storage import naming
from . import records as rec
from .access import path_access, row_clause
from .records import link_member as _link_member
from .records import non_negative as _non_negative


class ReadsMixin:
    # -- reads --------------------------------------------------------------------------------
    def get(self, entity: str, record_id: int) -> dict:
        """One record (NotFound when there is none)."""
        self._ready()
        ent = self._entity(entity)
        with self._reading() as conn:
            row = self._get_row(conn, ent, record_id)
            return rec.rows_to_records(conn, self.storage, ent, [row])[0]

    def _select(self, ent: Entity, where, params, *, action: str = "read"):
        table = self.storage.table(ent.name)
        query = select(table)
        allowed = row_clause(self.storage, ent, self.actor, action)
        if allowed is not None:
            query = query.where(allowed)
        if where:
            from ..errors import ExpressionError
            from ..expr import compile_sql

            try:
                access = path_access(self.storage, self.actor)  # paths see only readable records
                query = query.where(compile_sql(self.storage, ent.name, where, params, access=access))
            except ExpressionError as exc:
                if str(exc).startswith(f"{ent.name}"):
                    raise
                raise ExpressionError(f"{ent.name}: {exc}", exc.position, exc.issues) from exc
        return query

    def find(
        self,
        entity: str,
        where: str | None = None,
        params: Mapping[str, Any] | None = None,
        *,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        action: str = "read",
    ) -> list[dict]:
        """Records matching a filter in the expression language (``"amount > 1000 and
        client.city = 'Москва'"``), ordered by fields (``"-amount"``), paged. ``action`` is
        the permission whose scope limits the rows (``"export"`` for exports)."""
        self._ready()
        ent = self._entity(entity)
        query = self._select(ent, where, params).order_by(*rec.order_clause(self.storage, ent, order_by))
        if action != "read":
            extra = row_clause(self.storage, ent, self.actor, action)
            if extra is not None:
                query = query.where(extra)
        if limit is not None:
            query = query.limit(_non_negative(limit, "limit"))
        if offset:
            query = query.offset(_non_negative(offset, "offset"))
        with self._reading() as conn:
            rows = conn.execute(query).mappings().all()
            return rec.rows_to_records(conn, self.storage, ent, rows)

    def count(self, entity: str, where: str | None = None, params: Mapping[str, Any] | None = None) -> int:
        self._ready()
        ent = self._entity(entity)
        query = (
            self._select(ent, where, params).with_only_columns(func.count(), maintain_column_froms=True).order_by(None)
        )
        with self._reading() as conn:
            return conn.execute(query).scalar_one()

    def related(
        self,
        entity: str,
        record_id: int,
        name: str,
        *,
        where: str | None = None,
        params: Mapping[str, Any] | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[dict]:
        """The records at the other end of a link or an inverse link (a deal's ``products``,
        a client's ``deals``)."""
        self._ready()
        ent = self._entity(entity)
        _link_member(ent, name)
        with self._reading() as conn:
            row = self._get_row(conn, ent, record_id)
        rid = row["id"]
        if name in ent.links:
            link = ent.links[name]
            if link.many:
                join = self.storage.join_table(ent.name, name)
                target, ids = link.target, select(join.c.target_id).where(join.c.source_id == rid)
            elif link.polymorphic:
                target_id = row[naming.link_column(name)]
                if target_id is None:
                    return []
                target, ids = row[naming.link_entity_column(name)], [target_id]
            else:
                target_id = row[naming.link_column(name)]
                if target_id is None:
                    return []
                target, ids = link.target, [target_id]
        else:
            inv = ent.inverses[name]
            source = self.model.entities[inv.source]
            link = source.links[inv.link]
            target = inv.source
            if link.many:
                join = self.storage.join_table(inv.source, inv.link)
                ids = select(join.c.source_id).where(join.c.target_id == rid)
            else:
                table = self.storage.table(inv.source)
                ids = select(table.c.id).where(table.c[naming.link_column(inv.link)] == rid)
                if link.polymorphic:
                    ids = ids.where(table.c[naming.link_entity_column(inv.link)] == ent.name)
        target_ent = self.model.entities[target]
        table = self.storage.table(target)
        query = self._select(target_ent, where, params).where(table.c.id.in_(ids))
        query = query.order_by(*rec.order_clause(self.storage, target_ent, order_by))
        if limit is not None:
            query = query.limit(_non_negative(limit, "limit"))
        with self._reading() as conn:
            rows = conn.execute(query).mappings().all()
            return rec.rows_to_records(conn, self.storage, target_ent, rows)

    def titles(self, entity: str, ids: Iterable[int]) -> dict[int, str]:
        """id -> the record's title (its title field, else '<entity> <id>'), in one query."""
        ent = self._entity(entity)
        ids = sorted({i for i in ids if i is not None})
        if not ids:
            return {}
        table = self.storage.table(ent.name)
        column = table.c[ent.title] if ent.title else table.c.id
        query = select(table.c.id, column).where(table.c.id.in_(ids))
        allowed = row_clause(self.storage, ent, self.actor)
        if allowed is not None:  # titles of records the user may not read stay hidden
            query = query.where(allowed)
        with self._reading() as conn:
            rows = conn.execute(query).all()
        return {i: (str(t) if t not in (None, "") else f"{ent.name} {i}") for i, t in rows}

    def card(self, entity: str, record_id: int, *, limit: int = 50) -> dict:
        """A record with its links both ways: the record, each link's target(s) with titles,
        and each inverse list (a client's deals) with titles, up to ``limit`` per list."""
        ent = self._entity(entity)
        record = self.get(entity, record_id)
        links: dict = {}
        for link in ent.links.values():
            value = record[link.name]
            if link.many:
                names = self.titles(link.target, value)
                links[link.name] = [{"entity": link.target, "id": i, "title": names.get(i)} for i in value]
            elif link.polymorphic:
                links[link.name] = (
                    None
                    if value is None
                    else {**value, "title": self.titles(value["entity"], [value["id"]]).get(value["id"])}
                )
            else:
                links[link.name] = (
                    None
                    if value is None
                    else {"entity": link.target, "id": value, "title": self.titles(link.target, [value]).get(value)}
                )
        related: dict = {}
        for name, inv in ent.inverses.items():
            source = self.model.entities[inv.source]
            rows = self.related(entity, record["id"], name, limit=limit)
            related[name] = [
                {
                    "entity": inv.source,
                    "id": r["id"],
                    "title": (r.get(source.title) if source.title else None) or f"{inv.source} {r['id']}",
                    **({"stage": r["stage"]} if source.has_stages else {}),
                }
                for r in rows
            ]
        return {"entity": ent.name, "record": record, "links": links, "related": related}
