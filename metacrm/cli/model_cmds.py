"""Commands about the model itself: check, schema, graph, erd."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer

from .common import EXIT_USAGE, choose, load, usage_error
from .output import plural


class CheckFormat(StrEnum):
    text = "text"
    json = "json"


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    json = "json"


def check(
    models: Annotated[list[str], typer.Argument(help="Model files to check.", metavar="MODEL...")],
    format: Annotated[
        CheckFormat, typer.Option("--format", "-f", help="text: one line per problem; json: one document.")
    ] = CheckFormat.text,
    strict: Annotated[bool, typer.Option(help="Warnings fail the check too.")] = False,
) -> None:
    """Validate models: every problem as FILE:LINE:COL: error: MESSAGE. Exit 0 valid, 2 invalid."""
    from ..model.loader import check_model_file

    results = []
    failed = False
    for path in models:
        problems, model = check_model_file(path)
        bad = model is None or (strict and problems)
        failed = failed or bad
        results.append((path, problems, model, bad))
    if format is CheckFormat.json:
        doc = [
            {
                "model": path,
                "valid": not bad,
                "entities": len(model.entities) if model else None,
                "sha256": model.sha256 if model else None,
                "problems": [p.to_dict() for p in problems],
            }
            for path, problems, model, bad in results
        ]
        typer.echo(json.dumps(doc if len(doc) > 1 else doc[0], ensure_ascii=False, indent=2))
    else:
        for path, problems, model, bad in results:
            for problem in problems:
                typer.echo(problem.format())
            if model is not None and not bad:
                pipelines = sum(len(e.pipelines) for e in model.entities.values())
                counts = ", ".join(
                    plural(n, noun, nouns)
                    for n, noun, nouns in (
                        (len(model.entities), "entity", "entities"),
                        (pipelines, "pipeline", None),
                        (len(problems), "warning", None),
                    )
                )
                typer.echo(f"{path}: ok ({counts})")
            else:
                errors = sum(1 for p in problems if p.is_error or strict)
                typer.echo(f"{path}: invalid ({plural(errors, 'error')})")
    if failed:
        raise typer.Exit(EXIT_USAGE)


def schema() -> None:
    """Print the JSON Schema of the YAML model format."""
    from ..model.schema import schema_text

    typer.echo(schema_text(), nl=False)


def graph(
    model: Annotated[str, typer.Argument(help="Model file.")],
    entity: Annotated[str, typer.Argument(help="Entity whose stage graph to draw.")],
    pipeline: Annotated[str | None, typer.Option(help="One pipeline (default: all of them).")] = None,
    format: Annotated[
        GraphFormat,
        typer.Option("--format", "-f", help="mermaid, dot, or json (the graph, or with --paths the paths)."),
    ] = GraphFormat.mermaid,
    paths: Annotated[
        bool,
        typer.Option(
            "--paths", help="List the paths from the initial stage to each won stage, and what each stage needs to win."
        ),
    ] = False,
) -> None:
    """Draw the stage graph of an entity (Mermaid or Graphviz DOT), or list its paths to won."""
    from ..stages import analysis, diagrams

    loaded = load(model)
    target = loaded.entities[choose(entity, loaded.entities, "entity")]
    if not target.pipelines:
        usage_error(f"entity '{entity}' has no stages")
    if pipeline is not None:
        choose(pipeline, target.pipelines, "pipeline")
    if format is GraphFormat.json:
        doc = analysis.paths_document(target, pipeline) if paths else analysis.graph_document(target, pipeline)
        typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
    elif paths:
        for line in analysis.paths_lines(target, pipeline):
            typer.echo(line)
    else:
        draw = diagrams.to_mermaid if format is GraphFormat.mermaid else diagrams.to_dot
        typer.echo(draw(target, pipeline), nl=False)


def erd(model: Annotated[str, typer.Argument(help="Model file.")]) -> None:
    """Draw entities and links as a Mermaid ER diagram."""
    from ..model.erd import to_mermaid_erd

    typer.echo(to_mermaid_erd(load(model)), nl=False)


def register(app: typer.Typer) -> None:
    app.command()(check)
    app.command()(schema)
    app.command()(graph)
    app.command()(erd)
