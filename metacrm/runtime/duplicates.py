"""Duplicate control: an entity's ``duplicates`` rules find records describing the same thing.

``email`` and ``phone`` rules compare the stored normalised values (the validators normalise
them; e-mail addresses compare case-insensitively), ``name`` rules compare casefolded names
(``ё`` read as ``е``: :func:`metacrm.text.fold`) with rapidfuzz's token sort ratio, within blocks of names sharing a key (runtime/fuzzy.py: not
every pair). A ``within`` field restricts comparison to records with an equal, non-empty value
of it. Candidates are read in one query per batch (per rule and chunk), never one per record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select

from ..model.field_types import MULTI_VALUE_TYPES
from ..model.metamodel import DuplicateRule, Entity
from ..storage.tables import Storage
from ..storage.valueindex import index_table
from ..text import fold
from ..types import DuplicateGroup
from .fuzzy import Blocks

CHUNK = 500


@dataclass(frozen=True, slots=True)
class Match:
    """Record ``index`` of a batch duplicates stored record ``existing`` (or, when ``existing``
    is None, record ``other`` of the same batch) under ``rule``."""

    index: int
    rule: DuplicateRule
    existing: int | None = None
    other: int | None = None

    def describe(self, entity: str, *, named: bool = True) -> str:
        if self.existing is None:
            whom = f"record {self.other} of this batch"
        else:
            whom = f"{entity} {self.existing}" if named else f"an existing {entity}"
        return f"duplicate of {whom} (rule: {self.rule.describe()}, {self.rule.action})"


def _key(rule: DuplicateRule, value):
    if value is None:
        return None
    if rule.match == "name":
        text = " ".join(fold(str(value)).split())  # ё and е are one letter
        return text or None
    return str(value).lower() if rule.match == "email" else value  # lower(): as the database folds


def _keys(rule: DuplicateRule, multi: bool, value) -> list:
    """The keys of a value: one, or one per address / number of an emails / phones field."""
    if not multi:
        key = _key(rule, value)
        return [] if key is None else [key]
    return list(dict.fromkeys(k for v in value or () if (k := _key(rule, v)) is not None))


def _value(entity: Entity, rule: DuplicateRule, values: Mapping):
    """The value a rule compares; a person_name's full name, computed only when stored, is
    made from the parts of a record not yet stored."""
    value = values.get(rule.field)
    f = entity.fields[rule.field]
    if value is None and f.part_of and f.formula:
        from ..model.composite import full_name

        value = full_name(values, f.part_of)
    return value


def _within(rule: DuplicateRule, values: Mapping):
    return values.get(rule.within) if rule.within else True


def _stored(storage: Storage, entity: Entity, rule: DuplicateRule, multi: bool):
    """The query of stored (id, key-bearing value[, within]) rows of a rule; for an emails /
    phones field one row per value, read from its value index."""
    table = storage.table(entity.name)
    within = [table.c[rule.within]] if rule.within else []
    if not multi:
        column = table.c[rule.field]
        return select(table.c.id, column, *within).where(column.is_not(None)), column
    index = index_table(entity.name, rule.field)
    query = select(table.c.id, index.c.value, *within).select_from(table.join(index, index.c.record_id == table.c.id))
    return query, index.c.value


def find_duplicates(
    conn, storage: Storage, entity: Entity, values_list: Sequence[Mapping], *, clause=None
) -> list[Match]:
    """Every rule match of the validated records ``values_list`` against stored records and
    against earlier records of the same list, in record order. ``clause`` narrows the stored
    candidates (row-level access). On an emails / phones field a record matches when any of
    its values is one of the other's."""
    matches: list[Match] = []
    table = storage.table(entity.name)
    for rule in entity.duplicates:
        multi = entity.fields[rule.field].type in MULTI_VALUE_TYPES
        keyed = [(i, _keys(rule, multi, _value(entity, rule, v)), _within(rule, v)) for i, v in enumerate(values_list)]
        keyed = [(i, ks, w) for i, ks, w in keyed if ks and w is not None]
        if not keyed:
            continue
        base, column = _stored(storage, entity, rule, multi)
        stored: dict = {}  # within value -> Blocks of names (name rules), or {key: first id}
        if rule.match == "name":
            lookup = sorted({w for _, _, w in keyed}, key=repr) if rule.within else [True]
        else:
            lookup = sorted({k for _, ks, _ in keyed for k in ks}, key=repr)
        for start in range(0, len(lookup), CHUNK):
            chunk = lookup[start : start + CHUNK]
            query = base
            if rule.match == "name":
                if rule.within:
                    query = query.where(table.c[rule.within].in_(chunk))
            elif multi:  # the index holds the keys
                query = query.where(column.in_(chunk))
            else:
                query = query.where((func.lower(column) if rule.match == "email" else column).in_(chunk))
            if clause is not None:
                query = query.where(clause)
            for row in conn.execute(query.order_by(table.c.id)):
                within = row[2] if rule.within else True
                key = _key(rule, row[1])
                if key is None:
                    continue
                if rule.match == "name":  # compared within blocks, not with every name (runtime/fuzzy.py)
                    stored.setdefault(within, Blocks(rule.threshold)).add(row[0], key)
                else:  # rows come by id: the first id of each key stays
                    stored.setdefault(within, {}).setdefault(key, row[0])
        seen: dict = {}  # within value -> Blocks of the batch's names, or {key: first batch index}
        for i, keys, within in keyed:
            found = _first(rule, keys, stored.get(within))
            if found is not None:
                matches.append(Match(i, rule, existing=found))
            else:
                other = _first(rule, keys, seen.get(within))
                if other is not None:
                    matches.append(Match(i, rule, other=other))
            for key in keys:
                if rule.match == "name":
                    seen.setdefault(within, Blocks(rule.threshold)).add(i, key)
                else:
                    seen.setdefault(within, {}).setdefault(key, i)
    return sorted(matches, key=lambda m: m.index)


def _first(rule: DuplicateRule, keys: list, candidates):
    """The first candidate matching any of ``keys`` (the primary first), or None."""
    for key in keys:
        found = _match(rule, key, candidates)
        if found is not None:
            return found
    return None


def _match(rule: DuplicateRule, key, candidates):
    """The first candidate id matching ``key`` under ``rule``, or None. ``candidates``: the
    Blocks of the names for a name rule, else a mapping of key -> first id."""
    if candidates is None:
        return None
    if rule.match == "name":
        return candidates.best(key)
    return candidates.get(key)


def _root(parent: dict, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def duplicate_groups(conn, storage: Storage, entity: Entity, *, clause=None) -> list[DuplicateGroup]:
    """Groups of stored records that are duplicates of each other, per rule:
    ``[{"rule": ..., "action": ..., "records": [ids...]}]``, ids ascending."""
    table = storage.table(entity.name)
    groups: list[dict] = []
    for rule in entity.duplicates:
        query, _column = _stored(storage, entity, rule, entity.fields[rule.field].type in MULTI_VALUE_TYPES)
        if clause is not None:
            query = query.where(clause)
        by_within: dict = {}
        for row in conn.execute(query.order_by(table.c.id)):
            within = row[2] if rule.within else True
            key = _key(rule, row[1])
            if key is not None and within is not None:
                by_within.setdefault(within, []).append((row[0], key))
        found: list[list[int]] = []
        for rows in by_within.values():
            parent = {rid: rid for rid, _ in rows}
            if rule.match != "name":  # records sharing a key (any address of an emails field)
                exact: dict = {}
                for rid, key in rows:
                    first = exact.setdefault(key, rid)
                    parent[_root(parent, rid)] = _root(parent, first)
            else:
                for rid, oid in Blocks(rule.threshold, rows).pairs():  # within blocks, not all pairs
                    parent[_root(parent, oid)] = _root(parent, rid)
            clusters: dict = {}
            for rid in parent:
                clusters.setdefault(_root(parent, rid), []).append(rid)
            found += [sorted(ids) for ids in clusters.values() if len(ids) > 1]
        for ids in sorted(found):
            groups.append({"rule": rule.describe(), "match": rule.match, "action": rule.action, "records": ids})
    return groups


__all__ = ["Match", "duplicate_groups", "find_duplicates"]


def merge_into(conn, storage: Storage, entity: Entity, keep: int, other: int) -> dict[str, list]:
    """Move everything pointing at record ``other`` to record ``keep``: single and polymorphic
    links, join rows (skipping pairs ``keep`` already has), ``other``'s own many-links, its
    stage history and journal. Returns what moved, by ``source.link``."""
    from sqlalchemy import and_, delete, update

    from ..storage import naming
    from .deletes import incoming

    moved: dict[str, list] = {}

    def repoint_join(join, side: str, fixed: str, *, here=None, kind: str | None = None) -> list[int]:
        """Rows with ``side`` = other get ``side`` = keep unless the pair exists already
        (``here``: only the rows it selects; ``kind``: a column completing ``fixed``, the
        target entity of a polymorphic many-link's own rows)."""
        cols = [join.c[fixed]] if kind is None else [join.c[kind], join.c[fixed]]
        only = [] if here is None else [here]
        rows = [tuple(r) for r in conn.execute(select(*cols).where(join.c[side] == other, *only))]
        have = {tuple(r) for r in conn.execute(select(*cols).where(join.c[side] == keep, *only))}
        for clash in (r for r in rows if r in have):
            same = [c == v for c, v in zip(cols, clash, strict=True)]
            conn.execute(delete(join).where(join.c[side] == other, *only, *same))
        conn.execute(update(join).where(join.c[side] == other, *only).values({side: keep}))
        return sorted(int(r[-1]) for r in rows)

    for ref in incoming(storage.model).get(entity.name, ()):
        where = f"{ref.source}.{ref.link.name}"
        if ref.link.many:
            join = storage.join_table(ref.source, ref.link.name)
            here = join.c[naming.JOIN_TARGET_ENTITY] == entity.name if ref.link.polymorphic else None
            ids = repoint_join(join, "target_id", "source_id", here=here)
        else:
            table = storage.table(ref.source)
            column = table.c[naming.link_column(ref.link.name)]
            clause = column == other
            if ref.link.polymorphic:
                clause = and_(clause, table.c[naming.link_entity_column(ref.link.name)] == entity.name)
            ids = sorted(int(i) for i in conn.execute(select(table.c.id).where(clause)).scalars())
            if ids:
                conn.execute(update(table).where(clause).values({column.name: keep}))
        if ids:
            moved[where] = ids
    for link in entity.links.values():
        if link.many:
            kind = naming.JOIN_TARGET_ENTITY if link.polymorphic else None
            ids = repoint_join(storage.join_table(entity.name, link.name), "source_id", "target_id", kind=kind)
            if ids:
                moved[f"{entity.name}.{link.name} (own)"] = ids
    for table in (storage.history_table, storage.journal_table):
        conn.execute(
            update(table).where(and_(table.c.entity == entity.name, table.c.record_id == other)).values(record_id=keep)
        )
    return moved
