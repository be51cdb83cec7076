"""Pipelines and stages of an entity present in both model versions.

A record's stage is a text column; the stage history is a table of moves. Adding a stage or
a pipeline changes no table. Renaming one rewrites the value in the entity's table only:
the history keeps the names the moves had when they happened. Removing one is safe while no
record is in it; while records are, it needs a map (``stage_map`` on the pipeline,
``pipeline_map`` on the entity) saying where they go, and is refused (needs data) without.
A map's move is a move: a stage-history row (source ``migrate``) and a new version per record.
"""

from __future__ import annotations

from sqlalchemy import case, func, insert, literal, null, or_, select
from sqlalchemy.sql import column as sql_column
from sqlalchemy.sql import table as sql_table

from ..model.metamodel import Entity, Pipeline
from ..storage import tables as storage_tables
from ..storage.types import UTCDateTime
from .context import DESTRUCTIVE, NEEDS_DATA, SAFE, Ctx, Phase, counted, match, values_table
from .members import add_columns, drop_column, link_columns, set_nullable

BASE_COLUMNS = ("id", "created_at", "updated_at", "version", "created_by", "updated_by", "owner", "archived_at", "archived_by")


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
    mt = _move_table(ctx, n)
    multi = new.multi_pipeline or old.multi_pipeline
    gone = [p for p in old.pipelines if p not in pmap.values()]
    receiving = {new.pipeline_map[p].partition(".")[0] for p in gone if p in new.pipeline_map}
    for name, pipeline in new.pipelines.items():
        if name not in pmap:
            step = ctx.step("add_pipeline", n, name, SAFE, f"add pipeline {n}.{name} ({len(pipeline.stages)} stages)")
            step.measure = _zero
            if name in receiving:  # records of a removed pipeline move in (pipeline_map)
                _recompute_reached(ctx, n, o, pipeline, pipeline, {s: s for s in pipeline.stages}, force=True)
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
        _recompute_reached(ctx, n, o, old_pipeline, pipeline, smap, force=name in receiving)
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
            target = pipeline.stage_map.get(stage)
            in_it = (t.c.pipeline == op_name) & (t.c.stage == stage)
            if target in pipeline.stages:
                step = ctx.step(
                    "remove_stage",
                    n,
                    label(stage),
                    SAFE,
                    f"remove stage {n}.{label(stage)}: its records move to {target} (stage_map; the history keeps "
                    "the old name)",
                )
                moved = _moved(ctx, mt, n, name, mt.c.stage == stage, literal(name), literal(target), "stage_map")
                stmt = (
                    mt.update()
                    .where(mt.c.pipeline == name, mt.c.stage == stage)
                    .values(stage=target, closed_at=_closed_at(mt, pipeline, target, ctx.now), **_bumped(mt, ctx.now))
                )
                step.act(Phase.DATA, lambda ex, moved=moved: ex.execute(moved), sub=2)
                step.act(Phase.DATA, lambda ex, stmt=stmt: ex.execute(stmt), sub=2)
                step.measure = _count(t, in_it)
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
                in_it,
                f"needs data: stage {label(stage)} of {n} removed while {{records}} in it; declare "
                f"`stage_map: {{{{{stage}: STAGE}}}}` on the pipeline to move them to STAGE{hint}",
            )
    for op_name in gone:
        _remove_pipeline(ctx, old, new, op_name, t, mt)
    return {c.name: c.name for c in stage_columns(ctx.sn, new) if c.name in ctx.so.table(o).c}


def _moved(ctx: Ctx, mt, n: str, pipeline: str, where, to_pipeline, to_stage, why: str):
    """An INSERT of a stage-history row (source ``migrate``) per record of ``pipeline`` (and
    ``where``, a clause on the entity's table ``mt``) that a map moves: from its stage to
    ``to_stage`` of ``to_pipeline`` (SQL expressions over ``mt``), so that the history, the
    as-of funnel and the reached masks know where it went and when."""
    history = ctx.sn.history_table
    ht = values_table(history.name, *history.c)
    clause = mt.c.pipeline == pipeline
    if where is not None:
        clause = clause & where
    rows = (
        select(
            literal(n),
            mt.c.id,
            to_pipeline,
            mt.c.stage,
            to_stage,
            literal(ctx.now, UTCDateTime()),
            literal(ctx.user) if ctx.user else null(),
            literal(f"migration: {why}"),
            null(),
            literal("migrate"),
        )
        .select_from(mt)
        .where(clause)
    )
    cols = ["entity", "record_id", "pipeline", "from_stage", "to_stage", "at", "by", "note", "seconds_in_stage", "source"]
    return insert(ht).from_select(cols, rows)


def _move_table(ctx: Ctx, n: str):
    """The entity's table with the columns a map's move reads and writes."""
    table = ctx.sn.table(n)
    names = ("id", "pipeline", "stage", "closed_at", "stage_entered_at", "updated_at", "version")
    return values_table(n, *[table.c[c] for c in names if c in table.c])


def _bumped(mt, now) -> dict:
    """The values a record moved by a migration gets besides its stage: a new version (an
    edit opened before conflicts), the time of the change and of entering the stage."""
    out: dict = {"version": mt.c.version + 1, "updated_at": literal(now, UTCDateTime())}
    if "stage_entered_at" in mt.c:
        out["stage_entered_at"] = literal(now, UTCDateTime())
    return out


def _closed_at(mt, pipeline: Pipeline, stage, now):
    """closed_at of a record put into ``stage`` (an SQL expression) by a migration: kept (or
    now) in a won or lost stage, empty in an open one."""
    closed = [s.name for s in pipeline.stages.values() if s.closed]
    keep = func.coalesce(mt.c.closed_at, literal(now, UTCDateTime()))
    if isinstance(stage, str):  # one known stage
        return keep if stage in closed else null()
    if not closed:
        return null()
    return case((stage.in_(closed), func.coalesce(mt.c.closed_at, literal(now, UTCDateTime()))), else_=null())


def _remove_pipeline(ctx: Ctx, old: Entity, new: Entity, op_name: str, t, mt) -> None:
    """A removed pipeline: refused while records are in it, unless ``pipeline_map`` sends
    them to another pipeline (same-named stages kept, the others to the mapped stage)."""
    n = new.name
    in_it = t.c.pipeline == op_name
    mapped = new.pipeline_map.get(op_name)
    if mapped is None:
        step = ctx.step(
            "remove_pipeline", n, op_name, SAFE, f"remove pipeline {n}.{op_name} (refused while records are in it)"
        )
        step.measure = _refuse_if_any(
            t,
            in_it,
            f"needs data: pipeline {op_name} of {n} removed while {{records}} in it; declare "
            f"`pipeline_map: {{{{{op_name}: PIPELINE.STAGE}}}}` on {n} to move them",
        )
        return
    name, _, stage = mapped.partition(".")
    pipeline = new.pipelines[name]
    kept = [s for s in old.pipelines[op_name].stages if s in pipeline.stages]
    others = "the others to " + stage if stage else "records in other stages refused"
    step = ctx.step(
        "remove_pipeline",
        n,
        op_name,
        SAFE,
        f"remove pipeline {n}.{op_name}: its records move to pipeline {name} (pipeline_map; same-named stages kept, "
        f"{others}; the history keeps the old names)",
    )
    new_stage = case((mt.c.stage.in_(kept), mt.c.stage), else_=literal(stage)) if stage else mt.c.stage
    moved = _moved(ctx, mt, n, op_name, None, literal(name), new_stage, "pipeline_map")
    stmt = (
        mt.update()
        .where(mt.c.pipeline == op_name)
        .values(
            pipeline=name,
            stage=new_stage,
            closed_at=_closed_at(mt, pipeline, new_stage, ctx.now),
            **_bumped(mt, ctx.now),
        )
    )
    step.act(Phase.DATA, lambda ex: ex.execute(moved), sub=1)
    step.act(Phase.DATA, lambda ex: ex.execute(stmt), sub=1)
    count = _count(t, in_it)
    stray = in_it & t.c.stage.not_in(kept)

    def measure(conn, step):
        count(conn, step)
        if stage:
            return
        missing = conn.execute(select(func.count()).select_from(t).where(stray)).scalar_one()
        if missing:
            step.refusal = (
                f"needs data: {counted(missing)} of pipeline {op_name} of {n} {'is' if missing == 1 else 'are'} in "
                f"stages pipeline {name} does not "
                f"have; map it to a stage: `pipeline_map: {{{op_name}: {name}.STAGE}}`"
            )

    step.measure = measure


def _recompute_reached(
    ctx: Ctx, n: str, o: str, old_pipeline: Pipeline, pipeline: Pipeline, smap: dict, *, force: bool = False
) -> None:
    """The ``reached`` mask has one bit per stage, by position in the pipeline: when stages
    are added, renamed or removed, each record's mask is recomputed from its history (the
    stages it entered, under any of their names) and its current stage."""
    table = ctx.sn.table(n)
    if "reached" not in table.c or "reached" not in ctx.so.table(o).c:
        return
    unchanged = set(pipeline.stages) == set(old_pipeline.stages) and all(a == b for a, b in smap.items())
    if unchanged and not force:
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
            step.klass = NEEDS_DATA
            step.refusal = message.format(records=counted(step.count, verbs=("is", "are")))

    return measure


def _zero(conn, step):
    step.count = 0
