"""Reading records: ``get``, ``find``, ``count``, ``related``, ``titles`` and the record's
``card``; a mixin of the CRM facade (metacrm.runtime.crm). Every read applies the acting
user's row-level access, and reads a page of records with one query per table (many-links
and inverse lists batched)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.sql import Select

from ..model.metamodel import Entity
from ..storage import naming
from ..types import Card, Record, RecordRef
from . import records as rec
from .access import archived_mode, path_access, require, row_clause
from .protocol import Host
from .records import link_member as _link_member
from .records import non_negative as _non_negative
from .titles import read_titles, reference, title_text
from .users import user_refs


class ReadsMixin(Host):
    # -- reads --------------------------------------------------------------------------------
    def get(self, entity: str, record_id: int) -> Record:
        """One record (NotFound when there is none)."""
        self._ready()
        ent = self._entity(entity)
        with self._reading() as conn:
            row = self._get_row(conn, ent, record_id)
            return rec.rows_to_records(conn, self.storage, ent, [row])[0]

    def _select(
        self,
        ent: Entity,
        where: str | None,
        params: Mapping[str, Any] | None,
        *,
        action: str = "read",
        ids: Iterable[int] | None = None,
        archived: str = "exclude",
    ) -> Select[Any]:
        table = self.storage.table(ent.name)
        query = select(table)
        if ids is not None:
            query = query.where(table.c.id.in_([rec.as_id(ent, i) for i in ids]))
        allowed = row_clause(self.storage, ent, self.actor, action, archived=archived)
        if allowed is not None:
            query = query.where(allowed)
        if where:
            from ..errors import ExpressionError
            from ..expr import compile_sql

            try:
                access = path_access(self.storage, self.actor)  # paths see only readable records
                params = {"me": self.user, **(params or {})}  # `created_by = :me`: the acting user's login
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
        after: int | None = None,
        ids: Iterable[int] | None = None,
        archived: str = "exclude",
    ) -> list[Record]:
        """Records matching a filter in the expression language (``"amount > 1000 and
        client.city = 'Москва'"``), ordered by fields (``"-amount"``), paged. ``action`` is
        the permission whose scope limits the rows (``"export"`` for exports). ``after``: only
        records with a greater id (keyset paging in id order, when ``order_by`` is not given);
        ``ids``: only records among these ids (e.g. the hits of a search). ``archived`` (an
        entity with ``archive: true``): ``"exclude"`` (live records only, the default),
        ``"only"`` or ``"include"``."""
        self._ready()
        ent = self._entity(entity)
        require(self.model, self.actor, ent.name, "read")  # no right at all: refused, not an empty answer
        if action != "read":
            require(self.model, self.actor, ent.name, action)
        archived = archived_mode(ent, archived)
        query = self._select(ent, where, params, ids=ids, archived=archived)
        query = query.order_by(*rec.order_clause(self.storage, ent, order_by))
        if after is not None:
            query = query.where(self.storage.table(ent.name).c.id > rec.as_id(ent, after))
        if action != "read":
            extra = row_clause(self.storage, ent, self.actor, action, archived="include")
            if extra is not None:
                query = query.where(extra)
        if limit is not None:
            query = query.limit(_non_negative(limit, "limit"))
        if offset:
            query = query.offset(_non_negative(offset, "offset"))
        with self._reading() as conn:
            rows = conn.execute(query).mappings().all()
            return rec.rows_to_records(conn, self.storage, ent, rows)

    def count(
        self,
        entity: str,
        where: str | None = None,
        params: Mapping[str, Any] | None = None,
        *,
        ids: Iterable[int] | None = None,
        limit: int | None = None,
        archived: str = "exclude",
    ) -> int:
        """How many records match (those the acting user may read). ``limit``: count no further
        than that many (the answer is then ``min(count, limit)``): the database stops reading
        after ``limit`` rows instead of visiting every matching record, so a page can say
        "10,000+" in a few milliseconds where an exact count of a large table reads all of it.
        ``archived``: as for :meth:`find`."""
        self._ready()
        ent = self._entity(entity)
        require(self.model, self.actor, ent.name, "read")
        query = self._select(ent, where, params, ids=ids, archived=archived_mode(ent, archived)).order_by(None)
        if limit is not None:
            table = self.storage.table(ent.name)
            rows = query.with_only_columns(table.c.id).limit(_non_negative(limit, "limit")).subquery()
            query = select(func.count()).select_from(rows)
        else:
            query = query.with_only_columns(func.count(), maintain_column_froms=True)
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
    ) -> list[Record]:
        """The records at the other end of a link or an inverse link (a deal's ``products``,
        a client's ``deals``). Through an inverse link archived records are left out; a link's
        own targets are given archived or not."""
        self._ready()
        ent = self._entity(entity)
        _link_member(ent, name)
        with self._reading() as conn:
            row = self._get_row(conn, ent, record_id)
        rid = row["id"]
        if name in ent.links:
            link = ent.links[name]
            if link.many and link.polymorphic:  # the records of every target entity, by entity
                join = self.storage.join_table(ent.name, name)
                out = []
                for target in link.targets:
                    ids = select(join.c.target_id).where(
                        join.c.source_id == rid, join.c[naming.JOIN_TARGET_ENTITY] == target
                    )
                    out += self._related_of(target, ids, where, params, order_by, limit, own=True)
                return out[:limit] if limit is not None else out
            elif link.many:
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
                if link.polymorphic:
                    ids = ids.where(join.c[naming.JOIN_TARGET_ENTITY] == ent.name)
            else:
                table = self.storage.table(inv.source)
                ids = select(table.c.id).where(table.c[naming.link_column(inv.link)] == rid)
                if link.polymorphic:
                    ids = ids.where(table.c[naming.link_entity_column(inv.link)] == ent.name)
        return self._related_of(target, ids, where, params, order_by, limit, own=name in ent.links)

    def _related_of(self, target: str, ids, where, params, order_by, limit, *, own: bool) -> list[Record]:
        target_ent = self.model.entities[target]
        table = self.storage.table(target)
        # a link's own targets are shown archived or not (as on the card); an inverse list hides them
        archived = "include" if own else "exclude"
        query = self._select(target_ent, where, params, archived=archived).where(table.c.id.in_(ids))
        query = query.order_by(*rec.order_clause(self.storage, target_ent, order_by))
        if limit is not None:
            query = query.limit(_non_negative(limit, "limit"))
        with self._reading() as conn:
            rows = conn.execute(query).mappings().all()
            return rec.rows_to_records(conn, self.storage, target_ent, rows)

    def titles(self, entity: str, ids: Iterable[int]) -> dict[int, str]:
        """id -> the record's title (its title field, else '<entity> <id>') for the records among
        ``ids`` the acting user may read; the others (hidden or missing) are left out. One query
        per batch of ids (metacrm.runtime.titles)."""
        ent = self._entity(entity)
        with self._reading() as conn:
            return read_titles(conn, self.storage, self.actor, ent.name, ids)

    def card(
        self,
        entity: str,
        record_id: int,
        *,
        limit: int = 50,
        moves: bool = False,
        timeline: int | None = None,
    ) -> Card:
        """A record with its links both ways: the record, each link's target(s) as
        ``{"entity", "id", "title", "hidden"}`` (a target the acting user may not read is
        hidden: title None, hidden True), and each inverse list (a client's deals) with titles,
        up to ``limit`` per list (only the records the user may read). With ``moves`` (an
        entity with stages) also ``"moves"``, what ``allowed_moves`` gives; with ``timeline``
        (a number of entries) also ``"timeline"``, what ``timeline(limit=timeline)`` gives.

        Everything is read in one transaction, the record once: one query for its row (plus one
        per many-link), one title query per target entity, one per inverse list, and the
        timeline's queries; never one per linked record."""
        self._ready()
        ent = self._entity(entity)
        with self._reading() as conn:
            row = self._get_row(conn, ent, record_id)
            record = rec.rows_to_records(conn, self.storage, ent, [row])[0]
            out: Card = {
                "entity": ent.name,
                "record": record,
                "links": self._link_refs(conn, ent, record),
                "related": {name: self._related_refs(conn, ent, row["id"], name, limit) for name in ent.inverses},
            }
            if moves and ent.has_stages:
                out["moves"] = self._moves_of(conn, ent, row)
            if timeline:
                out["timeline"] = self._timeline_of(conn, ent, row["id"], timeline)
            return out

    def _link_refs(self, conn, ent: Entity, record: Mapping) -> dict[str, RecordRef | list[RecordRef] | None]:
        """Each link's target(s) as references: one title query per target entity."""
        wanted: dict[str, set] = {}
        for link in ent.links.values():
            value = record[link.name]
            if link.many and link.polymorphic:
                for ref in value:
                    wanted.setdefault(ref["entity"], set()).add(ref["id"])
            elif link.many:
                wanted.setdefault(link.target, set()).update(value)
            elif link.polymorphic and value is not None:
                wanted.setdefault(value["entity"], set()).add(value["id"])
            elif value is not None:
                wanted.setdefault(link.target, set()).add(value)
        names = {target: read_titles(conn, self.storage, self.actor, target, ids) for target, ids in wanted.items()}
        links: dict[str, RecordRef | list[RecordRef] | None] = {}
        for link in ent.links.values():
            value = record[link.name]
            if link.many and link.polymorphic:
                links[link.name] = [reference(r["entity"], r["id"], names[r["entity"]]) for r in value]
            elif link.many:
                links[link.name] = [reference(link.target, i, names[link.target]) for i in value]
                if link.fields:  # each pair's values next to its target
                    pairs = {r["id"]: r for r in record.get(f"{link.name}.link", ())}
                    for ref in links[link.name]:
                        values = pairs.get(ref["id"], {})
                        ref["link"] = {name: values.get(name) for name in link.fields}
            elif value is None:
                links[link.name] = None
            elif link.polymorphic:
                links[link.name] = reference(value["entity"], value["id"], names[value["entity"]])
            else:
                links[link.name] = reference(link.target, value, names[link.target])
        if ent.user_links:
            links.update(user_refs(conn, self.storage, ent, record))
        return links

    def _related_refs(self, conn, ent: Entity, rid: int, name: str, limit: int) -> list[RecordRef]:
        """The readable records of an inverse list as references (with their stage), in id
        order, at most ``limit``: one query (id, title and stage only)."""
        from .journal import linked_ids

        inv = ent.inverses[name]
        source = self.model.entities[inv.source]
        table = self.storage.table(inv.source)
        columns = [table.c.id]
        if source.title:
            columns.append(table.c[source.title])
        if source.has_stages:
            columns.append(table.c.stage)
        query = self._select(source, None, None).with_only_columns(*columns)
        query = query.where(table.c.id.in_(linked_ids(self.storage, ent, inv.source, inv.link, rid)))
        query = query.order_by(table.c.id).limit(_non_negative(limit, "limit"))
        return [
            {
                "entity": inv.source,
                "id": r["id"],
                "title": title_text(inv.source, r["id"], r[source.title] if source.title else None),
                "hidden": False,
                **({"stage": r["stage"]} if source.has_stages else {}),
            }
            for r in conn.execute(query).mappings()
        ]
