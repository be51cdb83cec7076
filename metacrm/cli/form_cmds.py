"""Inbound requests: metacrm form list | submit | html (docs/forms.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from .data_cmds import DEFAULT_DB, DEFAULT_MODEL, DbOpt, FormatOpt, ModelOpt, opened, parse_assignments
from .output import Format, emit_record, emit_records

forms = typer.Typer(help="Forms: the model's intake points for websites and gateways.", no_args_is_help=True)

COLUMNS = ["name", "entity", "fields", "values", "assign", "token", "rate"]


@forms.command("list")
def list_(model: ModelOpt = DEFAULT_MODEL, format: FormatOpt = Format.table) -> None:
    """The model's forms: entity, fields, fixed values, assignment, token, rate."""
    from ..runtime.forms import describe_forms
    from .common import load

    rows = describe_forms(load(model))
    if format is not Format.json:
        rows = [{**r, **{k: _text(r[k]) for k in ("fields", "values", "assign")}} for r in rows]
    emit_records(rows, format, COLUMNS)


def _text(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return "; ".join(str(v) for v in value)


@forms.command("submit")
def submit(
    name: Annotated[str, typer.Argument(help="The form's name.")],
    values: Annotated[list[str] | None, typer.Argument(help="FIELD=VALUE ... (only the form's fields).")] = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
    format: FormatOpt = Format.table,
) -> None:
    """Submit a form as an operator (token-bound forms too): prints created or duplicate, with the id."""
    data = parse_assignments(values or [])
    with opened(model, db) as crm:
        emit_record(crm.submit_form(name, data, authenticated=True), format)


@forms.command("html")
def html(
    name: Annotated[str, typer.Argument(help="The form's name.")],
    action: Annotated[
        str | None, typer.Option("--action", help="Where the form posts (default: /forms/NAME).")
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
) -> None:
    """Print the form's embeddable HTML (no script, no external asset)."""
    from ..runtime.forms import form_html
    from .common import load, refusals

    with refusals():
        typer.echo(form_html(load(model), name, action or f"/forms/{name}"), nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(forms, name="form")
