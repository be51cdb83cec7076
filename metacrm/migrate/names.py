"""Indexes, unique constraints and constraint names of a table present in both versions.

The old table's indexes and constraints are mapped through the column renames and compared
with the new table's, by columns: one only in the new table is added (a unique constraint
after counting duplicates), one only in the old table is dropped, one in both under another
name (the table or a column was renamed) is renamed so that names keep following
``storage/naming.py``. Indexes and constraints on columns the new model no longer has stay
with their column (kept, or dropped along with it).
"""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    ForeignKeyConstraint,
    PrimaryKeyConstraint,
    UniqueConstraint,
    and_,
    func,
    select,
    text,
)
from sqlalchemy.sql import column as sql_column
from sqlalchemy.sql import table as sql_table

from .context import ADD_CONSTRAINT, DROP_CONSTRAINT, NEEDS_DATA, SAFE, Ctx, Phase, quoted


def _mapped(cols, colmap) -> tuple | None:
    if all(c in colmap for c in cols):
        return tuple(colmap[c] for c in cols)
    return None


def reconcile(ctx: Ctx, entity: str, old_table, new_table, colmap: dict[str, str]) -> None:
    o, n = old_table.name, new_table.name
    renames: list[tuple[str, str, str]] = []  # (kind, old name, new name)
    # -- indexes
    old_ix = {}
    for ix in sorted(old_table.indexes, key=lambda ix: ix.name or ""):  # a set: sorted, so plans repeat
        cols = _mapped([c.name for c in ix.columns], colmap)
        if cols is not None:
            old_ix[cols] = ix.name
    new_ix = {
        tuple(c.name for c in ix.columns): ix.name for ix in sorted(new_table.indexes, key=lambda ix: ix.name or "")
    }
    for cols, name in new_ix.items():
        if cols not in old_ix:
            step = ctx.step("add_index", entity, ", ".join(cols), SAFE, f"add index {name} on {n} ({', '.join(cols)})")
            step.act(Phase.INDEX, lambda ex, name=name, cols=cols: ex.op.create_index(name, n, list(cols)), sub=1)
            step.measure = ctx.count_rows(o)
        elif old_ix[cols] != name:
            renames.append(("index", old_ix[cols], name, cols))
    for cols, name in old_ix.items():
        if cols not in new_ix:
            step = ctx.step("drop_index", entity, ", ".join(cols), SAFE, f"drop index {name} of {n}")
            step.act(Phase.DROP_INDEX, lambda ex, name=name: ex.op.drop_index(name, table_name=n))
            step.measure = _zero
    # -- unique constraints
    old_uq = {}
    for uq in old_table.constraints:
        if isinstance(uq, UniqueConstraint):
            cols = _mapped([c.name for c in uq.columns], colmap)
            if cols is not None:
                old_uq[cols] = uq.name
    new_uq = {
        tuple(c.name for c in uq.columns): uq.name for uq in new_table.constraints if isinstance(uq, UniqueConstraint)
    }
    reverse = {v: k for k, v in colmap.items()}
    for cols, name in new_uq.items():
        if cols not in old_uq:
            _add_unique(ctx, entity, o, n, name, cols, reverse)
        elif old_uq[cols] != name and not ctx.sqlite:  # SQLite keeps the old name (cosmetic)
            renames.append(("constraint", old_uq[cols], name, cols))
    for cols, name in old_uq.items():
        if cols not in new_uq:
            step = ctx.step(
                "drop_unique", entity, ", ".join(cols), SAFE, f"{', '.join(cols)} of {n} no longer unique ({name})"
            )

            def run(b, ex, cols=cols, name=name):
                b.drop_constraint(ex.unique_name(n, cols, name), type_="unique")

            step.contribute(n, o, f"drop unique {name}", run, DROP_CONSTRAINT)
            step.measure = _zero
    # -- names of checks, foreign keys and primary keys (PostgreSQL; SQLite keeps its old ones)
    if not ctx.sqlite:
        renames += _constraint_renames(ctx, old_table, new_table, colmap)
    if renames:
        shown = ", ".join(f"{a} → {b}" for _, a, b, _ in renames)
        step = ctx.step(
            "rename_indexes",
            entity,
            None if n == entity else n,
            SAFE,
            f"rename indexes and constraints of {n} to follow the new names: {shown}",
        )
        for kind, a, b, cols in renames:
            if kind == "index" and ctx.sqlite:  # SQLite cannot rename an index: drop and create
                step.act(Phase.DROP_INDEX, lambda ex, a=a: ex.op.drop_index(a, table_name=n))
                step.act(Phase.INDEX, lambda ex, b=b, cols=cols: ex.op.create_index(b, n, list(cols)), sub=1)
            elif kind == "index":
                step.act(
                    Phase.RENAME_COLUMN,
                    lambda ex, a=a, b=b: ex.execute(text(f"ALTER INDEX {quoted(ex, a)} RENAME TO {quoted(ex, b)}")),
                    sub=50,
                )
            else:
                step.act(
                    Phase.RENAME_COLUMN,
                    lambda ex, a=a, b=b: ex.execute(
                        text(f"ALTER TABLE {quoted(ex, n)} RENAME CONSTRAINT {quoted(ex, a)} TO {quoted(ex, b)}")
                    ),
                    sub=50,
                )
        step.measure = _zero


def _constraint_renames(ctx: Ctx, old_table, new_table, colmap) -> list:
    n = new_table.name
    out = []

    def key(c):
        cols = _mapped([col.name for col in c.columns], colmap) if not isinstance(c, CheckConstraint) else None
        if isinstance(c, CheckConstraint):
            col = _check_column(c)
            return ("check", colmap.get(col)) if col in colmap else None
        if cols is None:
            return None
        return (type(c).__name__, cols)

    def new_key(c):
        if isinstance(c, CheckConstraint):
            return ("check", _check_column(c))
        return (type(c).__name__, tuple(col.name for col in c.columns))

    kinds = (CheckConstraint, ForeignKeyConstraint, PrimaryKeyConstraint)
    old = {key(c): c.name for c in old_table.constraints if isinstance(c, kinds) and c.name and key(c)}
    for c in new_table.constraints:
        if not isinstance(c, kinds) or not c.name:
            continue
        k = new_key(c)
        if k in old and old[k] != c.name:
            if k[0] == "check" and (n, k[1]) in ctx.replaced_checks:
                continue
            if k[0] == "ForeignKeyConstraint" and (n, k[1][0]) in ctx.replaced_fks:
                continue
            out.append(("constraint", old[k], c.name, ()))
    return out


def _check_column(check: CheckConstraint) -> str:
    return str(check.sqltext).split(" ", 1)[0].strip('"')


def _one_to_one(ctx: Ctx, entity: str, cols: tuple):
    """The link made one-to-one (``unique: true``) whose columns are ``cols``, if any."""
    from ..storage import naming

    ent = ctx.new.entities.get(entity)
    for link in ent.links.values() if ent is not None else ():
        columns = (naming.link_entity_column(link.name),) if link.polymorphic else ()
        if link.unique and (*columns, naming.link_column(link.name)) == cols:
            return link
    return None


def _add_unique(ctx: Ctx, entity: str, o: str, n: str, name: str, cols: tuple, reverse: dict) -> None:
    link = _one_to_one(ctx, entity, cols)
    text = f"make {', '.join(cols)} of {n} unique ({name})"
    if link is not None:
        text = f"link {entity}.{link.name} becomes one-to-one: {text}"
    step = ctx.step("add_unique", entity, link.name if link else ", ".join(cols), NEEDS_DATA, text)
    step.contribute(
        n, o, f"add unique {name}", lambda b, ex: b.create_unique_constraint(name, list(cols)), ADD_CONSTRAINT
    )
    new_cols = {(t, c): filled for t, c, filled in ctx.new_columns if t == n}
    fresh = [c for c in cols if (n, c) in new_cols]
    if fresh:
        filled = all(new_cols[(n, c)] for c in fresh)
        count_rows = ctx.count_rows(o)

        def measure(conn, step):
            count_rows(conn, step)
            if filled and step.count > 1:
                step.refusal = (
                    f"needs data: the {step.count} existing {o} records would all get the same fill value in "
                    f"{', '.join(fresh)}, which must be unique"
                )
            else:
                step.count = 0

        step.measure = measure
        return
    old_cols = [reverse.get(c, c) for c in cols]
    so_table = ctx.so.table(o) if o in ctx.so.tables else ctx.so.metadata.tables[o]
    t = sql_table(o, *[sql_column(c, so_table.c[c].type) for c in old_cols])

    def measure(conn, step):
        n_ = func.count().label("n")
        query = (
            select(*[t.c[c] for c in old_cols], n_)
            .where(and_(*[t.c[c].is_not(None) for c in old_cols]))
            .group_by(*[t.c[c] for c in old_cols])
            .having(func.count() > 1)
            .order_by(func.count().desc())
        )
        rows = conn.execute(query).all()
        step.count = sum(r[-1] for r in rows)
        if rows:
            step.examples = [
                {"value": r[0] if len(old_cols) == 1 else list(r[:-1]), "records": r[-1]} for r in rows[:3]
            ]
            shown = ", ".join(f"{_show(e['value'])} ×{e['records']}" for e in step.examples)
            if link is not None:
                what = "target is" if len(rows) == 1 else "targets are"
                shown = ", ".join(
                    f"{_show(e['value']).strip('()').replace(', ', ' ')} ×{e['records']}"
                    if link.polymorphic
                    else f"{link.target} {e['value']} ×{e['records']}"
                    for e in step.examples
                )
                step.refusal = (
                    f"needs data: {len(rows)} {what} linked from more than one {entity} through {link.name} "
                    f"({step.count} records), e.g. {shown}; link each target from one {entity} only first"
                )
                return
            step.refusal = (
                f"needs data: {len(rows)} value{'s' if len(rows) > 1 else ''} of {', '.join(cols)} "
                f"{'are' if len(rows) > 1 else 'is'} held by more than one record ({step.count} records), e.g. {shown}; "
                "make them unique first"
            )

    step.measure = measure


def _show(value) -> str:
    if isinstance(value, list):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    return repr(value) if isinstance(value, str) else str(value)


def _zero(conn, step):
    step.count = 0
