"""``check_rule`` steps: a migration that adds (or changes) an entity's rule or a field's
``required_if`` on an entity that has records counts the records that break it.

Rules are not database constraints: the migration keeps every record as it is (nothing is
rewritten or refused), and a later write to a record that breaks a rule is refused until the
record is fixed. The step says how many there are and how to find them (``metacrm list
ENTITY --where 'not (CHECK)'``). Its count is informational (skipped when applying); a rule
that reads a member the same migration adds is not counted (it holds nothing yet).
"""

from __future__ import annotations

from sqlalchemy import Column, Table, and_, func, not_, select
from sqlalchemy.sql import visitors

from .context import SAFE, Ctx, Step

KIND = "check_rule"


def rule_steps(ctx: Ctx) -> None:
    """A ``check_rule`` step per rule or ``required_if`` new to an entity that existed."""
    if ctx.old is None:
        return
    for old_name, new_name in ctx.entity_names.items():
        old, new = ctx.old.entities[old_name], ctx.new.entities[new_name]
        known = {r.check for r in old.rules}
        for rule in new.rules:
            if rule.check not in known:
                _step(ctx, new_name, old_name, rule.name or "rules", f"rule '{rule.title}'", rule.check, None)
        for f in new.fields.values():
            before = old.fields.get(f.name)
            if f.required_if and (before is None or before.required_if != f.required_if):
                _step(ctx, new_name, old_name, f.name, f"required_if of {f.name}", f.required_if, f.name)


def _step(ctx: Ctx, entity: str, old_entity: str, target: str, what: str, expr: str, field: str | None) -> None:
    where = f"not ({expr})" if field is None else f"({expr}) and {field} is null"
    step = ctx.add(
        Step(
            KIND,
            entity,
            target,
            SAFE,
            f"{what}: records that break it are kept; a write to one is refused until it is fixed "
            f'(find them: metacrm list {entity} --where "{where}")',
        )
    )
    step.informational = True
    if old_entity != entity:
        return  # a renamed table: counted after the migration, with the list above
    query = _count_query(ctx, entity, expr, field)
    if query is not None:
        step.measure = lambda conn, s: setattr(s, "count", conn.execute(query).scalar_one())


def _count_query(ctx: Ctx, entity: str, expr: str, field: str | None):
    from ..errors import ExpressionError
    from ..expr import compile_sql

    table = ctx.sn.table(entity)
    try:
        clause = compile_sql(ctx.sn, entity, expr, what=f"{entity}: rule")
    except ExpressionError:
        return None  # reported by the model checks
    cond = not_(clause) if field is None else and_(clause, table.c[field].is_(None))
    query = select(func.count()).select_from(table).where(cond)
    for element in visitors.iterate(query):
        if isinstance(element, Column):
            owner = getattr(element.table, "element", element.table)
            if isinstance(owner, Table) and element.name not in ctx.live_columns(owner.name):
                return None  # reads what this migration adds: nothing to count yet
    return query


__all__ = ["KIND", "rule_steps"]
