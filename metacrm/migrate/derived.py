"""Which derived fields (``formula:``, ``rollup:``) a migration must recompute, as plan steps.

A derived field is recomputed for every record after the other steps when it is new to an
existing entity, became derived, changed its formula, roll-up or type, or reads something the
migration changes: a member that a step of the plan adds, converts, renames or rewrites (an
option renamed, a stage mapped), anything of an entity changed as a whole (a rename, its
stages or pipelines), a new entity; and, in turn, every derived field that reads one of those
(the dependency order of ``metacrm.runtime.derived``). When in doubt a step counts as a
change: a needless recompute costs time, a missing one leaves wrong values. A derived field
of a new entity has no record to compute.

Each is a ``recompute_derived`` step (class safe, counted: the records of its entity; its SQL
the UPDATE it runs), listed after the steps that change the schema and data. The steps carry
no action: ``apply.fill_derived`` runs them (``recompute_statements``) once the others are done.
"""

from __future__ import annotations

from ..model.metamodel import Entity
from .context import SAFE, Ctx, Step, match

KIND = "recompute_derived"
# steps that change no value a derived field can read (or only members that no longer exist)
_NOT_INPUTS = frozenset(
    {
        KIND,
        "check_fill",
        "add_index",
        "drop_index",
        "rename_indexes",
        "add_unique",
        "drop_unique",
        "optional_field",
        "optional_link",
        "change_on_delete",
        "widen_field",
        "shrink_field",
        "add_option",
        "add_stage",
        "rebuild_table",  # its contributions belong to other steps, listed themselves
        "remove_field",
        "remove_link",
        "remove_owner",
        "add_archive",
        "remove_archive",
        "remove_entity",
        "possible_rename",
        "record_model",
        "add_system_columns",
        "widen_system_columns",
        "add_system_tables",
        "check_rule",
    }
)


def recompute_steps(ctx: Ctx) -> None:
    """Add a ``recompute_derived`` step per derived field the migration can have made stale."""
    from ..expr.derive import analyse, has_derived
    from ..runtime.derived import recompute_plan

    new = ctx.new
    if ctx.old is None or not has_derived(new):
        return
    analysis = analyse(new)
    if not analysis.order:
        return
    old_of = {n: o for o, n in ctx.entity_names.items()}  # new entity name -> old, for matched ones
    touched = _touched(ctx)
    why: dict[tuple[str, str], str] = {}
    for d in analysis.order:
        if d.entity not in old_of:
            continue  # a new entity: no records yet
        reason = _changed(ctx, old_of, touched, d)
        if reason is None:
            reason = next((f"it reads {dep[0]}.{dep[1]}, recomputed" for dep in d.depends if dep in why), None)
        if reason is not None:
            why[(d.entity, d.field)] = reason
    if not why:
        return
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = sqlite.dialect() if ctx.sqlite else postgresql.dialect(paramstyle="named")  # % as written
    for d, statement in recompute_plan(new, ctx.sn, list(why)):
        key = (d.entity, d.field)
        if key not in why:
            continue  # a dependent on a new entity: nothing to compute
        step = ctx.add(
            Step(KIND, d.entity, d.field, SAFE, f"recompute {d.kind} {d.label} for every record: {why[key]}")
        )
        step.sql.append(_sql(statement, dialect))
        table = ctx.so.table(old_of[d.entity]).name
        step.measure = ctx.count_rows(table) if ctx.live_has_table(table) else _zero


def _zero(conn, step: Step) -> None:
    step.count = 0


def _sql(statement, dialect) -> str:
    try:
        return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    except Exception:  # noqa: BLE001 - a value without a literal form: show it as a parameter
        return str(statement.compile(dialect=dialect))


def _touched(ctx: Ctx) -> dict[str, set | None]:
    """entity -> the members the plan's steps change (None: the entity as a whole)."""
    touched: dict[str, set | None] = {}
    for step in ctx.steps:
        if step.entity is None or step.kind in _NOT_INPUTS or step.entity not in ctx.new.entities:
            continue
        ent: Entity = ctx.new.entities[step.entity]
        members = touched.setdefault(step.entity, set())
        if members is None:
            continue
        if step.target is not None and (step.target in ent.fields or step.target in ent.links):
            members.add(step.target)
        elif step.target == "owner" and ent.owner:
            members.add("owner")
        else:  # a rename of the entity, a stage, a pipeline...: anything of it may have changed
            touched[step.entity] = None
    return touched


def _changed(ctx: Ctx, old_of: dict, touched: dict, d) -> str | None:
    """Why derived field ``d`` (of a matched entity) needs recomputing by itself, or None."""
    ent = ctx.new.entities[d.entity]
    old_ent = ctx.old.entities[old_of[d.entity]]
    f = ent.fields[d.field]
    names = match(old_ent.fields, ent.fields, lambda x: x.renamed_from)
    of = old_ent.fields.get(names.get(d.field, ""))
    if of is None:
        return "a new field"
    if of.formula is None and of.rollup is None:
        return "it becomes computed"
    if (of.formula, of.rollup) != (f.formula, f.rollup):
        return f"its {d.kind} changed"
    if of.type != f.type:
        return f"its type changed ({of.type} → {f.type})"
    for r in d.reads:
        if r.entity not in old_of:
            return f"it reads the new entity {r.entity}"
        if r.entity in touched and (touched[r.entity] is None or r.member in touched[r.entity]):
            what = r.entity if touched[r.entity] is None else f"{r.entity}.{r.member}"
            return f"it reads {what}, which the migration changes"
    return None


__all__ = ["KIND", "recompute_steps"]
