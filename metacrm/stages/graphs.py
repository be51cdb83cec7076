"""Stage graphs as networkx digraphs, for analysis (the hot path uses Pipeline.adjacency)."""

from __future__ import annotations

import networkx as nx

from ..model.metamodel import Pipeline


def build_graph(pipeline: Pipeline) -> nx.DiGraph:
    """A DiGraph whose nodes are the stages (with their Stage as ``stage``) and whose edges are
    the transitions (with their Transition as ``transition``)."""
    graph = nx.DiGraph(name=f"{pipeline.entity}.{pipeline.name}")
    for stage in pipeline.stages.values():
        graph.add_node(stage.name, stage=stage)
    for t in pipeline.transitions:
        if not graph.has_edge(t.source, t.target):
            graph.add_edge(t.source, t.target, transition=t)
    return graph


def reachable(graph: nx.DiGraph, start: str) -> set[str]:
    return {start} | nx.descendants(graph, start) if start in graph else set()


def closing_stages(pipeline: Pipeline) -> set[str]:
    return {s.name for s in pipeline.stages.values() if s.closed}


def forward_graph(pipeline: Pipeline) -> nx.DiGraph:
    """The graph without reopen moves: the way records go from the initial stage to closing."""
    graph = build_graph(pipeline)
    graph.remove_edges_from([(t.source, t.target) for t in pipeline.transitions if t.reopen])
    return graph
