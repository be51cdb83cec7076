"""Pipelines and stages of an entity present in both model versions.

A record's stage is a text column; the stage history is a table of moves. Adding a stage or
a pipeline changes no table. Renaming one rewrites the value in the entity's table only:
the history keeps the names the moves had when they happened. Removing one is safe while no
record is in it, and refused (not supported yet) while records are.
"""

from __future__ import annotations

from sqlalchemy import case, func, insert, literal, null, or_, select
from sqlalchemy.sql import column as sql_column
from sqlalchemy.sql import table as sql_table

from ..model.metamodel import Entity, Pipeline
from ..storage import tables as storage_tables
from ..storage.types import UTCDateTime
from .context import DESTRUCTIVE, SAFE, Ctx, Phase, match, values_table
from .members import add_columns, drop_column, link_columns, set_nullable

BASE_COLUMNS = ("id", "created_at", "updated_at", "version", "owner")


def stage_columns(storage, entity: Entity) -> list:
    """The system columns a staged entity's table has for its stages (pipeline, stage...)."""
    taken = {*BASE_COLUMNS, *entity.fields}
    for link in entity.links.values():
        taken.update(link_columns(link))
    return [c for c in storage.table(entity.name).c if c.name not in taken]


def _bits(pipeline: Pipeline) -> dict[str, int]:
    """stage -> its bit in the ``reached`` mask (empty when storage keeps no such mask)."""
    stage_bits = getattr(storage_tables, "stage_bits", None)
    return stage_bits(pipeline) if stage_bits else {}


def stage_changes(ctx: Ctx, old: Entity, new: Entity) -> dict[str, str]:
    """Steps for the pipelines and stages; returns the stage columns both versions share."""
    if not old.has_stages and not new.has_stages:
        return {}
    if not old.has_stages:
        _gain_stages(ctx, old, new)
        return {}
    if not new.has_stages:
        _lose_stages(ctx, old, new)
        return {}
    o, n = old.name, new.name
    t = sql_table(o, sql_column("pipeline"), sql_column("stage"))
    pmap = match(old.pipelines, new.pipelines, lambda p: p.renamed_from)
    vt = values_table(n, *[ctx.sn.table(n).c[c] for c in ("pipeline", "stage")])
    multi = new.multi_pipeline or old.multi_pipeline
    for name, pipeline in new.pipelines.items():
        if name not in pmap:
            step = ctx.step("add_pipeline", n, name, SAFE, f"add pipeline {n}.{name} ({len(pipeline.stages)} stages)")
            step.measure = _zero
            continue
        op_name = pmap[name]
        if op_name != name:
            step = ctx.step(
                "rename_pipeline",
                n,
                name,
                SAFE,
                f"rename pipeline {n}.{op_name} → {name}: its records follow (the history keeps the old name)",
            )
            stmt = vt.update().where(vt.c.pipeline == op_name).values(pipeline=name)
            step.act(Phase.DATA, lambda ex, stmt=stmt: ex.execute(stmt), sub=1)
            step.measure = _count(t, t.c.pipeline == op_name)
        old_pipeline = old.pipelines[op_name]
        smap = match(old_pipeline.stages, pipeline.stages, lambda s: s.renamed_from)
        added = [s for s in pipeline.stages if s not in smap]
        _recompute_reached(ctx, n, o, old_pipeline, pipeline, smap)
        label = (lambda s, name=name: f"{name}.{s}") if multi else (lambda s: s)
        for stage in pipeline.stages:
            if stage not in smap:
                ctx.step("add_stage", n, label(stage), SAFE, f"add stage {n}.{label(stage)}").measure = _zero
            elif smap[stage] != stage:
                was = smap[stage]
                step = ctx.step(
                    "rename_stage",
                    n,
                    label(stage),
                    SAFE,
                    f"rename stage {n}.{label(was)} → {stage}: records in it follow (the history keeps the old name)",
                )
                stmt = vt.update().where(vt.c.pipeline == name, vt.c.stage == was).values(stage=stage)
                step.act(Phase.DATA, lambda ex, stmt=stmt: ex.execute(stmt), sub=2)
                step.measure = _count(t, (t.c.pipeline == op_name) & (t.c.stage == was))
        for stage in old_pipeline.stages:
            if stage in smap.values():
                continue
            hint = f"; if it was renamed to {', '.join(added)}, declare renamed_from: {stage}" if added else ""
            step = ctx.step(
                "remove_stage",
                n,
                label(stage),
                SAFE,
                f"remove stage {n}.{label(stage)} (refused while records are in it)",
            )
            step.measure = _refuse_if_any(
                t,
                (t.c.pipeline == op_name) & (t.c.stage == stage),
                f"not supported yet: stage {label(stage)} of {n} removed while {{count}} records are in it{hint}",
            )
    for op_name in old.pipelines:
        if op_name in pmap.values():
            continue
        step = ctx.step(
            "remove_pipeline", n, op_name, SAFE, f"remove pipeline {n}.{op_name} (refused while records are in it)"
        )
        step.measure = _refuse_if_any(
            t,
            t.c.pipeline == op_name,
            f"not supported yet: pipeline {op_name} of {n} removed while {{count}} records are in it",
        )
    return {c.name: c.name for c in stage_columns(ctx.sn, new) if c.name in ctx.so.table(o).c}


def _recompute_reached(ctx: Ctx, n: str, o: str, old_pipeline: Pipeline, pipeline: Pipeline, smap: dict) -> None:
    """The ``reached`` mask has one bit per stage, by position in the pipeline: when stages
    are added, renamed or removed, each record's mask is recomputed from its history (the
    stages it entered, under any of their names) and its current stage."""
    table = ctx.sn.table(n)
    if "reached" not in table.c or "reached" not in ctx.so.table(o).c:
        return
    if set(pipeline.stages) == set(old_pipeline.stages) and all(a == b for a, b in smap.items()):
        return
    bits = _bits(pipeline)
    history = ctx.sn.history_table
    ht = values_table(history.name, history.c.entity, history.c.record_id, history.c.to_stage)
    vt = values_table(n, table.c.id, table.c.pipeline, table.c.stage, table.c.reached)
    parts = []
    for name, stage in pipeline.stages.items():
        if not bits.get(name):
            continue
        names = {name, *stage.renamed_from, smap.get(name, name)}
        entered = (
            select(literal(1))
            .select_from(ht)
            .where(ht.c.entity == n, ht.c.record_id == vt.c.id, ht.c.to_stage.in_(sorted(names)))
            .exists()
        )
        parts.append(case((or_(vt.c.stage == name, entered), literal(bits[name])), else_=literal(0)))
    value = sum(parts[1:], parts[0]) if parts else literal(0)
    step = ctx.step(
        "recompute_reached",
        n,
        pipeline.name,
        SAFE,
        f"recompute the reached-stages mask of the {n} records in pipeline {pipeline.name} from their history "
        "(stage bits follow the declaration order)",
    )
    stmt = vt.update().where(vt.c.pipeline == pipeline.name).values(reached=value)
    step.act(Phase.DATA, lambda ex: ex.execute(stmt), sub=3)
    t = sql_table(o, sql_column("pipeline"))
    step.measure = _count(t, t.c.pipeline == old_pipeline.name)


def _gain_stages(ctx: Ctx, old: Entity, new: Entity) -> None:
    o, n = old.name, new.name
    first = next(iter(new.pipelines.values()))
    columns = stage_columns(ctx.sn, new)
    names = [c.name for c in columns]
    step = ctx.step(
        "add_pipeline",
        n,
        first.name,
        SAFE,
        f"{n} gets stages: add columns {', '.join(names)}; existing records start in "
        f"{first.name}.{first.initial} (a history row each)",
    )
    table = ctx.sn.table(n)
    add_columns(ctx, step, n, columns)
    vt = values_table(n, table.c.id, *columns)
    now = ctx.now
    values = {"pipeline": first.name, "stage": first.initial, "stage_entered_at": now}
    if "reached" in names:
        values["reached"] = _bits(first).get(first.initial, 0)
    step.act(Phase.DATA, lambda ex: ex.execute(vt.update().values(values)))
    history = ctx.sn.history_table
    ht = values_table(history.name, *history.c)
    rows = select(
        literal(n),
        vt.c.id,
        literal(first.name),
        null(),
        literal(first.initial),
        literal(now, UTCDateTime()),
        literal(ctx.user) if ctx.user else null(),
        literal("migration"),
        null(),
        literal("migrate"),
    ).select_from(vt)
    cols = [
        "entity",
        "record_id",
        "pipeline",
        "from_stage",
        "to_stage",
        "at",
        "by",
        "note",
        "seconds_in_stage",
        "source",
    ]
    step.act(Phase.DATA, lambda ex: ex.execute(insert(ht).from_select(cols, rows)), sub=1)
    for c in columns:
        if not c.nullable and c.server_default is None:
            set_nullable(step, n, o, c.name, False, f"make {c.name} required", c.type)
    ctx.clash(step, o, names)
    step.measure = ctx.count_rows(o)
    for pipeline in list(new.pipelines.values())[1:]:
        ctx.step("add_pipeline", n, pipeline.name, SAFE, f"add pipeline {n}.{pipeline.name}").measure = _zero


def _lose_stages(ctx: Ctx, old: Entity, new: Entity) -> None:
    o, n = old.name, new.name
    columns = stage_columns(ctx.so, old)
    names = ", ".join(c.name for c in columns)
    if ctx.allow_data_loss:
        step = ctx.step("remove_pipeline", n, None, DESTRUCTIVE, f"{n} loses its stages: drop columns {names}")
        for c in columns:
            drop_column(step, n, o, c.name, f"drop column {c.name}")
    else:
        step = ctx.step(
            "remove_pipeline",
            n,
            None,
            SAFE,
            f"kept: {n} loses its stages; columns {names} stay in the database, no longer part of the model",
        )
        for c in columns:
            if not c.nullable and c.server_default is None:
                set_nullable(step, n, o, c.name, True, f"keep {c.name} as an optional column")
    step.measure = ctx.count_rows(o)


def _count(t, clause):
    def measure(conn, step):
        step.count = conn.execute(select(func.count()).select_from(t).where(clause)).scalar_one()

    return measure


def _refuse_if_any(t, clause, message: str):
    def measure(conn, step):
        step.count = conn.execute(select(func.count()).select_from(t).where(clause)).scalar_one()
        if step.count:
            step.klass = DESTRUCTIVE
            step.refusal = message.format(count=step.count)

    return measure


def _zero(conn, step):
    step.count = 0
