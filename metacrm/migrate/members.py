"""Fields, links and the owner column of an entity present in both model versions."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import CheckConstraint, Column, ForeignKey, func, insert, literal, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.sql import column as sql_column
from sqlalchemy.sql import table as sql_table

from ..model.metamodel import Entity, Field, Link
from ..storage import naming
from ..storage.tables import ON_DELETE
from .context import (
    ADD_CONSTRAINT,
    ALTER_COLUMN,
    DESTRUCTIVE,
    DROP_COLUMN,
    DROP_CONSTRAINT,
    NEEDS_DATA,
    SAFE,
    Ctx,
    Phase,
    Step,
    counted,
    match,
    values_table,
)
from .execute import sqlite_pragma

# -- contributions shared with the entity and stage code ------------------------------------------


def set_nullable(step: Step, table: str, old_table: str | None, column: str, nullable: bool, why: str, type_=None):
    step.contribute(
        table,
        old_table,
        why,
        lambda b, ex: b.alter_column(column, nullable=nullable, existing_type=type_),
        ALTER_COLUMN,
    )


def drop_fk(step: Step, table: str, old_table: str | None, column: str, why: str) -> None:
    expected = naming.fk_name(old_table or table, column)

    def run(b, ex):
        name = ex.fk_name(table, column, expected)
        if name:
            b.drop_constraint(name, type_="foreignkey")

    step.contribute(table, old_table, why, run, DROP_CONSTRAINT)


def drop_column(step: Step, table: str, old_table: str | None, column: str, why: str) -> None:
    expected_check = naming.check_name(old_table or table, column)

    def run(b, ex):
        if ex.sqlite:  # batch mode would re-create an index or a CHECK naming the dropped column
            for ix in sa_inspect(ex.conn).get_indexes(table):
                if column in ix["column_names"]:
                    b.drop_index(ix["name"])
            check = ex.check_name(table, column, expected_check)
            if check:
                b.drop_constraint(check, type_="check")
        b.drop_column(column)

    step.contribute(table, old_table, why, run, DROP_COLUMN)


def add_columns(ctx: Ctx, step: Step, table: str, columns: list[Column]) -> None:
    """ALTER TABLE ADD COLUMN for each column: nullable (the caller makes it NOT NULL later,
    once filled), or NOT NULL with its server default; a choice's CHECK and a link's foreign
    key come with it (inline on SQLite, separate constraints on PostgreSQL)."""
    checks = {c.name: c for c in ctx.sn.metadata.tables[table].constraints if isinstance(c, CheckConstraint)}
    for col in columns:
        check_name = naming.check_name(table, col.name)
        check = checks.get(check_name)
        fks = [(fk.target_fullname, fk.ondelete, fk.name) for fk in col.foreign_keys]

        def run(ex, col=col, check=check, check_name=check_name, fks=fks):
            extra: list = [ForeignKey(target, ondelete=ondelete, name=name) for target, ondelete, name in fks]
            if check is not None and ex.sqlite:
                extra.append(CheckConstraint(str(check.sqltext), name=check_name))
            if col.server_default is not None:  # NOT NULL DEFAULT x: no rebuild, no fill needed
                new = Column(col.name, col.type, *extra, nullable=col.nullable, server_default=col.server_default.arg)
            else:
                new = Column(col.name, col.type, *extra, nullable=True)
            ex.op.add_column(table, new, inline_references=ex.sqlite or None)
            if check is not None and not ex.sqlite:
                ex.op.create_check_constraint(check_name, table, str(check.sqltext))

        step.act(Phase.ADD_COLUMN, run)


def fill_value(ctx: Ctx, entity: Entity, f: Field):
    """The field's ``fill`` as stored, or raises ValueError saying why it is not valid."""
    from ..validation.values import Invalid, field_coercer

    try:
        value = field_coercer(f, region=ctx.new.region or None, zone=ctx.new.timezone)(f.fill)
    except Invalid as exc:
        raise ValueError(f"fill {f.fill!r} is not a valid value of {entity.name}.{f.name}: {exc}") from None
    if value is None:
        raise ValueError(f"fill of {entity.name}.{f.name} is empty")
    return value


def _fill(ctx: Ctx, step: Step, entity: Entity, f: Field, table: str, *, only_null: bool) -> bool:
    """Add the UPDATE writing ``fill`` (True), or refuse the step when it is invalid."""
    try:
        value = fill_value(ctx, entity, f)
    except ValueError as exc:
        step.refusal = str(exc)
        return False
    if f.user_link:
        _fill_names_users(ctx, entity, f, [value] if isinstance(value, str) else value)
    col = ctx.new_column(table, f.name)
    t = values_table(table, col)
    stmt = t.update().values({f.name: value})
    if only_null:
        stmt = stmt.where(t.c[f.name].is_(None))
    step.act(Phase.DATA, lambda ex: ex.execute(stmt))
    return True


def _fill_names_users(ctx: Ctx, entity: Entity, f: Field, logins: list[str]) -> None:
    """A step refused while the ``fill`` of a ``to: user`` link names a login no user has."""
    step = ctx.step("check_fill", entity.name, f.name, SAFE, f"the fill of {entity.name}.{f.name} names stored users")
    users = sql_table(naming.USER_TABLE, sql_column("login"))

    def measure(conn, step):
        found = set(conn.execute(select(users.c.login).where(users.c.login.in_(logins))).scalars())
        missing = [login for login in logins if login not in found]
        step.count = len(missing)
        if missing:
            step.refusal = (
                f"fill of {entity.name}.{f.name} names no user '{missing[0]}': add the user first "
                f"(metacrm user add {missing[0]}), or fill another"
            )

    step.measure = measure


# -- fields ---------------------------------------------------------------------------------------


def fields_and_links(ctx: Ctx, old: Entity, new: Entity, rename: Step | None) -> tuple[dict, list]:
    """Steps for the fields, links and owner; returns the column map (old column -> new
    column of the entity table) and the matched many-links (old name, new name)."""
    colmap: dict[str, str] = {}
    fmap = match(old.fields, new.fields, lambda f: f.renamed_from)
    vacated = {o for n, o in fmap.items() if n != o}
    added = [n for n in new.fields if n not in fmap]
    for name, f in new.fields.items():
        if name in fmap:
            of = old.fields[fmap[name]]
            _field_changes(ctx, old, new, of, f, vacated)
            colmap[of.name] = f.name
        else:
            _add_field(ctx, old, new, f, vacated)
    for name, of in old.fields.items():
        if name not in fmap.values():
            similar = [a for a in added if new.fields[a].type == of.type]
            _remove_field(ctx, old, new, of, similar)
    lmap = match(old.links, new.links, lambda link: link.renamed_from)
    lvacated = {naming.link_column(o) for n, o in lmap.items() if n != o}
    ladded = [n for n in new.links if n not in lmap]
    many: list[tuple[str, str]] = []
    for name, link in new.links.items():
        if name in lmap:
            ol = old.links[lmap[name]]
            mapped = _link_changes(ctx, old, new, ol, link, lvacated, rename)
            if mapped is not None:
                colmap.update(mapped)
                if link.many:
                    many.append((ol.name, link.name))
                    from .linkfields import link_field_steps

                    link_field_steps(ctx, old, new, ol, link)  # the columns of its join table
            elif len(link_columns(ol)) == len(link_columns(link)):  # refused: its column stays as it is
                colmap.update(dict(zip(link_columns(ol), link_columns(link), strict=True)))
        else:
            _add_link(ctx, old, new, link, lvacated | vacated)
    for name, ol in old.links.items():
        if name not in lmap.values():
            similar = [a for a in ladded if _same_link(ctx, ol, new.links[a])]
            _remove_link(ctx, old, new, ol, similar)
    _owner(ctx, old, new)
    _archive(ctx, old, new)
    return colmap, many


def _field_changes(ctx: Ctx, old: Entity, new: Entity, of: Field, f: Field, vacated: set) -> bool:
    """Steps for one field present in both versions; False when its change is refused
    outright (its column then keeps its indexes untouched)."""
    o, n = old.name, new.name
    if of.name != f.name:
        step = ctx.step(
            "rename_field", n, f.name, SAFE, f"rename field {n}.{of.name} → {f.name} (column {of.name} → {f.name})"
        )
        step.act(Phase.RENAME_COLUMN, lambda ex: ex.op.alter_column(n, of.name, new_column_name=f.name))
        ctx.clash(step, o, [f.name], vacated)
        step.measure = ctx.count_values(o, [of.name])
    old_col = ctx.so.table(o).c[of.name]
    new_col = ctx.sn.table(n).c[f.name]
    if of.type != f.type or (of.decimals, of.whole_digits) != (f.decimals, f.whole_digits):
        from .typechange import change_type  # a type, or an exact number's scale or precision

        if not change_type(ctx, old, new, of, f):
            return False
    elif of.max_length != f.max_length:
        _max_length(ctx, o, n, of, f, old_col, new_col)
    if of.required != f.required:
        if f.required:
            step = ctx.step(
                "require_field",
                n,
                f.name,
                NEEDS_DATA,
                f"{n}.{f.name} becomes required"
                + (f"; records without a value get {f.fill!r}" if f.fill is not None else ""),
            )
            if f.fill is not None:
                _fill(ctx, step, new, f, n, only_null=True)
            set_nullable(step, n, o, f.name, False, f"make {f.name} required", new_col.type)
            t = sql_table(o, sql_column(of.name))
            has_fill = f.fill is not None

            def measure(conn, step, t=t):
                step.count = conn.execute(
                    select(func.count()).select_from(t).where(t.c[of.name].is_(None))
                ).scalar_one()
                if step.count and not has_fill and not step.refusal:
                    step.refusal = (
                        f"needs data: {counted(step.count, f'{o} record', ('has', 'have'))} no {of.name}; declare `fill: VALUE` on "
                        f"{n}.{f.name} to give them one"
                    )

            step.measure = measure
        else:
            step = ctx.step("optional_field", n, f.name, SAFE, f"{n}.{f.name} becomes optional")
            set_nullable(step, n, o, f.name, True, f"make {f.name} optional", new_col.type)
            step.measure = ctx.count_rows(o)
    if f.type == of.type and f.type in ("choice", "multichoice") and of.option_values != f.option_values:
        _options(ctx, o, n, of, f)
    if f.autonumber and f.autonumber != of.autonumber:
        step = ctx.step(
            "autonumber_field",
            n,
            f.name,
            SAFE,
            f"{n}.{f.name} becomes an autonumber {f.autonumber!r}; records without a value are numbered in id order",
        )
        _number(ctx, step, n, f)
        t = sql_table(o, sql_column(of.name))
        step.measure = _count_where(t, t.c[of.name].is_(None))
    return True


def _number(ctx: Ctx, step: Step, table: str, f: Field) -> None:
    """Number the rows without a value of a field that becomes an autonumber (runtime/sysfields.py)."""
    from ..runtime.sysfields import fill_existing

    model = ctx.new

    def run(ex):
        if ex.conn is not None:  # offline (the SQL of a dry run): the plan says what will be numbered
            fill_existing(ex.conn, model, table, f)

    step.act(Phase.DATA, run)


def _max_length(ctx: Ctx, o: str, n: str, of: Field, f: Field, old_col, new_col) -> None:
    was, now = of.max_length, f.max_length
    shown = f"{was or 'none'} → {now or 'none'}"
    if now is None or (was is not None and now > was):
        changes_type = str(old_col.type) != str(new_col.type)
        step = ctx.step(
            "widen_field",
            n,
            f.name,
            SAFE,
            f"max_length of {n}.{f.name}: {shown}"
            + (" (SQLite does not enforce lengths: nothing to change)" if ctx.sqlite and changes_type else ""),
        )
        if changes_type and not ctx.sqlite:
            step.act(
                Phase.ALTER,
                lambda ex: ex.op.alter_column(n, f.name, type_=new_col.type, existing_type=old_col.type),
            )
        step.measure = ctx.count_values(o, [of.name])
        return
    step = ctx.step(
        "shrink_field",
        n,
        f.name,
        NEEDS_DATA,
        f"max_length of {n}.{f.name}: {shown} (refused while longer values exist)"
        + (" (SQLite does not enforce lengths: the model does)" if ctx.sqlite else ""),
    )
    if not ctx.sqlite and str(old_col.type) != str(new_col.type):
        step.contribute(
            n,
            o,
            f"shorten {f.name}",
            lambda b, ex: b.alter_column(f.name, type_=new_col.type, existing_type=old_col.type),
            ALTER_COLUMN,
        )
    t = sql_table(o, sql_column("id"), sql_column(of.name))
    too_long = func.length(t.c[of.name]) > now

    def measure(conn, step):
        from ..validation.values import show

        step.count = conn.execute(select(func.count()).select_from(t).where(too_long)).scalar_one()
        if step.count:
            rows = conn.execute(select(t.c.id, t.c[of.name]).where(too_long).order_by(t.c.id).limit(3)).all()
            step.examples = [{"id": i, "value": v} for i, v in rows]
            shown_rows = ", ".join(f"id {i}: {show(v)} ({len(v)} characters)" for i, v in rows)
            s = "s" if step.count > 1 else ""
            step.refusal = (
                f"needs data: {step.count} value{s} of {n}.{f.name} {'are' if s else 'is'} longer than {now} "
                f"characters, e.g. {shown_rows}; shorten them first"
            )

    step.measure = measure


def _options(ctx: Ctx, o: str, n: str, of: Field, f: Field) -> None:
    new_options = {opt.value: opt for opt in f.options}
    omap = match(of.option_values, new_options, lambda opt: (opt.renamed_from,) if opt.renamed_from else ())
    renamed = [(omap[v], v) for v in f.option_values if v in omap and omap[v] != v]
    added = [v for v in f.option_values if v not in omap]
    removed = [v for v in of.option_values if v not in omap.values()]
    t = sql_table(o, sql_column(of.name))
    where = f"{n}.{f.name}"
    multi = f.type == "multichoice"
    steps = []
    for value in removed:
        holding = _holding(ctx, o, of, value)
        if value in f.option_map:
            target = f.option_map[value]
            gets = f"'{target}'" if target is not None else ("no value" if not multi else "it removed")
            step = ctx.step(
                "remove_option", n, f.name, SAFE, f"remove option '{value}' of {where}: records holding it get {gets}"
            )
            if not multi:
                stmt = values_table(n, ctx.sn.table(n).c[f.name]).update()
                stmt = stmt.where(stmt.table.c[f.name] == value).values({f.name: target})

                def run(ex, stmt=stmt):
                    sqlite_pragma(ex, "ignore_check_constraints = ON")  # the new CHECK comes with the rebuild
                    ex.execute(stmt)
                    sqlite_pragma(ex, "ignore_check_constraints = OFF")

                step.act(Phase.DATA, run, sub=5)
            step.measure = holding
            steps.append(step)
            continue
        hint = f" (if it was renamed to one of {', '.join(added)}, declare renamed_from: {value})" if added else ""
        step = ctx.step(
            "remove_option", n, f.name, SAFE, f"remove option '{value}' of {where} (refused while records hold it)"
        )

        def measure(conn, step, holding=holding, value=value, hint=hint):
            holding(conn, step)
            if step.count:
                step.klass = NEEDS_DATA
                step.refusal = (
                    f"needs data: option '{value}' of {where} removed while {counted(step.count, verbs=('holds', 'hold'))} it; "
                    "declare "
                    f"`option_map: {{{value}: OPTION}}` on {where} to give them another{hint}"
                )

        step.measure = measure
        steps.append(step)
    if multi:
        mapping = {a: b for a, b in renamed}
        mapping.update({v: f.option_map[v] for v in removed if v in f.option_map})
        for a, b in renamed:
            step = ctx.step("rename_option", n, f.name, SAFE, f"rename option of {where}: '{a}' → '{b}'")
            step.measure = _holding(ctx, o, of, a)
        for value in added:
            ctx.step("add_option", n, f.name, SAFE, f"add option '{value}' to {where}").measure = _zero
        if mapping:
            owner = next(s for s in ctx.steps[::-1] if s.entity == n and s.target == f.name)
            order = list(f.option_values)
            owner.act(Phase.DATA, lambda ex: _rewrite_multichoice(ex, ctx.sn.table(n), f.name, mapping, order), sub=5)
        return
    steps = []
    col = ctx.sn.table(n).c[f.name]
    vt = values_table(n, col)
    for a, b in renamed:
        step = ctx.step("rename_option", n, f.name, SAFE, f"rename option of {where}: '{a}' → '{b}'")
        stmt = vt.update().where(vt.c[f.name] == a).values({f.name: b})

        def run(ex, stmt=stmt):
            sqlite_pragma(ex, "ignore_check_constraints = ON")  # the new CHECK comes with the rebuild
            ex.execute(stmt)
            sqlite_pragma(ex, "ignore_check_constraints = OFF")

        step.act(Phase.DATA, run, sub=5)
        step.measure = _count_where(t, t.c[of.name] == a)
        steps.append(step)
    for value in added:
        step = ctx.step("add_option", n, f.name, SAFE, f"add option '{value}' to {where}")
        step.measure = _zero
        steps.append(step)
    if steps:
        _replace_check(ctx, steps[0], o, n, of.name, f.name)


def _contains(dialect: str, column: str, value: str):
    """SQL: the multichoice (JSON list) ``column`` holds ``value``."""
    import json

    from sqlalchemy import text

    def quote(s: str) -> str:
        return "'" + s.replace("'", "''") + "'"

    if dialect == "sqlite":
        return text(f'EXISTS (SELECT 1 FROM json_each("{column}") WHERE json_each.value = {quote(value)})')
    return text(f'"{column}" @> CAST({quote(json.dumps([value]))} AS jsonb)')


def _holding(ctx: Ctx, o: str, of: Field, value: str):
    """Measure: the records holding option ``value``."""
    t = sql_table(o, sql_column(of.name))
    if of.type == "choice":
        return _count_where(t, t.c[of.name] == value)
    return _count_where(t, _contains(ctx.dialect, of.name, value))


def _rewrite_multichoice(ex, table, column: str, mapping: dict, order: list) -> None:
    """Multichoice values holding a renamed or removed option, rewritten record by record
    (online only: the rows depend on the data). A list left empty becomes no value."""
    if ex.conn is None:
        return
    from sqlalchemy import bindparam, or_

    t = values_table(table.name, table.c.id, table.c[column])
    found = or_(*[_contains(ex.dialect, column, v) for v in mapping])
    rank = {v: i for i, v in enumerate(order)}
    updates = []
    for record_id, values in ex.conn.execute(select(t.c.id, t.c[column]).where(found)).all():
        chosen = {mapping.get(v, v) for v in values or ()}
        chosen.discard(None)
        new = sorted(chosen, key=lambda v: rank.get(v, len(rank))) or None
        updates.append({"_id": record_id, "_value": new})
    if updates:
        stmt = t.update().where(t.c.id == bindparam("_id")).values({column: bindparam("_value")})
        ex.conn.execute(stmt, updates)


def _replace_check(ctx: Ctx, step: Step, o: str, n: str, old_col: str, new_col: str) -> None:
    """The CHECK listing a choice's options, replaced: on PostgreSQL dropped before the
    values are renamed and added back after; on SQLite replaced by the table rebuild."""
    old_name = naming.check_name(o, old_col)
    new_name = naming.check_name(n, new_col)
    check = ctx.check_of(ctx.sn, n, new_name)
    condition = str(check.sqltext)
    ctx.replaced_checks.add((n, new_col))
    if ctx.sqlite:

        def run(b, ex):
            name = ex.check_name(n, new_col, old_name)
            if name:
                b.drop_constraint(name, type_="check")
            b.create_check_constraint(new_name, condition)

        step.contribute(n, o, f"new options of {new_col}", run, ADD_CONSTRAINT)
        return

    def drop(ex):
        name = ex.check_name(n, new_col, old_name)
        if name:
            ex.op.drop_constraint(name, n, type_="check")

    step.act(Phase.DATA, drop, sub=0)
    step.act(Phase.ALTER, lambda ex: ex.op.create_check_constraint(new_name, n, condition), sub=ADD_CONSTRAINT)


def _count_where(t, clause):
    def measure(conn, step):
        step.count = conn.execute(select(func.count()).select_from(t).where(clause)).scalar_one()

    return measure


def _zero(conn, step):
    step.count = 0


def _add_field(ctx: Ctx, old: Entity, new: Entity, f: Field, vacated: set) -> None:
    o, n = old.name, new.name
    flags = [w for w, on in (("required", f.required), ("unique", f.unique), ("indexed", f.index)) if on]
    text = f"add field {n}.{f.name} ({f.type}{', ' + ', '.join(flags) if flags else ''})"
    if f.fill is not None:
        text += f"; existing records get {f.fill!r}"
    if f.autonumber:
        text += f"; existing records are numbered {f.autonumber!r} in id order"
    step = ctx.step("add_field", n, f.name, NEEDS_DATA if f.required else SAFE, text)
    col = ctx.new_column(n, f.name)
    add_columns(ctx, step, n, [col])
    if f.fill is not None:
        _fill(ctx, step, new, f, n, only_null=False)
    if f.autonumber:
        _number(ctx, step, n, f)
    if f.required:
        set_nullable(step, n, o, f.name, False, f"make new {f.name} required", col.type)
    ctx.clash(step, o, [f.name], vacated)
    ctx.new_columns.add((n, f.name, f.fill is not None))
    required, has_fill = f.required, f.fill is not None
    rows = ctx.count_rows(o)

    def measure(conn, step):
        rows(conn, step)
        if required and not has_fill and step.count and not step.refusal:
            step.refusal = (
                f"needs data: {n}.{f.name} is required and the {counted(step.count, f'existing {o} record')} would have no "
                f"value; declare `fill: VALUE` on it"
            )

    step.measure = measure
    step.informational = not required and not has_fill and not f.autonumber  # the count decides nothing


def _remove_field(ctx: Ctx, old: Entity, new: Entity, of: Field, similar: list[str]) -> None:
    o, n = old.name, new.name
    if similar and not ctx.allow_data_loss:
        step = ctx.step(
            "possible_rename",
            n,
            of.name,
            DESTRUCTIVE,
            f"field {n}.{of.name} removed and {n}.{similar[0]} ({of.type}) added: a rename?",
        )
        step.refusal = (
            f"possible rename: {n}.{of.name} removed and {n}.{similar[0]} of the same type ({of.type}) added; if it "
            f"is a rename declare `renamed_from: {of.name}` on {similar[0]}, else pass --allow-data-loss to drop "
            f"{of.name}"
        )
    elif ctx.allow_data_loss:
        step = ctx.step("remove_field", n, of.name, DESTRUCTIVE, f"drop column {n}.{of.name} and its values")
        drop_column(step, n, o, of.name, f"drop column {of.name}")
    else:
        step = ctx.step(
            "remove_field",
            n,
            of.name,
            SAFE,
            f"kept: column {n}.{of.name} stays in the database with its values, no longer part of the model",
        )
        if of.required:
            set_nullable(step, n, o, of.name, True, f"keep {of.name} as an optional column")
    step.measure = ctx.count_values(o, [of.name])


# -- links ----------------------------------------------------------------------------------------


def _same_link(ctx: Ctx, a: Link, b: Link) -> bool:
    return {ctx.entity_names.get(t, t) for t in a.targets} == set(b.targets) and a.many == b.many


def link_columns(link: Link) -> list[str]:
    if link.many:
        return []
    cols = [naming.link_column(link.name)]
    if link.polymorphic:
        cols.insert(0, naming.link_entity_column(link.name))
    return cols


def _link_changes(
    ctx: Ctx, old: Entity, new: Entity, ol: Link, link: Link, vacated: set, rename: Step | None
) -> dict | None:
    o, n = old.name, new.name
    where = f"{n}.{link.name}"
    if ol.many != link.many:
        if link.many and not ol.polymorphic and not link.polymorphic and _same_link(ctx, ol, replace(link, many=False)):
            _becomes_many(ctx, old, new, ol, link)
        elif link.many:
            what = "a polymorphic link" if ol.polymorphic or link.polymorphic else "a link that changes its target"
            ctx.unsupported("change_link", n, link.name, f"link {where} becomes many: {what}", _count_link(ctx, o, ol))
        else:
            step = ctx.unsupported(
                "change_link",
                n,
                link.name,
                f"link {where} becomes single (a many-link's records may hold several targets)",
                _several_targets(naming.join_table_name(o, ol.name)),
            )
            step.klass = DESTRUCTIVE
            add_columns(ctx, step, n, [ctx.new_column(n, c) for c in link_columns(link)])  # what its index needs
        return None
    if {ctx.entity_names.get(t, t) for t in ol.targets} != set(link.targets):
        ctx.unsupported(
            "change_link",
            n,
            link.name,
            f"link {where} changes target: {', '.join(ol.targets)} → {', '.join(link.targets)}",
            _count_link(ctx, o, ol),
        )
        return None
    mapped = {}
    old_cols, new_cols = link_columns(ol), link_columns(link)
    mapped.update(dict(zip(old_cols, new_cols, strict=True)))
    step = None
    if ol.name != link.name:
        detail = (
            f"join table {naming.join_table_name(o, ol.name)} → {naming.join_table_name(n, link.name)}"
            if link.many
            else f"column {', '.join(old_cols)} → {', '.join(new_cols)}"
        )
        step = ctx.step("rename_link", n, link.name, SAFE, f"rename link {n}.{ol.name} → {link.name} ({detail})")
        for a, b in zip(old_cols, new_cols, strict=True):
            step.act(Phase.RENAME_COLUMN, lambda ex, a=a, b=b: ex.op.alter_column(n, a, new_column_name=b))
        ctx.clash(step, o, new_cols, vacated)
        step.measure = _count_link(ctx, o, ol)
    if link.many:
        old_join, new_join = naming.join_table_name(o, ol.name), naming.join_table_name(n, link.name)
        if old_join != new_join:
            owner = step or rename
            owner.act(Phase.RENAME_TABLE, lambda ex: ex.op.rename_table(old_join, new_join), sub=1)
            if ctx.live_has_table(new_join):
                owner.klass = DESTRUCTIVE
                owner.refusal = f"not supported yet: table {new_join} already exists in the database"
        if ol.on_delete != link.on_delete and (ol.on_delete == "restrict") != (link.on_delete == "restrict"):
            _on_delete(
                ctx,
                n,
                new_join,
                old_join,
                naming.JOIN_TARGET,
                link,
                ol,
                "RESTRICT" if link.on_delete == "restrict" else "CASCADE",
            )
        return mapped
    if ol.required != link.required:
        if link.required:
            step = ctx.step("require_link", n, link.name, NEEDS_DATA, f"link {where} becomes required")
            for c in new_cols:
                set_nullable(step, n, o, c, False, f"make {link.name} required")
            t = sql_table(o, sql_column(naming.link_column(ol.name)))

            def measure(conn, step, t=t):
                step.count = conn.execute(
                    select(func.count()).select_from(t).where(t.c[naming.link_column(ol.name)].is_(None))
                ).scalar_one()
                if step.count:
                    step.refusal = (
                        f"needs data: {counted(step.count, f'{o} record', ('has', 'have'))} no {ol.name}; link them first "
                        "(a link has no fill yet)"
                    )

            step.measure = measure
        else:
            step = ctx.step("optional_link", n, link.name, SAFE, f"link {where} becomes optional")
            for c in new_cols:
                set_nullable(step, n, o, c, True, f"make {link.name} optional")
            step.measure = ctx.count_rows(o)
    if ol.on_delete != link.on_delete and not link.polymorphic:
        _on_delete(ctx, n, n, o, naming.link_column(link.name), link, ol, ON_DELETE[link.on_delete])
    return mapped


def _becomes_many(ctx: Ctx, old: Entity, new: Entity, ol: Link, link: Link) -> None:
    """N:1 → N:M: the join table is created and every non-empty link copied into it; the old
    column is then treated as a removed link's (kept without its foreign key, or dropped
    with --allow-data-loss)."""
    o, n = old.name, new.name
    join = ctx.sn.join_table(n, link.name)
    column = naming.link_column(ol.name)
    step = ctx.step(
        "link_becomes_many",
        n,
        link.name,
        SAFE,
        f"link {n}.{link.name} becomes many: create join table {join.name} and copy the values of {column} into it",
    )
    from .diff import _create

    _create(ctx, step, join)
    if ctx.live_has_table(join.name):
        step.klass = DESTRUCTIVE
        step.refusal = (
            f"not supported yet: table {join.name} already exists in the database (kept from an earlier model version)"
        )
    jt = values_table(join.name, join.c[naming.JOIN_SOURCE], join.c[naming.JOIN_TARGET])
    src = sql_table(n, sql_column("id"), sql_column(column))
    copy = insert(jt).from_select(
        [naming.JOIN_SOURCE, naming.JOIN_TARGET], select(src.c.id, src.c[column]).where(src.c[column].is_not(None))
    )
    step.act(Phase.DATA, lambda ex: ex.execute(copy), sub=6)
    step.measure = ctx.count_values(o, [column])
    kept = _remove_link(ctx, old, new, ol, [])
    kept.kind = "old_link_column"
    kept.target = column
    kept.description = f"{link.name} is now many: " + kept.description.replace(
        "no longer part of the model", f"no longer part of the model (copied into {join.name})"
    )


def _several_targets(join: str):
    t = sql_table(join, sql_column(naming.JOIN_SOURCE))

    def measure(conn, step):
        several = select(t.c[naming.JOIN_SOURCE]).group_by(t.c[naming.JOIN_SOURCE]).having(func.count() > 1)
        step.count = conn.execute(select(func.count()).select_from(several.subquery())).scalar_one()
        step.refusal += f"; {counted(step.count, verbs=('has', 'have'))} more than one"

    return measure


def _on_delete(ctx: Ctx, n: str, table: str, old_table: str, column: str, link: Link, ol: Link, action: str):
    step = ctx.step(
        "change_on_delete",
        n,
        link.name,
        SAFE,
        f"on_delete of link {n}.{link.name}: {ol.on_delete} → {link.on_delete} (the foreign key is re-created)",
    )
    target = link.target
    name = naming.fk_name(table, column)
    ctx.replaced_fks.add((table, column))
    drop_fk(step, table, old_table, column, f"re-create the foreign key of {column}")
    step.contribute(
        table,
        old_table,
        f"re-create the foreign key of {column}",
        lambda b, ex: b.create_foreign_key(name, target, [column], ["id"], ondelete=action),
        ADD_CONSTRAINT,
    )
    step.measure = ctx.count_rows(old_table)


def _count_link(ctx: Ctx, o: str, ol: Link):
    if ol.many:
        return ctx.count_rows(naming.join_table_name(o, ol.name))
    return ctx.count_values(o, [naming.link_column(ol.name)])


def _add_link(ctx: Ctx, old: Entity, new: Entity, link: Link, vacated: set) -> None:
    o, n = old.name, new.name
    targets = ", ".join(link.targets)
    if link.many:
        join = ctx.sn.join_table(n, link.name)
        step = ctx.step(
            "add_link", n, link.name, SAFE, f"add many-link {n}.{link.name} → {targets}: create join table {join.name}"
        )
        from .diff import _create

        _create(ctx, step, join)
        if ctx.live_has_table(join.name):
            step.klass = DESTRUCTIVE
            step.refusal = f"not supported yet: table {join.name} already exists in the database (kept from an earlier model version)"
        step.measure = _zero
        return
    cols = link_columns(link)
    step = ctx.step(
        "add_link",
        n,
        link.name,
        NEEDS_DATA if link.required else SAFE,
        f"add link {n}.{link.name} → {targets} (column {', '.join(cols)})",
    )
    add_columns(ctx, step, n, [ctx.new_column(n, c) for c in cols])
    if link.required:
        for c in cols:
            set_nullable(step, n, o, c, False, f"make new {link.name} required")
    ctx.clash(step, o, cols, vacated)
    rows = ctx.count_rows(o)
    required = link.required

    def measure(conn, step):
        rows(conn, step)
        if required and step.count and not step.refusal:
            step.refusal = (
                f"needs data: link {n}.{link.name} is required and the {step.count} existing {o} records would have "
                "none; add it optional, link the records, then make it required"
            )

    step.measure = measure


def _remove_link(ctx: Ctx, old: Entity, new: Entity, ol: Link, similar: list[str]) -> Step:
    o, n = old.name, new.name
    cols = link_columns(ol)
    join = naming.join_table_name(o, ol.name)
    if similar and not ctx.allow_data_loss:
        step = ctx.step(
            "possible_rename",
            n,
            ol.name,
            DESTRUCTIVE,
            f"link {n}.{ol.name} removed and {n}.{similar[0]} added: a rename?",
        )
        step.refusal = (
            f"possible rename: link {n}.{ol.name} removed and {n}.{similar[0]} to the same target added; if it is a "
            f"rename declare `renamed_from: {ol.name}` on {similar[0]}, else pass --allow-data-loss to drop {ol.name}"
        )
    elif ctx.allow_data_loss:
        what = f"join table {join}" if ol.many else f"column {', '.join(cols)}"
        step = ctx.step("remove_link", n, ol.name, DESTRUCTIVE, f"drop link {n}.{ol.name}: {what} and its values")
        if ol.many:
            step.act(Phase.DROP, lambda ex: ex.op.drop_table(join))
        else:
            for c in cols:
                drop_column(step, n, o, c, f"drop column {c}")
    else:
        what = (
            f"join table {join} stays" if ol.many else f"column {', '.join(cols)} stay{'s' if len(cols) == 1 else ''}"
        )
        fk = "" if ol.polymorphic else " (its foreign key is dropped so that it blocks no delete)"
        step = ctx.step(
            "remove_link",
            n,
            ol.name,
            SAFE,
            f"kept: {what} in the database with its values, no longer part of the model{fk}",
        )
        if ol.many:
            drop_fk(step, join, join, naming.JOIN_TARGET, f"drop the foreign key of kept {join}")
        else:
            if not ol.polymorphic:
                drop_fk(step, n, o, naming.link_column(ol.name), f"drop the foreign key of kept {cols[-1]}")
            if ol.required:
                for c in cols:
                    set_nullable(step, n, o, c, True, f"keep {c} as an optional column")
    step.measure = _count_link(ctx, o, ol)
    return step


# -- owner ----------------------------------------------------------------------------------------


def _owner(ctx: Ctx, old: Entity, new: Entity) -> None:
    o, n = old.name, new.name
    if old.owner == new.owner:
        return
    if new.owner:
        step = ctx.step(
            "add_owner", n, "owner", SAFE, f"{n} gets an owner: add column owner (existing records have none)"
        )
        add_columns(ctx, step, n, [ctx.new_column(n, "owner")])
        ctx.clash(step, o, ["owner"])
        step.measure = ctx.count_rows(o)
    elif ctx.allow_data_loss:
        step = ctx.step("remove_owner", n, "owner", DESTRUCTIVE, f"drop column {n}.owner and its values")
        drop_column(step, n, o, "owner", "drop column owner")
        step.measure = ctx.count_values(o, ["owner"])
    else:
        step = ctx.step(
            "remove_owner",
            n,
            "owner",
            SAFE,
            f"kept: column {n}.owner stays in the database, no longer part of the model",
        )
        step.measure = ctx.count_values(o, ["owner"])


# -- archive --------------------------------------------------------------------------------------

ARCHIVE_COLUMNS = ("archived_at", "archived_by")


def _archive(ctx: Ctx, old: Entity, new: Entity) -> None:
    """``archive: true`` switched on: the two system columns are added (the records there stay
    live). Switched off: the columns are dropped, refused while records are archived (counted;
    restore or purge them first: docs/archive.md)."""
    o, n = old.name, new.name
    if old.archive == new.archive:
        return
    if new.archive:
        step = ctx.step(
            "add_archive",
            n,
            "archive",
            SAFE,
            f"{n} gets archive: add columns archived_at, archived_by (delete archives; existing records stay live)",
        )
        add_columns(ctx, step, n, [ctx.new_column(n, c) for c in ARCHIVE_COLUMNS])
        ctx.clash(step, o, ARCHIVE_COLUMNS)
        step.measure = ctx.count_rows(o)
        return
    step = ctx.step(
        "remove_archive",
        n,
        "archive",
        SAFE,
        f"{n} loses archive: drop columns archived_at, archived_by (delete removes records for good)",
    )
    for c in ARCHIVE_COLUMNS:
        drop_column(step, n, o, c, f"drop column {c}")
    t = sql_table(o, sql_column("archived_at"))
    archived = t.c.archived_at.is_not(None)

    def measure(conn, step: Step) -> None:
        step.count = conn.execute(select(func.count()).select_from(t).where(archived)).scalar_one()
        if step.count:
            step.klass = NEEDS_DATA
            step.refusal = (
                f"{counted(step.count, verbs=('is', 'are'))} archived; turning archive off would make them "
                f"live again: restore them (metacrm restore {n} ID) or purge them (metacrm purge {n} --archived) first"
            )

    step.measure = measure


__all__ = ["add_columns", "drop_column", "drop_fk", "fields_and_links", "literal", "set_nullable"]
