"""Values: arithmetic over names, for comparisons (``amount > qty * price``) and derived fields.

A value expression is built from names (fields, system columns, paths through single links),
written numbers, text, ``true``/``false``/``null``, ``+ - * /``, unary minus, parentheses,
``coalesce(a, b, ...)`` and ``round(x, n)``; text joined with ``||``, ``lower``, ``upper``,
``trim``, ``length``, ``substring(s, start[, len])``; ``today()``, ``now()``,
``days_between(a, b)``, ``date_add(d, '30d')``; ``if(condition, a, b)``. A function of a null
is null (``if`` picks ``b`` when the condition is null); the text and date functions are
defined once in :mod:`metacrm.expr.textdate`, which SQLite runs too.

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
from .names import BOOLEAN, DATE, DATETIME, DECIMAL, INTEGER, TEXT, Resolved, resolve, resolve_link_field

NUMBER = "number"
NULL = "null"
MAX_SCALE = 18
DIV_SCALE = 6
FUNCTIONS = (
    "coalesce",
    "round",
    "if",
    "lower",
    "upper",
    "trim",
    "length",
    "substring",
    "today",
    "now",
    "days_between",
    "date_add",
)
CLOCK_FUNCTIONS = ("today", "now")
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
class VFunc:
    """A text or date function (``concat`` is ``a || b``): ``args`` are bound values, ``extra``
    the written parameters (substring's start and length, date_add's amount and unit)."""

    name: str
    args: tuple
    kind: str
    scale: int = 0
    extra: tuple = ()


@dataclass(frozen=True, slots=True)
class VIf:
    """``if(condition, a, b)``: ``a`` when the condition is true, else (false or unknown) ``b``."""

    cond: object  # a bound condition (bind.py)
    then: object
    else_: object
    kind: str
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
        elif isinstance(node, VFunc):
            stack.extend(node.args)
        elif isinstance(node, VIf):
            stack += [node.then, node.else_]
            out.extend(condition_columns(node.cond))
    return out


def condition_columns(cond) -> list[Resolved]:
    """Every name a bound condition reads."""
    from . import bind as b

    out: list[Resolved] = []
    stack = [cond]
    while stack:
        node = stack.pop()
        if isinstance(node, b.All | b.Any_):
            stack.extend(node.items)
        elif isinstance(node, b.Negate):
            stack.append(node.item)
        elif isinstance(node, CmpExpr):
            out += columns(node.left) + columns(node.right)
        elif isinstance(node, b.Atom):
            out.append(node.subject)
            if node.other is not None:
                out.append(node.other)
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
    def __init__(self, model: Model, entity: str, what: str, *, many_hint: str | None = None, link=None):
        self.model = model
        self.entity = entity
        self.what = what
        self.many_hint = many_hint
        self.link = link  # a roll-up over a many-link: ``link.FIELD`` names the link's own fields

    def error(self, message: str, pos) -> ExpressionError:
        at = f" (column {pos})" if pos else ""
        return ExpressionError(f"{self.what}: {message}{at}", pos or None)

    def bind(self, node):
        if isinstance(node, ast.Name):
            if (
                self.link is not None
                and node.path.split(".")[0] == "link"
                and "link" not in self.model.entities[self.entity].fields
            ):
                r = resolve_link_field(self.model, self.link, node.path.split(".")[1:], node.path, (), node.pos)
            else:
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
        if isinstance(node, ast.Arith) and node.op == "||":
            left = self.text(self.bind(node.left), "||", node.pos)
            right = self.text(self.bind(node.right), "||", node.pos)
            return VFunc("concat", (left, right), TEXT)
        if isinstance(node, ast.Arith):
            left, right = self.bind(node.left), self.bind(node.right)
            for side in (left, right):
                if node.op == "+" and side.kind == TEXT:
                    raise self.error(f"'+' needs numbers, not {_describe(side)}; join text with ||", node.pos)
            left, right = self.number(left, node.op, node.pos), self.number(right, node.op, node.pos)
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

    def text(self, v, op: str, pos):
        if v.kind in (TEXT, NULL):
            return v if v.kind == TEXT else VLit(None, TEXT)
        raise self.error(f"'{op}' needs text, not {_describe(v)}", pos)

    def date(self, v, op: str, pos):
        if v.kind in (DATE, NULL):
            return v if v.kind == DATE else VLit(None, DATE)
        raise self.error(f"'{op}' needs a date, not {_describe(v)}", pos)

    def call(self, node: ast.Call):
        name = node.name
        extra = _CALLS.get(name)
        if extra is not None:
            return extra(self, node)
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


def _arity(binder: ValueBinder, node: ast.Call, low: int, high: int, usage: str) -> None:
    if not low <= len(node.args) <= high:
        raise binder.error(f"{node.name} takes {usage}", node.pos)


def _whole(binder: ValueBinder, node: ast.Call, arg, what: str, low: int) -> int:
    if not (isinstance(arg, ast.Literal) and type(arg.value) is int and low <= arg.value <= 1_000_000):
        raise binder.error(f"{node.name}: the {what} must be a written whole number {low} or more", node.pos)
    return arg.value


def _text_call(binder: ValueBinder, node: ast.Call):
    _arity(binder, node, 1, 1, "one text value: " + f"{node.name}(name)")
    return VFunc(node.name, (binder.text(binder.bind(node.args[0]), node.name, node.pos),), TEXT)


def _length(binder: ValueBinder, node: ast.Call):
    _arity(binder, node, 1, 1, "one text value: length(name)")
    return VFunc("length", (binder.text(binder.bind(node.args[0]), "length", node.pos),), NUMBER)


def _substring(binder: ValueBinder, node: ast.Call):
    _arity(
        binder, node, 2, 3, "text, a start (1 is the first character) and optionally a length: substring(code, 1, 3)"
    )
    item = binder.text(binder.bind(node.args[0]), "substring", node.pos)
    start = _whole(binder, node, node.args[1], "start", 1)
    length = _whole(binder, node, node.args[2], "length", 0) if len(node.args) == 3 else None
    return VFunc("substring", (item,), TEXT, 0, (start, length))


def _clock(binder: ValueBinder, node: ast.Call):
    _arity(binder, node, 0, 0, f"no values: {node.name}()")
    return VFunc(node.name, (), DATE if node.name == "today" else DATETIME, 0, (binder.model.timezone,))


def _days_between(binder: ValueBinder, node: ast.Call):
    _arity(binder, node, 2, 2, "two dates: days_between(start_date, end_date)")
    a, c = (binder.date(binder.bind(arg), "days_between", node.pos) for arg in node.args)
    return VFunc("days_between", (a, c), NUMBER)


def _date_add(binder: ValueBinder, node: ast.Call):
    from .textdate import parse_period

    usage = "a date and a period in quotes: date_add(start_date, '30d') (d days, w weeks, m months, y years)"
    _arity(binder, node, 2, 2, usage)
    item = binder.date(binder.bind(node.args[0]), "date_add", node.pos)
    arg = node.args[1]
    period = parse_period(arg.value) if isinstance(arg, ast.Literal) and isinstance(arg.value, str) else None
    if period is None:
        raise binder.error(f"date_add takes {usage}, not {arg}", node.pos)
    return VFunc("date_add", (item,), DATE, 0, period)


def _if(binder: ValueBinder, node: ast.Call):
    from .bind import bind

    _arity(binder, node, 3, 3, "a condition and two values: if(amount > 1000, 'big', 'small')")
    test, *branches = node.args
    if isinstance(test, VALUE_NODES + (ast.Name, ast.Literal, ast.Param)):
        test = ast.Compare("=", test, ast.Literal(True, getattr(test, "pos", 0)))  # a true-or-false value
    for n in _nodes(test):
        if isinstance(n, ast.Param):
            raise binder.error(f"if: parameter ':{n.name}' cannot be used in if's condition", n.pos)
    cond = bind(binder.model, binder.entity, test, binder.what)
    for r in condition_columns(cond):
        if r.multi:
            raise binder.error(
                f"if: '{r.path}' goes through a many or inverse link; if's condition reads single values", node.pos
            )
    then, else_ = (binder.bind(b) for b in branches)
    kinds = {then.kind, else_.kind} - {NULL}
    if len(kinds) > 1:
        raise binder.error(
            f"if gives {' or '.join(sorted(_KIND_WORDS.get(k, k) for k in kinds))}; both values must be of one kind",
            node.pos,
        )
    kind = kinds.pop() if kinds else NULL
    if kind == NUMBER:
        then, else_ = (x if x.kind == NUMBER else VLit(None, NUMBER, 0) for x in (then, else_))
    scale = max(then.scale, else_.scale) if kind == NUMBER else 0
    return VIf(cond, then, else_, kind, scale)


def _nodes(tree):
    from .derive import _walk

    return _walk(tree)


_CALLS = {
    "lower": _text_call,
    "upper": _text_call,
    "trim": _text_call,
    "length": _length,
    "substring": _substring,
    "today": _clock,
    "now": _clock,
    "days_between": _days_between,
    "date_add": _date_add,
    "if": _if,
}


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
    left, right = _dated(binder, left, right.kind, pos), _dated(binder, right, left.kind, pos)
    kinds = {left.kind, right.kind} - {NULL}
    if len(kinds) > 1:
        raise binder.error(f"'{e}' compares {_describe(left)} with {_describe(right)}", pos)
    kind = kinds.pop() if kinds else NUMBER
    if kind == BOOLEAN and e.op not in ("=", "!="):
        raise binder.error(f"'{e.op}' does not apply to true or false values", pos)
    if kind != NUMBER:  # text, dates, true or false: compared as they are
        left, right = (x if x.kind != NULL else VLit(None, kind) for x in (left, right))
        return CmpExpr(e.op, left, right)
    return CmpExpr(e.op, binder.number(left, e.op, pos), binder.number(right, e.op, pos))


def _dated(binder: ValueBinder, v, other: str, pos):
    """Written text compared with a date (or a date and time): read as one."""
    if not (isinstance(v, VLit) and v.kind == TEXT and other in (DATE, DATETIME)):
        return v
    from .. import dates

    try:
        if other == DATE:
            return VLit(dates.parse_date(v.value), DATE)
        return VLit(dates.parse_datetime(v.value, binder.model.timezone), DATETIME)
    except dates.DateError as exc:
        raise binder.error(str(exc), pos) from None


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
    if isinstance(v, VFunc):
        return _python_func(v, read)
    if isinstance(v, VIf):
        return _python_if(v, read)
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


def _python_func(v: VFunc, read) -> Callable[[Mapping], object]:
    import datetime as dt

    from ..dates import local_today
    from . import textdate

    args = [python_value(a, read) for a in v.args]
    name = v.name
    if name == "concat":
        left, right = args

        def concat(values):
            a, b = left(values), right(values)
            return None if a is None or b is None else a + b

        return concat
    if name in ("lower", "upper", "trim"):
        fn, item = getattr(textdate, name), args[0]
        return lambda values: fn(item(values))
    if name == "length":
        item = args[0]

        def length(values):
            x = item(values)
            return None if x is None else len(x)

        return length
    if name == "substring":
        item, (start, count) = args[0], v.extra
        return lambda values: textdate.substring(item(values), start, count)
    if name == "today":
        zone = v.extra[0] if v.extra else None
        return lambda values: local_today(zone)
    if name == "now":
        return lambda values: dt.datetime.now(dt.UTC)
    if name == "days_between":
        first, second = args
        return lambda values: textdate.days_between(first(values), second(values))
    if name == "date_add":
        item, (n, unit) = args[0], v.extra
        return lambda values: textdate.add_period(item(values), n, unit)
    raise AssertionError(f"not a bound function: {v!r}")  # pragma: no cover


def _python_if(v: VIf, read) -> Callable[[Mapping], object]:
    from .to_python import _Compiler

    compiler = _Compiler("if")
    compiler.reader = read  # the names of the condition are read like those of the value
    test = compiler.node(v.cond)
    then, else_ = python_value(v.then, read), python_value(v.else_, read)
    numeric = v.kind == NUMBER
    st, se, target = v.then.scale, v.else_.scale, v.scale

    def if_(values):
        if test(values, None) is True:
            x, source = then(values), st
        else:
            x, source = else_(values), se
        return rescale(x, source, target) if numeric and x is not None else x

    return if_


def to_python(x, kind: str, scale: int):
    """A computed value as the field's Python value (a Decimal for scaled numbers)."""
    if x is None or kind != NUMBER:
        return x
    return Decimal(x).scaleb(-scale) if scale else x


def compare3(op: str, a, sa: int, b, sb: int):
    if a is None or b is None:
        return None
    if not isinstance(a, int) or isinstance(a, bool):  # text, dates, true or false: as they are
        return {"=": a == b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
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
    "VFunc",
    "VIf",
    "VLit",
    "VNeg",
    "VRound",
    "bind_compare",
    "bind_value",
    "condition_columns",
    "columns",
    "compare3",
    "python_value",
    "rescale",
    "round_div",
    "scaled",
    "to_python",
]
