"""Path analysis of a pipeline: the ways from a stage to won, and what a record must have to
get there.

A stage's ``requires`` must be filled to *enter* it, so the price of a way (a simple path of
the forward graph, reopen moves left out) is the union of the ``requires`` of the stages it
enters. For each stage:

- ``needs``: the fields and links *every* way to a won stage requires (the intersection, over
  all simple paths, of their prices). Computed exactly, without listing the paths: a name is
  needed when removing every stage that requires it cuts the stage off from all won stages.
- ``cheapest``: the way with the smallest price (then the fewest moves), among the listed ones.
- ``routes``: the ways themselves, each with its price and the guards (``when``, ``roles``) of
  its moves; at most ``limit`` per won stage (``truncated`` says when there were more).
- ``can_win`` false: only lost stages can be reached from there.

Pure: a Pipeline in, frozen data out (``to_dict`` for JSON).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import networkx as nx

from ..model.metamodel import Entity, Pipeline
from .graphs import forward_graph

LIMIT = 100  # ways listed per (stage, won stage); the needs do not depend on it


@dataclass(frozen=True, slots=True)
class Route:
    """One way from a stage to a won stage."""

    stages: tuple[str, ...]
    requires: tuple[str, ...]  # the union of the requires of the stages entered, in order
    guards: tuple[Mapping, ...] = ()  # {"from", "to", "when"?, "roles"?} of guarded moves

    @property
    def target(self) -> str:
        return self.stages[-1]

    def to_dict(self) -> dict:
        return {
            "to": self.target,
            "stages": list(self.stages),
            "requires": list(self.requires),
            "guards": [dict(g) for g in self.guards],
        }


@dataclass(frozen=True, slots=True)
class StageOutlook:
    """What it takes to reach won from one stage."""

    stage: str
    kind: str
    can_win: bool
    needs: tuple[str, ...]
    cheapest: Route | None
    routes: tuple[Route, ...]
    truncated: bool = False

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "kind": self.kind,
            "can_win": self.can_win,
            "needs": list(self.needs),
            "cheapest": self.cheapest.to_dict() if self.cheapest else None,
            "routes": [r.to_dict() for r in self.routes],
            "truncated": self.truncated,
        }


@dataclass(frozen=True, slots=True)
class PipelineAnalysis:
    entity: str
    pipeline: str
    initial: str
    won: tuple[str, ...]
    lost: tuple[str, ...]
    stages: Mapping[str, StageOutlook]  # every stage, in declaration order

    @property
    def paths(self) -> tuple[Route, ...]:
        """The ways from the initial stage to each won stage."""
        start = self.stages.get(self.initial)
        return start.routes if start else ()

    @property
    def unwinnable(self) -> tuple[str, ...]:
        """Open stages from which only lost stages can be reached."""
        return tuple(s.stage for s in self.stages.values() if s.kind == "open" and not s.can_win)

    def to_dict(self) -> dict:
        return {
            "pipeline": self.pipeline,
            "initial": self.initial,
            "won": list(self.won),
            "lost": list(self.lost),
            "paths": [r.to_dict() for r in self.paths],
            "unwinnable": list(self.unwinnable),
            "stages": [s.to_dict() for s in self.stages.values()],
        }


def _ordered(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def _route(pipeline: Pipeline, path: list[str]) -> Route:
    requires = _ordered(name for stage in path[1:] for name in pipeline.stages[stage].requires)
    guards = []
    for source, target in zip(path, path[1:], strict=False):
        t = pipeline.adjacency[source][target]
        if t.when or t.roles:
            guard: dict = {"from": source, "to": target}
            if t.when:
                guard["when"] = t.when
            if t.roles:
                guard["roles"] = list(t.roles)
            guards.append(guard)
    return Route(tuple(path), requires, tuple(guards))


def _routes(graph: nx.DiGraph, pipeline: Pipeline, source: str, limit: int) -> tuple[list[Route], bool]:
    routes, truncated = [], False
    for won in pipeline.won:
        if won == source:
            routes.append(Route((source,), ()))
            continue
        count = 0
        for path in nx.all_simple_paths(graph, source, won):
            if count >= limit:
                truncated = True
                break
            routes.append(_route(pipeline, path))
            count += 1
    return routes, truncated


def _needed(graph: nx.DiGraph, pipeline: Pipeline, source: str, candidates: Iterable[str]) -> tuple[str, ...]:
    """The candidates that every way from ``source`` to a won stage requires (exact)."""
    won = set(pipeline.won)
    out = []
    for name in candidates:
        blocked = {s.name for s in pipeline.stages.values() if name in s.requires and s.name != source}
        rest = graph.subgraph(n for n in graph if n not in blocked)
        if not won & (nx.descendants(rest, source) | {source}):
            out.append(name)
    return tuple(out)


def analyse_pipeline(pipeline: Pipeline, *, limit: int = LIMIT) -> PipelineAnalysis:
    """The ways to won and what each stage needs to get there."""
    graph = forward_graph(pipeline)
    won = set(pipeline.won)
    outlooks: dict[str, StageOutlook] = {}
    for stage in pipeline.stages.values():
        name = stage.name
        ahead = nx.descendants(graph, name) if name in graph else set()
        can_win = name in won or bool(won & ahead)
        if not can_win:
            outlooks[name] = StageOutlook(name, stage.kind, False, (), None, ())
            continue
        routes, truncated = _routes(graph, pipeline, name, limit)
        cheapest = min(routes, key=lambda r: (len(r.requires), len(r.stages)), default=None)
        # every way's price includes the needs, so the cheapest way's order serves for them
        later = (n for s in pipeline.stages.values() if s.name in ahead for n in s.requires)
        order = _ordered([*(cheapest.requires if cheapest else ()), *later])
        needs = _needed(graph, pipeline, name, order)
        outlooks[name] = StageOutlook(name, stage.kind, True, needs, cheapest, tuple(routes), truncated)
    return PipelineAnalysis(
        entity=pipeline.entity,
        pipeline=pipeline.name,
        initial=pipeline.initial,
        won=pipeline.won,
        lost=pipeline.lost,
        stages=outlooks,
    )


def analyse_entity(entity: Entity, pipeline: str | None = None, *, limit: int = LIMIT) -> list[PipelineAnalysis]:
    """One analysis per pipeline of the entity (or of the one named)."""
    chosen = [entity.pipelines[pipeline]] if pipeline else list(entity.pipelines.values())
    return [analyse_pipeline(p, limit=limit) for p in chosen]


def paths_document(entity: Entity, pipeline: str | None = None, *, limit: int = LIMIT) -> dict:
    """``metacrm graph MODEL ENTITY --paths --format json``."""
    return {"entity": entity.name, "pipelines": [a.to_dict() for a in analyse_entity(entity, pipeline, limit=limit)]}


def paths_lines(entity: Entity, pipeline: str | None = None, *, limit: int = LIMIT) -> list[str]:
    """``metacrm graph MODEL ENTITY --paths``: the ways from the initial stage to each won
    stage (``PIPELINE: a -> b -> c``), then per open stage what reaching won needs: the fields
    every way requires and the guarded moves (``when``, ``roles``) every way passes."""
    lines = []
    for analysis in analyse_entity(entity, pipeline, limit=limit):
        p = analysis.pipeline
        for won in analysis.won:
            found = [r for r in analysis.paths if r.target == won]
            lines += [f"{p}: {' -> '.join(r.stages)}" for r in found]
            if not found:
                lines.append(f"{p}: no path to {won}")
        for outlook in analysis.stages.values():
            if outlook.kind != "open":
                continue
            if not outlook.can_win:
                lines.append(f"{p}: from {outlook.stage}, won is unreachable (only lost)")
                continue
            common = _common_guards(outlook.routes) if not outlook.truncated else ()
            needed = ", ".join([*outlook.needs, *common])
            if not needed:  # no field, no guard on every way: say so when each way has a guard of its own
                guarded = outlook.routes and all(r.guards for r in outlook.routes)
                needed = "no field, but every way passes a guarded move" if guarded else "nothing"
            line = f"{p}: from {outlook.stage}, won needs: {needed}"
            cheapest = outlook.cheapest
            if cheapest is not None:
                price = [*cheapest.requires, *map(_guard_text, cheapest.guards)]
                if set(price) != {*outlook.needs, *common}:
                    line += f"; cheapest way ({' -> '.join(cheapest.stages)}) needs: {', '.join(price)}"
            lines.append(line)
    return lines


def _guard_text(guard: Mapping) -> str:
    """A guarded move as the paths listing shows it: ``a -> b (when x > 0; role boss)``."""
    parts = [f"when {guard['when']}"] if guard.get("when") else []
    roles = list(guard.get("roles") or ())
    if roles:
        parts.append(f"{'role' if len(roles) == 1 else 'roles'} {' or '.join(roles)}")
    return f"{guard['from']} -> {guard['to']} ({'; '.join(parts)})"


def _common_guards(routes: Iterable[Route]) -> tuple[str, ...]:
    """The guarded moves every listed way passes (a condition or a role reaching won needs)."""
    texts = [[_guard_text(g) for g in r.guards] for r in routes]
    if not texts:
        return ()
    shared = set(texts[0]).intersection(*texts[1:])
    return tuple(t for t in texts[0] if t in shared)


def graph_document(entity: Entity, pipeline: str | None = None) -> dict:
    """``metacrm graph MODEL ENTITY --format json``: stages and moves as data."""
    chosen = [entity.pipelines[pipeline]] if pipeline else list(entity.pipelines.values())
    return {
        "entity": entity.name,
        "pipelines": [
            {
                "pipeline": p.name,
                "label": p.label,
                "initial": p.initial,
                "stages": [
                    {
                        "stage": s.name,
                        "label": s.label,
                        "kind": s.kind,
                        "probability": s.probability,
                        "requires": list(s.requires),
                        "sla": s.sla,
                    }
                    for s in p.stages.values()
                ],
                "transitions": [
                    {
                        "from": t.source,
                        "to": t.target,
                        "when": t.when,
                        "roles": list(t.roles),
                        "reopen": t.reopen,
                        "label": t.label,
                    }
                    for t in p.transitions
                ],
            }
            for p in chosen
        ],
    }


__all__ = [
    "PipelineAnalysis",
    "Route",
    "StageOutlook",
    "analyse_entity",
    "analyse_pipeline",
    "graph_document",
    "paths_document",
    "paths_lines",
]
