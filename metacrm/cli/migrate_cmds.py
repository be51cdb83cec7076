"""Schema commands: ``metacrm diff OLD NEW`` and ``metacrm migrate``."""

from __future__ import annotations

from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated

import typer

from .alltenants import AllTenantsOpt, TenantsFileOpt
from .common import fail, load, refusals
from .data_cmds import DEFAULT_DB, DEFAULT_MODEL, DbOpt, ModelOpt, opened
from .output import plural


class PlanFormat(StrEnum):
    table = "table"
    json = "json"


class Dialect(StrEnum):
    sqlite = "sqlite"
    postgresql = "postgresql"


PlanFormatOpt = Annotated[PlanFormat, typer.Option("--format", "-f", help="table or json.")]


def _emit(plan, format: PlanFormat, *, counts: bool, sql: bool) -> None:
    if format == PlanFormat.json:
        from .output import to_json

        typer.echo(to_json(plan.to_dict()))
    else:
        typer.echo(plan.format(counts=counts, sql=sql))


def diff(
    old: Annotated[str, typer.Argument(help="The model file as it was.")],
    new: Annotated[str, typer.Argument(help="The model file as it is now.")],
    format: PlanFormatOpt = PlanFormat.table,
    dialect: Annotated[Dialect, typer.Option("--dialect", help="Compile the SQL for this database.")] = Dialect.sqlite,
    sql: Annotated[bool, typer.Option("--sql", help="Also print the SQL each step would run.")] = False,
    allow_data_loss: Annotated[
        bool, typer.Option("--allow-data-loss", help="Plan drops of removed fields, links and entities.")
    ] = False,
) -> None:
    """What changed between two model files, as a migration would see it (no counts)."""
    from ..migrate import plan_migration

    old_model, new_model = load(old), load(new)
    with refusals():
        plan = plan_migration(old_model, new_model, dialect=dialect.value, allow_data_loss=allow_data_loss)
    _emit(plan, format, counts=False, sql=sql)


def migrate(
    ctx: typer.Context,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and its SQL; change nothing.")] = False,
    allow_data_loss: Annotated[
        bool, typer.Option("--allow-data-loss", help="Apply destructive steps: drop removed fields, links, entities.")
    ] = False,
    lock_wait: Annotated[
        float, typer.Option("--lock-wait", help="Seconds to wait for another running migration.")
    ] = 30.0,
    format: PlanFormatOpt = PlanFormat.table,
    all_tenants: AllTenantsOpt = False,
    tenants_file: TenantsFileOpt = None,
) -> None:
    """Bring the database to the model: plan (counted on the data), refuse or apply, record.
    With --all-tenants: every tenant of the database to its own model, one line each; with
    --tenant NAME: that tenant to its model (the tenants file's, else --model)."""
    from ..errors import MigrationError
    from .alltenants import tenant_model
    from .common import current_tenant, missing_database

    if all_tenants:
        _migrate_all(
            model,
            db,
            tenants_file,
            dry_run=dry_run,
            allow_data_loss=allow_data_loss,
            lock_wait=lock_wait,
            format=format,
        )
        return
    if current_tenant() is not None:
        model = tenant_model(ctx, current_tenant(), model, tenants_file)
    if dry_run and (why := missing_database(db)) is not None:
        # the plan for a new database, made on an empty one in memory: no file is created
        typer.echo(f"note: {why.split(':', 1)[0]} yet: the plan is for a new one; nothing was created", err=True)
        db = "sqlite://"
    with opened(model, db, create=not dry_run) as crm:
        try:
            with _progress_bar(enabled=not dry_run and format == PlanFormat.table):
                plan = crm.migrate(dry_run=dry_run, allow_data_loss=allow_data_loss, lock_wait=lock_wait)
        except MigrationError as exc:
            fail(str(exc))
        _emit(plan, format, counts=True, sql=dry_run)
        if dry_run and plan.refusals:
            fail(plan.reason())
        if not dry_run and format == PlanFormat.table and plan:
            typer.echo(f"migrated {crm.model.name} to {crm.model.sha256[:12]}: {plural(len(plan), 'step')} applied")


def _migrate_all(model: str, db: str, tenants_file: str | None, *, format: PlanFormat, **options) -> None:
    from ..runtime.tenants import migrate_all
    from . import alltenants

    alltenants.check_usage(format.value)

    def line(result) -> str:
        if result.failed:
            return f"{result.tenant}: FAILED: {result.error}"
        if result.status == "up to date":
            return f"{result.tenant}: up to date"
        plan = result.value
        done = "applied" if result.status == "applied" else "to apply (dry run)"
        return f"{result.tenant}: {plural(len(plan), 'step')} {done} ({alltenants.seconds(result)}): {_kinds(plan)}"

    json = format == PlanFormat.json
    results = alltenants.run(db, tenants_file, model, None, line, json=json, runner=migrate_all, **options)
    alltenants.finish(results, json=json)


def _kinds(plan) -> str:
    """``add field ×2, record model``: the plan's steps by kind, in order."""
    from collections import Counter

    kinds = Counter(step.kind.replace("_", " ") for step in plan)
    return ", ".join(f"{kind} ×{n}" if n > 1 else kind for kind, n in kinds.items())


@contextmanager
def _progress_bar(*, enabled: bool):
    """A progress bar over the steps being applied, on stderr when it is a terminal."""
    import sys

    if not enabled or not sys.stderr.isatty():
        yield
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..migrate.apply import reporting

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("migrating", total=None)

        def show(done: int, total: int, step) -> None:
            what = f"{step.kind.replace('_', ' ')} {step.where}" if step is not None else "recording the model"
            bar.update(task, completed=done, total=total, description=what)

        with reporting(show):
            yield


def register(app: typer.Typer) -> None:
    app.command()(diff)
    app.command()(migrate)
