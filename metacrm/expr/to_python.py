"""Bound tree -> a Python predicate over a record's values, agreeing with the SQL translation.

The predicate is built once into closures. ``values`` maps each path the expression reads
(``Predicate.paths``: ``"amount"``, ``"client.city"``, ``"client"``) to its value; a path through
a many or inverse link (``Predicate.lists``) maps to the list of values reached (flattened over
every hop; empty when nothing is linked). A single-link path whose link is empty has the value
None. Values are normalised to the column's type (ISO text for dates, naive datetimes as UTC,
numbers as Decimal), so raw input works as well as values read from the database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from decimal import Decimal

from ..errors import ExpressionError
from . import bind as b
from . import values as vals
from .names import DATE, DATETIME, DECIMAL, INTEGER, JSON, MULTICHOICE, REF, TEXT, Resolved, ValueType

_EXACT = {
    TEXT: (str,),
    INTEGER: (int,),
    DECIMAL: (Decimal,),
    DATE: (dt.date,),
}


def normalize(vt: ValueType, value, path: str):
    """A record's value as the column's Python type (None stays None)."""
    if value is None:
        return None
    kind = vt.kind
    if kind in (MULTICHOICE, JSON):
        if vt.type_name == "emails" and isinstance(value, list):  # compared in lower case, as SQL does
            return [v.lower() if isinstance(v, str) else v for v in value]
        return value
    if kind == REF:
        return value
    exact = _EXACT.get(kind)
    if exact is not None and type(value) in exact:
        return value
    if kind == DATETIME and isinstance(value, dt.datetime) and value.tzinfo is dt.UTC:
        return value
    try:
        if kind == DECIMAL:
            return ValueType(DECIMAL, vt.label, vt.type_name)._number(value, None)
        return vt.coerce(value)
    except ExpressionError as exc:
        raise ExpressionError(f"value of '{path}': {exc}") from None


class Predicate:
    """A compiled expression: ``predicate(values, params=None) -> bool``.

    ``paths``: every path it reads; ``lists``: the paths whose value is a list (through many or
    inverse links); ``params``: the parameters it needs. ``truth(...)`` gives the three-valued
    result (None = unknown, which does not match, as in SQL).
    """

    __slots__ = ("entity", "expr", "lists", "params", "paths", "_fn", "_what")

    def __init__(self, entity: str, expr, fn, paths, lists, params, what: str):
        self.entity = entity
        self.expr = expr
        self.paths: frozenset[str] = frozenset(paths)
        self.lists: frozenset[str] = frozenset(lists)
        self.params: frozenset[str] = frozenset(params)
        self._fn = fn
        self._what = what

    def truth(self, values: Mapping[str, object], params: Mapping | None = None) -> bool | None:
        if not isinstance(values, Mapping):
            raise ExpressionError(f"{self._what}: values must be a mapping of path to value")
        try:
            return self._fn(values, params)
        except ExpressionError:
            raise
        except (TypeError, ValueError, ArithmeticError) as exc:  # pragma: no cover - normalize prevents these
            raise ExpressionError(f"{self._what}: cannot evaluate '{self.expr}': {exc}") from exc

    def __call__(self, values: Mapping[str, object], params: Mapping | None = None) -> bool:
        return self.truth(values, params) is True

    def __repr__(self) -> str:
        return f"Predicate({self.entity}: {self.expr})"


class _Compiler:
    def __init__(self, what: str):
        self.what = what
        self.paths: set[str] = set()
        self.lists: set[str] = set()
        self.params: set[str] = set()

    def node(self, n) -> Callable:
        if isinstance(n, vals.CmpExpr):
            left, right = vals.python_value(n.left, self.reader), vals.python_value(n.right, self.reader)
            op, sl, sr = n.op, n.left.scale, n.right.scale

            def compare(values, params):
                return vals.compare3(op, left(values), sl, right(values), sr)

            return compare
        if isinstance(n, b.All):
            fns = [self.node(i) for i in n.items]

            def all_(values, params):
                result = True
                for fn in fns:
                    r = fn(values, params)
                    if r is False:
                        return False
                    if r is None:
                        result = None
                return result

            return all_
        if isinstance(n, b.Any_):
            fns = [self.node(i) for i in n.items]

            def any_(values, params):
                result = False
                for fn in fns:
                    r = fn(values, params)
                    if r is True:
                        return True
                    if r is None:
                        result = None
                return result

            return any_
        if isinstance(n, b.Negate):
            fn = self.node(n.item)

            def negate(values, params):
                r = fn(values, params)
                return None if r is None else not r

            return negate
        return self.atom(n)

    def reader(self, r: Resolved) -> Callable:
        self.paths.add(r.path)
        path, vt, what = r.path, r.vtype, self.what
        if r.multi:
            self.lists.add(path)

            def read_list(values):
                try:
                    got = values[path]
                except KeyError:
                    raise ExpressionError(f"{what}: no value given for '{path}'") from None
                if got is None:
                    return []
                if not isinstance(got, list | tuple | set | frozenset):
                    raise ExpressionError(
                        f"{what}: '{path}' goes through a many or inverse link; give a list of values"
                    )
                return [normalize(vt, v, path) for v in got]

            return read_list

        def read(values):
            try:
                got = values[path]
            except KeyError:
                raise ExpressionError(f"{what}: no value given for '{path}'") from None
            return normalize(vt, got, path)

        return read

    def atom(self, a: b.Atom) -> Callable:
        what = self.what
        for v in a.values:
            if v.param is not None:
                self.params.add(v.param)
            for item in getattr(v, "items", ()):
                if item.param is not None:
                    self.params.add(item.param)
        read = self.reader(a.subject)
        if a.kind == "cmp_column":
            read_other = self.reader(a.other)
            test = a.test(None, what)

            def columns(values, params):
                return test.check2(read(values), read_other(values))

            return columns
        fixed = None if a.has_params else a.test(None, what)
        multi = a.subject.multi

        def atom(values, params):
            test = a.test(params, what) if fixed is None else fixed
            x = read(values)
            if multi:
                return any(test.check(v) is True for v in x)
            return test.check(x)

        return atom


def compile_predicate(model, entity: str, expr, what: str) -> Predicate:
    from .parser import parse

    tree = parse(expr, what=what) if isinstance(expr, str) else expr
    bound = b.bind(model, entity, tree, what)
    c = _Compiler(what)
    fn = c.node(bound)
    return Predicate(entity, tree, fn, c.paths, c.lists, c.params, what)


__all__ = ["Predicate", "compile_predicate", "normalize"]
