"""Values: arithmetic over names, for comparisons (``amount > qty * price``) and derived fields.

A value expression is built from names (fields, system columns, paths through single links),
written numbers, text, ``true``/``false``/``null``, ``+ - * /``, unary minus, parentheses,
``coalesce(a, b, ...)`` and ``round(x, n)``.

Numbers are exact, and Python and SQL agree to the last digit. Every numeric value has a
*scale* (its decimal places): integer fields 0, money 2, decimal and percent 6, a written
number as many as it is written with. ``a + b`` and ``a - b`` are exact with the larger scale;
``a * b`` is exact with the sum of the scales; ``a / b`` is rounded half away from zero to
``max(6, scale of a, scale of b)`` places, and is null when ``b`` is 0; ``round(x, n)`` rounds
half away from zero to ``n`` places. Anything with a null is null; ``coalesce`` takes the first
value that is not. Python computes on integers scaled by the scale; SQLite does the same on
its stored integers (money is stored in cents there), with ``metacrm_div`` (a Python function
registered on every connection) for division and rounding; PostgreSQL computes on NUMERIC,
which is exact, rounding with ``round``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext

from ..errors import ExpressionError
from ..model.metamodel import Model
from . import ast
from .names import BOOLEAN, DATE, DATETIME, DECIMAL, INTEGER, TEXT, Resolved, resolve

NUMBER = "number"
NULL = "null"
MAX_SCALE = 18
DIV_SCALE = 6
FUNCTIONS = ("coalesce", "round")
_KIND_WORDS = {NUMBER: "a number", TEXT: "text", DATE: "a date", DATETIME: "a date and time", BOOLEAN: "true or false"}


# -- the bound tree -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VCol:
    """A column of the record, or one reached through single links."""

    resolved: Resolved
    kind: str
    scale: int = 0


@dataclass(frozen=True, slots=True)
class VLit:
    value: object  # an int (scaled by ``scale``) for numbers; the value itself otherwise
    kind: str
    scale: int = 0


@dataclass(frozen=True, slots=True)
class VArith:
    op: str
    left: object
    right: object
    kind: str = NUMBER
    scale: int = 0


@dataclass(frozen=True, slots=True)
class VNeg:
    item: object
    kind: str = NUMBER
    scale: int = 0


@dataclass(frozen=True, slots=True)
class VCoalesce:
    items: tuple
    kind: str
    scale: int = 0


@dataclass(frozen=True, slots=True)
class VRound:
    item: object
    kind: str = NUMBER
    scale: int = 0


@dataclass(frozen=True, slots=True)
class CmpExpr:
    """A comparison of two value expressions (bound condition atom), three-valued."""

    op: str  # =, <, <=, >, >=
    left: object
    right: object


VALUE_NODES = (ast.Arith, ast.Neg, ast.Call)


def columns(v) -> list[Resolved]:
    """Every name a bound value reads."""
    out: list[Resolved] = []
    stack = [v]
    while stack:
        node = stack.pop()
        if isinstance(node, VCol):
            out.append(node.resolved)
        elif isinstance(node, VArith):
            stack += [node.left, node.right]
        elif isinstance(node, VNeg | VRound):
            stack.append(node.item)
        elif isinstance(node, VCoalesce):
            stack.extend(node.items)
    return out


# -- binding ------------------------------------------------------------------------------------
def column_kind(r: Resolved) -> tuple[str, int] | None:
    """(kind, scale) of what a resolved name holds, or None when it cannot be a value."""
    vt = r.vtype
    if vt.kind == INTEGER and vt.type_name != "link":
        return NUMBER, 0
    if vt.kind == DECIMAL:
        return NUMBER, vt.scale or 0
    if vt.kind in (TEXT, DATE, DATETIME, BOOLEAN):
        return vt.kind, 0
    return None


def literal_scale(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def scaled(value, scale: int) -> int:
    """A number as an integer count of 10**-scale, rounded half away from zero."""
    d = value if isinstance(value, Decimal) else Decimal(value)
    with localcontext() as ctx:
        ctx.prec = 200
        q = d.scaleb(scale)
        return int(q.to_integral_value(rounding=ROUND_HALF_UP))


class ValueBinder:
    def __init__(self, model: Model, entity: str, what: str, *, many_hint: str | None = None):
        self.model = model
        self.entity = entity
        self.what = what
        self.many_hint = many_hint

    def error(self, message: str, pos) -> ExpressionError:
        at = f" (column {pos})" if pos else ""
        return ExpressionError(f"{self.what}: {message}{at}", pos or None)

    def bind(self, node):
        if isinstance(node, ast.Name):
            r = resolve(self.model, self.entity, node.path, node.pos)
            if r.multi:
                hint = self.many_hint or (
                    "a formula reads the record's own fields and its single links; "
                    "aggregate many values with a roll-up field (rollup: sum(...))"
                )
                raise self.error(f"'{node.path}' goes through a many or inverse link; {hint}", node.pos)
            kind = column_kind(r)
            if kind is None:
                raise self.error(f"'{node.path}' is a {r.vtype.type_name} and cannot be used as a value here", node.pos)
            return VCol(r, kind[0], kind[1])
        if isinstance(node, ast.Literal):
            v = node.value
            if v is None:
                return VLit(None, NULL)
            if isinstance(v, bool):
                return VLit(v, BOOLEAN)
            if isinstance(v, int):
                return VLit(v, NUMBER, 0)
            if isinstance(v, Decimal):
                scale = literal_scale(v)
                self.check_scale(scale, node.pos)
                return VLit(scaled(v, scale), NUMBER, scale)
            return VLit(v, TEXT)
        if isinstance(node, ast.Param):
            raise self.error(
                f"parameter ':{node.name}' cannot be used in arithmetic; compare a name with it directly", node.pos
            )
        if isinstance(node, ast.Neg):
            item = self.number(self.bind(node.item), "-", node.pos)
            return VNeg(item, NUMBER, item.scale)
        if isinstance(node, ast.Arith):
            left = self.number(self.bind(node.left), node.op, node.pos)
            right = self.number(self.bind(node.right), node.op, node.pos)
            if node.op in "+-":
                scale = max(left.scale, right.scale)
            elif node.op == "*":
                scale = left.scale + right.scale
            else:
                scale = max(DIV_SCALE, left.scale, right.scale)
            self.check_scale(scale, node.pos)
            return VArith(node.op, left, right, NUMBER, scale)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.error(f"'{node}' is not a value", getattr(node, "pos", None))

    def check_scale(self, scale: int, pos) -> None:
        if scale > MAX_SCALE:
            raise self.error(f"the result would have more than {MAX_SCALE} decimal places", pos)

    def number(self, v, op: str, pos):
        if v.kind in (NUMBER, NULL):
            return v if v.kind == NUMBER else VLit(None, NUMBER, 0)
        raise self.error(f"'{op}' needs numbers, not {_describe(v)}", pos)

    def call(self, node: ast.Call):
        name = node.name
        if name == "coalesce":
            if not node.args:
                raise self.error("coalesce needs at least one value", node.pos)
            items = [self.bind(a) for a in node.args]
            kinds = {i.kind for i in items} - {NULL}
            if len(kinds) > 1:
                raise self.error(
                    f"coalesce mixes {' and '.join(sorted(_KIND_WORDS.get(k, k) for k in kinds))}; "
                    "its values must be of one kind",
                    node.pos,
                )
            kind = kinds.pop() if kinds else NULL
            scale = max((i.scale for i in items if i.kind == NUMBER), default=0)
            if kind == NUMBER:
                items = [i if i.kind == NUMBER else VLit(None, NUMBER, 0) for i in items]
            return VCoalesce(tuple(items), kind, scale)
        if name == "round":
            if len(node.args) not in (1, 2):
                raise self.error("round takes a number and, optionally, the decimal places: round(x, 2)", node.pos)
            item = self.number(self.bind(node.args[0]), "round", node.pos)
            places = 0
            if len(node.args) == 2:
                arg = node.args[1]
                if not (isinstance(arg, ast.Literal) and type(arg.value) is int and 0 <= arg.value <= MAX_SCALE):
                    raise self.error(f"round: the decimal places must be a whole number 0 to {MAX_SCALE}", node.pos)
                places = arg.value
            return VRound(item, NUMBER, places)
        hint = ""
        if name in ("sum", "count", "min", "max", "avg"):
            hint = f" ({name}(...) aggregates many records: declare it as a roll-up field, rollup: {node})"
        raise self.error(f"unknown function '{name}'; functions: {', '.join(FUNCTIONS)}{hint}", node.pos)


def _describe(v) -> str:
    if isinstance(v, VCol):
        return f"{v.resolved.vtype.label} ({v.resolved.vtype.type_name})"
    return _KIND_WORDS.get(v.kind, v.kind)


def bind_value(model: Model, entity: str, node, what: str, **kw):
    return ValueBinder(model, entity, what, **kw).bind(node)


def bind_compare(model: Model, entity: str, e: ast.Compare, what: str) -> CmpExpr:
    """``a op b`` where a side is arithmetic (or two numbers stored differently)."""
    binder = ValueBinder(model, entity, what)
    left, right = binder.bind(e.left), binder.bind(e.right)
    pos = getattr(e.left, "pos", None)
    kinds = {left.kind, right.kind} - {NULL}
    if len(kinds) > 1:
        raise binder.error(f"'{e}' compares {_describe(left)} with {_describe(right)}", pos)
    kind = kinds.pop() if kinds else NUMBER
    if kind == BOOLEAN and e.op not in ("=", "!="):
        raise binder.error(f"'{e.op}' does not apply to true or false values", pos)
    if kind != NUMBER:
        raise binder.error(f"'{e}': arithmetic applies to numbers only", pos)
    return CmpExpr(e.op, binder.number(left, e.op, pos), binder.number(right, e.op, pos))


# -- Python --------------------------------------------------------------------------------------
def round_div(n: int, d: int) -> int:
    """n / d rounded half away from zero (d != 0)."""
    q, r = divmod(abs(n), abs(d))
    if 2 * r >= abs(d):
        q += 1
    return -q if (n < 0) != (d < 0) else q


def rescale(n: int, source: int, target: int) -> int:
    if target >= source:
        return n * 10 ** (target - source)
    return round_div(n, 10 ** (source - target))


def python_value(v, read: Callable[[Resolved], object]) -> Callable[[Mapping], object]:
    """A function of the record's values giving the value: numbers as scaled integers (at
    ``v.scale``), other kinds as themselves, None for null. ``read(resolved)`` builds the
    reader of one name (it registers the path)."""
    if isinstance(v, VLit):
        value = v.value
        return lambda values: value
    if isinstance(v, VCol):
        get = read(v.resolved)
        if v.kind != NUMBER:
            return get
        scale = v.scale

        def column(values):
            x = get(values)
            return None if x is None else scaled(x, scale)

        return column
    if isinstance(v, VNeg):
        item = python_value(v.item, read)

        def neg(values):
            x = item(values)
            return None if x is None else -x

        return neg
    if isinstance(v, VRound):
        item, source, target = python_value(v.item, read), v.item.scale, v.scale

        def round_(values):
            x = item(values)
            return None if x is None else rescale(x, source, target)

        return round_
    if isinstance(v, VCoalesce):
        items = [(python_value(i, read), i.scale) for i in v.items]
        numeric, target = v.kind == NUMBER, v.scale

        def coalesce(values):
            for fn, scale in items:
                x = fn(values)
                if x is not None:
                    return rescale(x, scale, target) if numeric else x
            return None

        return coalesce
    if isinstance(v, VArith):
        left, right = python_value(v.left, read), python_value(v.right, read)
        sl, sr, s, op = v.left.scale, v.right.scale, v.scale, v.op

        def arith(values):
            a, b = left(values), right(values)
            if a is None or b is None:
                return None
            if op == "+":
                return rescale(a, sl, s) + rescale(b, sr, s)
            if op == "-":
                return rescale(a, sl, s) - rescale(b, sr, s)
            if op == "*":
                return a * b
            if b == 0:
                return None
            return round_div(a * 10 ** (s + sr - sl), b)

        return arith
    raise AssertionError(f"not a bound value: {v!r}")  # pragma: no cover


def to_python(x, kind: str, scale: int):
    """A computed value as the field's Python value (a Decimal for scaled numbers)."""
    if x is None or kind != NUMBER:
        return x
    return Decimal(x).scaleb(-scale) if scale else x


def compare3(op: str, a, sa: int, b, sb: int):
    if a is None or b is None:
        return None
    s = max(sa, sb)
    a, b = rescale(a, sa, s), rescale(b, sb, s)
    return {"=": a == b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


__all__ = [
    "CmpExpr",
    "DIV_SCALE",
    "FUNCTIONS",
    "NUMBER",
    "VALUE_NODES",
    "VArith",
    "VCoalesce",
    "VCol",
    "VLit",
    "VNeg",
    "VRound",
    "bind_compare",
    "bind_value",
    "columns",
    "compare3",
    "python_value",
    "rescale",
    "round_div",
    "scaled",
    "to_python",
]
