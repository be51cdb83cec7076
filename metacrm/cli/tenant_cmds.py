"""``metacrm tenant create|list|drop``: the tenants of a database (docs/scaling.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from .alltenants import TenantsFileOpt
from .common import fail, load, refusals
from .data_cmds import DEFAULT_DB, DEFAULT_MODEL, DbOpt, FormatOpt, ModelOpt
from .output import Format, plural

NameArg = Annotated[str, typer.Argument(help="The tenant's name: lower-case letters, digits and _.")]


def _root_engine(db: str, *, create: bool = False):
    from ..runtime.engine import make_engine
    from .common import missing_database

    with refusals():
        engine = make_engine(db)
    if not create and (why := missing_database(db)) is not None:
        engine.dispose()
        fail(why)
    return engine


def create(
    ctx: typer.Context,
    name: NameArg,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    tenants_file: TenantsFileOpt = None,
) -> None:
    """Make tenant NAME in the database (a PostgreSQL schema, or an SQLite file beside the
    database's) and migrate it to its model: the one the tenants file gives it (its own line,
    else the file's default), else --model. A migration that fails leaves no tenant behind."""
    from ..runtime import tenants
    from ..runtime.crm import CRM
    from .alltenants import tenant_model

    loaded = load(tenant_model(ctx, name, model, tenants_file))
    engine = _root_engine(db, create=True)
    try:
        with refusals():
            tenants.create(engine, name)
            tenant = tenants.for_tenant(engine, name)
            try:
                with CRM(loaded, tenant) as crm:
                    plan = crm.migrate()
            except BaseException:
                tenants.drop(engine, name, force=True)  # nothing half-made stays registered
                raise
    finally:
        engine.dispose()
    typer.echo(f"created tenant {name}: {loaded.name} ({loaded.sha256[:12]}), {plural(len(plan), 'step')} applied")


create._no_tenant = True  # type: ignore[attr-defined]


def list_(db: DbOpt = DEFAULT_DB, format: FormatOpt = Format.table) -> None:
    """The tenants of the database, with the model each holds."""
    from sqlalchemy import inspect, select

    from ..io.dump import build_storage_system
    from ..runtime import tenants
    from ..runtime.engine import reading
    from .output import emit_records

    engine = _root_engine(db)
    rows = []
    try:
        with refusals():
            model_table = build_storage_system().model_table
            for name in tenants.names(engine):
                tenant = tenants.for_tenant(engine, name)
                try:
                    with reading(tenant) as conn:
                        recorded = None
                        if inspect(conn).has_table(model_table.name):
                            query = select(model_table.c.name, model_table.c.sha256, model_table.c.applied_at)
                            recorded = conn.execute(query.order_by(model_table.c.id.desc()).limit(1)).first()
                finally:
                    if tenant is not engine and tenant.dialect.name == "sqlite":
                        tenant.dispose()
                rows.append(
                    {
                        "tenant": name,
                        "model": recorded.name if recorded else None,
                        "sha256": recorded.sha256[:12] if recorded else None,
                        "migrated_at": recorded.applied_at if recorded else None,
                    }
                )
    finally:
        engine.dispose()
    if not rows and format is Format.table:
        typer.echo("(no tenants)")
        return
    emit_records(rows, format, columns=["tenant", "model", "sha256", "migrated_at"])


list_._no_tenant = True  # type: ignore[attr-defined]


def drop(
    name: NameArg,
    db: DbOpt = DEFAULT_DB,
    force: Annotated[bool, typer.Option("--force", help="Drop it even though it holds data.")] = False,
) -> None:
    """Remove tenant NAME (its schema or file). Refused while it holds data, unless --force."""
    from ..runtime import tenants

    engine = _root_engine(db)
    try:
        with refusals():
            rows = tenants.drop(engine, name, force=force)
    finally:
        engine.dispose()
    typer.echo(f"dropped tenant {name}" + (f" with {plural(rows, 'row')}" if rows else ""))


drop._no_tenant = True  # type: ignore[attr-defined]


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The tenants of a database: create, list, drop (docs/scaling.md).", no_args_is_help=True)
    group.command("create")(create)
    group.command("list")(list_)
    group.command("drop")(drop)
    app.add_typer(group, name="tenant")
