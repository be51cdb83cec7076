"""Stage graphs drawn as Mermaid state diagrams or Graphviz DOT: won/lost marked, the
probability on each open stage, the initial stage pointed at."""

from __future__ import annotations

from ..model.erd import mermaid_label, one_line
from ..model.metamodel import Entity, Pipeline, Stage


def _caption(stage: Stage) -> str:
    text = stage.caption
    if stage.kind != "open":
        text += f" [{stage.kind}]"
    elif stage.probability is not None:
        text += f" ({round(stage.probability * 100)}%)"
    if stage.sla:
        text += f" sla {stage.sla}"
    return text


def _quote(text: str) -> str:
    return one_line(text)


def _pipelines(entity: Entity, pipeline: str | None) -> list[Pipeline]:
    if pipeline is None:
        return list(entity.pipelines.values())
    return [entity.pipelines[pipeline]]


def to_mermaid(entity: Entity, pipeline: str | None = None) -> str:
    pipelines = _pipelines(entity, pipeline)
    nested = len(pipelines) > 1
    lines = ["stateDiagram-v2", f"    %% {entity.name}: {one_line(entity.caption)}"]
    for p in pipelines:
        indent = "    "
        prefix = f"{p.name}_" if nested else ""
        if nested:
            lines.append(f'    state "{mermaid_label(p.caption)}" as {p.name} {{')
            indent = "        "
        for stage in p.stages.values():
            lines.append(f'{indent}state "{mermaid_label(_caption(stage))}" as {prefix}{stage.name}')
        lines.append(f"{indent}[*] --> {prefix}{p.initial}")
        for t in p.transitions:
            label = t.label or ("reopen" if t.reopen else "")
            if t.when:
                label = f"{label} if {t.when}".strip()
            if t.roles:
                label = f"{label} [{', '.join(t.roles)}]".strip()
            suffix = f" : {mermaid_label(label)}" if label else ""
            lines.append(f"{indent}{prefix}{t.source} --> {prefix}{t.target}{suffix}")
        for stage in p.stages.values():
            if stage.closed:
                lines.append(f"{indent}{prefix}{stage.name} --> [*]")
        if nested:
            lines.append("    }")
    lines.append("    classDef won fill:#d4f7d4,stroke:#2a7a2a")
    lines.append("    classDef lost fill:#f7d4d4,stroke:#a02a2a")
    for p in pipelines:
        prefix = f"{p.name}_" if nested else ""
        for kind in ("won", "lost"):
            names = [f"{prefix}{s.name}" for s in p.stages.values() if s.kind == kind]
            if names:
                lines.append(f"    class {','.join(names)} {kind}")
    return "\n".join(lines) + "\n"


def to_dot(entity: Entity, pipeline: str | None = None) -> str:
    pipelines = _pipelines(entity, pipeline)
    lines = [f'digraph "{entity.name}" {{', "    rankdir=LR;", '    node [shape=box, style="rounded"];']
    for p in pipelines:
        prefix = f"{p.name}__"
        lines.append(f'    subgraph "cluster_{p.name}" {{')
        lines.append(f'        label="{_quote(p.caption)}";')
        lines.append(f'        "{prefix}start" [shape=point, label=""];')
        for stage in p.stages.values():
            style = {
                "won": ', shape=doublecircle, color="#2a7a2a"',
                "lost": ', shape=doublecircle, color="#a02a2a"',
            }.get(stage.kind, "")
            lines.append(f'        "{prefix}{stage.name}" [label="{_quote(_caption(stage))}"{style}];')
        lines.append(f'        "{prefix}start" -> "{prefix}{p.initial}";')
        for t in p.transitions:
            attrs = []
            if t.reopen:
                attrs.append("style=dashed")
            label = t.label or ""
            if t.when:
                label = f"{label} if {t.when}".strip()
            if t.roles:
                label = f"{label} [{', '.join(t.roles)}]".strip()
            if label:
                attrs.append(f'label="{_quote(label)}"')
            suffix = f" [{', '.join(attrs)}]" if attrs else ""
            lines.append(f'        "{prefix}{t.source}" -> "{prefix}{t.target}"{suffix};')
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"
