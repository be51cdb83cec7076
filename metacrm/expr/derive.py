"""Derived fields of a model, analysed once: computed fields (``formula:``) and roll-ups
(``rollup:``), their bound expressions, what each one reads, and the order to compute them in.

Pure (no database, no SQLAlchemy): the model checks use it to report problems at load time,
the runtime (``metacrm.runtime.derived``) to compile its statements.

What a derived field *reads* says which writes make it stale:

- a formula reads its record's columns, and through each single link of a path the link column
  and, at the end, the linked record's column (``client.discount``: the deal's ``client`` and
  the client's ``discount``);
- a roll-up reads the link that relates child and parent (the child's link for an inverse, the
  parent's join table for a many-link) and the child columns its value and filter read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ExpressionError
from ..model.metamodel import Entity, Model
from ..model.suggest import did_you_mean, listing
from ..storage import naming
from . import ast
from .names import BOOLEAN, DATE, DATETIME, TEXT, Hop, Resolved, resolve
from .values import CLOCK_FUNCTIONS, NULL, NUMBER, ValueBinder, columns

AGGREGATES = ("count", "sum", "min", "max")
NUMERIC_TYPES = {"integer": 0, "duration": 0, "money": 2, "currency": 2, "decimal": 6, "percent": 6}
_FITS = {
    TEXT: ("string", "text", "email", "phone", "url"),
    DATE: ("date",),
    DATETIME: ("datetime",),
    BOOLEAN: ("boolean",),
    NUMBER: tuple(NUMERIC_TYPES),
}
_WORDS = {NUMBER: "a number", TEXT: "text", DATE: "a date", DATETIME: "a date and time", BOOLEAN: "true or false"}


@dataclass(frozen=True, slots=True)
class Read:
    """A derived field reads ``member`` of ``entity``'s records.

    ``route``: for a formula, the single-link hops from the derived field's entity to
    ``entity`` (empty: the record itself); ``parent``: for a roll-up, ``entity`` is the child
    and the records to recompute are the parents of the changed ones (``self_`` when the
    change is on the parent itself: its many-link)."""

    entity: str
    member: str
    route: tuple[Hop, ...] = ()
    parent: bool = False


@dataclass(frozen=True)
class Derived:
    entity: str
    field: str
    kind: str  # formula, rollup
    text: str
    scale: int | None  # decimal places of the field (numbers), None for other kinds
    value: object = None  # bound value: over ``entity`` (formula) or over ``child`` (roll-up)
    func: str | None = None
    hop: Hop | None = None  # parent -> child
    child: str | None = None
    where: object = None  # the filter's tree (over ``child``)
    reads: tuple[Read, ...] = ()
    depends: tuple[tuple[str, str], ...] = ()  # derived fields it reads, (entity, field)
    condition: object = None  # a boolean formula that is a condition: its bound tree (bind.py)

    @property
    def label(self) -> str:
        return f"{self.entity}.{self.field}"


@dataclass(frozen=True)
class Analysis:
    order: tuple[Derived, ...] = ()  # every valid derived field, each after what it reads
    problems: tuple[tuple[str, str, str, str, str], ...] = ()  # (type, entity, field, key, message)
    by_field: dict = field(default_factory=dict)


def member_of(model: Model, entity: str, column: str) -> str:
    """The member name (field, link, system column) stored in ``column`` of ``entity``."""
    ent = model.entities[entity]
    if column in ent.fields:
        return column
    for link in ent.links.values():
        if naming.link_column(link.name) == column:
            return link.name
    return column


def _reads_of_value(model: Model, entity: str, value) -> list[Read]:
    return _reads_of(model, entity, columns(value))


def _reads_of(model: Model, entity: str, resolved) -> list[Read]:
    reads: list[Read] = []
    for r in resolved:
        here = entity
        for i, hop in enumerate(r.hops):
            reads.append(Read(here, hop.link, r.hops[:i]))
            here = hop.target
        reads.append(Read(here, member_of(model, here, r.column), r.hops))
    return reads


def _strip(node, prefix: str, problems: list, what: str):
    """The roll-up argument with ``prefix.`` taken off every name (names must start with it)."""
    if isinstance(node, ast.Name):
        if node.path == prefix:
            return ast.Name("id", node.pos)
        if node.path.startswith(prefix + "."):
            return ast.Name(node.path[len(prefix) + 1 :], node.pos)
        problems.append(
            f"{what}: '{node.path}' does not go through '{prefix}'; every name of the aggregated value "
            f"starts with it ({prefix}.field)"
        )
        return node
    if isinstance(node, ast.Arith):
        return ast.Arith(
            node.op, _strip(node.left, prefix, problems, what), _strip(node.right, prefix, problems, what), node.pos
        )
    if isinstance(node, ast.Neg):
        return ast.Neg(_strip(node.item, prefix, problems, what), node.pos)
    if isinstance(node, ast.Call):
        args = tuple(
            _strip(a, prefix, problems, what) if isinstance(a, _VALUES) else _strip_where(a, prefix) for a in node.args
        )
        return ast.Call(node.name, args, node.pos)
    return node


_VALUES = (ast.Name, ast.Literal, ast.Param, ast.Arith, ast.Neg, ast.Call)


def _one_currency(child: Entity, f, reads, text: str, what: str) -> None:
    """A roll-up never adds amounts in different currencies: over a currency field whose records
    name their currency, its filter must pin one (``where cur = 'USD'``); and a currency roll-up
    field holds amounts of its own currency only."""
    import re

    for r in reads:
        source = child.fields.get(r.column)
        if source is None or source.type != "currency":
            continue
        code = source.currency
        if source.currency_field:
            pinned = re.search(rf"\b{re.escape(source.currency_field)}\s*=\s*'([A-Z]{{3}})'", text)
            if pinned is None:
                raise ExpressionError(
                    f"{what}: {child.name}.{source.name} holds amounts in the currency each record names "
                    f"({source.currency_field}); a roll-up would add different currencies: filter to one, "
                    f"as in ... where {source.currency_field} = 'USD'"
                )
            code = pinned.group(1)
        if f.type == "currency" and (f.currency_field or f.currency != code):
            mine = f.currency or f"the currency named by {f.currency_field}"
            raise ExpressionError(
                f"{what}: adds {code} amounts of {child.name}.{source.name} into a field in {mine}; "
                f"declare it `currency: {code}` (or a money or decimal field)"
            )


def _first_name(node) -> ast.Name | None:
    stack = [node]
    while stack:
        n = stack.pop(0)
        if isinstance(n, ast.Name):
            return n
        if isinstance(n, ast.Arith):
            stack += [n.left, n.right]
        elif isinstance(n, ast.Neg):
            stack.append(n.item)
        elif isinstance(n, ast.Call):
            stack += list(n.args)
    return None


def _strip_where(node, prefix: str):
    """Filter names are the child's; a ``link.`` prefix is allowed and taken off."""
    if isinstance(node, ast.Name):
        return ast.Name(node.path[len(prefix) + 1 :], node.pos) if node.path.startswith(prefix + ".") else node
    if isinstance(node, ast.And | ast.Or):
        return type(node)(tuple(_strip_where(i, prefix) for i in node.items))
    if isinstance(node, ast.Not):
        return ast.Not(_strip_where(node.item, prefix))
    if isinstance(node, ast.Compare):
        return ast.Compare(node.op, _strip_where(node.left, prefix), _strip_where(node.right, prefix))
    if isinstance(node, ast.In):
        return ast.In(_strip_where(node.subject, prefix), node.items, node.negated)
    if isinstance(node, ast.Between):
        return ast.Between(_strip_where(node.subject, prefix), node.low, node.high, node.negated)
    if isinstance(node, ast.Match):
        return ast.Match(node.op, _strip_where(node.subject, prefix), node.pattern)
    if isinstance(node, ast.IsNull):
        return ast.IsNull(_strip_where(node.subject, prefix), node.negated)
    if isinstance(node, ast.Arith):
        return ast.Arith(node.op, _strip_where(node.left, prefix), _strip_where(node.right, prefix), node.pos)
    if isinstance(node, ast.Neg):
        return ast.Neg(_strip_where(node.item, prefix), node.pos)
    if isinstance(node, ast.Call):
        return ast.Call(node.name, tuple(_strip_where(a, prefix) for a in node.args), node.pos)
    return node


def _walk(tree):
    """Every node of an expression tree (conditions and values)."""
    stack = [tree]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, ast.And | ast.Or):
            stack += list(n.items)
        elif isinstance(n, ast.Not | ast.Neg):
            stack.append(n.item)
        elif isinstance(n, ast.Compare | ast.Arith):
            stack += [n.left, n.right]
        elif isinstance(n, ast.In):
            stack.append(n.subject)
            stack += [n.items] if isinstance(n.items, ast.Param) else list(n.items)
        elif isinstance(n, ast.Between):
            stack += [n.subject, n.low, n.high]
        elif isinstance(n, ast.Match):
            stack += [n.subject, n.pattern]
        elif isinstance(n, ast.IsNull):
            stack.append(n.subject)
        elif isinstance(n, ast.Call):
            stack += list(n.args)


def _no_clock(tree, what: str) -> None:
    """Refuse today() and now() in a stored value: it would be computed at the last write and
    go stale the next day."""
    for node in _walk(tree):
        if isinstance(node, ast.Call) and node.name in CLOCK_FUNCTIONS:
            raise ExpressionError(
                f"{what}: {node.name}() changes with time, but a {what} field is stored when its record is "
                f"written and would go stale (column {node.pos}); use {node.name}() in filters, rules and "
                "automation conditions, or store the date and compare it there",
                node.pos,
            )


def _where_columns(model: Model, child: str, tree) -> list[Resolved]:
    """Every name a filter reads, resolved on the child."""
    out: list[Resolved] = []
    stack = [tree]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Name):
            out.append(resolve(model, child, n.path, n.pos))
        elif isinstance(n, ast.And | ast.Or):
            stack += list(n.items)
        elif isinstance(n, ast.Not | ast.Neg):
            stack.append(n.item)
        elif isinstance(n, ast.Compare | ast.Arith):
            stack += [n.left, n.right]
        elif isinstance(n, ast.In | ast.Between | ast.Match | ast.IsNull):
            stack.append(n.subject)
        elif isinstance(n, ast.Call):
            stack += list(n.args)
    return out


class _Analyser:
    def __init__(self, model: Model):
        self.model = model
        self.problems: list[tuple[str, str, str, str, str]] = []

    def problem(self, type_: str, ent: Entity, name: str, key: str, message: str) -> None:
        self.problems.append((type_, ent.name, name, key, message))

    def field(self, ent: Entity, f) -> Derived | None:
        key = "formula" if f.formula else "rollup"
        if f.formula and f.rollup:
            self.problem(
                "field.derived_invalid",
                ent,
                f.name,
                "rollup",
                f"field '{ent.name}.{f.name}': declare either 'formula' (computed) or 'rollup', not both",
            )
            return None
        for option in ("required", "default", "fill"):
            value = getattr(f, option)
            if value not in (None, False):
                self.problem(
                    "field.derived_invalid",
                    ent,
                    f.name,
                    option,
                    f"field '{ent.name}.{f.name}' is computed from its {key}; it cannot have '{option}'",
                )
        try:
            return self.formula(ent, f) if key == "formula" else self.rollup(ent, f)
        except ExpressionError as exc:
            message = str(exc)
            self.problem("field.derived_invalid", ent, f.name, key, f"field '{ent.name}.{f.name}': {message}")
            return None

    def fit(self, ent: Entity, f, kind: str, what: str) -> int | None:
        """The field's scale, raising when the value's kind does not fit the field's type."""
        fits = _FITS.get(kind, ())
        if f.type not in fits:
            raise ExpressionError(
                f"{what} gives {_WORDS.get(kind, kind)}, which does not fit a {f.type} field"
                + (f" (use {', '.join(fits)})" if fits else "")
            )
        if kind != NUMBER:
            return None
        return f.decimals if f.decimals is not None else NUMERIC_TYPES.get(f.type)

    def formula(self, ent: Entity, f) -> Derived:
        from .parser import parse, parse_value

        try:
            tree = parse_value(f.formula, what="formula")
            _no_clock(tree, "formula")
        except ExpressionError as exc:
            try:  # a condition (comparisons, and/or/not...): true or false
                tree = parse(f.formula, what="formula")
            except ExpressionError as cond_exc:  # a boolean field's formula is meant as a condition
                raise (cond_exc if f.type == "boolean" else exc) from None
            if f.type != "boolean":
                raise ExpressionError(
                    f"the formula is a condition (true or false), which does not fit a {f.type} field (use boolean)"
                ) from None
            return self.condition(ent, f, tree)
        value = ValueBinder(self.model, ent.name, "formula").bind(tree)
        if value.kind == NULL:
            raise ExpressionError("formula: the value is always null")
        scale = self.fit(ent, f, value.kind, "the formula")
        reads = _reads_of_value(self.model, ent.name, value)
        return Derived(ent.name, f.name, "formula", f.formula, scale, value=value, reads=tuple(reads))

    def condition(self, ent: Entity, f, tree) -> Derived:
        """A boolean formula written as a condition: true when it holds, false otherwise (also
        when it is unknown: a comparison with null), never null."""
        from .bind import bind

        what = "formula"
        _no_clock(tree, what)
        for node in _walk(tree):
            if isinstance(node, ast.Param):
                raise ExpressionError(
                    f"{what}: parameter ':{node.name}' cannot be used in a formula; write the value (column {node.pos})",
                    node.pos,
                )
        bound = bind(self.model, ent.name, tree, what)
        resolved = _where_columns(self.model, ent.name, tree)
        for r in resolved:
            if r.multi:
                raise ExpressionError(
                    f"{what}: '{r.path}' goes through a many or inverse link; a formula reads the record's own "
                    "fields and its single links; aggregate many values with a roll-up field (rollup: count(...), "
                    "sum(...)) and compare that"
                )
        reads = _reads_of(self.model, ent.name, resolved)
        return Derived(ent.name, f.name, "formula", f.formula, None, reads=tuple(dict.fromkeys(reads)), condition=bound)

    def rollup(self, ent: Entity, f) -> Derived:
        from .bind import bind
        from .parser import parse_rollup

        tree = parse_rollup(f.rollup, what="rollup")
        what = "rollup"
        _no_clock(tree.arg, what)
        if tree.where is not None:
            _no_clock(tree.where, what)
        if tree.func not in AGGREGATES:
            hint = did_you_mean(tree.func, AGGREGATES)
            raise ExpressionError(
                f"{what}: unknown aggregate '{tree.func}'"
                + (f" ({hint})" if hint else "")
                + f"; aggregates: {', '.join(AGGREGATES)}"
            )
        first = _first_name(tree.arg)
        many = [*ent.inverses, *(name for name, link in ent.links.items() if link.many)]
        if first is None:
            raise ExpressionError(
                f"{what}: {tree.func}(...) needs a name: an inverse or many link of {ent.name} "
                f"({listing(many)}), as in {tree.func}({many[0] if many else 'deals'}.amount)"
            )
        link_name = first.path.split(".")[0]
        if link_name not in many:
            kind = "a single link" if link_name in ent.links else "a field" if link_name in ent.fields else "not a link"
            hint = did_you_mean(link_name, many)
            raise ExpressionError(
                f"{what}: '{link_name}' is {kind} of {ent.name}; a roll-up aggregates over an inverse or many link"
                + (f" ({hint})" if hint else "")
                + f"; inverse and many links of {ent.name}: {listing(many)}"
            )
        hop = resolve(self.model, ent.name, link_name).hops[0]
        if hop.kind == "many" and hop.polymorphic:
            raise ExpressionError(
                f"{what}: '{link_name}' links to several entities; a roll-up aggregates over the records of one"
            )
        child = hop.target
        problems: list[str] = []
        arg = _strip(tree.arg, link_name, problems, what)
        if problems:
            raise ExpressionError(problems[0])
        hint = f"roll up a computed field of {child} instead"
        declaring = None  # the many-link relating parent and child: its fields read as link.FIELD
        if hop.kind == "many":
            declaring = ent.links[link_name]
        elif hop.many_to_many:
            declaring = self.model.entities[child].links[hop.link]
        binder = ValueBinder(self.model, child, what, many_hint=hint, link=declaring)
        value = None
        if tree.func == "count":
            if not (isinstance(arg, ast.Name) and arg.path == "id"):
                raise ExpressionError(f"{what}: count takes the link alone: count({link_name})")
        else:
            value = binder.bind(arg)
            for r in columns(value):
                if r.hops:
                    raise ExpressionError(f"{what}: '{link_name}.{r.path}' reads through a link of {child}; {hint}")
            if tree.func == "sum" and value.kind != NUMBER:
                raise ExpressionError(f"{what}: sum needs numbers; {tree.arg} is {_WORDS.get(value.kind, value.kind)}")
            if value.kind not in (NUMBER, DATE, DATETIME):
                raise ExpressionError(
                    f"{what}: {tree.func} applies to numbers, dates and times; {tree.arg} is "
                    f"{_WORDS.get(value.kind, value.kind)}"
                )
        where = None
        reads: list[Read] = []
        if tree.where is not None:
            where = _strip_where(tree.where, link_name)
            bind(self.model, child, where, f"{what} filter")
            for r in _where_columns(self.model, child, where):
                if r.hops:
                    raise ExpressionError(f"{what} filter: '{r.path}' reads through a link of {child}; {hint}")
                reads.append(Read(child, member_of(self.model, child, r.column), parent=True))
        kind = NUMBER if value is None else value.kind
        if value is not None:
            _one_currency(self.model.entities[child], f, columns(value), f.rollup, what)
        scale = self.fit(ent, f, kind, f"{tree.func}(...)")
        if value is not None:
            for r in columns(value):
                if not r.link_row:
                    reads.append(Read(child, member_of(self.model, child, r.column), parent=True))
                elif hop.kind == "many":  # the parent's own link rows changed
                    reads.append(Read(ent.name, f"{hop.link}.link"))
                else:  # a child's link rows to this parent changed
                    reads.append(Read(child, f"{hop.link}.link", parent=True))
        if hop.kind == "many":
            reads.append(Read(ent.name, hop.link))  # the parent's own many-link
        else:
            reads.append(Read(child, hop.link, parent=True))
        return Derived(
            ent.name,
            f.name,
            "rollup",
            f.rollup,
            scale,
            value=value,
            func=tree.func,
            hop=hop,
            child=child,
            where=where,
            reads=tuple(dict.fromkeys(reads)),
        )

    def run(self) -> Analysis:
        found: dict[tuple[str, str], Derived] = {}
        for ent in self.model.entities.values():
            for f in ent.fields.values():
                if f.formula is None and f.rollup is None:
                    continue
                d = self.field(ent, f)
                if d is not None:
                    found[(ent.name, f.name)] = d
        for key, d in list(found.items()):
            deps = tuple(dict.fromkeys((r.entity, r.member) for r in d.reads if (r.entity, r.member) in found))
            found[key] = Derived(**{**d.__dict__, "depends": deps})
        order = self.order(found)
        return Analysis(tuple(order), tuple(self.problems), {k: v for k, v in found.items()})

    def order(self, found: dict) -> list[Derived]:
        done: dict[tuple[str, str], bool] = {}
        out: list[Derived] = []
        reported: set = set()
        for start in found:
            if start in done:
                continue
            stack = [(start, iter(found[start].depends))]
            path = [start]
            on_path = {start}
            while stack:
                key, deps = stack[-1]
                nxt = next(deps, None)
                if nxt is None:
                    stack.pop()
                    path.pop()
                    on_path.discard(key)
                    if key not in done:
                        done[key] = True
                        out.append(found[key])
                    continue
                if nxt in done or nxt not in found:
                    continue
                if nxt in on_path:
                    cycle = path[path.index(nxt) :] + [nxt]
                    names = " -> ".join(f"{e}.{n}" for e, n in cycle)
                    if frozenset(cycle) not in reported:
                        reported.add(frozenset(cycle))
                        e, n = cycle[0]
                        self.problem(
                            "field.derived_cycle",
                            self.model.entities[e],
                            n,
                            "formula" if found[cycle[0]].kind == "formula" else "rollup",
                            f"field '{e}.{n}': derived fields depend on each other in a cycle: {names}",
                        )
                    done.setdefault(nxt, False)
                    continue
                stack.append((nxt, iter(found[nxt].depends)))
                path.append(nxt)
                on_path.add(nxt)
        bad = {k for k, ok in done.items() if not ok}
        return [d for d in out if (d.entity, d.field) not in bad]


def analyse(model: Model) -> Analysis:
    """Every derived field of the model, bound and ordered, with the problems found."""
    if not any(
        f.formula is not None or f.rollup is not None for e in model.entities.values() for f in e.fields.values()
    ):
        return Analysis()
    return _Analyser(model).run()


def has_derived(model: Model) -> bool:
    return any(
        f.formula is not None or f.rollup is not None for e in model.entities.values() for f in e.fields.values()
    )


__all__ = ["AGGREGATES", "Analysis", "Derived", "Read", "analyse", "has_derived", "member_of"]
