"""The model-level diff: two metamodel versions in, typed steps out (pure, no database).

Elements are matched by name, or by a declared ``renamed_from`` naming an element the new
version no longer has; renames are never guessed. An element only in the new version is
added; one only in the old version is removed: *kept* in the database (listed in the plan)
unless ``allow_data_loss``, then dropped. A removal next to an addition of the same type is
reported as a possible rename and refused until declared. Whatever else differs and cannot
be done safely yet becomes a "not supported yet" step that refuses the migration.

Entities are handled here; fields, links and owner in ``members.py``; pipelines and stages
in ``pipelines.py``; indexes, unique constraints and constraint names in ``names.py``.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, literal

from ..model.metamodel import Entity, Model
from ..storage import naming
from ..storage.types import now_utc
from . import ids, members, names, pipelines
from .audit import audit_columns
from .context import DESTRUCTIVE, SAFE, Ctx, Live, Phase, Step, match, values_table
from .derived import recompute_steps
from .execute import inline_contributions, rebuild_step
from .rules import rule_steps


def diff_models(
    old: Model | None,
    new: Model,
    *,
    dialect: str = "sqlite",
    allow_data_loss: bool = False,
    live: Live | None = None,
    user: str | None = None,
    now: dt.datetime | None = None,
) -> list[Step]:
    """The steps that take a database holding ``old`` (None: an empty database) to ``new``."""
    ctx = Ctx(old, new, dialect=dialect, allow_data_loss=allow_data_loss, live=live, user=user, now=now or now_utc())
    emap = match(old.entities if old else (), new.entities, lambda e: e.renamed_from)
    ctx.vacated = {o for n, o in emap.items() if n != o}
    ctx.entity_names = {o: n for n, o in emap.items()}
    removed = [o for o in (old.entities if old else ()) if o not in emap.values()]
    added = [n for n in new.entities if n not in emap]
    for name, entity in new.entities.items():
        if name in emap:
            _entity_changes(ctx, old.entities[emap[name]], entity)
        else:
            _add_entity(ctx, entity)
    for name in removed:
        similar = [n for n in added if _similar(old.entities[name], new.entities[n])]
        _remove_entity(ctx, old.entities[name], similar)
    _system_tables(ctx)
    ids.plan_steps(ctx)
    _finish(ctx)
    recompute_steps(ctx)
    rule_steps(ctx)
    _record(ctx)
    return sorted(ctx.steps, key=lambda step: step.phase)  # stable: the model's order within a phase


# -- entities -----------------------------------------------------------------------------------


def sorted_tables(metadata) -> list:
    """The tables in dependency order; links forming a cycle between tables (company.main_contact
    -> person, person.employer -> company) break the order somewhere, silently (see _create)."""
    import warnings

    from sqlalchemy.exc import SAWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SAWarning)
        return list(metadata.sorted_tables)


def _sorted_index(ctx: Ctx, table_name: str) -> int:
    order = [t.name for t in sorted_tables(ctx.sn.metadata)]
    return order.index(table_name) if table_name in order else len(order)


def _create(ctx: Ctx, step: Step, table) -> None:
    """Create ``table``. Its foreign keys to tables created after it (a cycle of links between
    entities) are added once every table exists: PostgreSQL checks that the table referred to
    exists (SQLite does not, and cannot add a constraint later: they stay in CREATE TABLE)."""
    here = _sorted_index(ctx, table.name)
    later = [
        fk
        for fk in table.foreign_key_constraints
        if not ctx.sqlite and fk.referred_table is not table and _sorted_index(ctx, fk.referred_table.name) > here
    ]
    if not later:
        step.act(Phase.CREATE, lambda ex, t=table: ex.op.impl.create_table(t), sub=here)
        return
    keep = [fk for fk in table.foreign_key_constraints if fk not in later]
    step.act(
        Phase.CREATE,
        lambda ex, t=table, k=keep: ex.op.impl.create_table(t, include_foreign_key_constraints=k),
        sub=here,
    )
    after = len(ctx.sn.metadata.tables)  # after every table of the plan
    for fk in later:
        step.act(Phase.CREATE, lambda ex, c=fk: ex.op.impl.add_constraint(c), sub=after + here)


def _add_entity(ctx: Ctx, entity: Entity) -> None:
    table = ctx.sn.table(entity.name)
    joins = [ctx.sn.join_table(entity.name, link.name) for link in entity.links.values() if link.many]
    also = f" and join table{'s' if len(joins) > 1 else ''} {', '.join(j.name for j in joins)}" if joins else ""
    step = ctx.step("add_entity", entity.name, None, SAFE, f"add entity {entity.name}: create table {table.name}{also}")
    for t in (table, *joins):
        _create(ctx, step, t)
    clashes = [t.name for t in (table, *joins) if ctx.live_has_table(t.name) and t.name not in ctx.vacated]
    if clashes:
        step.klass = DESTRUCTIVE
        step.refusal = (
            f"not supported yet: table {', '.join(clashes)} already exists in the database (kept from an earlier "
            "model version); give the entity another name"
        )
    step.measure = _zero
    ids.seed_new_entity(ctx, step, entity.name)


def _zero(conn, step: Step) -> None:
    step.count = 0


def _similar(old: Entity, new: Entity) -> bool:
    """Whether an added entity looks like a removed one renamed: most of its fields, same types."""
    if not old.fields:
        return False
    same = sum(1 for name, f in old.fields.items() if name in new.fields and new.fields[name].type == f.type)
    return same * 2 >= len(old.fields) and same >= 1


def _remove_entity(ctx: Ctx, entity: Entity, similar: list[str]) -> None:
    o = entity.name
    table = ctx.so.table(o)
    joins = [ctx.so.join_table(o, link.name) for link in entity.links.values() if link.many]
    if similar and not ctx.allow_data_loss:
        step = ctx.step(
            "possible_rename",
            o,
            None,
            DESTRUCTIVE,
            f"entity {o} removed and {similar[0]} added with the same fields: a rename?",
        )
        step.refusal = (
            f"possible rename: entity {o} removed and {similar[0]} added with the same fields; if it is a rename "
            f"declare `renamed_from: {o}` on {similar[0]}, else pass --allow-data-loss to drop {o}"
        )
    elif ctx.allow_data_loss:
        names_ = ", ".join(t.name for t in (table, *joins))
        step = ctx.step(
            "remove_entity", o, None, DESTRUCTIVE, f"drop table {names_} with every {o} record and its history"
        )
        for i, join in enumerate(joins):
            step.act(Phase.DROP, lambda ex, n=join.name: ex.op.drop_table(n), sub=i)
        order = [t.name for t in sorted_tables(ctx.so.metadata)]
        step.act(Phase.DROP, lambda ex: ex.op.drop_table(o), sub=1000 - order.index(o))
        history = values_table(naming.HISTORY_TABLE, ctx.sn.history_table.c.entity)
        step.act(Phase.DATA, lambda ex: ex.execute(delete(history).where(history.c.entity == literal(o))))
    else:
        step = ctx.step(
            "remove_entity",
            o,
            None,
            SAFE,
            f"kept: table {o} stays in the database with its records, no longer part of the model"
            + (" (its foreign keys are dropped so that it blocks no delete)" if _has_fks(table, joins) else ""),
        )
        for link in entity.links.values():
            if link.many:
                join = ctx.so.join_table(o, link.name)
                members.drop_fk(
                    step, join.name, join.name, naming.JOIN_TARGET, f"drop foreign keys of kept {join.name}"
                )
            elif not link.polymorphic:
                members.drop_fk(step, o, o, naming.link_column(link.name), f"drop foreign keys of kept table {o}")
    step.measure = ctx.count_rows(o)


def _has_fks(table, joins) -> bool:
    return bool(table.foreign_keys) or bool(joins)


def _entity_changes(ctx: Ctx, old: Entity, new: Entity) -> None:
    o, n = old.name, new.name
    rename = None
    if o != n:
        rename = ctx.step(
            "rename_entity",
            n,
            None,
            SAFE,
            f"rename entity {o} → {n}: table {o} → {n}; its stage history, journal, notifications and the "
            "polymorphic links naming it follow",
        )
        rename.act(Phase.RENAME_TABLE, lambda ex: ex.op.rename_table(o, n))
        for system in (ctx.sn.history_table, ctx.sn.journal_table, ctx.sn.outbox_table, ctx.sn.fired_table):
            named = values_table(system.name, system.c.entity)
            rename.act(
                Phase.DATA,
                lambda ex, t=named: ex.execute(t.update().where(t.c.entity == literal(o)).values(entity=literal(n))),
            )
        for entity in ctx.new.entities.values():
            for link in entity.links.values():
                if link.polymorphic and n in link.targets:
                    col = naming.link_entity_column(link.name)
                    t = values_table(entity.name, ctx.sn.table(entity.name).c[col])
                    rename.act(
                        Phase.DATA,
                        lambda ex, t=t, col=col: ex.execute(
                            t.update().where(t.c[col] == literal(o)).values({col: literal(n)})
                        ),
                    )
        if ctx.live_has_table(n) and n not in ctx.vacated:
            rename.klass = DESTRUCTIVE
            rename.refusal = (
                f"not supported yet: table {n} already exists in the database (kept from an earlier model version)"
            )
        rename.measure = ctx.count_rows(o)
    colmap, many = members.fields_and_links(ctx, old, new, rename)
    colmap.update(pipelines.stage_changes(ctx, old, new))
    colmap.update({c: c for c in ("id", "created_at", "updated_at", "version", *audit_columns(ctx, o, n))})
    if old.owner and new.owner:
        colmap["owner"] = "owner"
    if old.archive and new.archive:
        colmap.update(archived_at="archived_at", archived_by="archived_by")
    names.reconcile(ctx, n, ctx.so.table(o), ctx.sn.table(n), colmap)
    for old_link, new_link in many:
        old_join = ctx.so.join_table(o, old_link)
        new_join = ctx.sn.join_table(n, new_link)
        names.reconcile(ctx, n, old_join, new_join, {c: c for c in old_join.c.keys()})


# -- system tables, finishing, recording ----------------------------------------------------------


def _system_tables(ctx: Ctx) -> None:
    """metacrm's own tables: created when missing; a table the database has without a column
    this version of metacrm declares gets it (nullable, or NOT NULL with its server default)."""
    system = [t for t in sorted_tables(ctx.sn.metadata) if t.name.startswith(naming.SYSTEM_PREFIX)]
    for t in system:
        if not ctx.live_has_table(t.name):
            continue
        columns = [c for c in t.c if c.name not in ctx.live_columns(t.name)]
        if not columns:
            continue
        step = ctx.step(
            "add_system_columns",
            None,
            t.name,
            SAFE,
            f"add column{'s' if len(columns) > 1 else ''} {', '.join(c.name for c in columns)} to metacrm's table "
            f"{t.name}",
        )
        members.add_columns(ctx, step, t.name, columns)
        step.measure = ctx.count_rows(t.name)
    _widen_system_columns(ctx, system)
    missing = [t for t in system if not ctx.live_has_table(t.name)]
    if not missing:
        return
    step = ctx.step(
        "add_system_tables", None, None, SAFE, f"create metacrm's tables {', '.join(t.name for t in missing)}"
    )
    for t in missing:
        _create(ctx, step, t)
    step.measure = _zero


def _name_columns(ctx: Ctx) -> dict[str, set[str] | None]:
    """table -> the columns holding names (None: every column of one of metacrm's tables)."""
    out: dict[str, set[str] | None] = {}
    for t in ctx.sn.metadata.tables.values():
        if t.name.startswith(naming.SYSTEM_PREFIX):
            out[t.name] = None
    for ent in ctx.new.entities.values():
        names = {"pipeline", "stage"} if ent.has_stages else set()
        names |= {naming.link_entity_column(link.name) for link in ent.links.values() if link.polymorphic}
        if names:
            out[naming.table_name(ent.name)] = names
    return out


def _widen_system_columns(ctx: Ctx, system) -> None:
    """PostgreSQL: a column holding names (of entities, pipelines, stages) made by an older
    version as VARCHAR(30) is widened to what names may now be (63 characters), in metacrm's
    tables and in an entity's pipeline, stage and polymorphic link columns. SQLite does not
    enforce lengths."""
    if ctx.sqlite:
        return
    for name, only in sorted(_name_columns(ctx).items()):
        t = ctx.sn.metadata.tables.get(name)
        if t is None or not ctx.live_has_table(name):
            continue
        narrow = [
            c
            for c in t.c
            if (only is None or c.name in only)
            and getattr(c.type, "length", None)
            and ctx.live.lengths.get((t.name, c.name), c.type.length) < c.type.length
        ]
        if not narrow:
            continue
        owner = "metacrm's table " if only is None else ""
        step = ctx.step(
            "widen_system_columns",
            None,
            t.name,
            SAFE,
            f"widen column{'s' if len(narrow) > 1 else ''} {', '.join(c.name for c in narrow)} of "
            f"{owner}{t.name} to {max(c.type.length for c in narrow)} characters",
        )

        def run(ex, table=t.name, columns=tuple((c.name, c.type) for c in narrow)):
            for name, type_ in columns:
                ex.op.alter_column(table, name, type_=type_)

        step.act(Phase.ALTER, run)
        step.measure = ctx.count_rows(t.name)


def _finish(ctx: Ctx) -> None:
    """SQLite: one rebuild per table for the contributions; PostgreSQL: ALTER in place."""
    if not ctx.sqlite:
        for step in ctx.steps:
            inline_contributions(step)
        return
    by_table: dict[str, list] = {}
    entity_of: dict[str, str | None] = {}
    for step in ctx.steps:
        for c in step.contributions:
            by_table.setdefault(c.table, []).append(c)
            entity_of.setdefault(c.table, step.entity)
    entity_tables = {naming.table_name(e): e for e in ctx.new.entities}
    for table, contributions in by_table.items():
        entity = entity_tables.get(table)
        ids_of = (entity, ids.references(ctx.new, entity)) if entity else None
        step = ctx.add(rebuild_step(table, entity_of[table], contributions, ids_of=ids_of))
        old = next((c.old_table for c in contributions if c.old_table), None)
        step.measure = ctx.count_rows(old) if old and ctx.live_has_table(old) else _zero


def _record(ctx: Ctx) -> None:
    from .. import __version__

    new = ctx.new
    step = ctx.step(
        "record_model",
        None,
        None,
        SAFE,
        f"record model {new.name} ({new.sha256[:12]}) as the version this database holds",
    )
    step.sql.append(
        f"INSERT INTO {naming.MODEL_TABLE} (sha256, name, canonical, applied_at, applied_by, metacrm_version) "
        f"VALUES ('{new.sha256}', '{new.name}', '<canonical JSON of the model, {len(new.canonical)} characters>', "
        f"'{ctx.now.isoformat(timespec='seconds')}', "
        + (f"'{ctx.user}'" if ctx.user else "NULL")
        + f", '{__version__}')"
    )
