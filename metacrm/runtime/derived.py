"""Keeping computed fields (``formula:``) and roll-up fields (``rollup:``) correct.

:func:`derived_reactor` is the first of the model's reactors (see ``react.py``): after every
write it gets the journal entries of that write and recomputes, with set-based SQL, exactly
the derived values the write can have made stale:

- a formula of the written records, and of the records whose single link points at a written
  record whose columns the formula reads (``UPDATE deal SET f = <expr> WHERE id IN (...)``, the
  linked values read by correlated subqueries);
- a roll-up of the parents the written children belonged to before and belong to after the
  write (old parents come from the entries: a deleted record's entry carries its values, also
  when a cascade removed it; a relinked one carries its old link): ``UPDATE parent SET total =
  (SELECT sum(...) FROM child WHERE child.link = parent.id AND filter) WHERE id IN (...)``.

Each recomputed field is itself a change: it propagates, in the dependency order compiled
once per model (a roll-up of a roll-up, a formula over a roll-up), so one pass reaches the
fixed point. A batch of created records costs one statement per derived field (and one query
per dependency to find what else it touches), never one per record.

Derived values are not journaled and do not bump ``version`` or ``updated_at``: they are a
function of the journaled data, recomputed on every change of it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from sqlalchemy import bindparam, case, false, func, literal, select, true, update

from ..expr.derive import Analysis, Derived, Read, analyse, has_derived
from ..expr.names import Hop
from ..expr.to_sql import ValueSQL, _Compiler, number_sql, rescale_sql
from ..expr.values import NUMBER
from ..model.metamodel import Entity, Model
from ..storage import naming
from ..storage.tables import Storage

CHUNK = 1000  # ids per statement
_STAGE_MEMBERS = ("stage_entered_at", "closed_at", "pipeline", "reached")
_ALWAYS = ("updated_at", "version", "updated_by")


def derived_reactor(model: Model):
    """The reactor keeping the model's derived fields correct; None when it has none."""
    if not has_derived(model):
        return None
    analysis = analyse(model)
    if not analysis.order:
        return None
    return DerivedReactor(model, analysis)


def _chunks(ids) -> list[list[int]]:
    ids = sorted(ids)
    return [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]


def _ids_in(value, entity: str | None = None) -> list[int]:
    """Record ids in a JSON-safe link value (an id, a list of ids, {"entity", "id"})."""
    if value is None:
        return []
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, str):
        return [int(value)] if value.isdigit() else []
    if isinstance(value, Mapping):
        if entity is not None and value.get("entity") != entity:
            return []
        return _ids_in(value.get("id"))
    if isinstance(value, list | tuple | set | frozenset):
        return [i for v in value for i in _ids_in(v, entity)]
    return []


class _Statements:
    """The SQL of one storage: an UPDATE per derived field and a query per dependency."""

    def __init__(self, storage: Storage, order: Sequence[Derived]):
        self.storage = storage
        self.values = ValueSQL(storage)
        self.updates = [self._update(d) for d in order]
        self.full = [self._update(d, every=True) for d in order]
        self.locks = [self._lock(d) if d.kind == "rollup" else None for d in order]
        self._queries: dict = {}

    def _lock(self, d: Derived):
        """PostgreSQL: lock the parents before recomputing their roll-up, in id order. Under
        READ COMMITTED an UPDATE that waited for another writer's lock keeps its old snapshot
        for the sub-select (it would miss that writer's children); the recompute, a statement
        run after the lock, sees them. The id order keeps two writers from deadlocking, and
        NO KEY UPDATE does not wait for a child's foreign-key share lock."""
        table = self.storage.table(d.entity)
        return (
            select(table.c.id)
            .where(table.c.id.in_(bindparam("ids", expanding=True)))
            .order_by(table.c.id)
            .with_for_update(key_share=True)
        )

    def _update(self, d: Derived, *, every: bool = False):
        table = self.storage.table(d.entity)
        expr = self._formula(d, table) if d.kind == "formula" else self._rollup(d, table)
        stmt = update(table).values({d.field: expr})
        if not every:
            stmt = stmt.where(table.c.id.in_(bindparam("ids", expanding=True)))
        return stmt

    def _formula(self, d: Derived, table):
        if d.condition is not None:  # true when the condition holds, else false (never null)
            cond = _Compiler(self.storage, None, "formula").node(d.condition, table, True)
            return case((cond, true()), else_=false())
        if d.value.kind == NUMBER:
            return self.values.at(d.value, table, d.scale)
        return self.values.value(d.value, table)

    def _rollup(self, d: Derived, parent):
        from ..expr.bind import bind

        storage, hop = self.storage, d.hop
        child = storage.table(d.child).alias("metacrm_child")
        values = self.values
        if hop.kind == "inverse" and not hop.many_to_many:
            column = child.c[naming.link_column(hop.link)]
            source, where = child, [column == parent.c.id]
            if hop.polymorphic:
                where.append(child.c[naming.link_entity_column(hop.link)] == literal(d.entity))
        else:
            owner = hop.target if hop.kind == "inverse" else hop.entity
            join = storage.join_table(owner, hop.link).alias("metacrm_join")
            near, far = (
                (naming.JOIN_TARGET, naming.JOIN_SOURCE)
                if hop.kind == "inverse"
                else (naming.JOIN_SOURCE, naming.JOIN_TARGET)
            )
            source = child.join(join, join.c[far] == child.c.id)
            where = [join.c[near] == parent.c.id]
            if hop.polymorphic:  # a many-link to several entities: its rows pointing at the parent's entity
                where.append(join.c[naming.JOIN_TARGET_ENTITY] == literal(d.entity))
            values = ValueSQL(storage, link_table=join)  # link.FIELD: the join row's own values
        if storage.model.entities[d.child].archive:  # archived children count no more (docs/archive.md)
            where.append(child.c.archived_at.is_(None))
        if d.where is not None:
            bound = bind(storage.model, d.child, d.where, "rollup filter")
            where.append(_Compiler(storage, None, "rollup filter").node(bound, child, True))
        if d.func == "count":
            sub = select(func.count()).select_from(source).where(*where).scalar_subquery()
            return rescale_sql(sub, 0, d.scale)
        value = values.value(d.value, child)
        agg = getattr(func, d.func)(value)
        sub = select(agg).select_from(source).where(*where).scalar_subquery()
        if d.value.kind != NUMBER:
            return sub
        if d.func == "sum":
            sub = func.coalesce(sub, number_sql(0, 0))
        return rescale_sql(sub, d.value.scale, d.scale)

    # -- which records a change reaches
    def parents(self, d: Derived):
        """ids of the parents of the children given as :ids."""
        key = ("parents", d.entity, d.field)
        if key not in self._queries:
            hop: Hop = d.hop
            ids = bindparam("ids", expanding=True)
            if hop.kind == "inverse" and not hop.many_to_many:
                child = self.storage.table(d.child)
                column = child.c[naming.link_column(hop.link)]
                query = select(column).where(child.c.id.in_(ids), column.is_not(None))
                if hop.polymorphic:
                    query = query.where(child.c[naming.link_entity_column(hop.link)] == literal(d.entity))
            elif hop.kind == "inverse":
                join = self.storage.join_table(d.child, hop.link)
                query = select(join.c[naming.JOIN_TARGET]).where(join.c[naming.JOIN_SOURCE].in_(ids))
                if hop.polymorphic:
                    query = query.where(join.c[naming.JOIN_TARGET_ENTITY] == literal(d.entity))
            else:
                join = self.storage.join_table(d.entity, hop.link)
                query = select(join.c[naming.JOIN_SOURCE]).where(join.c[naming.JOIN_TARGET].in_(ids))
            self._queries[key] = query.distinct()
        return self._queries[key]

    def referrers(self, route: tuple[Hop, ...]):
        """ids of the records whose path of single links ``route`` ends at one of :ids."""
        key = ("route", route)
        if key not in self._queries:
            inner = bindparam("ids", expanding=True)
            query = None
            for hop in reversed(route):
                table = self.storage.table(hop.entity)
                query = select(table.c.id).where(table.c[naming.link_column(hop.link)].in_(inner))
                inner = query
            self._queries[key] = query
        return self._queries[key]


class DerivedReactor:
    def __init__(self, model: Model, analysis: Analysis):
        self.model = model
        self.order = analysis.order
        self.of_entity: dict[str, list[int]] = defaultdict(list)
        self.by_read: dict[tuple[str, str], list[tuple[int, Read]]] = defaultdict(list)
        self.by_entity: dict[str, list[tuple[int, Read]]] = defaultdict(list)
        self.parent_links: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for i, d in enumerate(self.order):
            self.of_entity[d.entity].append(i)
            for r in d.reads:
                self.by_read[(r.entity, r.member)].append((i, r))
                self.by_entity[r.entity].append((i, r))
            if d.kind == "rollup" and d.hop.kind == "inverse":
                self.parent_links[d.child].append((i, d.hop.link))
        self._compiled: dict[int, _Statements] = {}

    def statements(self, storage: Storage) -> _Statements:
        got = self._compiled.get(id(storage))
        if got is None or got.storage is not storage:
            got = self._compiled[id(storage)] = _Statements(storage, self.order)
        return got

    def fields_of(self, entity: str) -> list[str]:
        return [self.order[i].field for i in self.of_entity.get(entity, ())]

    def __call__(self, crm, conn, entries: Sequence[Mapping]) -> None:
        st = self.statements(crm.storage)
        todo: list[set[int]] = [set() for _ in self.order]
        events: dict[tuple, set[int]] = defaultdict(set)
        for e in entries:
            entity, action = e.get("entity"), e.get("action")
            if action == "note" or entity not in self.model.entities:
                continue
            rid = e["record_id"]
            changes = e.get("changes") or {}
            if action in ("create", "delete", "merge", "archive", "restore", "purge"):
                members = None  # everything about the record changed (archived: out of its parents' roll-ups)
            else:
                members = {*changes, *_ALWAYS}
                if "stage" in changes:
                    members.update(_STAGE_MEMBERS)
                members = frozenset(members)
            events[(entity, members, action == "create")].add(rid)
            if action in ("create", "merge"):
                for i in self.of_entity.get(entity, ()):
                    todo[i].add(rid)
            for i, link in self.parent_links.get(entity, ()):
                if link in changes:  # the old and the new parents (a deleted record's old ones)
                    todo[i].update(_ids_in(changes[link], self.order[i].entity))
                if f"{link}.link" in changes:  # the values of its link rows to them changed
                    todo[i].update(r["id"] for side in changes[f"{link}.link"] for r in side or () if "id" in r)
        for (entity, members, created), ids in events.items():
            self._reach(conn, st, todo, entity, ids, members, created, -1)
        locked: dict[str, set[int]] = defaultdict(set)  # PostgreSQL: the parents locked for their roll-ups
        for i, d in enumerate(self.order):
            ids = todo[i]
            if not ids:
                continue
            lock = st.locks[i] if conn.dialect.name == "postgresql" else None  # SQLite: one writer at a time
            if lock is not None and ids - locked[d.entity]:  # once per parent and write
                for chunk in _chunks(ids - locked[d.entity]):
                    conn.execute(lock, {"ids": chunk})
                locked[d.entity] |= ids
            for chunk in _chunks(ids):
                conn.execute(st.updates[i], {"ids": chunk})
            self._reach(conn, st, todo, d.entity, ids, frozenset((d.field,)), False, i)

    def _reach(self, conn, st: _Statements, todo, entity: str, ids, members, created: bool, after: int) -> None:
        """Add to ``todo`` the derived values that a change of ``members`` (None: all) of
        records ``ids`` of ``entity`` makes stale."""
        if members is None:
            hits = self.by_entity.get(entity, ())
        else:
            hits = [hit for m in members for hit in self.by_read.get((entity, m), ())]
        seen: set = set()
        for i, read in hits:
            if i <= after:
                continue  # pragma: no cover - the order puts every reader after what it reads
            key = (i, read.parent, read.route)
            if key in seen:
                continue
            seen.add(key)
            d = self.order[i]
            if read.parent:
                if created:
                    continue  # a created child's parents are in its entry (its link values)
                query = st.parents(d)
            elif not read.route:
                todo[i].update(ids)
                continue
            else:
                if created:
                    continue  # nothing links to a record created in this very write
                query = st.referrers(read.route)
            for chunk in _chunks(ids):
                todo[i].update(conn.execute(query, {"ids": chunk}).scalars())

    # -- helpers for the facade and migrations
    def refresh(self, conn, storage: Storage, ent: Entity, records: Sequence[dict]) -> None:
        """Put the current derived values into records just written (read back in one query)."""
        names = self.fields_of(ent.name)
        if not names or not records:
            return
        table = storage.table(ent.name)
        by_id = {r["id"]: r for r in records}
        for chunk in _chunks(by_id):
            rows = conn.execute(select(table.c.id, *(table.c[n] for n in names)).where(table.c.id.in_(chunk)))
            for row in rows.mappings():
                by_id[row["id"]].update({n: row[n] for n in names})

    def recompute(self, conn, storage: Storage, fields=None) -> int:
        """Recompute derived fields for every record: ``fields`` ((entity, field) pairs, None:
        all) and every derived field depending on them, in order. Returns the statements run."""
        st = self.statements(storage)
        wanted = None if fields is None else set(fields)
        count = 0
        for i, d in enumerate(self.order):
            key = (d.entity, d.field)
            if wanted is not None and key not in wanted and not wanted.intersection(d.depends):
                continue
            if wanted is not None:
                wanted.add(key)
            conn.execute(st.full[i])
            count += 1
        return count


def refresh(crm, conn, ent: Entity, records: Sequence[dict]) -> None:
    """The derived values of ``records`` as stored after the reactors ran (no-op without any)."""
    for reactor in crm._reactors:
        if isinstance(reactor, DerivedReactor):
            reactor.refresh(conn, crm.storage, ent, records)
            return


def recompute_statements(model: Model, storage: Storage, fields=None) -> list:
    """The UPDATE statements (no WHERE: every record) that recompute ``fields`` ((entity,
    field) pairs; None: every derived field) and what depends on them, in dependency order:
    what ``metacrm migrate`` runs after adding or changing a derived field."""
    return [statement for _, statement in recompute_plan(model, storage, fields)]


def recompute_plan(model: Model, storage: Storage, fields=None) -> list[tuple[Derived, object]]:
    """``(derived field, its UPDATE for every record)`` for ``fields`` ((entity, field) pairs;
    None: every derived field) and every derived field depending on them, in dependency order."""
    reactor = derived_reactor(model)
    if reactor is None:
        return []
    st = reactor.statements(storage)
    wanted = None if fields is None else set(fields)
    out = []
    for i, d in enumerate(reactor.order):
        key = (d.entity, d.field)
        if wanted is not None and key not in wanted and not wanted.intersection(d.depends):
            continue
        if wanted is not None:
            wanted.add(key)
        out.append((d, st.full[i]))
    return out


__all__ = ["DerivedReactor", "derived_reactor", "recompute_plan", "recompute_statements", "refresh"]
