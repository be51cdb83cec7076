"""The step of a field whose type changes: counted (the values that would not convert, with a
few examples), refused while any would not, else converted in place.

PostgreSQL: ``ALTER COLUMN ... TYPE ... USING <conversion>``. SQLite: the column is converted
by the table rebuild (batch mode), its copy running the conversion expression instead of a
plain CAST. Text values the coercer accepts in a non-canonical spelling (``12,5``) are first
rewritten to the canonical one through a temporary table (one UPDATE for all of them).
"""

from __future__ import annotations

from sqlalchemy import Text, insert, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.sql import column as sql_column
from sqlalchemy.sql import table as sql_table

from ..model.metamodel import Entity, Field
from ..storage import naming
from .context import ADD_CONSTRAINT, ALTER_COLUMN, DESTRUCTIVE, DROP_CONSTRAINT, NEEDS_DATA, Ctx, Phase, Step
from .convert import Conversion, canonical_spelling, conversion
from .execute import sqlite_pragma

MAPPING_TABLE = "metacrm_tmp_convert"
EXAMPLES = 3


def _dialect(name: str):
    return sqlite_dialect.dialect() if name == "sqlite" else postgresql.dialect()


def change_type(ctx: Ctx, old: Entity, new: Entity, of: Field, f: Field) -> bool:
    """Steps for a type change; False when it is refused outright (no conversion)."""
    o, n = old.name, new.name
    where = f"{n}.{f.name}"
    rounding = f.round or ctx.allow_data_loss
    conv = conversion(of, f, ctx.dialect, ctx.new.region or None, round_=rounding)
    if isinstance(conv, str):
        step = ctx.step("change_type", n, f.name, DESTRUCTIVE, f"type of {where}: {of.type} → {f.type}")
        step.refusal = f"type of {where} cannot change from {of.type} to {f.type}: {conv}"
        step.measure = ctx.count_values(o, [of.name])
        return False
    dialect = _dialect(ctx.dialect)
    quote = dialect.identifier_preparer.quote
    old_col, new_col = ctx.so.table(o).c[of.name], ctx.sn.table(n).c[f.name]
    old_sql = old_col.type.compile(dialect=dialect)
    new_sql = new_col.type.compile(dialect=dialect)
    col = quote(f.name)
    expr = conv.expr(col)
    what = f"type of {where}: {of.type} → {f.type}"
    if of.type == f.type:
        what = f"scale of {where}: NUMERIC({_shape(of)}) → NUMERIC({_shape(f)})"
    elif of.decimals is not None and f.decimals is not None and of.decimals != f.decimals:
        what += f" (decimals {of.decimals} → {f.decimals})"
    step = ctx.step(
        "change_type",
        n,
        f.name,
        NEEDS_DATA,
        f"{what}; every value is converted (refused while any would not"
        + (", values with more decimals are rounded half away from zero)" if conv.rounded else ")"),
    )
    step.measure = _measure(ctx, conv, o, of, old_col.type, quote, where)
    if of.type == "choice":
        _drop_check(ctx, step, o, n, of.name, f.name)
    if conv.from_text and conv.coerce is not None:
        step.act(Phase.DATA, lambda ex: _rewrite(ex, step, conv, n, f.name, quote), sub=4)
    if ctx.sqlite:
        texts = ("TEXT", "VARCHAR")
        same = old_sql == new_sql or (old_sql.startswith(texts) and new_sql.startswith(texts))
        if expr is not None or not same:

            def run(b, ex):
                ex.conversions[f.name] = expr or col  # never SQLite's CAST (a date would become 2024)
                b.alter_column(f.name, type_=new_col.type, existing_type=old_col.type)

            step.contribute(n, o, f"convert {f.name} to {f.type}", run, ALTER_COLUMN)
        elif old_sql != new_sql:
            step.description += " (SQLite does not enforce lengths: the values are only checked)"
    elif old_sql != new_sql or expr is not None:
        using = expr or f"CAST({col} AS {new_sql})"
        step.contribute(
            n,
            o,
            f"convert {f.name} to {f.type}",
            lambda b, ex: b.alter_column(
                f.name, type_=new_col.type, existing_type=old_col.type, postgresql_using=using
            ),
            ALTER_COLUMN,
        )
    if f.type == "choice":
        _add_check(ctx, step, o, n, f.name)
    return True


def _shape(f: Field) -> str:
    return f"{f.decimals + f.whole_digits},{f.decimals}"


def _measure(ctx: Ctx, conv: Conversion, o: str, of: Field, old_type, quote, where: str):
    from ..validation.values import show

    col, table = quote(of.name), quote(o)
    dst = conv.dst
    target = dst.type if dst.decimals is None else f"{dst.type} with {dst.decimals} decimals"

    def measure(conn, step: Step) -> None:
        bad: list[tuple[int, object, int]] = []  # (first id, value, records)
        if conv.from_text:
            canonical = conv.canonical(col) if conv.canonical else None
            clause = f"{col} IS NOT NULL"
            if canonical:
                clause += f" AND (CASE WHEN {canonical} THEN 0 ELSE 1 END) = 1"
            rows = conn.execute(
                text(f"SELECT {col}, count(*), min(id) FROM {table} WHERE {clause} GROUP BY {col}")
            ).all()
            rewrites = []
            for value, count, first in rows:
                converts, spelled = canonical_spelling(conv, value)
                if not converts:
                    bad.append((first, value, count))
                elif spelled != value:
                    rewrites.append((value, spelled))
            step.rewrites = sorted(rewrites, key=lambda r: str(r[0]))  # type: ignore[attr-defined]
            if rewrites:
                a, b = step.rewrites[0]
                more = f"{len(rewrites)} spellings are" if len(rewrites) > 1 else "1 spelling is"
                step.description += f"; {more} normalised first (e.g. {show(a)} → {show(b)})"
            step.count = sum(count for _, _, count in bad)
            examples = sorted(bad, key=lambda b: b[0])[:EXAMPLES]
            shown = [(first, value) for first, value, _ in examples]
        else:
            if conv.rounded is not None:  # counted and named in the plan, then rounded
                rounded = conn.execute(
                    text(f"SELECT count(*) FROM {table} WHERE {col} IS NOT NULL AND ({conv.rounded(col)})")
                ).scalar_one()
                step.rounded = rounded  # type: ignore[attr-defined]
                if rounded:
                    many = rounded > 1
                    step.description += (
                        f"; {rounded} value{'s' if many else ''} of {where} "
                        f"{'lose' if many else 'loses'} digits and {'are' if many else 'is'} rounded"
                    )
            predicate = conv.bad(col) if conv.bad else None
            if not predicate:
                step.count = 0
                return
            clause = text(f"{col} IS NOT NULL AND ({predicate})")
            t = sql_table(o, sql_column("id"), sql_column(of.name, old_type))
            step.count = conn.execute(text(f"SELECT count(*) FROM {table} WHERE {clause.text}")).scalar_one()
            shown = [tuple(r) for r in conn.execute(select(t.c.id, t.c[of.name]).where(clause).order_by(t.c.id).limit(EXAMPLES))]
        if step.count:
            s = "s" if step.count > 1 else ""
            examples = ", ".join(f"id {first}: {show(value)}" for first, value in shown)
            step.examples = [{"id": first, "value": value} for first, value in shown]
            if target == "user":
                step.refusal = (
                    f"needs data: {step.count} value{s} of {where} name{'' if s else 's'} no user, e.g. {examples}; "
                    "add the users (metacrm user add LOGIN), or correct or empty the values first"
                )
            else:
                fix = "correct or empty them first"
                if dst.decimals is not None and of.decimals is not None and dst.decimals < of.decimals:
                    fix += f", or declare `round: true` on {where} to round them to {dst.decimals} decimals"
                step.refusal = (
                    f"needs data: {step.count} value{s} of {where} would not convert to {target}, e.g. {examples}; {fix}"
                )

    return measure


def _rewrite(ex, step: Step, conv: Conversion, table: str, column: str, quote) -> None:
    """Rewrite the text values the coercer accepts in another spelling (``12,5``) to the
    canonical one (``12.50``), through a temporary table: one UPDATE for all of them. Which
    values those are was read by the plan's count, in the same transaction (online without a
    count: read now; offline without one: none to show)."""
    rewrites = getattr(step, "rewrites", None)
    col, tbl = quote(column), quote(table)
    if rewrites is None and ex.conn is not None:
        canonical = conv.canonical(col) if conv.canonical else None
        clause = f"{col} IS NOT NULL"
        if canonical:
            clause += f" AND (CASE WHEN {canonical} THEN 0 ELSE 1 END) = 1"
        rewrites = []
        for (value,) in ex.conn.execute(text(f"SELECT DISTINCT {col} FROM {tbl} WHERE {clause}")):
            converts, spelled = canonical_spelling(conv, value)
            if converts and spelled != value:
                rewrites.append((value, spelled))
    if not rewrites:
        return
    mapping = sql_table(MAPPING_TABLE, sql_column("old", Text()), sql_column("new", Text()))
    temp = "TEMP TABLE" if ex.sqlite else "TEMPORARY TABLE"
    ex.execute(text(f"CREATE {temp} {MAPPING_TABLE} (old TEXT PRIMARY KEY, new TEXT)"))
    for i in range(0, len(rewrites), 500):
        chunk = rewrites[i : i + 500]
        ex.execute(insert(mapping).values([{"old": a, "new": b} for a, b in chunk]))
    sqlite_pragma(ex, "ignore_check_constraints = ON")
    ex.execute(
        text(
            f"UPDATE {tbl} SET {col} = (SELECT new FROM {MAPPING_TABLE} WHERE {MAPPING_TABLE}.old = {tbl}.{col}) "
            f"WHERE {col} IN (SELECT old FROM {MAPPING_TABLE})"
        )
    )
    sqlite_pragma(ex, "ignore_check_constraints = OFF")
    ex.execute(text(f"DROP TABLE {MAPPING_TABLE}"))


def _drop_check(ctx: Ctx, step: Step, o: str, n: str, old_col: str, new_col: str) -> None:
    """The CHECK of a choice column that stops being one (PostgreSQL: dropped before the
    values are rewritten; SQLite: by the rebuild)."""
    expected = naming.check_name(o, old_col)
    ctx.replaced_checks.add((n, new_col))
    if ctx.sqlite:

        def run(b, ex):
            name = ex.check_name(n, new_col, expected)
            if name:
                b.drop_constraint(name, type_="check")

        step.contribute(n, o, f"drop the options check of {new_col}", run, DROP_CONSTRAINT)
        return

    def drop(ex):
        name = ex.check_name(n, new_col, expected)
        if name:
            ex.op.drop_constraint(name, n, type_="check")

    step.act(Phase.DATA, drop, sub=0)


def _add_check(ctx: Ctx, step: Step, o: str, n: str, column: str) -> None:
    name = naming.check_name(n, column)
    check = ctx.check_of(ctx.sn, n, name)
    if check is None:
        return
    condition = str(check.sqltext)
    ctx.replaced_checks.add((n, column))
    step.contribute(
        n, o, f"options check of {column}", lambda b, ex: b.create_check_constraint(name, condition), ADD_CONSTRAINT
    )
