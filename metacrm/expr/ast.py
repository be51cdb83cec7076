"""The expression tree: small frozen dataclasses, what ``parse`` returns.

Positions (``pos``, the 1-based column in the text) are carried for error messages but left
out of equality, so ``parse(str(e)) == e`` holds for every expression ``e``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")


@dataclass(frozen=True, slots=True)
class Literal:
    """A text, integer, decimal, boolean or null value written in the expression."""

    value: str | int | Decimal | bool | None
    pos: int = field(default=0, compare=False)

    def __str__(self) -> str:
        v = self.value
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return "'" + v.replace("'", "''") + "'"
        return str(v)


@dataclass(frozen=True, slots=True)
class Name:
    """A field, system column or link, or a dotted path through links (``client.city``)."""

    path: str
    pos: int = field(default=0, compare=False)

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.path.split("."))

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True, slots=True)
class Param:
    """A parameter ``:name`` whose value is given when the expression is compiled or run."""

    name: str
    pos: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return f":{self.name}"


Operand = Literal | Name | Param

_PRECEDENCE = {"+": 1, "-": 1, "||": 1, "*": 2, "/": 2}


@dataclass(frozen=True, slots=True)
class Arith:
    """``left op right`` with op one of + - * / (numbers) or || (text joined)."""

    op: str
    left: Value
    right: Value
    pos: int = field(default=0, compare=False)

    def __str__(self) -> str:
        prec = _PRECEDENCE[self.op]
        left = _operand_text(self.left, prec, right_side=False)
        right = _operand_text(self.right, prec, right_side=True)
        return f"{left} {self.op} {right}"


@dataclass(frozen=True, slots=True)
class Neg:
    """Unary minus of a value that is not a written number (``-amount``)."""

    item: Value
    pos: int = field(default=0, compare=False)

    def __str__(self) -> str:
        inner = str(self.item)
        return f"-({inner})" if isinstance(self.item, Arith | Neg) else f"-{inner}"


@dataclass(frozen=True, slots=True)
class Call:
    """A function of values: ``coalesce(discount, 0)``."""

    name: str
    args: tuple[Value, ...]
    pos: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return f"{self.name}({', '.join(map(str, self.args))})"


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A roll-up: ``sum(lines.qty * lines.price)``, ``count(deals where stage = 'won')``."""

    func: str  # count, sum, min, max
    arg: Value
    where: Expr | None = None
    pos: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return f"{self.func}({self.arg}" + (f" where {self.where}" if self.where is not None else "") + ")"


def _operand_text(node, prec: int, *, right_side: bool) -> str:
    text = str(node)
    if isinstance(node, Arith):
        inner = _PRECEDENCE[node.op]
        if inner < prec or (right_side and inner == prec):
            return f"({text})"
    if isinstance(node, Literal) and right_side and text.startswith("-"):
        return f"({text})"
    return text


Value = Literal | Name | Param | Arith | Neg | Call


@dataclass(frozen=True, slots=True)
class Compare:
    op: str  # one of COMPARISONS ('<>' is read as '!=')
    left: Value
    right: Value

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"


@dataclass(frozen=True, slots=True)
class In:
    subject: Operand
    items: tuple[Operand, ...] | Param  # a parameter holding a list
    negated: bool = False

    def __str__(self) -> str:
        items = str(self.items) if isinstance(self.items, Param) else "(" + ", ".join(map(str, self.items)) + ")"
        return f"{self.subject} {'not in' if self.negated else 'in'} {items}"


@dataclass(frozen=True, slots=True)
class Between:
    subject: Operand
    low: Operand
    high: Operand
    negated: bool = False

    def __str__(self) -> str:
        return f"{self.subject} {'not between' if self.negated else 'between'} {self.low} and {self.high}"


@dataclass(frozen=True, slots=True)
class Match:
    """``x contains 'text'`` or ``x startswith 'text'`` (case-insensitive)."""

    op: str  # contains, startswith
    subject: Operand
    pattern: Operand

    def __str__(self) -> str:
        return f"{self.subject} {self.op} {self.pattern}"


@dataclass(frozen=True, slots=True)
class IsNull:
    subject: Operand
    negated: bool = False  # True for 'is not null'

    def __str__(self) -> str:
        return f"{self.subject} is {'not ' if self.negated else ''}null"


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]

    def __str__(self) -> str:
        return " and ".join(_wrap(i, (And, Or)) for i in self.items)


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]

    def __str__(self) -> str:
        return " or ".join(_wrap(i, Or) for i in self.items)


@dataclass(frozen=True, slots=True)
class Not:
    item: Expr

    def __str__(self) -> str:
        return "not " + _wrap(self.item, (And, Or))


def _wrap(node, kinds) -> str:
    return f"({node})" if isinstance(node, kinds) else str(node)


Expr = Compare | In | Between | Match | IsNull | And | Or | Not

__all__ = [
    "Aggregate",
    "And",
    "Arith",
    "Between",
    "COMPARISONS",
    "Call",
    "Compare",
    "Expr",
    "In",
    "IsNull",
    "Literal",
    "Match",
    "Name",
    "Neg",
    "Not",
    "Operand",
    "Or",
    "Param",
    "Value",
]
