"""``metacrm demo``: build a working CRM from the examples and show it."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from .common import fail, refusals
from .output import reference_text, to_pairs

HIDDEN = ("created_at", "updated_at", "version", "created_by", "updated_by", "stage_entered_at", "closed_at")
RELATED_SHOWN = 3
LATEST_DEALS = 8


def demo(
    ctx: typer.Context,
    directory: Annotated[str, typer.Option("--dir", help="Where to build the demo.")] = "demo",
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild over an existing demo (only its own files are replaced).")
    ] = False,
) -> None:
    """Build a working CRM in ./demo from the examples, on SQLite, with sample data, and show it."""
    from ..io.demo import build_demo

    with refusals():
        try:
            result = build_demo(directory, force=force)
        except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
            fail(f"cannot build the demo in {directory}: {exc}")
    shown = result.directory.as_posix().rstrip("/") + "/"
    typer.echo(f"metacrm demo: a working CRM in {shown} (built in {result.seconds:.1f} s)")
    typer.echo(f"  models: {', '.join(p.name for p in result.models)}, and the JSON Schema they point at")
    for db in result.databases.values():
        counts = ", ".join(f"{entity} {n}" for entity, n in db.counts.items())
        typer.echo(f"  {db.path.name}: {db.label or db.name} — {counts}")
        for entity, stages in db.stages.items():
            if db.name == "trade":
                typer.echo(f"    {entity} by stage: " + ", ".join(f"{s} {n}" for s, n in stages.items()))
    trade = result.databases.get("trade")
    if trade is None:  # pragma: no cover - the examples always hold trade.yaml
        return
    flags = f"--model {shlex.quote(trade.model.as_posix())} --db {shlex.quote(trade.url)}"
    with refusals():
        city, sample = _show(trade, flags)
    typer.echo("")
    typer.echo(f"$ metacrm list deal --order-by -id --limit {LATEST_DEALS} {flags}")
    from .data_cmds import list_
    from .output import Format

    list_(  # the very command shown, as a user would run it
        "deal",
        where=None,
        order_by="-id",
        limit=LATEST_DEALS,
        offset=None,
        columns=None,
        wide=False,
        expand=False,
        model=trade.model.as_posix(),
        db=trade.url,
        as_user=None,
        format=Format.table,
    )
    _try(trade, flags, set(ctx.find_root().command.commands), city, sample)


def _show(trade, flags: str) -> tuple[str | None, int]:
    """The card of the first client; returns a city and a deal the suggestions name."""
    from ..runtime.crm import connect

    with connect(trade.model, trade.url) as crm:
        client_id = crm.find("client", order_by="id", limit=1)[0]["id"]
        card = crm.card("client", client_id)
        deals = crm.find("deal", order_by="-id", limit=1)
        contract = crm.find("deal", where="stage = 'contract'", order_by="-amount", limit=1)
        sample = (contract or deals)[0]["id"]
    record = card["record"]

    typer.echo("")
    typer.echo(f"$ metacrm get client {client_id} {flags}")
    pairs = [(k, v) for k, v in record.items() if k not in HIDDEN and v not in (None, "", [])]
    typer.echo(to_pairs(pairs), nl=False)
    for name, value in card["links"].items():
        targets = value if isinstance(value, list) else [value] if value else []
        if targets:
            typer.echo(f"-> {name}: " + ", ".join(reference_text(t) for t in targets))
    for name, items in card["related"].items():
        if not items:
            continue
        typer.echo(f"<- {name} ({len(items)}):")
        for item in items[:RELATED_SHOWN]:
            stage = f" [{item['stage']}]" if "stage" in item else ""
            typer.echo(f"   {reference_text(item)}{stage}")
        if len(items) > RELATED_SHOWN:
            typer.echo(f"   … and {len(items) - RELATED_SHOWN} more")

    return record.get("city"), sample


def _try(trade, flags: str, commands: set[str], city: str | None, sample: int) -> None:
    city = city or "Москва"
    tries = [
        f'metacrm list deal {flags} --where "amount > 100000" --order-by -amount --limit 10',
        f"metacrm list client {flags} --where \"city = '{city}'\"",
        f"metacrm get deal {sample} {flags}",
    ]
    if "report" in commands:
        tries.append(f"metacrm report funnel deal {flags}")
    else:
        tries.append(f"metacrm graph {shlex.quote(trade.model.as_posix())} deal --paths")
    typer.echo("")
    typer.echo("Try next:")
    for line in tries:
        typer.echo(f"  {line}")


def register(app: typer.Typer) -> None:
    app.command()(demo)
