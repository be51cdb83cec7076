"""Stage moves: the edge must exist, ``requires`` must be filled, ``when`` must hold, the
user's role must be allowed; then one transaction does a compare-and-swap update of the
record (``WHERE stage = :from AND version = :v``) and writes the history row.

Guards read the record inside the move's transaction; ``when`` conditions are evaluated by
the database with the same compiled SQL as filters, so a guard and a filter never disagree.
The graph itself is the compiled adjacency map of the Pipeline: no per-record machine.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.engine import Connection

from ..errors import ConflictError, TransitionError
from ..model.metamodel import Entity, Pipeline, Transition
from ..model.suggest import did_you_mean, listing
from ..storage import naming
from ..storage.tables import Storage
from ..storage.types import now_utc


def missing_requires(
    conn: Connection, storage: Storage, entity: Entity, row: Mapping, stage_name: str, pipeline: Pipeline
) -> list[str]:
    """The fields and links ``stage`` requires that the record has not filled."""
    missing = []
    for name in pipeline.stages[stage_name].requires:
        if name in entity.fields:
            value = row[name]
            if value is None or value == "" or value == []:
                missing.append(name)
            continue
        link = entity.links[name]
        if link.many:
            join = storage.join_table(entity.name, name)
            count = conn.execute(
                select(func.count()).select_from(join).where(join.c.source_id == row["id"])
            ).scalar_one()
            if not count:
                missing.append(name)
        elif row[naming.link_column(name)] is None:
            missing.append(name)
    return missing


def condition_holds(conn: Connection, storage: Storage, entity: Entity, record_id: int, when: str) -> bool:
    from ..expr import compile_sql

    table = storage.table(entity.name)
    clause = compile_sql(storage, entity.name, when, what="when")
    return conn.execute(select(table.c.id).where(and_(table.c.id == record_id, clause))).first() is not None


def reasons(
    conn: Connection,
    storage: Storage,
    entity: Entity,
    row: Mapping,
    pipeline: Pipeline,
    transition: Transition,
    roles: frozenset[str] | None,
) -> list[str]:
    """Why the move along ``transition`` is not possible now (empty: it is)."""
    out = []
    if transition.roles and roles is not None and not roles & set(transition.roles):
        out.append(f"only for roles: {', '.join(transition.roles)}")
    for name in missing_requires(conn, storage, entity, row, transition.target, pipeline):
        out.append(f"{name} is required")
    if transition.when and not condition_holds(conn, storage, entity, row["id"], transition.when):
        out.append(f"condition not met: {transition.when}")
    return out


def options(conn, storage, entity: Entity, row: Mapping, roles) -> list[dict]:
    """Every outgoing move from the record's stage, possible now or not, with reasons."""
    pipeline = entity.pipelines[row["pipeline"]]
    result = []
    for target, transition in pipeline.adjacency.get(row["stage"], {}).items():
        why = reasons(conn, storage, entity, row, pipeline, transition, roles)
        stage = pipeline.stages[target]
        result.append(
            {
                "stage": target,
                "label": stage.caption,
                "kind": stage.kind,
                "possible": not why,
                "reasons": why,
                **({"reopen": True} if transition.reopen else {}),
            }
        )
    return result


def _describe(moves: list[dict]) -> str:
    if not moves:
        return "none"
    parts = []
    for m in moves:
        parts.append(m["stage"] if m["possible"] else f"{m['stage']} ({'; '.join(m['reasons'])})")
    return ", ".join(parts)


def move(
    conn: Connection,
    storage: Storage,
    entity: Entity,
    row: Mapping,
    stage: str,
    *,
    by: str | None,
    roles: frozenset[str] | None,
    note: str | None = None,
    version: int | None = None,
) -> None:
    """Check and apply one move inside the caller's write transaction; raises on refusal."""
    what = f"{entity.name} {row['id']}"
    pipeline = entity.pipelines[row["pipeline"]]
    current = row["stage"]
    if version is not None and row["version"] != version:
        raise ConflictError(
            f"{what} was changed by someone else (now version {row['version']}, you had {version}); read it again"
        )
    if stage not in pipeline.stages:
        hint = did_you_mean(stage, pipeline.stages)
        raise TransitionError(
            f"{what}: unknown stage '{stage}'" + (f" ({hint})" if hint else "") + f"; stages of pipeline "
            f"'{pipeline.name}': {listing(pipeline.stages)}"
        )
    moves = options(conn, storage, entity, row, roles)
    if stage == current:
        raise TransitionError(f"{what} is already in stage '{stage}'; allowed next: {_describe(moves)}", moves)
    transition = pipeline.adjacency.get(current, {}).get(stage)
    if transition is None:
        closed = pipeline.stages[current]
        if closed.closed:
            raise TransitionError(
                f"{what} is {closed.kind} (stage '{current}'); it can leave only by a declared reopen "
                f"(reopen moves: {_describe(moves)})",
                moves,
            )
        raise TransitionError(f"{what}: no move from '{current}' to '{stage}'; allowed next: {_describe(moves)}", moves)
    chosen = next(m for m in moves if m["stage"] == stage)
    if not chosen["possible"]:
        raise TransitionError(
            f"{what}: cannot move from '{current}' to '{stage}': {'; '.join(chosen['reasons'])}; "
            f"allowed next: {_describe(moves)}",
            moves,
        )
    now = now_utc()
    table = storage.table(entity.name)
    target = pipeline.stages[stage]
    result = conn.execute(
        update(table)
        .where(table.c.id == row["id"], table.c.stage == current, table.c.version == row["version"])
        .values(
            stage=stage,
            version=table.c.version + 1,
            updated_at=now,
            stage_entered_at=now,
            closed_at=now if target.closed else None,
        )
    )
    if result.rowcount != 1:
        raise ConflictError(f"{what} was moved or changed by someone else meanwhile; read it again")
    entered = row["stage_entered_at"]
    conn.execute(
        insert(storage.history_table),
        {
            "entity": entity.name,
            "record_id": row["id"],
            "pipeline": pipeline.name,
            "from_stage": current,
            "to_stage": stage,
            "at": now,
            "by": by,
            "note": note,
            "seconds_in_stage": max(0, int((now - entered).total_seconds())) if entered else None,
            "source": "reopen" if transition.reopen else "move",
        },
    )
