"""Text -> expression tree, with a lark LALR grammar (never ``eval``).

Keywords are reserved and case-insensitive. Errors say what was expected at which column:
``filter: unexpected 'and' at column 12; expected a value``.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING

from ..errors import ExpressionError
from .ast import (
    Aggregate,
    And,
    Arith,
    Between,
    Call,
    Compare,
    Expr,
    In,
    IsNull,
    Literal,
    Match,
    Name,
    Neg,
    Not,
    Or,
    Param,
)

if TYPE_CHECKING:  # pragma: no cover - lark is imported when the first expression is parsed
    from lark import Lark, Token
    from lark.exceptions import UnexpectedInput

MAX_LENGTH = 10_000  # characters
MAX_DEPTH = 64  # nesting of parentheses and 'not'

GRAMMAR = r"""
?start: or_expr
value: sum
rollup: NAME "(" sum (_WHERE or_expr)? ")"

?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: _NOT not_expr                            -> not_
         | atom
?atom: "(" or_expr ")"
     | sum COMP sum                                 -> compare
     | operand _IN items                            -> in_
     | operand _NOT _IN items                       -> not_in
     | operand _BETWEEN signed _AND signed          -> between
     | operand _NOT _BETWEEN signed _AND signed     -> not_between
     | operand _CONTAINS operand                    -> contains
     | operand _STARTSWITH operand                  -> startswith
     | operand _IS NULL                             -> is_null
     | operand _IS _NOT NULL                        -> is_not_null

items: "(" signed ("," signed)* ")"
     | PARAM

?sum: product
    | sum PLUS product                              -> arith
    | sum CONCAT product                            -> arith
    | sum MINUS product                             -> arith
?product: unary
    | product STAR unary                            -> arith
    | product SLASH unary                           -> arith
?unary: primary
      | MINUS unary                                 -> neg
?primary: operand
        | "(" sum ")"
        | NAME "(" (_arg ("," _arg)*)? ")"          -> call

_arg: sum
     | or_expr

?signed: operand
       | MINUS NUMBER                               -> negative

?operand: NAME       -> name
        | STRING     -> string
        | NUMBER     -> number
        | PARAM      -> param
        | TRUE       -> true
        | FALSE      -> false
        | NULL       -> null

_OR.2: /or\b/i
_AND.2: /and\b/i
_NOT.2: /not\b/i
_IN.2: /in\b/i
_BETWEEN.2: /between\b/i
_CONTAINS.2: /contains\b/i
_STARTSWITH.2: /startswith\b/i
_IS.2: /is\b/i
_WHERE.2: /where\b/i
NULL.2: /null\b/i
TRUE.2: /true\b/i
FALSE.2: /false\b/i

COMP: "!=" | "<>" | "<=" | ">=" | "=" | "<" | ">"
CONCAT: "||"
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
NAME: /[^\W\d]\w*(\.[^\W\d]\w*)*/
PARAM: /:[^\W\d]\w*/
NUMBER: /\d+(\.\d+)?/
STRING: /'([^']|'')*'/

%ignore /\s+/
"""

KEYWORDS = ("and", "or", "not", "in", "between", "contains", "startswith", "is", "null", "true", "false", "where")

_VALUES = {"NAME", "STRING", "NUMBER", "PARAM", "TRUE", "FALSE", "NULL"}
_OPERATORS = {"COMP", "_IN", "_BETWEEN", "_CONTAINS", "_STARTSWITH", "_IS"}
_ARITHMETIC = {"PLUS", "MINUS", "STAR", "SLASH", "CONCAT"}
_WORDS = {
    "_AND": "'and'",
    "_OR": "'or'",
    "_NOT": "'not'",
    "_IN": "'in'",
    "_BETWEEN": "'between'",
    "NULL": "'null'",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "PARAM": "a parameter",
    "_WHERE": "'where'",
    "$END": "the end",
}
OPERATOR_LIST = "=, !=, <, <=, >, >=, in, not in, between, contains, startswith, is null, is not null"
_MAX_NUMBER_DIGITS = 40


def _pos(token: Token) -> int:
    return (token.start_pos or 0) + 1


class _BuildRules:
    """Builds the frozen tree while the LALR parser reduces (no recursion, any depth): the
    rules of the lark Transformer made in :func:`_parser` (lark is imported only then)."""

    def name(self, c):
        return Name(str(c[0]), _pos(c[0]))

    def string(self, c):
        return Literal(c[0][1:-1].replace("''", "'"), _pos(c[0]))

    def number(self, c):
        text = str(c[0])
        if len(text) > _MAX_NUMBER_DIGITS:
            raise ExpressionError(f"number too long at column {_pos(c[0])}", _pos(c[0]))
        return Literal(Decimal(text) if "." in text else int(text), _pos(c[0]))

    def param(self, c):
        return Param(str(c[0])[1:], _pos(c[0]))

    def true(self, c):
        return Literal(True, _pos(c[0]))

    def false(self, c):
        return Literal(False, _pos(c[0]))

    def null(self, c):
        return Literal(None, _pos(c[0]))

    def compare(self, c):
        op = "!=" if c[1] == "<>" else str(c[1])
        return Compare(op, c[0], c[2])

    def items(self, c):
        from lark import Token

        if len(c) == 1 and isinstance(c[0], Token):
            return Param(str(c[0])[1:], _pos(c[0]))
        return tuple(c)

    def in_(self, c):
        return In(c[0], c[1])

    def not_in(self, c):
        return In(c[0], c[1], negated=True)

    def between(self, c):
        return Between(c[0], c[1], c[2])

    def not_between(self, c):
        return Between(c[0], c[1], c[2], negated=True)

    def contains(self, c):
        return Match("contains", c[0], c[1])

    def startswith(self, c):
        return Match("startswith", c[0], c[1])

    def is_null(self, c):
        return IsNull(c[0])

    def is_not_null(self, c):
        return IsNull(c[0], negated=True)

    def not_(self, c):
        return Not(c[0])

    def negative(self, c):
        number = self.number([c[1]])
        return Literal(-number.value, _pos(c[0]))

    def neg(self, c):
        item = c[1]
        if isinstance(item, Literal) and isinstance(item.value, int | Decimal) and not isinstance(item.value, bool):
            return Literal(-item.value, _pos(c[0]))
        return Neg(item, _pos(c[0]))

    def arith(self, c):
        return Arith(str(c[1]), c[0], c[2], _pos(c[1]))

    def call(self, c):
        return Call(str(c[0]).lower(), tuple(c[1:]), _pos(c[0]))

    def value(self, c):
        return c[0]

    def rollup(self, c):
        return Aggregate(str(c[0]).lower(), c[1], c[2] if len(c) > 2 else None, _pos(c[0]))

    def and_expr(self, c):
        return And(tuple(c))

    def or_expr(self, c):
        return Or(tuple(c))


_PARSER: list[Lark] = []
_PARSER_LOCK = threading.Lock()


def _parser() -> Lark:
    """The LALR parser, made once a process. Its tables come from lark's own grammar cache
    (its ``cache`` option), a file in metacrm's cache directory (see metacrm.model.cache)
    keyed by the grammar, the lark and the Python versions: building them costs tens of
    milliseconds, loading them a few. lark checks the file's digest and rebuilds (and rewrites)
    it when it is missing, torn by a concurrent writer or corrupt, so a bad file is never an
    error; without a usable cache directory the tables are built each time."""
    with _PARSER_LOCK:
        if not _PARSER:
            from lark import Lark, Transformer

            class _Build(_BuildRules, Transformer):
                pass

            options = dict(
                parser="lalr",
                lexer="basic",
                transformer=_Build(),
                maybe_placeholders=False,
                start=["start", "value", "rollup"],
            )
            _PARSER.append(Lark(GRAMMAR, **options, **_grammar_cache()))
        return _PARSER[0]


def _grammar_cache() -> dict:
    """``{"cache": path}`` for lark, or nothing when caching is off or impossible."""
    import hashlib
    import sys

    from ..model.cache import cache_dir, enabled

    if not enabled():
        return {}
    try:
        import lark

        key = hashlib.sha256(f"{GRAMMAR}\0{lark.__version__}\0{sys.version}".encode()).hexdigest()[:32]
        folder = cache_dir() / "grammar"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return {"cache": str(folder / f"{key}.lark")}
    except OSError:
        return {}


def _expected(names) -> str:
    names = set(names)
    if names and names <= {"NULL", "_NOT"}:
        return "'null' or 'not null'"
    if names & _VALUES:  # a value may start with a minus sign
        names.discard("MINUS")
    if names & {"_AND", "_OR", "COMP", "_WHERE"}:
        names -= _ARITHMETIC  # a value may go on with + - * /, but say what the condition needs
    elif names & _ARITHMETIC:
        names = (names - _ARITHMETIC - {"LPAR"}) | {"ARITHMETIC"}
    parts: list[str] = []
    if names & _VALUES - {"PARAM"} or ("PARAM" in names and "LPAR" not in names):
        parts.append("a value")
        names -= _VALUES
    if "COMP" in names:
        parts.append(f"an operator ({OPERATOR_LIST})")
        names -= _OPERATORS | {"_NOT", "LPAR"}
    if "ARITHMETIC" in names:
        parts.append("an arithmetic operator (+, -, *, /, || joining text)")
        names.discard("ARITHMETIC")
    if parts == ["a value"]:
        names.discard("_NOT")  # a condition may also start with 'not' or '(': say "a value"
        names.discard("LPAR")
    order = ["_NOT", "_IN", "_BETWEEN", "NULL", "LPAR", "PARAM", "COMMA", "_WHERE", "_AND", "_OR", "RPAR", "$END"]
    parts += [_WORDS[n] for n in order if n in names]
    parts += sorted(n for n in names if n not in _WORDS)
    if len(parts) <= 1:
        return parts[0] if parts else "something else"
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def _describe(token: Token) -> str:
    if token.type == "$END":
        return "end of the expression"
    text = str(token)
    if len(text) > 30:
        text = text[:27] + "..."
    return f"'{text}'"


def _syntax_error(text: str, exc: UnexpectedInput, what: str) -> ExpressionError:
    from lark.exceptions import UnexpectedCharacters, UnexpectedToken

    if isinstance(exc, UnexpectedToken):
        token = exc.token
        if token.type == "$END":
            col = len(text.rstrip()) + 1
        else:
            col = _pos(token)
        try:  # the exact set (LALR's merged lookaheads in exc.expected may list too much)
            expected = exc.interactive_parser.accepts() or exc.expected
        except Exception:  # noqa: BLE001 - fall back to what lark reported
            expected = exc.expected
        return ExpressionError(
            f"{what}: unexpected {_describe(token)} at column {col}; expected {_expected(expected)}", col
        )
    if isinstance(exc, UnexpectedCharacters):
        col = exc.pos_in_stream + 1
        char = text[exc.pos_in_stream]
        if char == "'":
            hint = "text that is never closed; end it with ' (write '' for a quote inside)"
            return ExpressionError(f"{what}: {hint}, starting at column {col}", col)
        hint = ""
        if char == '"':
            hint = " (write text in single quotes: 'like this')"
        elif char in "!&" or (char == "|" and text[exc.pos_in_stream : exc.pos_in_stream + 2] != "||"):
            hint = " (use =, !=, and, or, not)"
        return ExpressionError(f"{what}: unexpected character {char!r} at column {col}{hint}", col)
    return ExpressionError(f"{what}: cannot read the expression: {exc}", None)  # pragma: no cover


def _depth(expr: Expr) -> int:
    """Nesting depth of the tree, measured without recursion."""
    deepest = 0
    stack = [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, And | Or):
            stack.extend((item, depth + 1) for item in node.items)
        elif isinstance(node, Not | Neg):
            stack.append((node.item, depth + 1))
        elif isinstance(node, Compare | Arith):
            stack.extend(((node.left, depth + 1), (node.right, depth + 1)))
        elif isinstance(node, Call):
            stack.extend((a, depth + 1) for a in node.args)
        elif isinstance(node, Aggregate):
            stack.append((node.arg, depth + 1))
            if node.where is not None:
                stack.append((node.where, depth + 1))
    return deepest


# The trees parsed in this process, by (text, start rule) (``what`` only names the expression
# in an error, and no error is kept), with those a compiled-model cache entry brought
# (metacrm.model.cache: the trees of the model's own expressions, which its checks parsed when
# it was stored): a command on a cached model imports no lark for them.
TREES: dict[tuple[str, str], Expr] = {}
_MAX_TREES = 4096


def _parse(text: str, what: str, start: str = "start") -> Expr:
    key = (text, start)
    tree = TREES.get(key)
    if tree is None:
        from ..model import cache

        if cache.PENDING:
            TREES.update(cache.take_trees())
            tree = TREES.get(key)
    if tree is None:
        tree = _parse_text(text, what, start)
        if len(TREES) < _MAX_TREES:
            TREES[key] = tree
    return tree


def _forget() -> None:
    """Forget every tree parsed: the next parse of any text runs the parser (tests)."""
    TREES.clear()
    _parse_text.cache_clear()


_parse.cache_clear = _forget  # type: ignore[attr-defined]


@lru_cache(maxsize=2048)
def _parse_text(text: str, what: str, start: str) -> Expr:
    if not text.strip():
        raise ExpressionError(f"{what}: the expression is empty", 1)
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"{what}: the expression is longer than {MAX_LENGTH} characters", MAX_LENGTH + 1)
    parser = _parser()
    from lark.exceptions import LarkError, UnexpectedInput

    try:
        tree = parser.parse(text, start=start)
    except ExpressionError as exc:
        raise ExpressionError(f"{what}: {exc}", exc.position) from None
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc, what) from None
    except LarkError as exc:  # pragma: no cover - any other lark failure is still a syntax error
        raise ExpressionError(f"{what}: cannot read the expression: {exc}") from None
    except RecursionError:  # pragma: no cover - the LALR parser does not recurse; belt and braces
        raise ExpressionError(f"{what}: the expression is nested too deeply") from None
    if _depth(tree) > MAX_DEPTH:
        raise ExpressionError(f"{what}: the expression is nested more than {MAX_DEPTH} levels deep", None)
    return tree


def parse(text: str, *, what: str = "filter") -> Expr:
    """The tree of an expression; raises ExpressionError(message, position) if it is malformed.

    ``what`` names the expression in messages (``filter``, ``when``, ``if``). Cached by text.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"{what}: expected the text of an expression, got {type(text).__name__}")
    return _parse(text, what)


def parse_value(text: str, *, what: str = "formula"):
    """The tree of a value expression (arithmetic over names: ``qty * price``)."""
    if not isinstance(text, str):
        raise ExpressionError(f"{what}: expected the text of an expression, got {type(text).__name__}")
    return _parse(text, what, "value")


def parse_rollup(text: str, *, what: str = "rollup") -> Aggregate:
    """The tree of a roll-up: ``sum(lines.qty * lines.price)``, ``count(deals where stage = 'won')``."""
    if not isinstance(text, str):
        raise ExpressionError(f"{what}: expected the text of an expression, got {type(text).__name__}")
    return _parse(text, what, "rollup")


__all__ = ["GRAMMAR", "KEYWORDS", "MAX_DEPTH", "MAX_LENGTH", "parse", "parse_rollup", "parse_value"]
