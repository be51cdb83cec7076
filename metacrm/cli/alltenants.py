"""``--all-tenants`` of ``migrate``, ``tick`` and ``deliver``: the same command for every tenant
of the database in turn (metacrm.runtime.tenants.run_all), one line per tenant, going on after
one that fails and exiting 1 naming the failures (docs/migrations.md, "Migrating every tenant")."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated

import typer

from .common import EXIT_REFUSED, current_tenant, fail, refusals, usage_error

AllTenantsOpt = Annotated[
    bool,
    typer.Option(
        "--all-tenants",
        help="Run for every tenant of the database in turn, each with its model from the tenants file "
        "(else --model); one line per tenant (docs/migrations.md).",
    ),
]
TenantsFileOpt = Annotated[
    str | None,
    typer.Option(
        "--tenants-file",
        envvar="METACRM_TENANTS_FILE",
        help="The tenants file mapping each tenant to its model (default ./tenants.yaml when there is one).",
    ),
]


def check_usage(format_name: str) -> None:
    """Exit 2 when --all-tenants is combined with a tenant of its own or a format it cannot print."""
    if current_tenant() is not None:
        usage_error("--all-tenants runs every tenant: leave out --tenant (and $METACRM_TENANT)")
    if format_name not in ("table", "json"):
        usage_error("--all-tenants prints table or json")


def tenant_map(path: str | None):
    """The tenants file (--tenants-file, $METACRM_TENANTS_FILE, ./tenants.yaml) or an empty map;
    its problems as FILE:LINE:COL on stderr and exit 2."""
    from ..runtime.tenants import TenantMap

    with refusals():
        return TenantMap.find(path)


def tenant_model(ctx: typer.Context, name: str, model: str, map_file: str | None) -> str:
    """The model file of tenant ``name``: the tenants file's (its line, else its default) when it
    has one, else ``model`` (--model). A --model typed on the command line that names another
    file is a usage error (exit 2): migrating a tenant to another business's model would add that
    model's tables beside its own."""
    from pathlib import Path

    mapping = tenant_map(map_file)
    mapped = mapping.model_for(name, None)
    if mapped is None:
        return model
    source = ctx.get_parameter_source("model")
    typed = source is not None and source.name == "COMMANDLINE"
    if typed and Path(model).resolve() != Path(mapped).resolve():
        usage_error(
            f"tenant {name} holds {mapped} (tenants file {mapping.file}), not --model {model}: "
            "leave out --model, or change the tenants file"
        )
    return mapped


def database(db: str) -> str:
    """``db`` when it names a database; an SQLite file that is not there is refused (exit 1),
    never created empty to find no tenants in it."""
    from .common import missing_database

    if (why := missing_database(db)) is not None:
        fail(why)
    return db


def run(
    db: str,
    map_file: str | None,
    model: str,
    work: Callable | None,
    line: Callable,
    *,
    json: bool,
    runner: Callable | None = None,
    **options,
):
    """The results of ``runner`` (default run_all with ``work``) over every tenant of ``db``:
    unless ``json``, each tenant's ``line(result)`` is printed as its turn ends. Then says on
    stderr which tenants the file lists that the database does not have."""
    from ..runtime import tenants
    from ..runtime.engine import make_engine

    mapping = tenant_map(map_file)
    url = database(db)
    options["on_result"] = None if json else (lambda result: typer.echo(line(result)))
    with refusals():
        engine = make_engine(url)  # one pool for every tenant on PostgreSQL
        try:
            if runner is None:
                results = tenants.run_all(engine, work, tenant_map=mapping, fallback_model=model, **options)
            else:
                results = runner(engine, mapping, model, **options)
            known = set(tenants.names(engine))
        finally:
            engine.dispose()
    for name in sorted(set(mapping.models) - known):
        typer.echo(
            f"note: the tenants file lists {name}, which is not a tenant of the database "
            f"(`metacrm tenant create {name}`)",
            err=True,
        )
    return results


def finish(results: Iterable, *, json: bool, failed: Callable | None = None) -> None:
    """After the lines :func:`run` printed, or as one JSON list of the results; then, when a
    tenant failed (its turn raised, or ``failed(result)``), exit 1 naming them on stderr."""
    from .output import to_json

    results = list(results)
    if json:
        typer.echo(to_json([result.to_dict() for result in results]))
    elif not results:
        typer.echo("(no tenants)")
    bad = [r.tenant for r in results if r.failed or (failed is not None and failed(r))]
    if bad:
        typer.echo(f"error: {len(bad)} of {len(results)} tenants failed: {', '.join(bad)}", err=True)
        raise typer.Exit(EXIT_REFUSED)


def seconds(result) -> str:
    return f"{result.seconds:.1f} s"
