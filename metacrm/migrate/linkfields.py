"""The fields of a many-link (columns of its join table) in a model change.

A field added to a link becomes a column of the join table: the pairs already linked get the
field's ``fill``, else its ``default`` (a required field with neither, on a table holding pairs,
is refused: "needs data"). A removed field's column is kept (optional from then on) or, with
``--allow-data-loss``, dropped with its values. A field that becomes required has its empty
values filled the same way (refused, with the count, when it has no fill or default); one
that becomes optional is relaxed. Changing a link field's type, length or options is not
supported yet (refused with the number of values it holds). Making a single link one-to-one
(``unique: true``) is a unique constraint on its column: names.py counts the records sharing a
target and refuses until they are resolved.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.sql import column as sql_column
from sqlalchemy.sql import table as sql_table

from ..model.metamodel import Entity, Field, Link
from ..storage import naming
from .context import DESTRUCTIVE, NEEDS_DATA, SAFE, Ctx, Phase, Step, counted, values_table
from .members import add_columns, drop_column, set_nullable


def link_field_steps(ctx: Ctx, old: Entity, new: Entity, ol: Link, link: Link) -> None:
    """Steps for the fields of a many-link present in both versions."""
    if not ol.fields and not link.fields:
        return
    tables = (naming.join_table_name(old.name, ol.name), naming.join_table_name(new.name, link.name))
    for name, f in link.fields.items():
        of = ol.fields.get(name)
        if of is None:
            _add(ctx, new, link, f, tables)
        else:
            _change(ctx, new, link, of, f, tables)
    for name, of in ol.fields.items():
        if name not in link.fields:
            _remove(ctx, new, link, of, tables)


def _where(new: Entity, link: Link, f: Field) -> str:
    return f"{new.name}.{link.name}.{f.name}"


def fill_of(ctx: Ctx, new: Entity, link: Link, f: Field):
    """What the stored pairs get: the field's ``fill``, else its ``default`` (coerced; ``today``
    and ``now`` are the day and time of the migration). Raises ValueError when invalid."""
    from ..validation.values import Invalid, field_coercer

    value = f.fill if f.fill is not None else f.default
    if value is None:
        return None
    if f.type == "date" and value == "today":
        return ctx.now.date()
    if f.type == "datetime" and value == "now":
        return ctx.now
    try:
        return field_coercer(f, region=ctx.new.region or None, zone=ctx.new.timezone)(value)
    except Invalid as exc:
        key = "fill" if f.fill is not None else "default"
        raise ValueError(f"{key} {value!r} is not a valid value of {_where(new, link, f)}: {exc}") from None


def _write_fill(ctx: Ctx, step: Step, new: Entity, link: Link, f: Field, table: str, *, only_null: bool) -> bool:
    """The UPDATE giving the stored pairs the fill (True when there is one to give)."""
    try:
        value = fill_of(ctx, new, link, f)
    except ValueError as exc:
        step.refusal = str(exc)
        return False
    if value is None:
        return False
    t = values_table(table, ctx.new_column(table, f.name))
    stmt = t.update().values({f.name: value})
    if only_null:
        stmt = stmt.where(t.c[f.name].is_(None))
    step.act(Phase.DATA, lambda ex: ex.execute(stmt))
    return True


def _add(ctx: Ctx, new: Entity, link: Link, f: Field, tables: tuple[str, str]) -> None:
    o, n = tables
    value = f.fill if f.fill is not None else f.default
    text = f"add field {_where(new, link, f)} ({f.type}{', required' if f.required else ''}): column of {n}"
    if value is not None:
        text += f"; the pairs already linked get {value!r}"
    step = ctx.step("add_link_field", new.name, f"{link.name}.{f.name}", NEEDS_DATA if f.required else SAFE, text)
    col = ctx.new_column(n, f.name)
    add_columns(ctx, step, n, [col])
    filled = _write_fill(ctx, step, new, link, f, n, only_null=False)
    if f.required:
        set_nullable(step, n, o, f.name, False, f"make new {f.name} required", col.type)
    ctx.clash(step, o, [f.name])
    _measure_empty(ctx, step, new, link, f, o, None, filled or step.refusal is not None)
    step.informational = not f.required and not filled


def _measure_empty(ctx: Ctx, step: Step, new: Entity, link: Link, f: Field, table: str, column, filled: bool):
    """Count the pairs (``column``: those without a value in it); a required field they would
    leave empty refuses the step."""
    t = sql_table(table, *([sql_column(column)] if column else []))
    where = f"{new.name}.{link.name}"

    def measure(conn, step):
        query = select(func.count()).select_from(t)
        if column:
            query = query.where(t.c[column].is_(None))
        step.count = conn.execute(query).scalar_one()
        if f.required and not filled and step.count and not step.refusal:
            step.refusal = (
                f"needs data: {counted(step.count, f'{where} pair')} linked would have no {f.name}; "
                f"declare `fill: VALUE` (or a default) on {_where(new, link, f)}"
            )

    step.measure = measure


def _change(ctx: Ctx, new: Entity, link: Link, of: Field, f: Field, tables: tuple[str, str]) -> None:
    o, n = tables
    where = _where(new, link, f)
    changed = [
        what
        for what, differs in (
            ("type", of.type != f.type),
            ("max_length", of.max_length != f.max_length),
            ("options", of.option_values != f.option_values),
        )
        if differs
    ]
    if changed:
        t = sql_table(o, sql_column(of.name))

        def measure(conn, step):
            step.count = conn.execute(select(func.count()).select_from(t).where(t.c[of.name].is_not(None))).scalar_one()

        ctx.unsupported(
            "change_link_field",
            new.name,
            f"{link.name}.{f.name}",
            f"the {', '.join(changed)} of {where} change{'s' if len(changed) == 1 else ''}; "
            "add a field of the new kind and remove this one",
            measure,
        )
        return
    if of.required == f.required:
        return
    col = ctx.new_column(n, f.name)
    if f.required:
        value = f.fill if f.fill is not None else f.default
        step = ctx.step(
            "require_link_field",
            new.name,
            f"{link.name}.{f.name}",
            NEEDS_DATA,
            f"{where} becomes required" + (f"; pairs without a value get {value!r}" if value is not None else ""),
        )
        filled = _write_fill(ctx, step, new, link, f, n, only_null=True)
        set_nullable(step, n, o, f.name, False, f"make {f.name} required", col.type)
        _measure_empty(ctx, step, new, link, f, o, of.name, filled or step.refusal is not None)
    else:
        step = ctx.step("optional_link_field", new.name, f"{link.name}.{f.name}", SAFE, f"{where} becomes optional")
        set_nullable(step, n, o, f.name, True, f"make {f.name} optional", col.type)
        step.measure = ctx.count_rows(o)


def _remove(ctx: Ctx, new: Entity, link: Link, of: Field, tables: tuple[str, str]) -> None:
    o, n = tables
    where = _where(new, link, of)
    if ctx.allow_data_loss:
        step = ctx.step(
            "remove_link_field", new.name, f"{link.name}.{of.name}", DESTRUCTIVE, f"drop column {n}.{of.name} ({where})"
        )
        drop_column(step, n, o, of.name, f"drop column {of.name}")
    else:
        step = ctx.step(
            "remove_link_field",
            new.name,
            f"{link.name}.{of.name}",
            SAFE,
            f"kept: column {n}.{of.name} ({where}) stays in the database with its values, no longer part of the model",
        )
        if of.required:
            set_nullable(step, n, o, of.name, True, f"keep {of.name} as an optional column")
    t = sql_table(o, sql_column(of.name))

    def measure(conn, step):
        step.count = conn.execute(select(func.count()).select_from(t).where(t.c[of.name].is_not(None))).scalar_one()

    step.measure = measure


__all__ = ["fill_of", "link_field_steps"]
