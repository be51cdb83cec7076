"""Bound tree -> a SQLAlchemy Core condition on an entity's table.

Every literal and parameter is a bound parameter typed by its column (so TypeDecorators such
as ExactDecimal, money in cents on SQLite, apply). Paths through links become ``IN``
subqueries on fresh aliases, never joins, so ``select(table).where(condition)`` never repeats
a row.

Single links keep SQL's three-valued logic exactly as if the linked column were the record's
own: ``client.city = 'X'`` is unknown when the deal has no client or the client no city. An
``IN`` subquery alone cannot say "unknown" for a client whose city is null, so each atom is
compiled for its polarity (a condition only counts when it is TRUE, and and/or are monotone):
under an even number of ``not`` the subquery selects the records where the atom is TRUE;
under an odd number it excludes those where the atom is FALSE. Paths through many and inverse
links are existential (some linked value satisfies the atom) and exactly two-valued.

Access: given ``access`` (``(entity, table) -> condition or None``, the acting user's read
filter written on a table or alias), every subquery a path walks into keeps only the records the
user may read, at every hop, so a record the user may not read is exactly as if it were not
linked: a hidden client is no client (``client.city = 'X'`` and ``not (client.city = 'X')`` are
both not true; ``client.city is null`` is true, as for a deal without a client) and hidden deals
are no deals (``deals.amount > 5`` is false, ``deals is null`` true). What the record itself
holds stays readable: its link columns and its many-links' ids (``client = 3``, ``products =
4``). Without ``access`` (the system user) no condition is added.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Numeric,
    String,
    Text,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    literal_column,
    not_,
    null,
    or_,
    select,
)
from sqlalchemy import type_coerce as _type_coerce
from sqlalchemy.sql.elements import ColumnElement, Null

from ..dates import local_today
from ..model.field_types import MULTI_VALUE_TYPES
from ..storage import naming
from ..storage.tables import Storage
from ..storage.types import UTCDateTime
from . import bind as b
from . import values as v
from .functions import binary_text, casefold, date_add, days_between, dialect_pick, json_has, json_null, text_case
from .names import JSON, MULTICHOICE, TEXT, Resolved

_LIKE_ESCAPE = "/"

Access = Callable[[str, object], ColumnElement | None]  # (entity, table or alias) -> its read filter


def _escape_like(text: str) -> str:
    return text.replace("/", "//").replace("%", "/%").replace("_", "/_")


def _ordered(column, vt, op: str):
    """Text ordering by code point on every dialect (as Python compares str)."""
    return binary_text(column) if vt.kind == TEXT and op not in ("=", "!=") else column


_PG_WIDEN = literal_column("1." + "0" * 60)  # PostgreSQL divides with 60+ decimals, then rounds


def _num(x):
    return _type_coerce(x, Numeric())


class ValueSQL:
    """Bound values -> SQL on a table (see values.py for the exact arithmetic)."""

    def __init__(self, storage: Storage, access: Access | None = None, link_table=None):
        self.storage = storage
        self.access = access
        self.link_table = link_table  # a roll-up's join table: where ``link.FIELD`` is read

    def column(self, r: Resolved, table) -> ColumnElement:
        if r.link_row and not r.hops:
            return self.link_table.c[r.column]
        return self._path(r, 0, table)

    def _path(self, r: Resolved, i: int, table):
        if i == len(r.hops):
            return table.c[r.column]
        hop = r.hops[i]
        target = self.storage.table(hop.target).alias()
        inner = self._path(r, i + 1, target)
        where = [target.c.id == table.c[naming.link_column(hop.link)], *readable(self.access, hop.target, target)]
        return select(inner).where(*where).scalar_subquery()

    def at(self, node, table, scale: int) -> ColumnElement:
        """The value at ``scale`` decimal places (exactly when it grows, rounded half away
        from zero when it shrinks)."""
        return rescale_sql(self.value(node, table), node.scale if node.kind == v.NUMBER else scale, scale)

    def value(self, node, table) -> ColumnElement:
        if isinstance(node, v.VCol):
            return self.column(node.resolved, table)
        if isinstance(node, v.VLit):
            if node.value is None:
                return null()
            if node.kind == v.NUMBER:
                return number_sql(node.value, node.scale)
            if node.kind == v.BOOLEAN:
                return literal(node.value, Boolean())
            if node.kind == v.DATE:
                return literal(node.value, Date())
            if node.kind == v.DATETIME:
                return literal(node.value, UTCDateTime())
            return literal(node.value, String())
        if isinstance(node, v.VNeg):
            return -_num(self.value(node.item, table))
        if isinstance(node, v.VRound):
            return self.at(node.item, table, node.scale)
        if isinstance(node, v.VCoalesce):
            if node.kind == v.NUMBER:
                return func.coalesce(*(self.at(i, table, node.scale) for i in node.items))
            return func.coalesce(*(self.value(i, table) for i in node.items))
        if isinstance(node, v.VFunc):
            return self.func(node, table)
        if isinstance(node, v.VIf):
            test = _Compiler(self.storage, None, "if", self.access).node(node.cond, table, True)
            if node.kind == v.NUMBER:
                then, else_ = self.at(node.then, table, node.scale), self.at(node.else_, table, node.scale)
            else:
                then, else_ = self.value(node.then, table), self.value(node.else_, table)
            return case((test, then), else_=else_)
        if isinstance(node, v.VArith):
            left, right = node.left, node.right
            if node.op in "+-":
                a, c = _num(self.at(left, table, node.scale)), _num(self.at(right, table, node.scale))
                return a + c if node.op == "+" else a - c
            a, c = _num(self.value(left, table)), _num(self.value(right, table))
            if node.op == "*":
                return dialect_pick(func.metacrm_mul(a, c), a * c)
            m = node.scale + right.scale - left.scale
            return dialect_pick(
                func.metacrm_div(a, c, literal_column(str(m))),
                func.round((a * _PG_WIDEN) / func.nullif(c, literal_column("0")), literal_column(str(node.scale))),
            )
        raise AssertionError(f"not a bound value: {node!r}")  # pragma: no cover

    def func(self, node, table) -> ColumnElement:
        name = node.name
        if name == "today":
            return literal(local_today(node.extra[0]), Date())
        if name == "now":
            return literal(dt.datetime.now(dt.UTC), UTCDateTime())
        args = [self.value(a, table) for a in node.args]
        if name == "concat":
            left, right = (cast(a, Text()) if isinstance(a, Null) else a for a in args)
            return left.op("||", return_type=Text())(right)
        if name in ("lower", "upper"):
            return text_case(args[0], literal_column(name))
        if name == "trim":
            return func.trim(args[0], type_=Text())
        if name == "length":
            return func.length(args[0], type_=BigInteger())
        if name == "substring":
            start, count = node.extra
            if count is None:
                return func.substr(args[0], literal_column(str(start)), type_=Text())
            return func.substr(args[0], literal_column(str(start)), literal_column(str(count)), type_=Text())
        if name == "days_between":
            return days_between(*args)
        if name == "date_add":
            n, unit = node.extra
            return date_add(args[0], literal_column(str(n)), literal_column(unit))
        raise AssertionError(f"not a bound function: {node!r}")  # pragma: no cover


def readable(access: Access | None, entity: str, table) -> list:
    """The conditions keeping the rows of ``table`` (an alias of ``entity``'s table) that the
    acting user may read: none without ``access`` or when every record is readable."""
    if access is None:
        return []
    clause = access(entity, table)
    if clause is None:
        return []
    if not isinstance(clause, ColumnElement):  # fail closed: never a path through unfiltered rows
        raise TypeError(f"access for {entity} must give a condition or None, not {clause!r}")
    return [clause]


def number_sql(n: int, scale: int) -> ColumnElement:
    """A number given as an integer count of 10**-scale."""
    sqlite = str(n)
    pg = str(Decimal(n).scaleb(-scale)) if scale else str(n)
    if n < 0:
        sqlite, pg = f"({sqlite})", f"({pg})"
    return dialect_pick(literal_column(sqlite), literal_column(pg))


def rescale_sql(x, source: int, target: int) -> ColumnElement:
    if target > source:
        return dialect_pick(_num(x) * literal_column(str(10 ** (target - source))), x)
    if target < source:
        return dialect_pick(
            func.metacrm_div(x, literal_column("1"), literal_column(str(target - source))),
            func.round(_num(x), literal_column(str(target))),
        )
    return x


class _Compiler:
    def __init__(self, storage: Storage, params: Mapping | None, what: str, access: Access | None = None):
        self.storage = storage
        self.params = params
        self.what = what
        self.access = access

    def readable(self, entity: str, table) -> list:
        return readable(self.access, entity, table)

    def node(self, n, table, positive: bool) -> ColumnElement:
        if isinstance(n, v.CmpExpr):
            values = ValueSQL(self.storage, self.access)
            kind = n.left.kind
            if kind != v.NUMBER:  # text (ordered by code point, as Python orders), dates, booleans
                left, right = values.value(n.left, table), values.value(n.right, table)
                if kind == TEXT and n.op != "=":
                    left, right = binary_text(left), binary_text(right)
                return _cmp(n.op, left, right)
            scale = max(n.left.scale, n.right.scale)
            return _cmp(n.op, values.at(n.left, table, scale), values.at(n.right, table, scale))
        if isinstance(n, b.All):
            return and_(*(self.node(i, table, positive) for i in n.items))
        if isinstance(n, b.Any_):
            return or_(*(self.node(i, table, positive) for i in n.items))
        if isinstance(n, b.Negate):
            return not_(self.node(n.item, table, not positive))
        test = n.test(self.params, self.what)
        if n.subject.multi:
            return self.walk(n.subject, 0, table, test, "exact")
        return self.walk(n.subject, 0, table, test, "pos" if positive else "neg")

    # -- paths
    def walk(self, r: Resolved, i: int, table, test: b.Test, mode: str) -> ColumnElement:
        """The atom on ``r`` read from ``table`` after ``i`` hops. mode: ``pos`` (TRUE exactly when
        the atom is TRUE), ``neg`` (FALSE exactly when it is FALSE), ``exact`` (two-valued)."""
        if i == len(r.hops):
            return self.terminal(r, table.c[r.column], table, test)
        hop = r.hops[i]
        last = i + 1 == len(r.hops) and r.column == "id"  # the hop's own id column holds the value
        if hop.kind == "link":
            column = table.c[naming.link_column(hop.link)]
            target = self.storage.table(hop.target).alias()
            seen = self.readable(hop.target, target)  # a hidden target is no target
            if mode == "neg":
                inner = self.walk(r, i + 1, target, test, "neg")
                where = not_(column.in_(select(target.c.id).where(not_(inner), *seen)))
                if test.check(None) is not False:
                    return where
                present = [column.is_not(None)]  # the atom is FALSE on a missing target
                if seen:
                    shown = self.storage.table(hop.target).alias()
                    present.append(column.in_(select(shown.c.id).where(*self.readable(hop.target, shown))))
                return and_(*present, where)
            inner = self.walk(r, i + 1, target, test, "pos")
            where = column.in_(select(target.c.id).where(inner, *seen))
            return and_(column.is_not(None), where) if mode == "exact" else where
        rows = r.link_row and i + 1 == len(r.hops)  # a field of the join table's rows
        if hop.kind == "many":
            join = self.storage.join_table(hop.entity, hop.link).alias()
            if rows:  # the link's own values (products.link.qty): the record's own too
                inner = self.terminal(r, join.c[r.column], join, test)
            elif last:  # the linked ids are the record's own (its many-link's value)
                inner = self.terminal(r, join.c[naming.JOIN_TARGET], join, test)
            else:
                target = self.storage.table(hop.target).alias()
                inner = join.c[naming.JOIN_TARGET].in_(
                    select(target.c.id).where(
                        self.walk(r, i + 1, target, test, "pos"), *self.readable(hop.target, target)
                    )
                )
            return table.c.id.in_(select(join.c[naming.JOIN_SOURCE]).where(inner))
        # inverse: the link is declared on hop.target and points at hop.entity
        if hop.many_to_many:
            join = self.storage.join_table(hop.target, hop.link).alias()
            source = self.storage.table(hop.target).alias()
            seen = self.readable(hop.target, source)  # the join rows of hidden sources are hidden
            here = []  # a many-link to several entities: only its rows pointing at this entity
            if hop.polymorphic:
                here.append(join.c[naming.JOIN_TARGET_ENTITY] == literal(hop.entity, String()))
            if last or rows:
                column = join.c[r.column] if rows else join.c[naming.JOIN_SOURCE]
                inner = self.terminal(r, column, join, test)
                if seen:
                    inner = and_(inner, join.c[naming.JOIN_SOURCE].in_(select(source.c.id).where(*seen)))
            else:
                inner = join.c[naming.JOIN_SOURCE].in_(
                    select(source.c.id).where(self.walk(r, i + 1, source, test, "pos"), *seen)
                )
            return table.c.id.in_(select(join.c[naming.JOIN_TARGET]).where(inner, *here))
        source = self.storage.table(hop.target).alias()
        column = source.c[naming.link_column(hop.link)]
        where = [column.is_not(None)]
        if hop.polymorphic:
            where.append(source.c[naming.link_entity_column(hop.link)] == literal(hop.entity, String()))
        where.append(self.walk(r, i + 1, source, test, "pos"))
        where += self.readable(hop.target, source)
        return table.c.id.in_(select(column).where(*where))

    # -- one test on one column, exact three-valued logic
    def terminal(self, r: Resolved, column, table, test: b.Test) -> ColumnElement:
        vt = r.vtype
        if isinstance(test, b.Cmp):
            value = literal(test.value, column.type)
            return _cmp(test.op, _ordered(column, vt, test.op), _ordered(value, vt, test.op))
        if isinstance(test, b.CmpColumn):
            other = table.c[test.other.column]
            return _cmp(test.op, _ordered(column, vt, test.op), _ordered(other, vt, test.op))
        if isinstance(test, b.InList):
            if not test.values:
                return false()
            return column.in_([literal(v, column.type) for v in test.values])
        if isinstance(test, b.Range):
            low, high = literal(test.low, column.type), literal(test.high, column.type)
            return _ordered(column, vt, "<").between(_ordered(low, vt, "<"), _ordered(high, vt, "<"))
        if isinstance(test, b.Like):
            pattern = _escape_like(test.pattern)
            pattern = f"%{pattern}%" if test.op == "contains" else f"{pattern}%"
            return casefold(column).like(casefold(literal(pattern, String())), escape=_LIKE_ESCAPE)
        if isinstance(test, b.Has):
            if vt.type_name in MULTI_VALUE_TYPES or vt.type_name == "users":  # a lookup of the value index
                from ..storage.valueindex import holds_value

                f = self.storage.model.entities[r.entity].fields[r.column]
                return holds_value(table, r.entity, f, test.option)
            return json_has(column, literal(test.option, String()))
        if isinstance(test, b.NotNull):
            if vt.kind in (JSON, MULTICHOICE):
                return not_(json_null(column))
            return column.is_not(None)
        raise AssertionError(f"unknown test {test!r}")  # pragma: no cover


def _cmp(op: str, left, right) -> ColumnElement:
    if op == "=":
        return left == right
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    return left >= right


def compile_condition(
    storage: Storage, entity: str, expr, params: Mapping | None, what: str, access: Access | None = None
) -> ColumnElement:
    from .parser import parse

    tree = parse(expr, what=what) if isinstance(expr, str) else expr
    if params is not None and not isinstance(params, Mapping):
        from ..errors import ExpressionError

        raise ExpressionError(f"{what}: params must be a mapping of name to value")
    bound = b.bind(storage.model, entity, tree, what)
    return _Compiler(storage, params, what, access).node(bound, storage.table(entity), True)


__all__ = ["Access", "ValueSQL", "compile_condition", "number_sql", "readable", "rescale_sql"]
