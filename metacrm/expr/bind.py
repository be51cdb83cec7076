"""Expression tree + model -> a bound tree both compilers share.

Binding resolves every name, checks each operator against the type of what it reads, coerces
written values to the column's Python type, and rewrites the negated operators (``!=``,
``not in``, ``not between``, ``is null``) as ``not`` of their positive form, so that every atom
is positive. That is the whole semantics of paths through many and inverse links: a positive
atom on such a path is true when *some* linked value satisfies it (``products.name = 'Сервер'``),
and a negated one is its negation (``products.name != 'Сервер'``: no linked product is named so;
``products is null``: no linked product).

Truth values follow SQL: ``None`` is unknown; ``not`` unknown is unknown; a record matches only
when the whole expression is true. ``Test.check(value)`` is the one definition of each operator
on one value; to_python evaluates it, to_sql translates it and uses it to learn what a test says
about a missing value (a single link that is null).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ExpressionError
from ..model.metamodel import Model
from ..text import fold as _fold
from . import ast
from .names import BOOLEAN, DECIMAL, INTEGER, JSON, MULTICHOICE, ORDERED, REF, TEXT, Resolved, ValueType, resolve
from .values import NUMBER, VALUE_NODES, bind_compare, column_kind

FLIP = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
OPS = {"=": operator.eq, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_EQUALITY_KINDS = frozenset({TEXT, INTEGER, DECIMAL, BOOLEAN}) | ORDERED


def fold(text: str) -> str:
    """Case folding for contains/startswith, ``ё`` read as ``е`` (the same function SQLite
    runs as metacrm_casefold; PostgreSQL's SQL does the same)."""
    return _fold(text)


# -- values written in the expression ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Value:
    """A literal (already coerced) or a parameter (coerced when its value is given)."""

    literal: object = None
    param: str | None = None
    pos: int | None = None
    options: bool = False  # check it against the column's options (= and in)

    def get(self, vt: ValueType, params: Mapping | None, what: str):
        if self.param is None:
            return self.literal
        value = param_value(self.param, params, what, self.pos)
        if isinstance(value, list | tuple | set | frozenset):
            raise ExpressionError(f"{what}: parameter ':{self.param}' holds a list; use 'in :{self.param}'", self.pos)
        return _coerce(vt, value, self.pos, self.options)


@dataclass(frozen=True, slots=True)
class Values:
    """The items of ``in``: written values, or one parameter holding a list."""

    items: tuple[Value, ...] = ()
    param: str | None = None
    pos: int | None = None

    def get(self, vt: ValueType, params: Mapping | None, what: str) -> tuple:
        if self.param is None:
            return tuple(v.get(vt, params, what) for v in self.items)
        value = param_value(self.param, params, what, self.pos)
        if not isinstance(value, list | tuple | set | frozenset):
            raise ExpressionError(f"{what}: parameter ':{self.param}' must be a list for 'in'", self.pos)
        return tuple(_coerce(vt, v, self.pos, True) for v in value)


def param_value(name: str, params: Mapping | None, what: str, pos: int | None):
    if params is not None and not isinstance(params, Mapping):
        raise ExpressionError(f"{what}: parameters must be a mapping of name to value")
    if not params or name not in params:
        known = ", ".join(f":{p}" for p in params) if params else "none given"
        raise ExpressionError(f"{what}: unknown parameter ':{name}' at column {pos}; parameters: {known}", pos)
    return params[name]


def _coerce(vt: ValueType, value, pos, options: bool):
    value = vt.coerce(value, pos)
    if options:
        vt.check_option(value, pos)
    return value


# -- tests: one positive operator applied to one value -----------------------------------------
class Test:
    """``check(x)`` -> True, False or None (unknown) for one value ``x`` of the column."""

    def check(self, x):  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Cmp(Test):
    op: str  # =, <, <=, >, >=
    value: object

    def check(self, x):
        if x is None or self.value is None:
            return None
        return OPS[self.op](x, self.value)


@dataclass(frozen=True, slots=True)
class CmpColumn(Test):
    """``amount > price``: two columns of the same record (``other`` is its value in Python)."""

    op: str
    other: Resolved

    def check2(self, x, y):
        if x is None or y is None:
            return None
        return OPS[self.op](x, y)


@dataclass(frozen=True, slots=True)
class InList(Test):
    values: tuple

    def check(self, x):
        if not self.values:
            return False
        if x is None:
            return None
        unknown = False
        for v in self.values:
            if v is None:
                unknown = True
            elif x == v:
                return True
        return None if unknown else False


@dataclass(frozen=True, slots=True)
class Range(Test):
    low: object
    high: object

    def check(self, x):
        return and3(
            None if x is None or self.low is None else x >= self.low,
            None if x is None or self.high is None else x <= self.high,
        )


@dataclass(frozen=True, slots=True)
class Like(Test):
    op: str  # contains, startswith
    pattern: str  # as written (SQL folds it with the same function as the column)
    folded: str

    def check(self, x):
        if x is None:
            return None
        text = fold(x)
        return self.folded in text if self.op == "contains" else text.startswith(self.folded)


@dataclass(frozen=True, slots=True)
class NotNull(Test):
    def check(self, x):
        return x is not None


@dataclass(frozen=True, slots=True)
class Has(Test):
    """A multichoice list holds the option (never unknown: a null list holds nothing)."""

    option: str

    def check(self, x):
        return isinstance(x, list) and self.option in x


def and3(*values):
    result = True
    for v in values:
        if v is False:
            return False
        if v is None:
            result = None
    return result


def or3(*values):
    result = False
    for v in values:
        if v is True:
            return True
        if v is None:
            result = None
    return result


# -- the bound tree --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Atom:
    subject: Resolved
    kind: str  # cmp, cmp_column, in, range, like, not_null, has
    op: str = ""
    values: tuple = ()  # Value / Values operands, by kind
    other: Resolved | None = None
    pos: int | None = None

    @property
    def has_params(self) -> bool:
        return any(v.param is not None or isinstance(v, Values) and any(i.param for i in v.items) for v in self.values)

    def test(self, params: Mapping | None, what: str) -> Test:
        vt = self.subject.vtype
        if self.kind == "cmp":
            return Cmp(self.op, self.values[0].get(vt, params, what))
        if self.kind == "cmp_column":
            return CmpColumn(self.op, self.other)
        if self.kind == "in":
            return InList(self.values[0].get(vt, params, what))
        if self.kind == "range":
            return Range(self.values[0].get(vt, params, what), self.values[1].get(vt, params, what))
        if self.kind == "like":
            pattern = self.values[0].get(vt, params, what)
            if pattern is None:
                raise vt.error(f"'{self.op}' needs text, not null", self.values[0].pos)
            return Like(self.op, pattern, fold(pattern))
        if self.kind == "has":
            option = self.values[0].get(vt, params, what)
            if option is None:
                raise vt.error("'contains' needs an option, not null", self.values[0].pos)
            return Has(option)
        return NotNull()


@dataclass(frozen=True, slots=True)
class All:
    items: tuple


@dataclass(frozen=True, slots=True)
class Any_:
    items: tuple


@dataclass(frozen=True, slots=True)
class Negate:
    item: object


Bound = Atom | All | Any_ | Negate


def bind(model: Model, entity: str, expr: ast.Expr, what: str) -> Bound:
    if entity not in model.entities:
        from ..model.suggest import did_you_mean

        hint = did_you_mean(entity, model.entities)
        raise ExpressionError(
            f"{what}: unknown entity '{entity}'; entities: {', '.join(model.entities)}" + (f" ({hint})" if hint else "")
        )
    return _Binder(model, entity, what).node(expr)


class _Binder:
    def __init__(self, model: Model, entity: str, what: str):
        self.model = model
        self.entity = entity
        self.what = what

    def node(self, e: ast.Expr) -> Bound:
        if isinstance(e, ast.And):
            return All(tuple(self.node(i) for i in e.items))
        if isinstance(e, ast.Or):
            return Any_(tuple(self.node(i) for i in e.items))
        if isinstance(e, ast.Not):
            return Negate(self.node(e.item))
        if isinstance(e, ast.Compare):
            return self.compare(e)
        if isinstance(e, ast.In):
            return self.in_(e)
        if isinstance(e, ast.Between):
            return self.between(e)
        if isinstance(e, ast.Match):
            return self.match(e)
        if isinstance(e, ast.IsNull):
            subject = self.subject(e.subject, "is null")
            atom = Atom(subject, "not_null", pos=e.subject.pos)
            return atom if e.negated else Negate(atom)
        raise ExpressionError(f"{self.what}: not an expression: {e!r}")

    # -- operands
    def subject(self, operand, op: str) -> Resolved:
        if not isinstance(operand, ast.Name):
            raise ExpressionError(
                f"{self.what}: '{op}' needs a name on its left, not {operand} (column {operand.pos})", operand.pos
            )
        return resolve(self.model, self.entity, operand.path, operand.pos)

    def value(self, operand, vt: ValueType, op: str, options: bool = False) -> Value:
        if isinstance(operand, ast.Name):
            raise ExpressionError(
                f"{vt.label}: '{op}' takes values, not the name '{operand.path}' (column {operand.pos})", operand.pos
            )
        if isinstance(operand, ast.Param):
            return Value(param=operand.name, pos=operand.pos, options=options)
        return Value(literal=_coerce(vt, operand.value, operand.pos, options), pos=operand.pos)

    def require(self, subject: Resolved, op: str, kinds, pos: int | None) -> None:
        vt = subject.vtype
        if vt.kind in kinds:
            return
        at = f" (column {pos})" if pos else ""
        if vt.kind == REF:
            raise vt.error(f"links to several entities; only 'is null' and 'is not null' apply, not '{op}'{at}", pos)
        what = {TEXT: "text", MULTICHOICE: "multichoice", JSON: "json"}.get(vt.kind, vt.type_name)
        hint = " (use 'contains' for multichoice)" if vt.kind == MULTICHOICE else ""
        if vt.type_name in ("emails", "phones", "tags"):
            what, hint = vt.type_name, f" (use '{vt.label.split('.')[-1]} contains VALUE': holds that value)"
        raise vt.error(f"'{op}' does not apply to {what} values{at}{hint}", pos)

    def numbers(self, left, right) -> bool:
        """Two single-valued numeric names stored differently (money and integer) or read
        through links: compared as values."""
        if not (isinstance(left, ast.Name) and isinstance(right, ast.Name)):
            return False
        a = resolve(self.model, self.entity, left.path, left.pos)
        c = resolve(self.model, self.entity, right.path, right.pos)
        if a.multi or c.multi:
            return False
        ka, kc = column_kind(a), column_kind(c)
        if ka is None or kc is None or ka[0] != NUMBER or kc[0] != NUMBER:
            return False
        return a.vtype.storage != c.vtype.storage or bool(a.hops or c.hops)

    # -- atoms
    def compare(self, e: ast.Compare) -> Bound:
        left, right, op = e.left, e.right, e.op
        if isinstance(left, VALUE_NODES) or isinstance(right, VALUE_NODES) or self.numbers(left, right):
            positive = "=" if op == "!=" else op
            atom = bind_compare(self.model, self.entity, ast.Compare(positive, left, right), self.what)
            return Negate(atom) if op == "!=" else atom
        if not isinstance(left, ast.Name) and isinstance(right, ast.Name):
            left, right, op = right, left, FLIP[op]
        if not isinstance(left, ast.Name):
            raise ExpressionError(
                f"{self.what}: '{e}' compares two values; one side must be a name (column {left.pos})", left.pos
            )
        subject = resolve(self.model, self.entity, left.path, left.pos)
        positive = "=" if op == "!=" else op
        self.require(subject, op, ORDERED if positive != "=" else _EQUALITY_KINDS, left.pos)
        if isinstance(right, ast.Name):
            other = resolve(self.model, self.entity, right.path, right.pos)
            if subject.hops or other.hops:
                raise ExpressionError(
                    f"{self.entity}: '{e}': a path through links can be compared with values only, not with "
                    f"another name (column {left.pos})",
                    left.pos,
                )
            if other.vtype.storage != subject.vtype.storage:
                raise ExpressionError(
                    f"{self.entity}: '{e}': {subject.vtype.label} ({subject.vtype.type_name}) and "
                    f"{other.vtype.label} ({other.vtype.type_name}) cannot be compared (column {left.pos})",
                    left.pos,
                )
            atom = Atom(subject, "cmp_column", positive, other=other, pos=left.pos)
        else:
            atom = Atom(
                subject, "cmp", positive, (self.value(right, subject.vtype, op, options=positive == "="),), pos=left.pos
            )
        return Negate(atom) if op == "!=" else atom

    def in_(self, e: ast.In) -> Bound:
        op = "not in" if e.negated else "in"
        subject = self.subject(e.subject, op)
        self.require(subject, op, _EQUALITY_KINDS, e.subject.pos)
        if isinstance(e.items, ast.Param):
            values = Values(param=e.items.name, pos=e.items.pos)
        else:
            values = Values(tuple(self.value(i, subject.vtype, op, options=True) for i in e.items))
        atom = Atom(subject, "in", values=(values,), pos=e.subject.pos)
        return Negate(atom) if e.negated else atom

    def between(self, e: ast.Between) -> Bound:
        op = "not between" if e.negated else "between"
        subject = self.subject(e.subject, op)
        self.require(subject, op, ORDERED, e.subject.pos)
        values = (self.value(e.low, subject.vtype, op), self.value(e.high, subject.vtype, op))
        atom = Atom(subject, "range", values=values, pos=e.subject.pos)
        return Negate(atom) if e.negated else atom

    def match(self, e: ast.Match) -> Bound:
        subject = self.subject(e.subject, e.op)
        vt = subject.vtype
        if vt.kind == MULTICHOICE and e.op == "contains":
            return Atom(subject, "has", "contains", (self.value(e.pattern, vt, e.op, options=True),), pos=e.subject.pos)
        self.require(subject, e.op, (TEXT,), e.subject.pos)
        if isinstance(e.pattern, ast.Literal) and e.pattern.value is None:
            raise vt.error(f"'{e.op}' needs text, not null", e.pattern.pos)
        return Atom(subject, "like", e.op, (self.value(e.pattern, vt, e.op),), pos=e.subject.pos)


__all__ = ["All", "Any_", "Atom", "Bound", "Negate", "Test", "and3", "bind", "fold", "or3"]
