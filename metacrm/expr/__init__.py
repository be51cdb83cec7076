"""The one expression language of metacrm: filters now, guards (``when:``) and conditions
(``if:``) too, parsed with a lark LALR grammar (never ``eval``) and compiled both to SQLAlchemy
conditions and to Python predicates that agree with them.

::

    amount > 999.99 and client.city = 'Москва'
    stage in ('new', 'qualified') or title contains 'ромашка'
    products.name = 'Сервер' and not (closed_at is not null)
    created_at between :since and :until and owner = :me

Syntax: text in single quotes ('' is a quote), integers and decimals (-5, 120000.50), true,
false, null; names and dotted paths through links (``client.city``, ``products.name``,
``deals.amount`` through an inverse link); parameters ``:name``; ``= != <> < <= > >=``;
``and or not`` and parentheses; ``in (...)``, ``not in (...)`` (or ``in :list``);
``between a and b``, ``not between``; ``contains`` and ``startswith`` (case-insensitive text;
``contains`` on a multichoice field: the list holds the option); ``is null``, ``is not null``.
Values in comparisons may be computed: ``+ - * /``, ``coalesce``, ``round``, ``||`` joining
text, ``lower``, ``upper``, ``trim``, ``length``, ``substring``, ``today()``, ``now()``,
``days_between``, ``date_add`` and ``if(condition, a, b)`` (see values.py and
docs/derived.md). Keywords are case-insensitive and reserved.

Semantics: SQL's three-valued logic (a comparison with null is unknown; a record matches only
when the whole expression is true). A link name alone is its id (``client = 3``). A path
through a many or inverse link is true when some linked value satisfies the condition; the
negated operators (``!=``, ``not in``, ``not between``, ``is null``) are the negation of the
positive ones, so ``products is null`` means "no products". sqlalchemy is imported only when
compiling to SQL, so load-time checks (``check_names``) stay cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._lazy import lazy_attributes
from ..errors import ExpressionError

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.sql.elements import ColumnElement

    from ..model.metamodel import Model
    from ..storage.tables import Storage
    from .ast import And, Between, Compare, Expr, In, IsNull, Literal, Match, Name, Not, Or, Param
    from .parser import KEYWORDS, MAX_DEPTH, MAX_LENGTH, parse
    from .to_python import Predicate

# imported on first use: the runtime imports metacrm.expr.functions on every command, which
# must not build the tree classes, the binder and the Python compiler of a command that
# filters nothing
_LAZY = {
    **dict.fromkeys(("And", "Between", "Compare", "Expr", "In", "IsNull", "Literal", "Match", "Name", "Not"), "ast"),
    **dict.fromkeys(("Or", "Param"), "ast"),
    **dict.fromkeys(("KEYWORDS", "MAX_DEPTH", "MAX_LENGTH", "parse"), "parser"),
    "Predicate": "to_python",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


def _guard(call, what: str):
    try:
        return call()
    except ExpressionError:
        raise
    except RecursionError:
        raise ExpressionError(f"{what}: the expression is nested too deeply") from None


def compile_sql(
    storage: Storage,
    entity: str,
    expr: str | Expr,
    params: Mapping | None = None,
    *,
    what: str = "filter",
    access: Callable[[str, Any], ColumnElement[bool] | None] | None = None,
) -> ColumnElement[bool]:
    """A condition on ``storage.table(entity)``: ``select(table).where(compile_sql(...))``.

    Literals and ``params`` become bound parameters of the column's type. Raises
    ExpressionError for syntax errors, unknown names or parameters, and values that do not fit
    the field (``deal.amount: 'abc' is not a number``).

    ``access``: for a filter run by a user, ``(entity, table) -> the user's read condition on
    that table or alias (None: every record)`` (metacrm.runtime.access.path_access): paths
    through links then reach only records the user may read, a hidden record being exactly an
    absent one. The condition on ``entity``'s own table is the caller's to add.
    """
    from .to_sql import compile_condition

    return _guard(lambda: compile_condition(storage, entity, expr, params, what, access), what)


def compile_python(model: Model, entity: str, expr: str | Expr, *, what: str = "filter") -> Predicate:
    """A predicate over a record's values that agrees with ``compile_sql`` on the same record."""
    from .to_python import compile_predicate

    return _guard(lambda: compile_predicate(model, entity, expr, what), what)


def check_names(model: Model, entity: str, expr: str | Expr, *, what: str = "filter") -> None:
    """Resolve every name, operator and written value without compiling (for load-time checks of
    ``when:`` and ``if:``); parameters are checked when their values are given."""
    from .bind import bind
    from .parser import parse

    def run():
        tree = parse(expr, what=what) if isinstance(expr, str) else expr
        bind(model, entity, tree, what)

    _guard(run, what)


__all__ = [
    "And",
    "Between",
    "Compare",
    "Expr",
    "ExpressionError",
    "In",
    "IsNull",
    "KEYWORDS",
    "Literal",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "Match",
    "Name",
    "Not",
    "Or",
    "Param",
    "Predicate",
    "check_names",
    "compile_python",
    "compile_sql",
    "parse",
]
