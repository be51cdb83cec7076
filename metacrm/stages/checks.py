"""Load-time checks of every stage graph: an initial stage that is open, every stage
reachable from it, a won or lost stage reachable from every open stage, nothing leaving a won
or lost stage except a declared reopen, no self-loops, no duplicate moves."""

from __future__ import annotations

from collections.abc import Iterator

import networkx as nx

from ..errors import Problem
from ..model.metamodel import DEFAULT_PIPELINE, Entity, Loc, Model, Pipeline
from .graphs import build_graph, closing_stages, forward_graph, reachable


def _problem(type_: str, message: str, loc: Loc, *, severity: str = "error", hint=None) -> Problem:
    return Problem(type_, message, loc.file, loc.line, loc.col, severity, (), hint)


def _where(entity: Entity, pipeline: Pipeline) -> str:
    if pipeline.name == DEFAULT_PIPELINE:
        return f"entity '{entity.name}'"
    return f"entity '{entity.name}', pipeline '{pipeline.name}'"


def check_pipeline(entity: Entity, pipeline: Pipeline) -> Iterator[Problem]:
    where = _where(entity, pipeline)
    stages = pipeline.stages
    seen: set[tuple[str, str]] = set()
    for t in pipeline.transitions:
        if t.source == t.target:
            yield _problem("transition.self_loop", f"{where}: transition from '{t.source}' to itself", t.loc)
        elif (t.source, t.target) in seen:
            yield _problem(
                "transition.duplicate",
                f"{where}: transition {t.source} -> {t.target} is declared twice",
                t.loc,
                severity="warning",
            )
        seen.add((t.source, t.target))
        if stages[t.source].closed and not t.reopen:
            yield _problem(
                "stage.final_exit",
                f"{where}: '{t.source}' is a {stages[t.source].kind} stage; a move out of it to '{t.target}' "
                "must be declared as a reopen",
                t.loc,
                hint=f"use the list form: {{from: {t.source}, to: {t.target}, reopen: true}}",
            )
        elif t.reopen and not stages[t.source].closed:
            yield _problem(
                "transition.reopen_open",
                f"{where}: transition {t.source} -> {t.target} is marked reopen, but '{t.source}' is not won or lost",
                t.loc,
                severity="warning",
            )
    if not pipeline.initial or pipeline.initial not in stages:
        return  # reported by the builder; reachability means nothing without a start
    initial = stages[pipeline.initial]
    if initial.closed:
        yield _problem(
            "stage.initial_closed",
            f"{where}: the initial stage '{initial.name}' is a {initial.kind} stage",
            initial.loc,
        )
        return
    closing = closing_stages(pipeline)
    if not pipeline.won:
        yield _problem("stage.no_won", f"{where}: no stage has kind: won", pipeline.loc, severity="warning")
    graph = build_graph(pipeline)
    seen_from_start = reachable(graph, pipeline.initial)
    for stage in stages.values():
        if stage.name not in seen_from_start:
            yield _problem(
                "stage.unreachable",
                f"{where}: stage '{stage.name}' cannot be reached from the initial stage '{pipeline.initial}'",
                stage.loc,
                hint="add a transition into it",
            )
    forward = forward_graph(pipeline)
    can_close = set(closing)
    for end in closing:
        can_close |= nx.ancestors(forward, end)
    if not closing:
        yield _problem(
            "stage.no_final",
            f"{where}: no stage has kind won or lost, so no record can ever be closed",
            pipeline.loc,
        )
        return
    for stage in stages.values():
        if not stage.closed and stage.name not in can_close:
            yield _problem(
                "stage.dead_end",
                f"{where}: from stage '{stage.name}' no won or lost stage can be reached "
                f"(it moves to: {', '.join(pipeline.next_stages(stage.name)) or 'nowhere'})",
                stage.loc,
            )


def check_graphs(model: Model, locator=None) -> list[Problem]:
    problems: list[Problem] = []
    for entity in model.entities.values():
        for pipeline in entity.pipelines.values():
            problems.extend(check_pipeline(entity, pipeline))
    return problems
